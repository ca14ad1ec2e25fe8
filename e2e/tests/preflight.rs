//! Preflight: before a canary's first traffic the operator checks what its gates need. With
//! Prometheus down the rollout holds at 0% with a PreflightFailed condition naming the problem,
//! and starts once Prometheus answers.

use std::{thread, time::Duration};

use mineru_e2e::{controlplane::Nodes, scenario::Scenario};
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
