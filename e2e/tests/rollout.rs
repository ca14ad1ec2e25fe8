//! Scenarios 3, 4 and 6 on the real control plane with a real Prometheus and real workers: a
//! model change rolls out as a canary of both tiers through Gateway API weights, walks
//! 10 -> 50 -> 100 and is promoted — with the operator SIGKILLed and restarted at every step — and
//! a canary whose vLLM fails is rolled back with the evidence in status and stays out.

use std::{thread, time::Duration};

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{NAMESPACE, Scenario, pair},
    wait_until,
};

#[test]
fn a_healthy_canary_walks_10_50_100_through_operator_crashes_and_is_promoted() {
    let mut scenario = Scenario::start("rollout-promote", &Nodes::default());
    {
        scenario.settle_on_stable();
        let (stable, canary) = (scenario.stable.clone(), scenario.canary.clone());
        assert_ne!(
            stable.worker_revision, canary.worker_revision,
            "a model change makes new workers too"
        );
        scenario.apply_canary();

        // Walk the steps; SIGKILL the operator whenever a new step begins and start another.
        let mut seen_steps: Vec<(i64, i64)> = Vec::new();
        let mut restarts = 0;
        let promoted = scenario.wait_for_steps(&mut seen_steps, &mut restarts, &canary);
        assert_eq!(
            seen_steps,
            [(0, 10), (1, 50), (2, 100)],
            "each step exactly once, in order"
        );
        assert!(restarts >= 2, "the operator was killed at each step");
        assert_eq!(
            pair(&promoted, "stable"),
            Some((
                canary.model_revision.clone(),
                canary.worker_revision.clone()
            ))
        );

        // The canary served real traffic, and the old revision's objects are gone in the end.
        assert!(
            scenario.load.answers(&canary.worker_revision).0 > 0,
            "the canary got traffic"
        );
        let old_statefulset = format!("docs-vllm-{}", stable.model_revision);
        wait_until(
            "the old revision's objects to be deleted",
            Duration::from_secs(60),
            || {
                let output = scenario.plane.kubectl_output(&[
                    "get",
                    "statefulset",
                    &old_statefulset,
                    "-n",
                    NAMESPACE,
                ])?;
                Ok((!output.status.success()).then_some(()))
            },
        )
        .unwrap();
    }
}

#[test]
fn a_failing_canary_is_rolled_back_with_evidence_and_stays_out() {
    let mut scenario = Scenario::start("rollout-rollback", &Nodes::default());
    {
        scenario.settle_on_stable();
        let (stable, canary) = (scenario.stable.clone(), scenario.canary.clone());
        // The canary warms up and takes its first traffic, then its vLLM starts failing.
        scenario.begin_canary();
        scenario.fail_canary_vllm();

        let status = scenario.wait_for(
            "the canary to be rolled back",
            Duration::from_secs(180),
            |s| s["phase"] == "Degraded" && s["lastRollback"].is_object(),
        );
        let rollback = &status["lastRollback"];
        assert_eq!(
            pair(&status, "stable"),
            Some((
                stable.model_revision.clone(),
                stable.worker_revision.clone()
            ))
        );
        assert_eq!(
            rollback["canary"]["workerRevision"],
            canary.worker_revision.as_str()
        );
        assert!(
            ["TriggerFired", "CriterionFailed"]
                .contains(&rollback["reason"].as_str().unwrap_or("")),
            "{rollback}"
        );
        assert!(
            rollback["check"].is_string() && rollback["query"].is_string(),
            "evidence: {rollback}"
        );
        assert!(
            rollback["value"].as_f64().is_some_and(|v| v > 0.5),
            "evidence: {rollback}"
        );
        let failed = status["failedRevisions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            failed
                .iter()
                .any(|r| r["workerRevision"] == canary.worker_revision.as_str()),
            "{status}"
        );
        assert!(
            scenario.load.answers(&canary.worker_revision).1 > 0,
            "the canary's failures were real traffic"
        );

        // Traffic is back on stable and the failed revision is not retried while the spec stays.
        assert_eq!(
            scenario.route_weights(),
            format!("docs-worker-{}=100", stable.worker_revision)
        );
        thread::sleep(Duration::from_secs(8));
        let later = scenario.status();
        assert_eq!(later["phase"], "Degraded");
        assert!(
            later["canary"].is_null(),
            "no new attempt of the failed revision: {later}"
        );
    }
}
