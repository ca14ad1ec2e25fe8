//! Scenarios 3 and 6 on the real control plane with a real Prometheus and real workers: a model
//! change rolls out as a canary of both tiers through Gateway API weights, walks 10 -> 50 -> 100
//! and is promoted, with the operator SIGKILLed and restarted at every step.

use std::time::Duration;

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{NAMESPACE, Scenario, Setup, assert_no_step_announced_twice, event_notes, pair},
    wait_until,
};

#[test]
fn a_healthy_canary_walks_10_50_100_through_operator_crashes_and_is_promoted() {
    // Half the clients speak MinerU 4's /v1: their jobs count for the revision that ran them.
    let setup = Setup {
        v1_clients: true,
        ..Setup::default()
    };
    let mut scenario = Scenario::start_with("rollout-promote", &Nodes::default(), setup);
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
        // Polling may miss a step that lasts a single analysis interval; what it saw must be in
        // order and never repeated, and the Events show every step happened once.
        let all_steps = [(0, 10), (1, 50), (2, 100)];
        let mut expected = all_steps.iter();
        assert!(
            seen_steps
                .iter()
                .all(|seen| expected.any(|step| step == seen)),
            "steps seen out of order or twice: {seen_steps:?}"
        );
        assert!(restarts >= 2, "the operator was killed at the steps it saw");
        assert_no_step_announced_twice(&scenario.plane);
        let notes = event_notes(&scenario.plane);
        assert!(
            notes.contains("(gates passed)"),
            "promoted by its gates: {notes}"
        );
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
        assert!(
            scenario.load.v1_successes(&canary.worker_revision) > 0,
            "MinerU 4 clients' jobs ran on the canary"
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
