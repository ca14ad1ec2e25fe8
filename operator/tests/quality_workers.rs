//! The quality gate against real workers: two workers that answer alike match, a worker whose
//! output differs is a regression with its score, and a worker that cannot answer is an error
//! (which leaves the check unanswered), never a pass.

use std::{collections::BTreeMap, time::Duration};

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
    let documents = BTreeMap::from([(
        "sample.pdf".to_owned(),
        std::fs::read(repo_path("examples/documents/sample.pdf")).unwrap(),
    )]);
    let http = reqwest::Client::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let compare = |canary: &str| {
        runtime.block_on(quality::compare(
            &http,
            &stable.url(),
            canary,
            &documents,
            0.95,
            Duration::from_secs(60),
        ))
    };

    let matching = compare(&alike.url()).unwrap();
    assert_eq!(matching.len(), 1);
    assert_eq!(
        (matching[0].verdict, matching[0].similarity),
        (Verdict::Pass, 1.0)
    );

    let regressed = compare(&different.url()).unwrap();
    assert_eq!(regressed[0].document, "sample.pdf");
    assert_eq!(regressed[0].verdict, Verdict::Fail, "{regressed:?}");
    assert!(regressed[0].similarity < 0.95, "{regressed:?}");

    let unreachable = compare("http://127.0.0.1:9").unwrap_err();
    assert!(
        unreachable.to_string().contains("canary worker"),
        "{unreachable}"
    );
}
