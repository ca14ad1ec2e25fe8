//! Probe traffic on the real control plane: with no client sending anything, the built-in
//! checks have no documents to decide on, and the golden documents the operator sends as probes
//! are what promotes a healthy canary. The workers count probes apart from clients' documents.

use std::time::Duration;

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{Scenario, Setup, built_in_manifest, pair},
};

/// The built-ins, a quality gate of two golden documents a step, and a probe a second to each
/// side.
fn probed_manifest(model_image: &str, prometheus: &str) -> String {
    format!(
        "{}      quality: {{goldenDocuments: {{configMapLabels: {{golden: docs}}}}, documentsPerStep: [2], probes: {{documentsPerHour: 3600}}}}\n",
        built_in_manifest(model_image, prometheus)
    )
}

#[test]
fn without_client_traffic_probes_let_a_healthy_canary_be_promoted() {
    let setup = Setup {
        template: probed_manifest,
        senders: 0,
        ..Setup::default()
    };
    let mut scenario = Scenario::start_with("probes-promote", &Nodes::default(), setup);
    scenario.golden_documents(2);
    scenario.settle_on_stable();
    let canary = scenario.canary.clone();
    scenario.apply_canary();

    let promoted = scenario.wait_for(
        "the canary to be promoted on probe documents",
        Duration::from_secs(600),
        |status| {
            assert!(
                status["lastRollback"].is_null(),
                "a healthy canary was rolled back: {status}"
            );
            status["phase"] == "Healthy"
                && pair(status, "stable")
                    == Some((
                        canary.model_revision.clone(),
                        canary.worker_revision.clone(),
                    ))
        },
    );
    assert!(promoted["canary"].is_null(), "{promoted}");

    // The canary's documents were all probes, counted as such by its workers.
    let series = |selector: &str| {
        format!(
            r#"sum(mineru_worker_requests_total{{revision="{}",{selector}}})"#,
            canary.worker_revision
        )
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let budget = Duration::from_secs(30);
        let probes = format!(r#"{} > 5"#, series(r#"source="probe",outcome="success""#));
        scenario
            .prometheus
            .wait_for_series(&probes, budget)
            .await
            .unwrap_or_else(|error| panic!("{probes}: {error}"));
        let clients = format!("{} == 0", series(r#"source="traffic""#));
        scenario
            .prometheus
            .wait_for_series(&clients, budget)
            .await
            .unwrap_or_else(|error| panic!("{clients}: {error}"));
    });
    assert_eq!(
        scenario.load.answers(&canary.worker_revision),
        (0, 0),
        "no client document reached the canary"
    );
}
