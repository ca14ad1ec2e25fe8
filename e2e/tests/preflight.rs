//! Preflight: before a canary's first traffic the operator checks what its gates need. With
//! Prometheus down the rollout holds at 0% with a PreflightFailed condition naming the problem,
//! and starts once Prometheus answers. A spec that names a host off the operator's allowlist, or
//! a Secret without the label the operator requires, is held the same way, and nothing is sent.

use std::{thread, time::Duration};

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{NAMESPACE, Scenario},
};
use serde_json::Value;

fn preflight(status: &Value) -> Option<(String, String)> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PreflightFailed")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_owned(),
                c["message"].as_str().unwrap_or("").to_owned(),
            )
        })
}

#[test]
fn a_failed_preflight_holds_the_canary_at_zero_and_names_the_problem() {
    let mut scenario = Scenario::start("preflight", &Nodes::default());
    scenario.settle_on_stable();
    scenario.prometheus.stop();
    scenario.apply_canary();

    let held = scenario.wait_for("PreflightFailed", Duration::from_secs(120), |s| {
        preflight(s).is_some_and(|(status, _)| status == "True")
    });
    let (_, message) = preflight(&held).unwrap();
    assert!(
        message.contains("Prometheus at") && message.contains("does not answer"),
        "{message}"
    );
    thread::sleep(Duration::from_secs(6));
    let still = scenario.status();
    assert_eq!(
        still["canaryWeight"].as_i64().unwrap_or(0),
        0,
        "no traffic before preflight passes: {still}"
    );
    assert!(
        still["message"]
            .as_str()
            .unwrap_or("")
            .contains("preflight failed"),
        "{still}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(scenario.prometheus.restart()).unwrap();
    let started = scenario.wait_for(
        "the first step after preflight passes",
        Duration::from_secs(120),
        |s| s["canaryWeight"].as_i64().is_some_and(|w| w > 0),
    );
    assert_eq!(
        preflight(&started).map(|(status, _)| status),
        Some("False".to_owned())
    );
}

/// The canary's manifest with its Prometheus address (`http://127.0.0.1:<port>`) replaced.
fn with_prometheus(manifest: &str, prometheus: &str) -> String {
    let start = manifest
        .find("prometheus: {address: ")
        .expect("the scenario names Prometheus");
    let end = start + manifest[start..].find('}').unwrap() + 1;
    format!(
        "{}prometheus: {prometheus}{}",
        &manifest[..start],
        &manifest[end..]
    )
}

#[test]
fn a_spec_cannot_point_the_operator_at_hosts_or_secrets_the_platform_did_not_allow() {
    let mut scenario = Scenario::start("preflight-outbound", &Nodes::default());
    scenario.settle_on_stable();
    let address = scenario.prometheus.url().to_owned();

    // The instance metadata service, and a webhook off the allowlist with a query secret.
    let ssrf = with_prometheus(
        &scenario.canary_manifest,
        r#"{address: "http://169.254.169.254:80/latest/meta-data"}"#,
    )
    .replace(
        "    analysis:\n",
        "    notifications: {webhook: {url: \"https://hooks.example.net/T0/B0?key=s3cret\"}}\n    analysis:\n",
    );
    scenario.apply(&ssrf);
    let held = scenario.wait_for(
        "off-allowlist hosts refused",
        Duration::from_secs(120),
        |s| {
            preflight(s).is_some_and(|(status, message)| {
                status == "True" && message.contains("169.254.169.254")
            })
        },
    );
    let (_, message) = preflight(&held).unwrap();
    assert!(
        message.contains("analysis.prometheus.address names 169.254.169.254:80"),
        "{message}"
    );
    assert!(
        message.contains("webhook.url names hooks.example.net:443"),
        "{message}"
    );
    assert!(
        !message.contains("s3cret"),
        "the URL's query stays out: {message}"
    );
    assert_eq!(held["canaryWeight"].as_i64().unwrap_or(0), 0, "{held}");

    // Back on the allowed Prometheus, with credentials from a Secret without the label.
    scenario
        .plane
        .kubectl(&[
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            "prom-creds",
            "--from-literal=token=t0ken",
        ])
        .unwrap();
    let unlabelled = with_prometheus(
        &scenario.canary_manifest,
        &format!(r#"{{address: "{address}", authSecretRef: {{name: prom-creds}}}}"#),
    );
    scenario.apply(&unlabelled);
    let held = scenario.wait_for(
        "the unlabelled Secret refused",
        Duration::from_secs(120),
        |s| {
            preflight(s)
                .is_some_and(|(status, message)| status == "True" && message.contains("prom-creds"))
        },
    );
    let (_, message) = preflight(&held).unwrap();
    assert!(
        message.contains(&format!(
            "Secret {NAMESPACE}/prom-creds is not labelled mineru.dev/operator-readable=true"
        )),
        "{message}"
    );
    assert!(
        !message.contains("169.254"),
        "the address problem is gone: {message}"
    );

    // Labelled, the Secret is read and the canary starts.
    scenario
        .plane
        .kubectl(&[
            "-n",
            NAMESPACE,
            "label",
            "secret",
            "prom-creds",
            "mineru.dev/operator-readable=true",
        ])
        .unwrap();
    scenario.wait_for(
        "the first step once the Secret is labelled",
        Duration::from_secs(120),
        |s| s["canaryWeight"].as_i64().is_some_and(|w| w > 0),
    );
}
