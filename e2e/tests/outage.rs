//! Scenario 5: Prometheus stops mid-rollout. Query errors never promote: the canary stays at its
//! step with the errors in status (onError: Hold), and the rollout goes on once Prometheus is
//! back.

use std::{thread, time::Duration};

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{Scenario, pair},
};

#[test]
fn a_dead_prometheus_holds_the_rollout_and_never_promotes() {
    let mut scenario = Scenario::start("rollout-outage", &Nodes::default());
    scenario.settle_on_stable();
    let (stable, canary) = (scenario.stable.clone(), scenario.canary.clone());
    scenario.begin_canary();

    scenario.prometheus.stop();
    let holding = scenario.wait_for("query errors in status", Duration::from_secs(60), |s| {
        s["consecutiveErrors"].as_i64().is_some_and(|n| n >= 2)
    });
    let weight = holding["canaryWeight"].clone();
    let step = holding["currentStep"].clone();
    // Several intervals and a whole step pause later, nothing has moved.
    thread::sleep(Duration::from_secs(12));
    let still = scenario.status();
    assert_eq!(
        pair(&still, "stable"),
        Some((
            stable.model_revision.clone(),
            stable.worker_revision.clone()
        )),
        "promoted without data: {still}"
    );
    assert_eq!(
        (still["currentStep"].clone(), still["canaryWeight"].clone()),
        (step, weight),
        "{still}"
    );
    assert!(
        still["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["verdict"] == "Error"),
        "{still}"
    );
    assert_ne!(
        still["phase"], "Degraded",
        "onError is Hold, not Rollback: {still}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(scenario.prometheus.restart()).unwrap();
    let promoted = scenario.wait_for(
        "promotion after Prometheus returns",
        Duration::from_secs(180),
        |s| {
            s["phase"] == "Healthy"
                && pair(s, "stable")
                    == Some((
                        canary.model_revision.clone(),
                        canary.worker_revision.clone(),
                    ))
        },
    );
    assert!(promoted["canary"].is_null(), "{promoted}");
}
