//! The built-in checks deciding on real worker metrics through the real Prometheus, at low
//! document traffic (about a document a second, steps scaled down): a healthy canary is held
//! until its documents are enough, then promoted by its gates; one whose model cuts its answers
//! short is rolled back on the worker's document-level signals.

use std::{thread, time::Duration};

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{Routing, Scenario, Setup, check, event_notes, pair},
};

#[test]
fn the_built_ins_promote_a_healthy_canary_once_its_documents_are_enough() {
    let mut scenario = Scenario::start_with(
        "built-ins-promote",
        &Nodes::default(),
        Setup::built_ins(Routing::Gateway),
    );
    scenario.settle_on_stable();
    let canary = scenario.canary.clone();
    scenario.apply_canary();

    // Early in the first step the error ratio has too few documents to say anything: it waits,
    // and says how many more it needs.
    let mut waited = None;
    let mut steps_seen = Vec::new();
    let promoted = loop {
        let status = scenario.status();
        if let Some(step) = status["currentStep"].as_i64()
            && steps_seen.last() != Some(&step)
        {
            steps_seen.push(step);
        }
        if let Some(errors) = check(&status, "error-ratio", "Promotion")
            && status["currentStep"] == 0
            && errors["verdict"] == "Inconclusive"
            && errors["needed"].as_f64().is_some_and(|n| n > 0.0)
        {
            waited.get_or_insert_with(|| errors.clone());
        }
        if status["phase"] == "Healthy"
            && pair(&status, "stable")
                == Some((
                    canary.model_revision.clone(),
                    canary.worker_revision.clone(),
                ))
        {
            break status;
        }
        assert!(
            status["lastRollback"].is_null(),
            "a healthy canary was rolled back: {status}"
        );
        thread::sleep(Duration::from_millis(300));
        assert!(
            scenario.load.answers(&canary.worker_revision).0 < 2000,
            "no promotion after 2000 canary documents: {status}"
        );
    };
    let waited = waited.expect("the first step waited for evidence");
    assert!(
        waited["message"]
            .as_str()
            .is_some_and(|m| m.contains("documents seen")),
        "{waited}"
    );

    // Every step in turn, each left on its gates. (One operator process merges its Events of
    // one reason into a series, so the steps are followed in status.)
    assert_eq!(steps_seen, [0, 1, 2], "steps seen");
    let notes = event_notes(&scenario.plane);
    assert!(
        notes.contains("StepCompleted: step 1/3 (25%) completed: gates passed"),
        "{notes}"
    );
    assert!(
        notes.contains("(gates passed)"),
        "promoted by its gates: {notes}"
    );
    // After promotion the last step's checks go on judging the promoted revision.
    assert!(
        check(&promoted, "slo-error-ratio", "Promotion").is_some(),
        "{promoted}"
    );
    let (answered, failed) = scenario.load.answers(&canary.worker_revision);
    assert!(
        answered >= 10 && failed == 0,
        "{answered} answered, {failed} failed"
    );
}

/// A canary model that answers every table cut at the length limit parses without an error and
/// as fast: only the document-level signals see it. The built-ins roll it back at the first
/// step, on the real traffic's documents (no golden documents here).
#[test]
fn the_built_ins_roll_back_a_canary_whose_answers_are_cut_short() {
    let setup = Setup {
        canary_scenario: Some("truncated: [table]\n"),
        ..Setup::built_ins(Routing::Gateway)
    };
    let mut scenario = Scenario::start_with("built-ins-truncated", &Nodes::default(), setup);
    scenario.settle_on_stable();
    let (stable, canary) = (scenario.stable.clone(), scenario.canary.clone());
    scenario.apply_canary();

    let (rolled_back, heaviest) = scenario.until_rolled_back();
    assert_eq!(heaviest, 25, "stopped at the first step");
    let rollback = &rolled_back["lastRollback"];
    assert_eq!(rollback["reason"], "CriterionFailed", "{rollback}");
    assert_eq!(rollback["check"], "truncated-answers", "{rollback}");
    assert_eq!(
        pair(&rolled_back, "stable"),
        Some((stable.model_revision, stable.worker_revision))
    );
    let (answered, failed) = scenario.load.answers(&canary.worker_revision);
    assert!(
        answered > 0 && failed == 0,
        "every canary document was answered: {answered} answered, {failed} failed"
    );
}
