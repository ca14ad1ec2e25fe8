//! The `mineru-worker` binary run the way the container image runs it: `serve` with the arguments
//! the operator's Deployment passes, configuration only from the environment the pod gets, libpdfium
//! through `PDFIUM_DYNAMIC_LIB_PATH`, a working directory that must stay empty (the image's root
//! filesystem is read-only), JSON logs, and SIGTERM with a request in flight.

mod serve_common;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mineru_worker::pdf;
use mineru_worker::simulator::{Faults, SimConfig};
use reqwest::StatusCode;
use serve_common::{MODEL, form, pdf, sim, sim_config};

const BINARY: &str = env!("CARGO_BIN_EXE_mineru-worker");

/// libpdfium as the worker itself would find it here; the image sets the variable instead.
fn pdfium_path() -> PathBuf {
    pdf::library_candidates(
        std::env::var_os(pdf::PDFIUM_PATH_ENV).map(PathBuf::from),
        Some(PathBuf::from(BINARY)),
        pdf::cache_dir(),
    )
    .into_iter()
    .find(|p| p.is_file())
    .expect("libpdfium: run worker/scripts/install-pdfium.sh")
}

impl Drop for Process {
    /// A test that fails half-way leaves no worker (nor its render subprocesses) behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peak_rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Process {
    /// Starts `command` (which pipes stderr) and follows its log.
    fn spawn(mut command: Command) -> Process {
        let mut child = command.spawn().expect("start mineru-worker serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The most memory the process has held (`VmHWM`), in bytes, and that of each of its
    /// render subprocesses alive now.
    fn peak_rss(&self) -> (u64, Vec<u64>) {
        let pid = self.child.id();
        // Each thread lists the children it started.
        let mut children = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("proc tasks") {
            let listed = std::fs::read_to_string(task.expect("task").path().join("children"))
                .unwrap_or_default();
            children.extend(
                listed
                    .split_whitespace()
                    .filter_map(|child| child.parse::<u32>().ok())
                    .map(peak_rss_of),
            );
        }
        (peak_rss_of(pid), children)
    }

    /// The next stderr line, within a generous bound so a broken start fails instead of hanging.
    fn next_line(&mut self) -> Option<String> {
        let line = self.lines.recv_timeout(Duration::from_secs(60)).ok()?;
        self.log.push(line.clone());
        Some(line)
    }

    /// Reads the log up to the "serving" line and returns the bound port.
    fn port(&mut self) -> u16 {
        while let Some(line) = self.next_line() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                panic!("not a JSON log line: {line}");
            };
            if entry["fields"]["message"] == "serving" {
                let addr = entry["fields"]["addr"].as_str().expect("addr field");
                return addr
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port");
            }
        }
        panic!("the worker never said it was serving: {:?}", self.log);
    }

