//! The simulator's behaviour and the client's resilience against it: retries through injected
//! 503s, dropped connections and restarts, the concurrency limit, scenarios and metrics.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::sync::Arc;
use std::time::Duration;

use mineru_protocol::chat::Step;
use mineru_protocol::client::{ClientConfig, ClientError, VlmClient};
use mineru_worker::simulator::{
    self, Faults, LayoutAnswer, Scenario, SimConfig, SimHandle, page_key,
};
use mineru_worker::vlm::layout_png;

const MODEL: &str = "mineru2.5";

fn block_png() -> Vec<u8> {
    let image = image::RgbImage::from_pixel(120, 40, image::Rgb([255, 255, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

/// A client that retries quickly, so tests do not wait for production backoffs.
fn fast_retries(sim: &SimHandle, max_retries: u32) -> ClientConfig {
    ClientConfig {
        max_retries,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..ClientConfig::new(sim.url())
    }
}

async fn start(config: SimConfig) -> SimHandle {
    simulator::start_local(config)
        .await
        .expect("start simulator")
}

#[tokio::test]
async fn retries_through_injected_503s() {
    let sim = start(SimConfig::new(MODEL)).await;
    let client = VlmClient::connect(fast_retries(&sim, 3))
        .await
        .expect("connect");
    sim.set_faults(Faults {
        fail_next: 3,
        ..Faults::default()
    });
    let answer = client
        .complete(Step::Text, &block_png())
        .await
        .expect("answer after retries");
    assert_eq!(answer.content, "Simulated text.");
    assert_eq!(sim.stats().injected_errors, 3);
}

#[tokio::test]
async fn honours_retry_after() {
    let sim = start(SimConfig::new(MODEL)).await;
    let client = VlmClient::connect(fast_retries(&sim, 3))
        .await
        .expect("connect");
    sim.set_faults(Faults {
        fail_next: 1,
        retry_after_secs: Some(1),
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    client
        .complete(Step::Text, &block_png())
        .await
        .expect("answer after waiting");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retries_through_dropped_connections() {
    let sim = start(SimConfig::new(MODEL)).await;
    let client = VlmClient::connect(fast_retries(&sim, 3))
        .await
        .expect("connect");
    sim.set_faults(Faults {
        drop_next: 2,
        ..Faults::default()
    });
    client
        .complete(Step::Text, &block_png())
        .await
        .expect("answer after retries");
    assert_eq!(sim.stats().dropped_connections, 2);
}

#[tokio::test]
async fn gives_up_after_the_configured_retries_with_a_retryable_error() {
    let sim = start(SimConfig::new(MODEL)).await;
    let client = VlmClient::connect(fast_retries(&sim, 2))
        .await
        .expect("connect");
    sim.set_faults(Faults {
        fail_next: 10,
        ..Faults::default()
    });
    let err = client
        .complete(Step::Table, &block_png())
        .await
        .expect_err("exhausted");
    assert!(
        matches!(err, ClientError::Call { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(sim.stats().injected_errors, 3);
}

#[tokio::test]
async fn refusals_are_not_retried() {
    let sim = start(SimConfig::new(MODEL)).await;
    let client = VlmClient::connect(fast_retries(&sim, 3))
        .await
        .expect("connect");
    // A 1×1 block image breaks the protocol: the server refuses it once, for good.
    let mut tiny = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(1, 1)
        .write_to(&mut tiny, image::ImageFormat::Png)
        .expect("encode");
    let err = client
        .complete(Step::Text, tiny.get_ref())
        .await
        .expect_err("refused");
    assert!(
        matches!(err, ClientError::Call { attempts: 1, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(sim.deviations(), 1);
}

#[tokio::test]
async fn no_request_is_lost_under_random_faults() {
    let sim = start(SimConfig {
        faults: Faults {
            error_rate: 0.3,
            drop_rate: 0.1,
            latency_ms: 1,
            latency_jitter_ms: 5,
            ..Faults::default()
        },
        seed: 7,
        ..SimConfig::new(MODEL)
    })
    .await;
    let client = VlmClient::connect(fast_retries(&sim, 20))
        .await
        .expect("connect");
    let png = block_png();
    let calls = (0..60).map(|_| client.complete(Step::Text, &png));
    let answers = futures::future::join_all(calls).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let stats = sim.stats();
    assert_eq!(stats.answered.get("text"), Some(&60));
    assert!(stats.injected_errors + stats.dropped_connections > 0);
    assert_eq!(sim.deviations(), 0);
}

#[tokio::test]
async fn client_honours_its_concurrency_limit() {
    let sim = start(SimConfig {
        faults: Faults {
            latency_ms: 30,
            ..Faults::default()
        },
        ..SimConfig::new(MODEL)
    })
    .await;
    let client = VlmClient::connect(ClientConfig {
        max_in_flight: 4,
        ..ClientConfig::new(sim.url())
    })
    .await
    .expect("connect");
    let png = block_png();
    // Two clones share one limit, as pages and blocks of a worker do.
    let other = client.clone();
    let calls = (0..40).map(|i| {
        let c = if i % 2 == 0 { &client } else { &other };
        c.complete(Step::Text, &png)
    });
    for answer in futures::future::join_all(calls).await {
        answer.expect("answer");
    }
    assert_eq!(sim.stats().max_in_flight, 4);
}

#[tokio::test]
async fn survives_a_server_restart() {
    let sim = start(SimConfig {
        faults: Faults {
            latency_ms: 200,
            ..Faults::default()
        },
        ..SimConfig::new(MODEL)
    })
    .await;
    let client = Arc::new(
        VlmClient::connect(ClientConfig {
            max_retries: 8,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            ..ClientConfig::new(sim.url())
        })
        .await
        .expect("connect"),
    );
    let png = Arc::new(block_png());
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (client, png) = (client.clone(), png.clone());
            tokio::spawn(async move { client.complete(Step::Text, &png).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    sim.restart(Duration::from_millis(400));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = reqwest::get(format!("{}/health", sim.url())).await;
    assert!(health.is_err(), "health must fail while the server is down");
    for call in calls {
        call.await.expect("task").expect("answer after restart");
    }
    let health = reqwest::get(format!("{}/health", sim.url()))
        .await
        .expect("health after restart");
    assert!(health.status().is_success());
}

#[tokio::test]
async fn admin_endpoint_changes_faults_at_run_time() {
    let sim = start(SimConfig::new(MODEL)).await;
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{}/admin/faults", sim.url()))
        .json(&serde_json::json!({"fail_next": 1}))
        .send()
        .await
        .expect("put faults");
    assert!(put.status().is_success());
    let client = VlmClient::connect(ClientConfig {
        max_retries: 0,
        ..ClientConfig::new(sim.url())
    })
    .await
    .expect("connect");
    let err = client
        .complete(Step::Text, &block_png())
        .await
        .expect_err("injected 503");
    assert!(err.is_retryable(), "{err}");
    client
        .complete(Step::Text, &block_png())
        .await
        .expect("healthy again");
    let stats: serde_json::Value = http
        .get(format!("{}/admin/stats", sim.url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    assert_eq!(stats["injected_errors"], 1);
}

#[tokio::test]
async fn scenario_answers_layout_per_page_and_content_per_step() {
    let page = image::RgbImage::from_pixel(850, 1100, image::Rgb([255, 255, 255]));
    let layout = layout_png(&page).expect("layout image");
    let decoded = image::load_from_memory(&layout)
        .expect("decode")
        .into_rgb8();
    let raw = "<|box_start|>0 0 1000 1000<|box_end|><|ref_start|>image<|ref_end|><|rotate_up|>";
    let scenario = Scenario {
        pages: BTreeMap::from([(page_key(&decoded), LayoutAnswer::Raw(raw.into()))]),
        content: BTreeMap::from([("equation".to_owned(), "x^2".to_owned())]),
        ..Scenario::default()
    };
    let sim = start(SimConfig {
        scenario,
        ..SimConfig::new(MODEL)
    })
    .await;
    let client = VlmClient::connect(ClientConfig::new(sim.url()))
        .await
        .expect("connect");
    let answer = client
        .complete(Step::Layout, &layout)
        .await
        .expect("layout");
    assert_eq!(answer.content, raw);
    let other = layout_png(&image::RgbImage::new(850, 1100)).expect("layout image");
    let answer = client.complete(Step::Layout, &other).await.expect("layout");
    assert!(
        answer.content.contains("<|ref_start|>title<|ref_end|>"),
        "default layout"
    );
    let answer = client
        .complete(Step::Equation, &block_png())
        .await
        .expect("equation");
    assert_eq!(answer.content, "x^2");
}

#[test]
fn scenario_files_parse_from_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("scenario.yaml");
    std::fs::write(
        &path,
        "layout:\n  - {type: title, bbox: [100, 60, 900, 110]}\n  - {type: text, bbox: [100, 130, 900, 400], angle: 90, continues_previous: true}\ncontent:\n  text: Hello\n  table: \"<fcel>{size}<nl>\"\n",
    )
    .expect("write");
    let scenario = Scenario::load(&path).expect("load");
    let stream = scenario.layout_for(None);
    assert!(
        stream.contains("<|ref_start|>text<|ref_end|><|rotate_right|>txt_contd_tgt"),
        "{stream}"
    );
    assert_eq!(scenario.content_for(Step::Text, (10, 20)), "Hello");
    assert_eq!(
        scenario.content_for(Step::Table, (640, 28)),
        "<fcel>640x28<nl>",
        "{{size}} is the image's size"
    );

    std::fs::write(&path, "content:\n  footnote: x\n").expect("write");
    assert!(
        Scenario::load(&path).is_err(),
        "unknown step names are refused"
    );
}

#[tokio::test]
async fn metrics_are_named_and_labelled_like_vllm() {
    let sim = start(SimConfig::new(MODEL)).await;
    let client = VlmClient::connect(ClientConfig::new(sim.url()))
        .await
        .expect("connect");
    client
        .complete(Step::Text, &block_png())
        .await
        .expect("answer");
    let text = reqwest::get(format!("{}/metrics", sim.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "vllm:num_requests_running{model_name=\"mineru2.5\"} 0",
        "vllm:num_requests_waiting{model_name=\"mineru2.5\"} 0",
        "vllm:kv_cache_usage_perc{model_name=\"mineru2.5\"}",
        "vllm:request_success_total{model_name=\"mineru2.5\",finished_reason=\"stop\"} 1",
        "vllm:e2e_request_latency_seconds_count{model_name=\"mineru2.5\"} 1",
        "vllm:generation_tokens_total{model_name=\"mineru2.5\"} 4",
        "vllm:time_to_first_token_seconds_bucket{",
        "vllm_sim_protocol_deviations",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

/// Starts `command` (a simulator on a free port, without VLLM_API_KEY from the environment) and
/// reads the address it prints.
fn spawn_serving(command: &mut std::process::Command) -> (std::process::Child, String) {
    let mut child = command
        .env_remove("VLLM_API_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the simulator");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read address");
    (child, line.trim().to_owned())
}

#[test]
fn binary_prints_its_address_and_serves() {
    let (mut child, addr) = spawn_serving(
        std::process::Command::new(env!("CARGO_BIN_EXE_vllm-sim"))
            .args(["--port", "0", "--model", "m"]),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let models = runtime.block_on(async {
        reqwest::get(format!("http://{addr}/v1/models"))
            .await
            .expect("models")
            .json::<serde_json::Value>()
            .await
            .expect("json")
    });
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(models["data"][0]["id"], "m");
}

/// `vllm serve` as the operator's StatefulSet runs it, through a `vllm` link to the binary.
#[test]
fn installed_as_vllm_it_takes_the_operators_serve_command_line_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vllm = dir.path().join("vllm");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vllm-sim"), &vllm).expect("link");
    let (mut child, addr) = spawn_serving(std::process::Command::new(&vllm).args([
        "serve",
        "opendatalab/MinerU2.5-2509-1.2B",
        "--served-model-name",
        "docs-model",
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--gpu-memory-utilization",
        "0.9",
        "--max-model-len",
        "8192",
        "--logits-processors",
        "mineru_vl_utils:MinerULogitsProcessor",
        "--tensor-parallel-size",
        "2",
    ]));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let models = runtime.block_on(async {
        reqwest::get(format!("http://{addr}/v1/models"))
            .await
            .expect("models")
            .json::<serde_json::Value>()
            .await
            .expect("json")
    });
    assert_eq!(models["data"][0]["id"], "docs-model");
    // The kubelet stops a container with SIGTERM; a PID 1 that ignored it would be killed.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert!(child.wait().expect("wait").success());
}

#[test]
fn vllm_serve_refuses_flags_the_operator_does_not_pass() {
    for args in [
        &["serve", "m", "--enforce-eager"][..],
        &["serve", "m", "--model", "m"],
        &["serve"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_vllm-sim"))
            .args(args)
            .output()
            .expect("run vllm-sim serve");
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("error:") && stderr.contains("Usage:"),
            "{args:?}: {stderr}"
        );
    }
}

/// `--max-num-seqs`, which a user's `extraArgs` adds to the operator's command line
/// (examples/production.yaml): accepted by `vllm serve`, and a bad value refused.
#[test]
fn vllm_serve_takes_max_num_seqs_from_extra_args() {
    let (mut child, addr) = spawn_serving(
        std::process::Command::new(env!("CARGO_BIN_EXE_vllm-sim")).args([
            "serve",
            "m",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--max-num-seqs",
            "2",
        ]),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let health = runtime.block_on(async { reqwest::get(format!("http://{addr}/health")).await });
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert!(health.expect("health").status().is_success());

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vllm-sim"))
        .args(["serve", "m", "--max-num-seqs", "many"])
        .output()
        .expect("run vllm-sim serve");
    assert!(!output.status.success(), "--max-num-seqs many was accepted");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-num-seqs"));
}
