//! `mineru-worker serve` behind a fault proxy to the vLLM tier: latency past the call timeout,
//! dropped connections and a partition. Every document ends either correct or refused with 503
//! and `Retry-After` — never lost, never wrong — and the worker serves again once the network
//! heals.

mod serve_common;

use std::time::Duration;

use reqwest::StatusCode;
use serve_common::proxy::{Fault, FaultProxy};
use serve_common::{Worker, form, pdf, retry_after, sim, sim_config};

/// A worker whose vLLM tier is the simulator behind a fault proxy, with quick timeouts, retries
/// and breaker so that a test sees them all within seconds.
/// The stack behind the proxy, and the Markdown of a one-page document parsed while healthy: the
/// simulator answers every page alike, so every document that succeeds must read exactly so.
async fn behind_proxy(
    extra: &[&str],
) -> (
    mineru_worker::simulator::SimHandle,
    FaultProxy,
    Worker,
    String,
) {
    let sim = sim(sim_config()).await;
    let proxy = FaultProxy::start(sim.addr()).await;
    let url = proxy.url();
    let mut args = vec![
        "--backend",
        "vlm",
        "--server-url",
        &url,
        "--vllm-timeout",
        "1s",
        "--vllm-retries",
        "2",
        "--breaker-failures",
        "3",
        "--breaker-cool-down",
        "1s",
        "--request-timeout",
        "60s",
        "--max-concurrent-documents",
        "8",
    ];
    args.extend_from_slice(extra);
    let worker = Worker::start(&args).await;
    let warm = worker.parse(form("warm.pdf", pdf(&["warm"]), "vlm")).await;
    assert_eq!(warm.status(), StatusCode::OK, "a healthy start");
    let body: serde_json::Value = warm.json().await.expect("json");
    let expected = body["results"]["warm"]["md_content"]
        .as_str()
        .expect("markdown")
        .to_owned();
    (sim, proxy, worker, expected)
}

/// Sends `count` one-page documents at once; asserts each ends correct (`expected`) or 503
/// with `Retry-After`, and returns the statuses.
async fn each_correct_or_retryable(
    worker: &Worker,
    count: usize,
    expected: &str,
) -> Vec<StatusCode> {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let (http, url) = (worker.http.clone(), worker.url("/file_parse"));
            let expected = expected.to_owned();
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .multipart(form(&format!("d{i}.pdf"), pdf(&["a page"]), "vlm"))
                    .send()
                    .await
                    .expect("answered, not a dropped connection");
                let (status, retry) = (response.status(), retry_after(&response));
                let body: serde_json::Value = response.json().await.expect("a JSON body");
                if status == StatusCode::OK {
                    let markdown = body["results"][format!("d{i}")]["md_content"]
                        .as_str()
                        .unwrap_or_default();
                    assert_eq!(markdown, expected, "a wrong answer: {body}");
                } else {
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
                    assert!(retry.is_some(), "a refusal says when to retry: {body}");
                }
                status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("document task"));
    }
    statuses
}

/// Once the network heals, the breaker half-opens and the next document closes it.
async fn serves_again(worker: &Worker) {
    worker.wait_breaker_not_open().await;
    let ok = worker
        .parse(form("after.pdf", pdf(&["after"]), "vlm"))
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let metrics = worker.metrics().await;
    assert_eq!(metrics.value("mineru_worker_breaker_state", &[]), Some(0.0));
    assert_eq!(worker.get("/ready").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_past_the_call_timeout_is_retried_opens_the_breaker_and_heals() {
    let (_sim, proxy, worker, expected) = behind_proxy(&[]).await;
    proxy.set(Fault::Latency(Duration::from_secs(5)));
    let statuses = each_correct_or_retryable(&worker, 4, &expected).await;
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "5 s answers against a 1 s timeout cannot all succeed: {statuses:?}"
    );
    let metrics = worker.metrics().await;
    assert!(
        metrics
            .value(
                "mineru_worker_vllm_requests_total",
                &[("status", "timeout")]
            )
            .is_some_and(|n| n > 0.0),
        "slow calls time out"
    );
    assert!(
        metrics
            .value("mineru_worker_vllm_retries_total", &[])
            .is_some_and(|n| n > 0.0),
        "and are retried"
    );
    assert!(
        metrics
            .value("mineru_worker_breaker_opens_total", &[])
            .is_some_and(|n| n >= 1.0),
        "slowness opens the breaker"
    );
    assert_eq!(
        worker.get("/ready").await.status(),
        StatusCode::OK,
        "the worker keeps its place in the Service"
    );
    proxy.set(Fault::None);
    serves_again(&worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_and_a_partition_end_correct_or_retryable_and_heal() {
    let (_sim, proxy, worker, expected) = behind_proxy(&[]).await;
    for fault in [Fault::Drop, Fault::Partition] {
        proxy.set(fault);
        let statuses = each_correct_or_retryable(&worker, 4, &expected).await;
        assert!(
            statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
            "{fault:?}: {statuses:?}"
        );
        proxy.set(Fault::None);
        serves_again(&worker).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_shorter_than_the_retries_loses_no_document() {
    // Backoffs that outlast the blip; the breaker it opens is waited out, not failed on.
    let (_sim, proxy, worker, expected) =
        behind_proxy(&["--vllm-retries", "5", "--vllm-backoff", "100ms"]).await;
    proxy.set(Fault::Drop);
    let heal = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.set(Fault::None);
        proxy
    });
    let statuses = each_correct_or_retryable(&worker, 4, &expected).await;
    let _proxy = heal.await.expect("heal");
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "a 150 ms blip is inside the retry budget: {statuses:?}"
    );
}
