//! The quality gate against real workers: two workers that answer alike match, a worker whose
//! output differs is a regression with its score, a canary that cannot answer is a regression,
//! and a document neither can answer is recorded as an error, never a pass.

use std::time::Duration;

use mineru_crds::Verdict;
use mineru_e2e::{
    controlplane::work_dir,
    mineru_api::MineruApi,
    repo_path,
    stack::{Simulator, Worker},
};
use mineru_operator::quality::{self, Api, Endpoint};

#[test]
fn golden_documents_compare_canary_with_stable() {
    let logs = work_dir("quality-workers");
    std::fs::create_dir_all(&logs).unwrap();
    let simulator = Simulator::start("m-a", "mineru", &[], &logs).unwrap();
    let stable = Worker::start("w-stable", &simulator.url(), "mineru", &logs).unwrap();
    let alike = Worker::start("w-alike", &simulator.url(), "mineru", &logs).unwrap();
    let different = Worker::start_text("w-different", &logs).unwrap();
    let pdf = std::fs::read(repo_path("examples/documents/sample.pdf")).unwrap();
    let http = reqwest::Client::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let compare = |baseline: &str, canary: &str| {
        runtime.block_on(quality::compare_one(
            &http,
            &Endpoint::worker(baseline.to_owned()),
            &Endpoint::worker(canary.to_owned()),
            "sample.pdf",
            &pdf,
            0.95,
            Duration::from_secs(60),
        ))
    };

    let matching = compare(&stable.url(), &alike.url());
    assert_eq!(
        (matching.verdict, matching.similarity),
        (Verdict::Pass, 1.0)
    );

    let regressed = compare(&stable.url(), &different.url());
    assert_eq!(regressed.document, "sample.pdf");
    assert_eq!(regressed.verdict, Verdict::Fail, "{regressed:?}");
    assert!(regressed.similarity < 0.95, "{regressed:?}");

    let unreachable = "http://127.0.0.1:9";
    let canary_down = compare(&stable.url(), unreachable);
    assert_eq!(canary_down.verdict, Verdict::Fail, "{canary_down:?}");
    assert!(
        canary_down
            .message
            .as_deref()
            .is_some_and(|m| m.contains("canary worker")),
        "{canary_down:?}"
    );
    let nobody = compare(unreachable, unreachable);
    assert_eq!(nobody.verdict, Verdict::Error, "{nobody:?}");
    assert!(
        nobody
            .message
            .as_deref()
            .is_some_and(|m| m.contains("both failed")),
        "{nobody:?}"
    );
}

/// A migration from MinerU 4: the legacy Service is MinerU's own `mineru-api` (flash tier),
/// which speaks only `/v1`; the operator parses golden documents there through `/v1/file_parse`
/// and compares them with our text worker's, block types in MinerU 2's vocabulary.
#[test]
fn golden_documents_compare_with_a_mineru_4_legacy_service() {
    let logs = work_dir("quality-mineru4");
    std::fs::create_dir_all(&logs).unwrap();
    let legacy = MineruApi::start_flash().unwrap();
    let ours = Worker::start_text("w-text", &logs).unwrap();
    let pdf = std::fs::read(repo_path("examples/documents/sample.pdf")).unwrap();
    let http = reqwest::Client::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let compare = |baseline: &Endpoint| {
        runtime.block_on(quality::compare_one(
            &http,
            baseline,
            &Endpoint::worker(ours.url()),
            "sample.pdf",
            &pdf,
            0.95,
            Duration::from_secs(60),
        ))
    };
    let v1 = |tier: Option<&str>| Endpoint {
        url: legacy.url(),
        api: Api::V1 {
            tier: tier.map(str::to_owned),
        },
    };
    let alike = compare(&v1(Some("flash")));
    assert_eq!(alike.verdict, Verdict::Pass, "{alike:?}");
    assert!(alike.similarity > 0.95, "{alike:?}");
    // A flash-only MinerU has no default tier for a PDF: the baseline's error, never a pass.
    let no_tier = compare(&v1(None));
    assert_eq!(no_tier.verdict, Verdict::Error, "{no_tier:?}");
    // Its /file_parse is gone: spoken to as MinerU 2, it answers nothing the gate can use.
    let wrong_api = compare(&Endpoint::worker(legacy.url()));
    assert_eq!(wrong_api.verdict, Verdict::Error, "{wrong_api:?}");
}
