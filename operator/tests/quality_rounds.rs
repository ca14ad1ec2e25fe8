//! Golden-document rounds in the background, against two local workers speaking `/file_parse`:
//! results stream in while the round runs, a few documents at a time; a round resumes past the
//! documents status already holds; a document only the canary fails is a regression, one nobody
//! can parse is recorded; a round that cannot read its documents starts again; a cancelled round
//! sends nothing more.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Multipart, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use mineru_crds::{QualityResult, Verdict};
use mineru_operator::quality;
use mineru_operator::quality_rounds::{Comparison, Progress, QualityRounds};
use serde_json::json;

/// A worker whose answer for each document the test chooses.
#[derive(Clone, Default)]
struct Worker {
    /// Documents answered with other text, and documents refused with a 500.
    different: Arc<BTreeSet<String>>,
    failing: Arc<BTreeSet<String>>,
    /// Answer each document 429 (at capacity) once before parsing it.
    busy_once: bool,
    refused: Arc<Mutex<BTreeSet<String>>>,
    delay: Duration,
    /// Every document asked, and the most asked at once.
    asked: Arc<Mutex<Vec<String>>>,
    inflight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

async fn file_parse(State(worker): State<Worker>, mut form: Multipart) -> Response {
    let mut name = String::new();
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("files") {
            name = field.file_name().unwrap_or_default().to_owned();
        }
        let _ = field.bytes().await;
    }
    worker.asked.lock().unwrap().push(name.clone());
    if worker.busy_once && worker.refused.lock().unwrap().insert(name.clone()) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({"error": "at capacity"})),
        )
            .into_response();
    }
    let now = worker.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    worker.most.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(worker.delay).await;
    worker.inflight.fetch_sub(1, Ordering::SeqCst);
    if worker.failing.contains(&name) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "boom"})),
        )
            .into_response();
    }
    let text = if worker.different.contains(&name) {
        "an entirely different reading of this page"
    } else {
        "# Report\n\nRevenue grew in every region this quarter."
    };
    let content_list = json!([{"type": "text", "text": text}]).to_string();
    Json(json!({"results": {name: {"md_content": text, "content_list": content_list}}}))
        .into_response()
}

async fn serve(worker: Worker) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/file_parse", post(file_parse))
        .with_state(worker);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn names(prefix: &str, count: usize) -> BTreeSet<String> {
    (0..count).map(|i| format!("{prefix}-{i:02}.pdf")).collect()
}

fn golden(count: usize) -> BTreeMap<String, Vec<u8>> {
    names("doc", count)
        .into_iter()
        .map(|name| (name, b"%PDF-1.7 test".to_vec()))
        .collect()
}

fn comparison(baseline: SocketAddr, canary: SocketAddr, documents: usize) -> Comparison {
    Comparison {
        canary_revision: "w-canary".into(),
        baseline: quality::Endpoint::worker(format!("http://{baseline}")),
        canary_url: format!("http://{canary}"),
        documents,
        min_similarity: 0.95,
        timeout: Duration::from_secs(5),
        concurrency: 3,
    }
}

