//! No promotion without data, on the real control plane: a step that only triggers watch
//! (its criterion is limited by `afterSteps` to the step before) holds, and says why; with
//! Prometheus down, not even a step that says it needs no analysis advances; once Prometheus
//! answers again, the steps that skip analysis complete and the promotion says so.

use std::{thread, time::Duration};

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{Scenario, Setup, event_notes, manifest_with_checks, pair},
};

/// A criterion on the first step only, a trigger watching all the time, nothing else.
fn after_steps_manifest(model_image: &str, prometheus: &str) -> String {
    let checks = r#"      promotionCriteria:
      - name: answered
        query: 'sum(increase(mineru_worker_requests_total{namespace="{{namespace}}",revision="{{revision}}",outcome="success"}[{{window}}]))'
        samplesQuery: 'sum(increase(mineru_worker_requests_total{namespace="{{namespace}}",revision="{{revision}}"}[{{window}}]))'
        minSamples: 2
        min: 1
        afterSteps: [0]
      rollbackTriggers:
      - name: error-spike
        query: 'sum(rate(mineru_worker_requests_total{namespace="{{namespace}}",revision="{{revision}}",outcome!="success"}[60s]))'
        max: 100
        for: 0s
"#;
    manifest_with_checks(model_image, prometheus, checks)
}

#[test]
fn a_step_without_evidence_never_promotes_even_with_prometheus_down() {
    let setup = Setup {
        template: after_steps_manifest,
        ..Setup::default()
    };
    let mut scenario = Scenario::start_with("fail-safe", &Nodes::default(), setup);
    scenario.settle_on_stable();
    let (stable, canary) = (scenario.stable.clone(), scenario.canary.clone());
    scenario.apply_canary();

    // The first step passes on its criterion; the second has only a trigger: it holds.
    let holding = scenario.wait_for(
        "the second step to hold for want of evidence",
        Duration::from_secs(120),
        |s| {
            s["currentStep"] == 1
                && s["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no criterion gates this step"))
        },
    );
    assert!(holding["lastRollback"].is_null(), "{holding}");

    scenario.prometheus.stop();
    scenario.wait_for("query errors in status", Duration::from_secs(60), |s| {
        s["consecutiveErrors"].as_i64().is_some_and(|n| n >= 2)
    });
    // Even once the steps say they need no analysis, a dead Prometheus promotes nothing.
    let skipping = scenario
        .canary_manifest
        .replace(
            "{weight: 50, pause: 6s}",
            "{weight: 50, pause: 6s, skipAnalysis: true}",
        )
        .replace("{weight: 100}", "{weight: 100, skipAnalysis: true}");
    assert_eq!(
        skipping.matches("skipAnalysis: true").count(),
        2,
        "{skipping}"
    );
    scenario.apply(&skipping);
    thread::sleep(Duration::from_secs(10));
    let still = scenario.status();
    assert_eq!(still["currentStep"], 1, "{still}");
    assert_eq!(
        pair(&still, "stable"),
        Some((
            stable.model_revision.clone(),
            stable.worker_revision.clone()
        )),
        "promoted without data: {still}"
    );
    assert!(
        still["message"]
            .as_str()
            .is_some_and(|m| m.contains("waiting for a round whose queries answer")),
        "{still}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(scenario.prometheus.restart()).unwrap();
    scenario.wait_for(
        "promotion without analysis once queries answer",
        Duration::from_secs(120),
        |s| {
            s["phase"] == "Healthy"
                && pair(s, "stable")
                    == Some((
                        canary.model_revision.clone(),
                        canary.worker_revision.clone(),
                    ))
        },
    );
    let notes = event_notes(&scenario.plane);
    let promoted: Vec<&str> = notes
        .lines()
        .filter(|l| l.starts_with("Promoted:"))
        .collect();
    assert!(
        promoted.len() == 1 && promoted[0].contains("promoted without analysis (skipAnalysis)"),
        "{promoted:?}"
    );
}
