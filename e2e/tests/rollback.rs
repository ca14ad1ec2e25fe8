//! Scenario 4: a canary whose vLLM starts failing after it took traffic is rolled back by the
//! gates with the evidence in status, traffic returns to stable, and the failed revision stays
//! out while the spec is unchanged.

use std::{thread, time::Duration};

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{Scenario, pair},
};

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
