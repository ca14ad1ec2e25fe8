//! Migration from MinerU 4 on the real control plane: the legacy Service is MinerU's own
//! `mineru-api` 4.0.12 (flash tier), which speaks only `/v1` and exports no metrics. Its clients
//! are MinerU 4 clients (`/v1/file_parse`), whom the split stack serves unchanged; the operator
//! compares golden documents on the legacy Service through its `/v1` API (`legacyBackend.api:
//! v1`) and moves the traffic 10 -> 50 -> 100 to the stack, which takes over.

use std::time::Duration;

use mineru_e2e::controlplane::Nodes;
use mineru_e2e::scenario::{
    ERROR_RATIO, LEGACY_SERVICE, Legacy, Scenario, Setup, manifest_with_checks, pair,
};

/// Text-backend workers (as MinerU's flash tier, model-free), judged on golden documents and on
/// the stack's own error ratio: a MinerU 4 Service has no series to compare ratios with.
fn from_mineru4(model_image: &str, prometheus: &str) -> String {
    // The error ratio counts as evidence only with the documents it was measured on.
    let samples = r#"sum(increase(mineru_worker_requests_total{namespace="{{namespace}}",revision="{{revision}}",outcome!~"client_error|deferred"}[60s]))"#;
    let checks = format!(
        "      promotionCriteria:\n      - {{name: error-ratio, query: '{ERROR_RATIO}', samplesQuery: \
         '{samples}', minSamples: 2, max: 0.1}}\n      quality: {{goldenDocuments: \
         {{configMapLabels: {{golden: docs}}}}, documentsPerStep: [2]}}\n"
    );
    manifest_with_checks(model_image, prometheus, &checks)
        .replace(
            "worker: {image: registry.example/mineru-worker:0.1.0,",
            "worker: {image: registry.example/mineru-worker:0.1.0, backend: text,",
        )
        .replace(
            "httpRoute: {name: mineru}}",
            &format!(
                "httpRoute: {{name: mineru}}, legacyBackend: {{name: {LEGACY_SERVICE}, port: 8000, api: v1, tier: flash}}}}"
            ),
        )
}

#[test]
fn a_mineru_4_service_hands_its_traffic_to_the_split_stack() {
    let setup = Setup {
        template: from_mineru4,
        legacy: Some(Legacy::Mineru4),
        v1_clients: true,
        ..Setup::default()
    };
    let mut scenario = Scenario::start_with("migration-mineru4", &Nodes::default(), setup);
    let stack = scenario.stable.clone();
    scenario.create_golden_documents();
    let first = from_mineru4("vllm/vllm-openai:v0.11.0", scenario.prometheus.url());
    assert!(
        first.contains("api: v1") && first.contains("backend: text"),
        "{first}"
    );
    scenario.apply(&first);

    let mut shares = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let promoted = loop {
        let weights = scenario.route_weights();
        if !shares.contains(&weights) {
            shares.push(weights);
        }
        let status = scenario.status();
        if status["stable"].is_object() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no promotion in time; last status: {status}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let stack_service = format!("docs-worker-{}", stack.worker_revision);
    for expected in [
        format!("{LEGACY_SERVICE}=90 {stack_service}=10"),
        format!("{LEGACY_SERVICE}=50 {stack_service}=50"),
    ] {
        assert!(shares.contains(&expected), "{expected} not in {shares:?}");
    }
    assert_eq!(
        pair(&promoted, "stable"),
        Some((stack.model_revision.clone(), stack.worker_revision.clone()))
    );

    // Golden documents were parsed by MinerU 4 itself and by the stack, and alike.
    let quality = promoted["quality"].as_array().cloned().unwrap_or_default();
    assert_eq!(quality.len(), 2, "{promoted}");
    assert!(quality.iter().all(|d| d["verdict"] == "Pass"), "{promoted}");

    let done = scenario.wait_for(
        "the post-promotion window to let the legacy Service go",
        Duration::from_secs(60),
        |s| s["phase"] == "Healthy" && s["legacy"].is_null(),
    );
    assert!(done["stable"].is_object());
    assert_eq!(scenario.route_weights(), format!("{stack_service}=100"));
    // MinerU 4 clients were served by MinerU 4 first, then by the stack.
    assert!(
        scenario.load.answers(LEGACY_SERVICE).0 > 0,
        "the legacy Service served first: {:?}",
        scenario.load.answers(LEGACY_SERVICE)
    );
    assert!(
        scenario.load.v1_successes(&stack.worker_revision) > 0,
        "the stack served MinerU 4 clients after"
    );
}
