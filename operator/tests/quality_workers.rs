//! The quality gate against real workers: two workers that answer alike match, a worker whose
//! output differs is a regression with its score, a canary that cannot answer is a regression,
//! and a document neither can answer is recorded as an error, never a pass.

use std::time::Duration;

use mineru_crds::Verdict;
use mineru_e2e::{
    controlplane::work_dir,
    repo_path,
    stack::{Simulator, Worker},
};
use mineru_operator::quality;

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
            baseline,
            canary,
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
