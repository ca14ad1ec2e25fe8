//! The quality gate on the real control plane: a canary whose model reads the golden documents
//! differently is rolled back at 10% by the quality gate, with the regressed documents in
//! status, before its round has compared them all.

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{Scenario, Setup, manifest_with_checks, pair},
};

/// Judged by the golden documents alone: four of them, compared before leaving 10%.
fn quality_manifest(model_image: &str, prometheus: &str) -> String {
    manifest_with_checks(
        model_image,
        prometheus,
        "      quality: {goldenDocuments: {configMapLabels: {golden: docs}}, documentsPerStep: [4]}\n",
    )
}

#[test]
fn a_canary_reading_documents_differently_is_rolled_back_at_10_percent() {
    let setup = Setup {
        template: quality_manifest,
        canary_scenario: Some(
            "content:\n  text: \"An entirely different reading of this page.\"\n",
        ),
        ..Setup::default()
    };
    let mut scenario = Scenario::start_with("quality-regression", &Nodes::default(), setup);
    scenario.golden_documents(4);
    scenario.settle_on_stable();
    let stable = scenario.stable.clone();
    scenario.apply_canary();

    let (rolled_back, heaviest) = scenario.until_rolled_back();
    assert_eq!(heaviest, 10, "stopped at the first step");
    let rollback = &rolled_back["lastRollback"];
    assert_eq!(rollback["reason"], "QualityRegressed", "{rollback}");
    assert_eq!(
        pair(&rolled_back, "stable"),
        Some((
            stable.model_revision.clone(),
            stable.worker_revision.clone()
        ))
    );
    let documents = rolled_back["quality"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let regressed: Vec<_> = documents
        .iter()
        .filter(|d| d["verdict"] == "Fail")
        .collect();
    assert!(!regressed.is_empty(), "{rolled_back}");
    for document in &regressed {
        assert!(
            document["similarity"].as_f64().is_some_and(|s| s < 0.95),
            "{document}"
        );
        assert!(
            document["document"]
                .as_str()
                .is_some_and(|d| d.ends_with(".pdf"))
        );
        // The blocks that differ, with both readings: the canary reads every text block anew.
        let first = &document["differences"][0];
        assert_eq!(first["change"], "changed", "{document}");
        assert_eq!(
            first["canary"], "An entirely different reading of this page.",
            "{document}"
        );
        assert!(first["baseline"].is_string(), "{document}");
    }
    assert!(rolled_back["canary"].is_null(), "{rolled_back}");
}
