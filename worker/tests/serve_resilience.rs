//! `mineru-worker serve` when the vLLM tier misbehaves: retries, the circuit breaker, a restart
//! under load with no request lost, authentication and key rotation, graceful shutdown.

mod serve_common;

use std::time::Duration;

use mineru_worker::simulator::{Faults, SimConfig};
use reqwest::StatusCode;
use serve_common::{MODEL, Worker, form, pdf, retry_after, sim, sim_config};

/// Polls `/ready` until it answers `want` (the worker's own verdict, not a guessed sleep).
async fn wait_ready(worker: &Worker, want: StatusCode) {
    for _ in 0..500 {
        if worker.get("/ready").await.status() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("/ready never answered {want}");
}

#[tokio::test]
async fn failed_vllm_calls_are_retried_and_counted() {
    let sim = sim(SimConfig {
        faults: Faults {
            drop_next: 1,
            fail_next: 2,
            ..Faults::default()
        },
        ..sim_config()
    })
    .await;
    let worker = Worker::vlm(&sim, &["--vllm-retries", "3"]).await;
    let response = worker.parse(form("a.pdf", pdf(&["x"]), "vlm")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let metrics = worker.metrics().await;
    let calls =
        |status: &str| metrics.value("mineru_worker_vllm_requests_total", &[("status", status)]);
    assert_eq!(calls("transport"), Some(1.0));
    assert_eq!(calls("503"), Some(2.0));
    assert!(
        calls("200").is_some_and(|n| n >= 2.0),
        "models + layout at least"
    );
    assert_eq!(
        metrics.value("mineru_worker_vllm_retries_total", &[]),
        Some(3.0)
    );
    assert_eq!(
        metrics.value("mineru_worker_breaker_opens_total", &[]),
        Some(0.0),
        "three failures are under the default threshold of five"
    );
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_and_closes_after_a_successful_probe() {
    let sim = sim(sim_config()).await;
    let worker = Worker::vlm(
        &sim,
        &[
            "--vllm-retries",
            "1",
            "--breaker-failures",
            "3",
            "--breaker-cool-down",
            "1s",
        ],
    )
    .await;
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    for _ in 0..2 {
        let failed = worker.parse(form("a.pdf", pdf(&["x"]), "vlm")).await;
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            retry_after(&failed).is_some(),
            "a retryable failure says when"
        );
    }
    let metrics = worker.metrics().await;
    assert_eq!(metrics.value("mineru_worker_breaker_state", &[]), Some(2.0));
    // The second document waited out the cool-down and probed: a failed probe opens it again.
    assert!(
        metrics
            .value("mineru_worker_breaker_opens_total", &[])
            .is_some_and(|n| n >= 1.0)
    );

    let sent = sim.stats().requests;
    let fast = worker.parse(form("a.pdf", pdf(&["x"]), "vlm")).await;
    assert_eq!(fast.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after(&fast).is_some_and(|s| s >= 1));
    let body: serde_json::Value = fast.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("circuit breaker"),
        "{body}"
    );
    assert_eq!(sim.stats().requests, sent, "refused without calling vLLM");
    // The worker keeps its place in the Service: its clients get 503s with Retry-After, not
    // refused connections.
    assert_eq!(worker.get("/ready").await.status(), StatusCode::OK);

    sim.set_faults(Faults::default());
    // After the cool-down the breaker half-opens; the next document probes the tier.
    worker
        .wait_for_metric("mineru_worker_breaker_state", &[], 1.0)
        .await;
    let ok = worker.parse(form("a.pdf", pdf(&["x"]), "vlm")).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let metrics = worker.metrics().await;
    assert_eq!(metrics.value("mineru_worker_breaker_state", &[]), Some(0.0));
    let rejected = metrics.value(
        "mineru_worker_requests_total",
        &[("backend", "vlm"), ("outcome", "rejected")],
    );
    assert_eq!(rejected, Some(1.0));
    let errors = metrics.value(
        "mineru_worker_requests_total",
        &[("backend", "vlm"), ("outcome", "error")],
    );
    assert_eq!(errors, Some(2.0));
}

#[tokio::test]
async fn a_probe_document_closes_a_half_open_breaker() {
    let sim = sim(sim_config()).await;
    let worker = Worker::vlm(
        &sim,
        &[
            "--vllm-retries",
            "0",
            "--breaker-failures",
            "1",
            "--breaker-cool-down",
            "200ms",
        ],
    )
    .await;
    sim.set_faults(Faults {
        fail_next: 1,
        ..Faults::default()
    });
    let failed = worker.parse(form("a.pdf", pdf(&["x"]), "vlm")).await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    worker
        .wait_for_metric("mineru_worker_breaker_state", &[], 1.0)
        .await;
    let probe = worker.parse(form("a.pdf", pdf(&["x"]), "vlm")).await;
    assert_eq!(probe.status(), StatusCode::OK);
    let metrics = worker.metrics().await;
    assert_eq!(metrics.value("mineru_worker_breaker_state", &[]), Some(0.0));
}

/// Sends ten one-page documents, restarting the simulator for `down` once the first are in
/// flight, and checks that every request is answered with success or an explicit retryable
/// failure, and that each answer that is a success is the right one. Returns the statuses.
async fn restart_under_load(down: Duration, worker_args: &[&str]) -> Vec<StatusCode> {
    let sim = sim(SimConfig {
        faults: Faults {
            latency_ms: 100,
            latency_jitter_ms: 50,
            ..Faults::default()
        },
        ..sim_config()
    })
    .await;
    let mut args = vec!["--max-concurrent-documents", "10"];
    args.extend_from_slice(worker_args);
    let worker = Worker::vlm(&sim, &args).await;
    let doc = pdf(&["one"]);
    let send = |i: usize| {
        let (http, url, doc) = (worker.http.clone(), worker.url("/file_parse"), doc.clone());
        tokio::spawn(async move {
            let response = http
                .post(url)
                .multipart(form(&format!("d{i}.pdf"), doc, "vlm"))
                .send()
                .await;
            let response = response?;
            let (status, retry) = (response.status(), retry_after(&response));
            let body: serde_json::Value = response.json().await?;
            Ok::<_, reqwest::Error>((status, retry, body))
        })
    };
    let mut tasks: Vec<_> = (0..5).map(send).collect();
    while sim.stats().in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sim.restart(down);
    tasks.extend((5..10).map(send));

    let mut statuses = Vec::new();
    let mut parsed = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (status, retry, body) = task
            .await
            .expect("task")
            .expect("the worker answered (no dropped connection)");
        assert!(
            status == StatusCode::OK
                || (status == StatusCode::SERVICE_UNAVAILABLE && retry.is_some()),
            "neither success nor an explicit retryable failure: {status} {retry:?} {body}"
        );
        if status == StatusCode::OK {
            parsed.push(body["results"][format!("d{i}")]["md_content"].clone());
        }
        statuses.push(status);
    }
    assert_eq!(statuses.len(), 10);
    let metrics = worker.metrics().await;
    let total: f64 = ["success", "client_error", "rejected", "error", "timeout"]
        .iter()
        .filter_map(|o| {
            metrics.value(
                "mineru_worker_requests_total",
                &[("backend", "vlm"), ("outcome", o)],
            )
        })
        .sum();
    assert_eq!(total, 10.0, "every request is accounted for");
    assert!(
        metrics
            .value("mineru_worker_vllm_retries_total", &[])
            .is_some_and(|n| n > 0.0),
        "requests cut by the restart were retried"
    );
    assert_eq!(sim.deviations(), 0);

    // Once the tier is back the worker serves again, to a client that honours Retry-After
    // while the breaker still holds what it learnt during the outage.
    let models = format!("{}/v1/models", sim.url());
    while !reqwest::get(&models)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut after = worker.parse(form("after.pdf", pdf(&["x"]), "vlm")).await;
    for _ in 0..10 {
        if after.status() != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        let wait = retry_after(&after).expect("a 503 says when to come back");
        tokio::time::sleep(Duration::from_secs(wait)).await;
        after = worker.parse(form("after.pdf", pdf(&["x"]), "vlm")).await;
    }
    assert_eq!(after.status(), StatusCode::OK);
    // The simulator answers every page alike: each success reads as a healthy parse does.
    let body: serde_json::Value = after.json().await.expect("json");
    let expected = &body["results"]["after"]["md_content"];
    assert!(expected.is_string(), "{body}");
    assert!(
        parsed.iter().all(|md| md == expected),
        "a wrong answer: {parsed:?}"
    );
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vllm_restart_shorter_than_the_retry_budget_ends_with_every_document_parsed() {
    // The restart opens the breaker; documents in progress wait out its cool-down (a retry
    // each) instead of failing, then finish.
    let statuses = restart_under_load(
        Duration::from_millis(400),
        &[
            "--vllm-retries",
            "3",
            "--vllm-backoff",
            "100ms",
            "--breaker-cool-down",
            "1s",
        ],
    )
    .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retries_is_answered_503_with_retry_after() {
    let statuses = restart_under_load(
        Duration::from_secs(3),
        &[
            "--vllm-retries",
            "1",
            "--vllm-backoff",
            "20ms",
            "--breaker-cool-down",
            "500ms",
        ],
    )
    .await;
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "the documents cut by the restart could not be retried through it: {statuses:?}"
    );
}

#[tokio::test]
async fn a_worker_without_the_key_is_refused_and_not_ready() {
    let sim = sim(SimConfig {
        api_key: Some("s3cret".into()),
        ..sim_config()
    })
    .await;
    let worker = Worker::vlm(&sim, &[]).await;
    let ready = worker.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert!(
        body["reason"].as_str().unwrap_or_default().contains("401"),
        "{body}"
    );
    let response = worker.parse(form("a.pdf", pdf(&["x"]), "vlm")).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        retry_after(&response).is_none(),
        "a refusal is not retryable"
    );
    let metrics = worker.metrics().await;
    assert_eq!(
        metrics.value("mineru_worker_breaker_opens_total", &[]),
        Some(0.0),
        "a refusal proves the tier is up"
    );
}

