//! The Helm chart with the real helm binary: it lints, its optional PodMonitor scrapes the pods
//! the operator builds (selector, port) with the labels the built-in gates query, and its roles
//! grant exactly the access the code declares, cluster-wide or per namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

use k8s_openapi::api::core::v1::PodTemplateSpec;
use mineru_crds::MineruDeployment;
use mineru_e2e::{
    controlplane::{OPERATOR_NAMESPACE, toolchain},
    operator::render_chart,
    repo_path,
};
use mineru_operator::{
    rbac::{API_ACCESS, Scope},
    reconcile::{Owner, SpecRevisions, deployment, statefulset},
};
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

/// (group, resource) → verbs.
type Grants = BTreeMap<(String, String), BTreeSet<String>>;

/// The grants of a rendered Role or ClusterRole.
fn grants_of(role: &Value) -> Grants {
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let mut grants = Grants::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                let verbs = strings(&rule["verbs"]);
                assert!(
                    group != "*" && resource != "*" && !verbs.iter().any(|v| v == "*"),
                    "a wildcard in {group}/{resource}: {verbs:?}"
                );
                grants
                    .entry((group.clone(), resource))
                    .or_default()
                    .extend(verbs);
            }
        }
    }
    grants
}

/// What the code declares it uses in `scopes`.
fn code_grants(scopes: &[Scope]) -> Grants {
    let mut grants = Grants::new();
    for access in API_ACCESS.iter().filter(|a| scopes.contains(&a.scope)) {
        grants
            .entry((access.group.to_owned(), access.resource.to_owned()))
            .or_default()
            .extend(access.verbs.iter().map(|v| (*v).to_owned()));
    }
    grants
}

/// Every document of the chart rendered with `sets`, by (kind, namespace, name).
fn rendered(sets: &[&str]) -> BTreeMap<(String, String, String), Value> {
    let mut args = Vec::new();
    for set in sets {
        args.extend(["--set", set]);
    }
    render_chart(&args)
        .unwrap()
        .split("\n---")
        .filter_map(|document| serde_yaml::from_str::<Value>(document).ok())
        .filter(|object| object.is_object())
        .map(|object| {
            let field = |pointer: &str| {
                object
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            (
                (
                    field("/kind"),
                    field("/metadata/namespace"),
                    field("/metadata/name"),
                ),
                object,
            )
        })
        .collect()
}

fn role<'a>(
    documents: &'a BTreeMap<(String, String, String), Value>,
    kind: &str,
    namespace: &str,
    name: &str,
) -> &'a Value {
    documents
        .get(&(kind.to_owned(), namespace.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} in {:?}", documents.keys()))
}

#[test]
fn the_roles_grant_exactly_what_the_code_uses_in_either_mode() {
    // Cluster-wide: one ClusterRole with everything, bound to the ServiceAccount.
    let cluster = rendered(&[]);
    assert_eq!(
        grants_of(role(&cluster, "ClusterRole", "", "mineru-operator")),
        code_grants(&[Scope::Watched, Scope::Own, Scope::Cluster])
    );
    assert!(!cluster.keys().any(|(kind, ..)| kind == "Role"));

    // Namespaced: a Role per watched namespace, one for the Lease, the ClusterRole for Nodes.
    let namespaced = rendered(&[
        "watchNamespaces={parsing,ocr}",
        "secretNames={vllm-key,prom}",
    ]);
    assert_eq!(
        grants_of(role(&namespaced, "ClusterRole", "", "mineru-operator")),
        code_grants(&[Scope::Cluster])
    );
    for namespace in ["parsing", "ocr"] {
        let watched = role(&namespaced, "Role", namespace, "mineru-operator");
        assert_eq!(
            grants_of(watched),
            code_grants(&[Scope::Watched]),
            "{namespace}"
        );
        let secrets = watched["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rule| rule["resources"][0] == "secrets")
            .unwrap();
        assert_eq!(
            secrets["resourceNames"],
            serde_json::json!(["vllm-key", "prom"])
        );
        let binding = role(&namespaced, "RoleBinding", namespace, "mineru-operator");
        assert_eq!(binding["roleRef"]["name"], "mineru-operator");
        assert_eq!(binding["subjects"][0]["namespace"], OPERATOR_NAMESPACE);
    }
    let leases = role(
        &namespaced,
        "Role",
        OPERATOR_NAMESPACE,
        "mineru-operator-leader-election",
    );
    assert_eq!(grants_of(leases), code_grants(&[Scope::Own]));
    let deployment = role(
        &namespaced,
        "Deployment",
        OPERATOR_NAMESPACE,
        "mineru-operator",
    );
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert!(
        args.as_array()
            .unwrap()
            .contains(&serde_json::json!("--watch-namespaces=parsing,ocr")),
        "{args}"
    );
}
