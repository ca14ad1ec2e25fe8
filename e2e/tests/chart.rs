//! The Helm chart with the real helm binary: it lints, and its optional PodMonitor scrapes the
//! pods the operator builds (selector, port) with the labels the built-in gates query.

use std::process::Command;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use mineru_crds::MineruDeployment;
use mineru_e2e::{controlplane::toolchain, repo_path};
use mineru_operator::reconcile::{Owner, SpecRevisions, deployment, statefulset};
use serde_json::Value;

fn helm(args: &[&str]) -> String {
    let output = Command::new(toolchain().unwrap().bin.join("helm"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The pod templates of both tiers for the minimal example.
fn pod_templates() -> Vec<PodTemplateSpec> {
    let mut md: MineruDeployment =
        serde_yaml::from_str(&std::fs::read_to_string(repo_path("examples/minimal.yaml")).unwrap())
            .unwrap();
    md.metadata.uid = Some("0000".into());
    let owner = Owner::of(&md).unwrap();
    let spec = SpecRevisions::of("docs", &md.spec).unwrap();
    let sts = statefulset::desired(&owner, &md.spec.model, &spec.revisions.model_revision, 1);
    let workers = deployment::desired(
        &owner,
        &spec.worker_template,
        &spec.revisions.worker_revision,
        1,
    );
    vec![sts.spec.unwrap().template, workers.spec.unwrap().template]
}

#[test]
fn the_chart_lints_and_its_pod_monitor_scrapes_both_tiers_for_the_gates() {
    let chart = repo_path("charts/mineru-operator");
    let chart = chart.to_str().unwrap();
    helm(&["lint", chart, "--kube-version", "1.37.2"]);

    let default = helm(&["template", "m", chart, "--kube-version", "1.37.2"]);
    assert!(!default.contains("kind: PodMonitor"), "off by default");

    let rendered = helm(&[
        "template",
        "m",
        chart,
        "--kube-version",
        "1.37.2",
        "--set",
        "podMonitor.enabled=true",
        "--show-only",
        "templates/podmonitor.yaml",
    ]);
    let monitor: Value = serde_yaml::from_str(&rendered).unwrap();
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    for template in pod_templates() {
        let labels = template.metadata.unwrap().labels.unwrap();
        for (key, value) in selector {
            assert_eq!(labels.get(key).map(String::as_str), value.as_str(), "{key}");
        }
        assert!(labels.contains_key("mineru.dev/revision"));
        let ports: Vec<_> = template.spec.unwrap().containers[0]
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.name.clone())
            .collect();
        assert!(
            ports
                .iter()
                .any(|p| Some(p.as_str()) == endpoint["port"].as_str()),
            "{ports:?}"
        );
    }
    let relabeled: Vec<_> = endpoint["relabelings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sourceLabels"][0].as_str().unwrap_or_default().to_owned(),
                r["targetLabel"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(relabeled.contains(&(
        "__meta_kubernetes_pod_label_mineru_dev_revision".to_owned(),
        "revision".to_owned()
    )));
    assert!(relabeled.contains(&(
        "__meta_kubernetes_namespace".to_owned(),
        "namespace".to_owned()
    )));
}