/// Polls until `done(progress)` or five seconds pass.
async fn until(
    rounds: &QualityRounds,
    comparison: &Comparison,
    done_before: &[QualityResult],
    golden_set: usize,
    done: impl Fn(&Progress) -> bool,
) -> Progress {
    let http = reqwest::Client::new();
    for _ in 0..100 {
        let set = golden(golden_set);
        let progress = rounds.poll(
            "parsing/docs",
            comparison.clone(),
            done_before,
            &http,
            async move { Ok(set) },
        );
        if done(&progress) {
            return progress;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the round did not get there");
}

#[tokio::test]
async fn a_round_streams_its_results_a_few_documents_at_a_time() {
    let slow = Worker {
        delay: Duration::from_millis(100),
        ..Worker::default()
    };
    let (baseline, canary) = (serve(slow.clone()).await, serve(slow.clone()).await);
    let rounds = QualityRounds::default();
    let comparison = comparison(baseline, canary, 9);
    let first = until(&rounds, &comparison, &[], 12, |_| true).await;
    assert!(first.results.is_empty(), "nothing is awaited by the poll");
    let partial = until(&rounds, &comparison, &[], 12, |p| !p.results.is_empty()).await;
    assert!(partial.results.len() < 9, "{partial:?}");
    let all = until(&rounds, &comparison, &[], 12, |p| p.results.len() == 9).await;
    assert_eq!(all.documents, Some(9), "nine of the twelve sampled");
    assert!(all.results.iter().all(|r| r.verdict == Verdict::Pass));
    assert!(
        slow.most.load(Ordering::SeqCst) <= 3 * 2,
        "at most three documents at once on each worker"
    );
}

#[tokio::test]
async fn a_round_resumes_past_what_status_holds_and_grows_without_repeats() {
    let stable = Worker::default();
    let canary = Worker::default();
    let (baseline_address, canary_address) = (serve(stable).await, serve(canary.clone()).await);
    let rounds = QualityRounds::default();
    let four = comparison(baseline_address, canary_address, 4);
    let first = until(&rounds, &four, &[], 10, |p| p.results.len() == 4).await;
    // A new operator (or leader) starts from status: the same four are not asked again, and
    // the next step's eight add four.
    let restarted = QualityRounds::default();
    let eight = Comparison {
        documents: 8,
        ..four.clone()
    };
    let grown = until(&restarted, &eight, &first.results, 10, |p| {
        p.results.len() == 8
    })
    .await;
    let asked = canary.asked.lock().unwrap().clone();
    let unique: BTreeSet<_> = asked.iter().collect();
    assert_eq!(asked.len(), 8, "{asked:?}");
    assert_eq!(unique.len(), 8, "no document compared twice: {asked:?}");
    let first_names: BTreeSet<_> = first.results.iter().map(|r| &r.document).collect();
    assert!(
        first_names
            .iter()
            .all(|name| grown.results.iter().any(|r| &&r.document == name)),
        "the larger sample holds the first"
    );
}

#[tokio::test]
async fn failures_are_results_regressions_only_when_the_canary_alone_fails() {
    let every = names("doc", 6);
    let mut iter = every.iter().cloned();
    let (changed, canary_fails, both_fail) = (
        iter.next().unwrap(),
        iter.next().unwrap(),
        iter.next().unwrap(),
    );
    let baseline = Worker {
        failing: Arc::new([both_fail.clone()].into()),
        ..Worker::default()
    };
    let canary = Worker {
        different: Arc::new([changed.clone()].into()),
        failing: Arc::new([canary_fails.clone(), both_fail.clone()].into()),
        ..Worker::default()
    };
    let (baseline, canary) = (serve(baseline).await, serve(canary).await);
    let rounds = QualityRounds::default();
    let all = until(&rounds, &comparison(baseline, canary, 6), &[], 6, |p| {
        p.results.len() == 6
    })
    .await;
    let verdict = |name: &str| {
        all.results
            .iter()
            .find(|r| r.document == name)
            .map(|r| (r.verdict, r.message.clone().unwrap_or_default()))
            .unwrap()
    };
    assert_eq!(verdict(&changed).0, Verdict::Fail, "a different reading");
    let (fails, why) = verdict(&canary_fails);
    assert_eq!(fails, Verdict::Fail, "the canary alone failed it");
    assert!(why.contains("canary worker"), "{why}");
    let (error, why) = verdict(&both_fail);
    assert_eq!(
        error,
        Verdict::Error,
        "nobody could parse it: recorded, not counted"
    );
    assert!(why.contains("both failed"), "{why}");
    let passed = all
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Pass)
        .count();
    assert_eq!(passed, 3);
}

#[tokio::test]
async fn a_worker_at_capacity_is_asked_again_after_the_wait_it_names() {
    let busy = Worker {
        busy_once: true,
        ..Worker::default()
    };
    let (baseline, canary) = (serve(Worker::default()).await, serve(busy.clone()).await);
    let rounds = QualityRounds::default();
    let all = until(&rounds, &comparison(baseline, canary, 3), &[], 3, |p| {
        p.results.len() == 3
    })
    .await;
    assert!(
        all.results.iter().all(|r| r.verdict == Verdict::Pass),
        "{all:?}"
    );
    assert_eq!(busy.asked.lock().unwrap().len(), 6, "each asked twice");
}

#[tokio::test]
async fn a_round_that_cannot_read_its_documents_starts_again() {
    let worker = Worker::default();
    let (baseline, canary) = (serve(worker.clone()).await, serve(worker).await);
    let rounds = QualityRounds::default();
    let http = reqwest::Client::new();
    let comparison = comparison(baseline, canary, 2);
    let missing = async { Err("golden-document ConfigMap parsing/golden not found".to_owned()) };
    rounds.poll("parsing/docs", comparison.clone(), &[], &http, missing);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let failed = rounds.poll("parsing/docs", comparison.clone(), &[], &http, async {
        Ok(golden(2))
    });
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not found")),
        "{failed:?}"
    );
    // That poll started it again, with documents this time.
    let done = until(&rounds, &comparison, &[], 2, |p| p.results.len() == 2).await;
    assert_eq!(done.error, None);
}

#[tokio::test]
async fn a_cancelled_round_sends_nothing_more() {
    let slow = Worker {
        delay: Duration::from_millis(200),
        ..Worker::default()
    };
    let (baseline, canary) = (serve(slow.clone()).await, serve(slow.clone()).await);
    let rounds = QualityRounds::default();
    let comparison = Comparison {
        concurrency: 1,
        ..comparison(baseline, canary, 10)
    };
    until(&rounds, &comparison, &[], 10, |p| !p.results.is_empty()).await;
    rounds.cancel("parsing/docs");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = slow.asked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        slow.asked.lock().unwrap().len(),
        asked,
        "asked after cancel"
    );
    assert!(asked < 20, "the round stopped short: {asked}");
}
