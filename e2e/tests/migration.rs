//! Migration on the real control plane with a real Prometheus and real workers: a legacy MinerU
//! Service serves the HTTPRoute; the first MineruDeployment with `legacyBackend` takes its
//! traffic 10 -> 50 -> 100 under gates that compare the new stack with the legacy Service's
//! series; promotion takes the legacy Service out of the route, and it stops being the way back
//! once the post-promotion window passes.

use std::time::Duration;

use mineru_e2e::controlplane::Nodes;
use mineru_e2e::scenario::{
    LEGACY_SERVICE, NAMESPACE, Scenario, manifest, pair, with_legacy_backend,
};

#[test]
fn a_legacy_service_hands_its_traffic_to_the_split_stack_step_by_step() {
    let mut scenario = Scenario::start_migration("migration", &Nodes::default());
    let stack = scenario.stable.clone();
    let stack_service = format!("docs-worker-{}", stack.worker_revision);
    // Golden documents in two labelled ConfigMaps, compared on the legacy Service and the stack.
    scenario.create_golden_documents();
    let first = with_legacy_backend(&manifest(
        "vllm/vllm-openai:v0.11.0",
        scenario.prometheus.url(),
    ))
    .replace(
        "      defaultCriteria: false\n",
        "      defaultCriteria: false\n      quality: {goldenDocuments: {configMapLabels: {golden: docs}}, documentsPerStep: [2]}\n",
    )
    // The last step waits for a person, so that the whole of it is seen before promotion.
    .replace("{weight: 100}]", "{weight: 100, requireApproval: true}]");
    assert!(first.contains("requireApproval"), "{first}");
    scenario.apply(&first);

    let warming = scenario.wait_for(
        "the new stack to be the canary of a migration",
        Duration::from_secs(60),
        |s| s["legacy"] == "Serving" && s["canary"].is_object(),
    );
    assert!(warming["stable"].is_null(), "{warming}");
    assert_eq!(
        pair(&warming, "canary"),
        Some((stack.model_revision.clone(), stack.worker_revision.clone()))
    );

    // The steps, with the operator killed at each; the route shows the legacy Service's share.
    // At 100% the stack has all traffic but the legacy Service is still in the route (weight 0)
    // until a person promotes.
    let mut seen_steps = Vec::new();
    let mut restarts = 0;
    let mut shares = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let promoted = loop {
        let weights = scenario.route_weights();
        if !shares.contains(&weights) {
            shares.push(weights);
        }
        let status = scenario.status();
        if status["legacy"] == "Standby" || status["stable"].is_object() {
            break status;
        }
        if let (Some(step), Some(weight)) = (
            status["currentStep"].as_i64(),
            status["canaryWeight"].as_i64(),
        ) && weight > 0
            && seen_steps.last().map(|(s, _)| *s) != Some(step)
        {
            seen_steps.push((step, weight));
            restarts += 1;
            scenario.restart_operator(&format!("operator-{restarts}"));
            if weight == 100 {
                let weights = scenario.route_weights();
                if !shares.contains(&weights) {
                    shares.push(weights);
                }
                scenario
                    .plane
                    .kubectl(&[
                        "annotate",
                        "mdep",
                        "docs",
                        "-n",
                        NAMESPACE,
                        "mineru.dev/promote=step",
                    ])
                    .unwrap();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no promotion in time; last status: {status}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(seen_steps, [(0, 10), (1, 50), (2, 100)], "{shares:?}");
    for expected in [
        format!("{LEGACY_SERVICE}=90 {stack_service}=10"),
        format!("{LEGACY_SERVICE}=50 {stack_service}=50"),
        format!("{LEGACY_SERVICE}=0 {stack_service}=100"),
    ] {
        assert!(shares.contains(&expected), "{expected} not in {shares:?}");
    }
    assert_eq!(
        pair(&promoted, "stable"),
        Some((stack.model_revision.clone(), stack.worker_revision.clone()))
    );

    // The gates compared the stack with the legacy Service's own series.
    let error_ratio = promoted["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "error-ratio")
        .cloned()
        .unwrap_or_default();
    assert!(error_ratio["stableValue"].is_number(), "{promoted}");

    // The golden documents were compared against the legacy Service, and alike.
    let quality = promoted["quality"].as_array().cloned().unwrap_or_default();
    let documents: Vec<_> = quality
        .iter()
        .map(|d| d["document"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        documents,
        ["golden-a/a.pdf", "golden-b/b.pdf"],
        "{promoted}"
    );
    assert!(quality.iter().all(|d| d["verdict"] == "Pass"), "{promoted}");

    let done = scenario.wait_for(
        "the post-promotion window to let the legacy Service go",
        Duration::from_secs(60),
        |s| s["phase"] == "Healthy" && s["legacy"].is_null(),
    );
    assert!(done["stable"].is_object());
    assert_eq!(scenario.route_weights(), format!("{stack_service}=100"));
    assert!(
        scenario.load.answers(LEGACY_SERVICE).0 > 0,
        "the legacy Service served first"
    );
    assert!(
        scenario.load.answers(&stack.worker_revision).0 > 0,
        "the new stack served after"
    );
}
