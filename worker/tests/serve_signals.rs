//! The document-level quality signals in `/metrics`, against a simulator that truncates, loops
//! or finds nothing, and probe documents counted apart from clients'.

mod serve_common;

use std::collections::BTreeMap;

use mineru_worker::simulator::{LayoutAnswer, Scenario, SimConfig};
use reqwest::StatusCode;
use serve_common::{Metrics, REVISION, Worker, form, pdf, sim, sim_config};

/// Parses `pages` with the vlm backend against a simulator answering from `scenario`, and
/// returns the worker's metrics.
async fn parsed(scenario: Scenario, pages: &[&str]) -> Metrics {
    let sim = sim(SimConfig {
        scenario,
        ..sim_config()
    })
    .await;
    let worker = Worker::vlm(&sim, &[]).await;
    let response = worker.parse(form("doc.pdf", pdf(pages), "vlm")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(sim.deviations(), 0, "{:?}", sim.deviation_log());
    worker.metrics().await
}

fn signal(metrics: &Metrics, name: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let mut labels = vec![("revision", REVISION), ("backend", "vlm")];
    labels.extend_from_slice(extra);
    metrics.value(name, &labels)
}

fn flagged(metrics: &Metrics, signal_name: &str) -> Option<f64> {
    signal(
        metrics,
        "mineru_worker_flagged_documents_total",
        &[("signal", signal_name)],
    )
}

#[tokio::test]
async fn a_healthy_reading_flags_nothing_and_counts_its_blocks() {
    let metrics = parsed(Scenario::default(), &["One page", "Another page"]).await;
    assert_eq!(
        signal(&metrics, "mineru_worker_documents_total", &[]),
        Some(1.0)
    );
    for name in ["truncated", "repetition", "empty_page"] {
        assert_eq!(flagged(&metrics, name), Some(0.0), "{name}");
    }
    // The default layout: a title, two paragraphs, a table and an equation per page, and page
    // furniture that does not count.
    let blocks = |kind| {
        signal(
            &metrics,
            "mineru_worker_blocks_total",
            &[("block_type", kind)],
        )
    };
    assert_eq!(blocks("text"), Some(4.0));
    assert_eq!(blocks("table"), Some(2.0));
    assert_eq!(blocks("header"), None);
    let pages_with_at_most =
        |le| signal(&metrics, "mineru_worker_page_blocks_bucket", &[("le", le)]);
    assert_eq!(pages_with_at_most("4.0"), Some(0.0));
    assert_eq!(pages_with_at_most("8.0"), Some(2.0));
    assert_eq!(
        signal(&metrics, "mineru_worker_page_blocks_count", &[]),
        Some(2.0)
    );
}

#[tokio::test]
async fn answers_cut_at_the_length_limit_are_counted_per_answer_and_per_document() {
    let metrics = parsed(
        Scenario {
            truncated: vec!["table".into()],
            ..Scenario::default()
        },
        &["One page", "Another page"],
    )
    .await;
    assert_eq!(
        signal(&metrics, "mineru_worker_truncated_answers_total", &[]),
        Some(2.0),
        "one table per page"
    );
    assert_eq!(flagged(&metrics, "truncated"), Some(1.0));
    assert_eq!(flagged(&metrics, "repetition"), Some(0.0));
}

#[tokio::test]
async fn an_answer_that_loops_is_degenerate_repetition() {
    let metrics = parsed(
        Scenario {
            content: BTreeMap::from([("text".to_owned(), "and the model goes on ".repeat(12))]),
            ..Scenario::default()
        },
        &["One page"],
    )
    .await;
    // Every block read with the text prompt loops: the title, both paragraphs, and the page
    // furniture (header, page number).
    assert_eq!(
        signal(&metrics, "mineru_worker_repetitive_blocks_total", &[]),
        Some(5.0)
    );
    assert_eq!(flagged(&metrics, "repetition"), Some(1.0));
    assert_eq!(flagged(&metrics, "truncated"), Some(0.0));
}

#[tokio::test]
async fn a_page_with_ink_and_no_block_is_empty_and_a_blank_page_is_not() {
    let metrics = parsed(
        Scenario {
            layout: LayoutAnswer::Blocks(Vec::new()),
            ..Scenario::default()
        },
        &["Words the model did not see", ""],
    )
    .await;
    assert_eq!(
        signal(&metrics, "mineru_worker_empty_pages_total", &[]),
        Some(1.0),
        "the blank page has nothing to read"
    );
    assert_eq!(flagged(&metrics, "empty_page"), Some(1.0));
    assert_eq!(
        signal(
            &metrics,
            "mineru_worker_page_blocks_bucket",
            &[("le", "0.0")]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn probe_documents_are_counted_apart_from_clients() {
    let sim = sim(sim_config()).await;
    let worker = Worker::vlm(&sim, &[]).await;
    let probe = worker
        .http
        .post(worker.url("/file_parse"))
        .header("x-mineru-source", "probe")
        .multipart(form("golden.pdf", pdf(&["A golden page"]), "vlm"))
        .send()
        .await
        .expect("answered");
    assert_eq!(probe.status(), StatusCode::OK);
    let client = worker.parse(form("doc.pdf", pdf(&["x", "y"]), "vlm")).await;
    assert_eq!(client.status(), StatusCode::OK);
    let metrics = worker.metrics().await;
    let count = |name, source| signal(&metrics, name, &[("source", source)]);
    let requests = |source| {
        signal(
            &metrics,
            "mineru_worker_requests_total",
            &[("source", source), ("outcome", "success")],
        )
    };
    assert_eq!(requests("probe"), Some(1.0));
    assert_eq!(requests("traffic"), Some(1.0));
    assert_eq!(count("mineru_worker_pages_total", "probe"), Some(1.0));
    assert_eq!(count("mineru_worker_pages_total", "traffic"), Some(2.0));
    assert_eq!(count("mineru_worker_documents_total", "probe"), Some(1.0));
}
