//! Replica-ratio routing on the real control plane: the canary's real share is told next to the
//! step's weight; a canary whose vLLM fails a share of documents is rolled back by the built-in
//! checks with the evidence in status, and its workers leave the entry Service at once — the
//! EndpointSlice controller drops them and no further request reaches them — while their pods
//! are kept for the scale-down delay.

use std::{thread, time::Duration};

use mineru_e2e::{
    controlplane::Nodes,
    operator::get_json,
    scenario::{NAMESPACE, Routing, Scenario, Setup, check, entry_endpoints, pair},
    wait_until,
};

#[test]
fn a_rolled_back_canary_leaves_the_entry_service_before_it_is_scaled_down() {
    let mut scenario = Scenario::start_with(
        "replicas-rollback",
        &Nodes::default(),
        Setup::built_ins(Routing::Replicas),
    );
    scenario.settle_on_stable();
    let (stable, canary) = (scenario.stable.clone(), scenario.canary.clone());
    scenario.begin_canary();
    // The step is recorded before its worker exists; the real share follows once it is ready.
    let stepping = scenario.wait_for(
        "the canary worker to take its share",
        Duration::from_secs(120),
        |s| s["canaryShare"].as_i64().is_some_and(|share| share > 0),
    );
    assert_eq!(
        (
            stepping["canaryWeight"].as_i64(),
            stepping["canaryShare"].as_i64()
        ),
        (Some(25), Some(50)),
        "25% of two workers is one of two: {stepping}"
    );
    let entry = |scenario: &Scenario| {
        get_json(
            &scenario.plane,
            &["get", "service", "docs", "-n", NAMESPACE],
        )
        .unwrap()["spec"]["selector"]
            .clone()
    };
    assert!(
        entry(&scenario)["mineru.dev/revision"].is_null(),
        "both revisions behind the entry Service during the step"
    );
    wait_until(
        "the canary to answer through the entry Service",
        Duration::from_secs(60),
        || Ok((scenario.load.answers(&canary.worker_revision).0 > 0).then_some(())),
    )
    .unwrap();

    // With the worker's retries, 60% failed vLLM calls fail a good share of documents.
    scenario.fail_canary_vllm_at(0.6);
    let rolled_back = scenario.wait_for(
        "the built-ins to roll the canary back",
        Duration::from_secs(240),
        |s| s["phase"] == "Degraded" && s["lastRollback"].is_object(),
    );
    let rollback = &rolled_back["lastRollback"];
    let built_ins = ["error-ratio", "latency-p95", "breaker-opens", "error-spike"];
    assert!(
        built_ins.contains(&rollback["check"].as_str().unwrap_or("")),
        "{rollback}"
    );
    assert!(
        rollback["value"].as_f64().is_some_and(|v| v > 0.0),
        "{rollback}"
    );
    // The evidence: documents seen on both sides, the canary's error share above stable's.
    let errors = check(&rolled_back, "error-ratio", "Promotion").expect("judged");
    assert!(
        errors["samples"].as_f64().is_some_and(|n| n > 0.0),
        "{errors}"
    );
    assert!(
        errors["stableSamples"].as_f64().is_some_and(|n| n > 0.0),
        "{errors}"
    );
    assert!(
        errors["value"].as_f64() > errors["stableValue"].as_f64(),
        "{errors}"
    );
    assert_eq!(
        pair(&rolled_back, "stable"),
        Some((
            stable.model_revision.clone(),
            stable.worker_revision.clone()
        ))
    );

    // The entry Service selects stable alone, the canary's endpoints go, its pods stay.
    assert_eq!(
        entry(&scenario)["mineru.dev/revision"],
        stable.worker_revision.as_str()
    );
    let canary_pods_behind_entry = |scenario: &Scenario| {
        entry_endpoints(&scenario.plane)
            .iter()
            .filter(|pod| pod.contains(&canary.worker_revision))
            .count()
    };
    wait_until(
        "the canary's endpoints to leave the entry Service",
        Duration::from_secs(20),
        || Ok((canary_pods_behind_entry(&scenario) == 0).then_some(())),
    )
    .unwrap();
    let deployment = format!("docs-worker-{}", canary.worker_revision);
    let replicas = scenario
        .plane
        .kubectl(&[
            "get",
            "deployment",
            &deployment,
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .unwrap();
    assert_eq!(
        replicas.trim(),
        "1",
        "kept for scaleDownDelay, not scaled down yet"
    );
    // What was in flight finishes; then nothing more reaches the canary.
    thread::sleep(Duration::from_secs(5));
    let total = |(ok, failed): (u32, u32)| ok + failed;
    let before = total(scenario.load.answers(&canary.worker_revision));
    thread::sleep(Duration::from_secs(8));
    let after = total(scenario.load.answers(&canary.worker_revision));
    assert_eq!(before, after, "requests reached a rolled-back canary");
    assert!(
        total(scenario.load.answers(&stable.worker_revision)) > 0,
        "stable keeps serving"
    );
}
