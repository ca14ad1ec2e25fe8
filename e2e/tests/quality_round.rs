//! A slow golden-document round does not hold the safety loop: while it compares, an `abort`
//! rolls the canary back, and — retried — a rollback trigger in breach rolls it back again,
//! both before the round has finished. An operator killed mid-round resumes it from status
//! without comparing a finished document again.

use std::time::Duration;

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{Scenario, Setup, manifest_with_checks},
};
use serde_json::Value;

/// The golden documents gate the first step; a trigger watches the canary vLLM's mean
/// answer time.
fn slow_round_manifest(model_image: &str, prometheus: &str) -> String {
    manifest_with_checks(
        model_image,
        prometheus,
        r#"      quality: {goldenDocuments: {configMapLabels: {golden: docs}}, documentsPerStep: [4]}
      rollbackTriggers:
      - name: slow-vllm
        tier: model
        query: 'sum(rate(vllm:e2e_request_latency_seconds_sum{namespace="{{namespace}}",revision="{{revision}}"}[20s])) / sum(rate(vllm:e2e_request_latency_seconds_count{namespace="{{namespace}}",revision="{{revision}}"}[20s]))'
        max: 4
        for: 0s
"#,
    )
}

/// Documents the round has compared so far.
fn compared(status: &Value) -> usize {
    status["quality"].as_array().map_or(0, Vec::len)
}

#[test]
fn an_abort_and_a_trigger_act_while_a_slow_round_compares() {
    let setup = Setup {
        template: slow_round_manifest,
        // One document at a time, each waiting on a slow canary vLLM.
        operator_args: vec!["--quality-concurrency=1".into()],
        ..Setup::default()
    };
    let mut scenario = Scenario::start_with("quality-round", &Nodes::default(), setup);
    scenario.golden_documents(4);
    scenario.settle_on_stable();
    scenario.slow_canary_vllm(Duration::from_millis(1500));
    scenario.apply_canary();

    // A round under way: a document compared, not all four.
    let midway = |scenario: &mut Scenario| {
        scenario.wait_for("the round to be under way", Duration::from_secs(180), |s| {
            s["canaryWeight"] == 10 && compared(s) >= 1 && compared(s) < 4
        })
    };
    midway(&mut scenario);
    scenario.command("mineru.dev/abort");
    let aborted = scenario.wait_for("the abort", Duration::from_secs(60), |s| {
        s["lastRollback"]["reason"] == "Aborted"
    });
    assert!(
        compared(&aborted) < 4,
        "the round had not finished: {aborted}"
    );

    // Again, and this time the canary vLLM slows past the trigger's bar mid-round.
    scenario.command("mineru.dev/retry");
    midway(&mut scenario);
    scenario.slow_canary_vllm(Duration::from_secs(8));
    let fired = scenario.wait_for("the trigger", Duration::from_secs(120), |s| {
        s["lastRollback"]["reason"] == "TriggerFired"
    });
    assert_eq!(fired["lastRollback"]["check"], "slow-vllm", "{fired}");
    assert!(compared(&fired) < 4, "the round had not finished: {fired}");
}

/// Golden documents alone gate the rollout, four a step, without probe traffic (every golden
/// document a worker sees belongs to the round).
fn round_only_manifest(model_image: &str, prometheus: &str) -> String {
    manifest_with_checks(
        model_image,
        prometheus,
        "      quality: {goldenDocuments: {configMapLabels: {golden: docs}}, documentsPerStep: [4], probes: {documentsPerHour: 0}}\n",
    )
}

#[test]
fn an_operator_killed_mid_round_resumes_without_comparing_a_finished_document_again() {
    let setup = Setup {
        template: round_only_manifest,
        operator_args: vec!["--quality-concurrency=1".into()],
        senders: 0,
        ..Setup::default()
    };
    let mut scenario = Scenario::start_with("quality-resume", &Nodes::default(), setup);
    scenario.golden_documents(4);
    scenario.settle_on_stable();
    scenario.slow_canary_vllm(Duration::from_millis(1500));
    let canary = scenario.canary.clone();
    scenario.apply_canary();

    let before = scenario.wait_for("two documents compared", Duration::from_secs(240), |s| {
        s["canaryWeight"] == 10 && (2..4).contains(&compared(s))
    });
    scenario.restart_operator("operator-1");
    let done = scenario.wait_for("the round to finish", Duration::from_secs(240), |s| {
        compared(s) == 4 || s["canaryWeight"].as_i64().is_some_and(|w| w > 10)
    });
    assert!(done["lastRollback"].is_null(), "{done}");
    for document in before["quality"].as_array().unwrap() {
        assert!(
            done["quality"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["document"] == document["document"] && d["verdict"] == "Pass"),
            "{document} kept: {done}"
        );
    }
    // The canary parsed each golden document once, and at most once more the one in flight
    // when the operator was killed: comparing the finished ones again would be two more.
    let answered = format!(
        r#"sum(mineru_worker_requests_total{{revision="{}",source="golden",outcome="success"}})"#,
        canary.worker_revision
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let budget = Duration::from_secs(30);
        for bound in [format!("{answered} >= 4"), format!("{answered} <= 5")] {
            scenario
                .prometheus
                .wait_for_series(&bound, budget)
                .await
                .unwrap_or_else(|error| panic!("{bound}: {error}"));
        }
    });
}