    /// The rest of the log, once the process has exited.
    fn drain(&mut self) -> &[String] {
        while self.next_line().is_some() {}
        &self.log
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_as_the_image_runs_it_and_drains_on_sigterm() {
    let sim = sim(SimConfig {
        api_key: Some("s3cret".into()),
        ..sim_config()
    })
    .await;
    let secret = tempfile::tempdir().expect("tempdir");
    let key_file = secret.path().join("api-key");
    std::fs::write(&key_file, "s3cret\n").expect("write key");
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tempfile::tempdir().expect("tempdir");

    let mut command = Command::new(BINARY);
    command
        // The operator's arguments (operator/src/reconcile/deployment.rs), then overrides that
        // let the test pick a free loopback port and log as JSON.
        .args([
            "serve",
            "--port",
            "8000",
            "--backend",
            "vlm",
            "--server-url",
        ])
        .arg(sim.url())
        .args(["--model-name", MODEL, "--max-concurrent-documents", "8"])
        .args([
            "--max-file-bytes",
            "100Mi",
            "--max-pages",
            "50",
            "--api-key-file",
        ])
        .arg(&key_file)
        .args(["--port", "0", "--host", "127.0.0.1", "--log-format", "json"])
        .env_clear()
        .env("MINERU_REVISION", "w-image")
        .env("TMPDIR", tmp.path())
        .env(pdf::PDFIUM_PATH_ENV, pdfium_path())
        .current_dir(cwd.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut process = Process::spawn(command);
    let base = format!("http://127.0.0.1:{}", process.port());
    let http = reqwest::Client::new();

    let ready = http
        .get(format!("{base}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "{}",
        ready.text().await.unwrap_or_default()
    );
    let response = http
        .post(format!("{base}/file_parse"))
        .header("x-request-id", "img-1")
        .multipart(form("doc.pdf", pdf(&["x"]), "vlm"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "mineru_worker_requests_total{revision=\"w-image\",backend=\"vlm\",source=\"traffic\",outcome=\"success\"} 1"
        ),
        "{metrics}"
    );

    // SIGTERM with a document in flight: it completes, then the process exits cleanly.
    sim.set_faults(Faults {
        latency_ms: 500,
        ..Faults::default()
    });
    let in_flight = tokio::spawn({
        let (http, url) = (http.clone(), format!("{base}/file_parse"));
        async move {
            http.post(url)
                .multipart(form("late.pdf", pdf(&["y"]), "vlm"))
                .send()
                .await
                .map(|r| r.status())
        }
    });
    while sim.stats().in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = process.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(
        in_flight.await.expect("task").expect("answered"),
        StatusCode::OK
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = process.child.wait().expect("wait");
        (status, process)
    })
    .await
    .expect("wait task");
    let (status, mut process) = status;
    assert!(status.success(), "exit status {status}");

    let log = process.drain();
    let request_lines: Vec<serde_json::Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["span"]["request_id"] == "img-1")
        .collect();
    assert!(
        request_lines
            .iter()
            .any(|e| e["fields"]["message"] == "request done"),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:?}");
    for dir in [cwd.path(), tmp.path()] {
        let written: Vec<_> = std::fs::read_dir(dir).expect("read dir").collect();
        assert!(
            written.is_empty(),
            "{} was written to: {written:?}",
            dir.display()
        );
    }
}

/// 100 clients upload 8 MiB documents at once to a worker taking 4: the excess is refused with
/// 429 and `Retry-After` that every client receives, the admitted ones are parsed, and the
/// worker's peak memory stays within what its limits allow — the operator's formula for the
/// pod's memory limit, `128Mi + 4 × (2 × 8Mi + 64Mi)` for the server, each render subprocess
/// within its own `--render-memory` — refused uploads are never buffered, admitted ones spill to
/// `TMPDIR` and are gone with their requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_large_uploads_at_once_stay_within_the_memory_the_limits_allow() {
    const DOCUMENTS: u64 = 4;
    const FILE_MIB: u64 = 8;
    let spill = tempfile::tempdir().expect("a TMPDIR of its own");
    let mut command = Command::new(BINARY);
    command
        .args([
            "serve",
            "--backend",
            "text",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .args(["--max-concurrent-documents", &DOCUMENTS.to_string()])
        .args(["--render-processes", "2", "--render-memory", "768Mi"])
        .args(["--upload-spill-bytes", "1Mi"])
        .env("TMPDIR", spill.path())
        .args([
            "--max-file-bytes",
            &format!("{FILE_MIB}Mi"),
            "--log-format",
            "json",
        ])
        .env(pdf::PDFIUM_PATH_ENV, pdfium_path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut process = Process::spawn(command);
    let base = format!("http://127.0.0.1:{}", process.port());

    // A real document padded to just under the limit with a comment after its header line
    // (pdfium finds its objects again by scanning).
    let original = pdf(&["padded"]);
    let header = original
        .iter()
        .position(|&b| b == b'\n')
        .expect("header line")
        + 1;
    let padding = (FILE_MIB << 20) as usize - original.len() - 4096;
    let mut document = original[..header].to_vec();
    document.push(b'%');
    document.resize(header + 1 + padding, b'A');
    document.push(b'\n');
    document.extend_from_slice(&original[header..]);
    let document = axum::body::Bytes::from(document);
    let http = reqwest::Client::new();
    let uploads: Vec<_> = (0..100)
        .map(|i| {
            let (http, url, document) =
                (http.clone(), format!("{base}/file_parse"), document.clone());
            tokio::spawn(async move {
                let length = document.len() as u64;
                let part = reqwest::multipart::Part::stream_with_length(document, length)
                    .file_name(format!("big-{i}.pdf"));
                let form = reqwest::multipart::Form::new()
                    .part("files", part)
                    .text("backend", "text");
                let response = http
                    .post(url)
                    .multipart(form)
                    .send()
                    .await
                    .expect("every client receives an answer, refusals included");
                (response.status(), serve_common::retry_after(&response))
            })
        })
        .collect();
    let mut parsed = 0;
    let mut refused = 0;
    for upload in uploads {
        match upload.await.expect("upload task") {
            (StatusCode::OK, _) => parsed += 1,
            (StatusCode::TOO_MANY_REQUESTS, Some(_)) => refused += 1,
            other => panic!("neither parsed nor refused with Retry-After: {other:?}"),
        }
    }
    assert!(parsed >= DOCUMENTS, "{parsed} parsed");
    assert!(refused > 0, "100 at once against {DOCUMENTS} slots");
    let bound = (128 + DOCUMENTS * (2 * FILE_MIB + 64)) << 20;
    let (peak, children) = process.peak_rss();
    eprintln!(
        "{parsed} parsed, {refused} refused; peak RSS {} MiB (bound {} MiB), render \
         subprocesses {:?} MiB",
        peak >> 20,
        bound >> 20,
        children.iter().map(|c| c >> 20).collect::<Vec<_>>()
    );
    assert!(peak < bound, "peak RSS {peak} over the bound {bound}");
    assert_eq!(children.len(), 2, "both render subprocesses took documents");
    for child in children {
        assert!(child < 768 << 20, "a render subprocess held {child} bytes");
    }
    // The worker's own job store (removed when it exits) is no spilled upload.
    let left: Vec<_> = std::fs::read_dir(spill.path())
        .expect("TMPDIR")
        .filter_map(Result::ok)
        .filter(|e| {
            !e.file_name()
                .to_string_lossy()
                .starts_with("mineru-worker-jobs-")
        })
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "spilled uploads outlived their requests: {left:?}"
    );
}
