//! API key rotation on the real control plane: a new key in the Secret restarts the vLLM pods in
//! place once the operator's propagation period has passed — the StatefulSet's pods are replaced
//! with the new key's version in their template, the revision stays, no canary starts. (What the
//! workers and vLLM do with the two keys meanwhile is `worker/tests/serve_resilience.rs`.)

use std::time::Duration;

use mineru_e2e::{
    controlplane::{ControlPlane, Nodes},
    operator::{self, get_json},
    wait_until,
};
use mineru_operator::rotation;

const NAMESPACE: &str = "parsing";

fn secret(key: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: vllm-key, namespace: {NAMESPACE}, labels: {{mineru.dev/operator-readable: \"true\"}}}}
stringData: {{token: {key}}}
"
    )
}

#[test]
fn a_new_api_key_restarts_vllm_in_place_without_a_rollout() {
    let plane = ControlPlane::start("rotation", &Nodes::default()).unwrap();
    operator::install(&plane).unwrap();
    plane.kubectl(&["create", "namespace", NAMESPACE]).unwrap();
    plane.apply(&secret("old-key")).unwrap();
    let mut operator = operator::start(
        &plane,
        "e2e-operator-0",
        None,
        &["--api-key-propagation=3s"],
    )
    .unwrap();
    let manifest = operator::minimal_example(NAMESPACE).unwrap().replace(
        "    model: opendatalab/MinerU2.5-2509-1.2B\n",
        "    model: opendatalab/MinerU2.5-2509-1.2B\n    apiKeySecretRef: {name: vllm-key, key: token}\n",
    );
    plane.apply(&manifest).unwrap();
    let healthy = |operator: &mut mineru_e2e::process::Supervised| {
        wait_until("status Healthy", Duration::from_secs(120), || {
            operator.ensure_running()?;
            let object = get_json(&plane, &["get", "mdep", "docs", "-n", NAMESPACE])?;
            Ok((object["status"]["phase"] == "Healthy").then(|| object["status"].clone()))
        })
        .unwrap()
    };
    let status = healthy(&mut operator);
    let model_revision = status["stable"]["modelRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    let sts = format!("statefulset/docs-vllm-{model_revision}");
    let pod = format!("pod/docs-vllm-{model_revision}-0");
    let template_version = || -> anyhow::Result<String> {
        let object = get_json(&plane, &["get", &sts, "-n", NAMESPACE])?;
        Ok(
            object["spec"]["template"]["metadata"]["annotations"][rotation::KEY_VERSION]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let pod_uid = || -> anyhow::Result<String> {
        let object = get_json(&plane, &["get", &pod, "-n", NAMESPACE])?;
        Ok(object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    };
    assert_eq!(template_version().unwrap(), rotation::version_of("old-key"));
    let first_pod = pod_uid().unwrap();

    plane.apply(&secret("new-key")).unwrap();
    // The operator does not watch Secrets: any change to the object makes it look.
    plane
        .kubectl(&[
            "annotate",
            "mdep",
            "docs",
            "-n",
            NAMESPACE,
            "key-rotated-at=1",
            "--overwrite",
        ])
        .unwrap();
    wait_until(
        "the vLLM pod replaced with the new key's version",
        Duration::from_secs(90),
        || {
            operator.ensure_running()?;
            let version = template_version()?;
            let uid = pod_uid().unwrap_or_default();
            Ok(
                (version == rotation::version_of("new-key") && !uid.is_empty() && uid != first_pod)
                    .then_some(()),
            )
        },
    )
    .unwrap();
    let status = healthy(&mut operator);
    assert_eq!(
        status["stable"]["modelRevision"], model_revision,
        "the same revision: {status}"
    );
    assert!(status["canary"].is_null(), "no canary: {status}");
}