#[tokio::test]
async fn the_api_key_file_is_read_and_reloaded_when_it_changes() {
    let sim = sim(SimConfig {
        api_key: Some("s3cret".into()),
        ..sim_config()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("api-key");
    std::fs::write(&key, "stale\n").expect("write key");
    let key_arg = key.to_str().expect("utf-8 path");
    let worker = Worker::vlm(
        &sim,
        &[
            "--model-name",
            MODEL,
            "--api-key-file",
            key_arg,
            "--api-key-poll",
            "20ms",
        ],
    )
    .await;
    assert_eq!(
        worker.get("/ready").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        worker
            .parse(form("a.pdf", pdf(&["x"]), "vlm"))
            .await
            .status(),
        StatusCode::BAD_GATEWAY
    );

    // A Secret update: the new content replaces the file.
    let fresh = dir.path().join("api-key.new");
    std::fs::write(&fresh, "s3cret\n").expect("write key");
    std::fs::rename(&fresh, &key).expect("swap key");
    wait_ready(&worker, StatusCode::OK).await;
    let response = worker.parse(form("a.pdf", pdf(&["x"]), "vlm")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Replaces the key file's content the way the kubelet updates a mounted Secret: a rename.
fn rotate(key: &std::path::Path, to: &str) {
    let fresh = key.with_extension("new");
    std::fs::write(&fresh, format!("{to}\n")).expect("write key");
    std::fs::rename(&fresh, key).expect("swap key");
}

#[tokio::test]
async fn a_rotation_in_the_documented_order_fails_no_document() {
    let sim = sim(SimConfig {
        api_key: Some("old".into()),
        ..sim_config()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("api-key");
    std::fs::write(&key, "old\n").expect("write key");
    let worker = Worker::vlm(
        &sim,
        &[
            "--model-name",
            MODEL,
            "--api-key-file",
            key.to_str().expect("utf-8 path"),
            "--api-key-poll",
            "20ms",
        ],
    )
    .await;
    let parsed = || async {
        worker
            .parse(form("a.pdf", pdf(&["x"]), "vlm"))
            .await
            .status()
    };
    assert_eq!(parsed().await, StatusCode::OK);

    // 1. The Secret gets the new key; the workers read it while vLLM still holds the old one.
    rotate(&key, "new");
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            parsed().await,
            StatusCode::OK,
            "vLLM still takes the old key"
        );
    }
    // 2. vLLM restarts with the new key.
    sim.restart_with_key(Duration::from_millis(50), Some("new".into()));
    wait_ready(&worker, StatusCode::OK).await;
    for _ in 0..5 {
        assert_eq!(parsed().await, StatusCode::OK, "the new key is taken");
    }
    // The other order is the one that fails: vLLM on a key the workers have not read refuses
    // both keys they hold, until the new one reaches them.
    sim.restart_with_key(Duration::from_millis(50), Some("newer".into()));
    let until = |want: StatusCode| async move {
        for _ in 0..200 {
            if parsed().await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("documents never answered {want}");
    };
    until(StatusCode::BAD_GATEWAY).await;
    rotate(&key, "newer");
    until(StatusCode::OK).await;
}

/// The error `serve` stops with at start-up.
async fn start_error(args: &[&str]) -> String {
    let mut argv = vec!["serve"];
    argv.extend_from_slice(args);
    let config =
        <mineru_worker::server::ServeArgs as clap::Parser>::try_parse_from(argv).expect("flags");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    mineru_worker::server::run(config, listener, std::future::pending())
        .await
        .expect_err("refuses to start")
        .to_string()
}

#[tokio::test]
async fn a_missing_key_file_stops_the_worker_at_start() {
    let err = start_error(&[
        "--server-url",
        "http://127.0.0.1:9",
        "--api-key-file",
        "/nonexistent/api-key",
    ])
    .await;
    assert!(err.contains("/nonexistent/api-key"), "{err}");
}

#[tokio::test]
async fn a_call_timeout_that_leaves_no_room_for_retries_stops_the_worker_at_start() {
    let err = start_error(&[
        "--backend",
        "text",
        "--vllm-timeout",
        "10m",
        "--request-timeout",
        "10m",
    ])
    .await;
    assert!(err.contains("--vllm-timeout"), "{err}");
    let err = start_error(&["--backend", "text", "--allow-server-url", "ftp://x"]).await;
    assert!(err.contains("--allow-server-url"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_makes_the_worker_unready_while_it_still_takes_documents() {
    let sim = sim(sim_config()).await;
    let worker = Worker::vlm(&sim, &["--shutdown-delay", "2s"]).await;
    assert_eq!(worker.get("/ready").await.status(), StatusCode::OK);
    let (http, ready, parse) = (
        worker.http.clone(),
        worker.url("/ready"),
        worker.url("/file_parse"),
    );
    let stopping = tokio::spawn(worker.shutdown());
    let mut unready = false;
    for _ in 0..100 {
        let status = http
            .get(&ready)
            .send()
            .await
            .expect("still listening")
            .status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(unready, "/ready turns false at once");
    let response = http
        .post(&parse)
        .multipart(form("a.pdf", pdf(&["x"]), "vlm"))
        .send()
        .await
        .expect("still taking documents");
    assert_eq!(response.status(), StatusCode::OK);
    stopping.await.expect("task").expect("clean shutdown");
}

#[tokio::test]
async fn a_vlm_worker_without_a_tier_stops_at_start() {
    let err = start_error(&["--backend", "vlm"]).await;
    assert!(err.contains("--server-url"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let sim = sim(SimConfig {
        faults: Faults {
            latency_ms: 300,
            ..Faults::default()
        },
        ..sim_config()
    })
    .await;
    let worker = Worker::vlm(&sim, &["--shutdown-grace", "30s"]).await;
    let (http, url, addr) = (worker.http.clone(), worker.url("/file_parse"), worker.addr);
    let in_flight = tokio::spawn(async move {
        let response = http
            .post(url)
            .multipart(form("a.pdf", pdf(&["x"]), "vlm"))
            .send()
            .await
            .expect("answered");
        let status = response.status();
        (status, response.json::<serde_json::Value>().await.is_ok())
    });
    worker
        .wait_for_metric("mineru_worker_inflight_documents", &[], 1.0)
        .await;
    worker.shutdown().await.expect("clean shutdown");
    assert_eq!(in_flight.await.expect("task"), (StatusCode::OK, true));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_waiting_after_the_grace_period() {
    let sim = sim(SimConfig {
        faults: Faults {
            latency_ms: 60_000,
            ..Faults::default()
        },
        ..sim_config()
    })
    .await;
    let worker = Worker::vlm(&sim, &["--shutdown-grace", "100ms"]).await;
    let (http, url) = (worker.http.clone(), worker.url("/file_parse"));
    let in_flight = tokio::spawn(async move {
        http.post(url)
            .multipart(form("a.pdf", pdf(&["x"]), "vlm"))
            .send()
            .await
    });
    worker
        .wait_for_metric("mineru_worker_inflight_documents", &[], 1.0)
        .await;
    worker
        .shutdown()
        .await
        .expect("returns after the grace period");
    // The process exits here; in this test the abandoned request only stops with the runtime.
    assert!(!in_flight.is_finished(), "shutdown did not wait for it");
    in_flight.abort();
}
