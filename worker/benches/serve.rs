//! `mineru-worker serve` under load, side by side with MinerU's own servers
//! (docs/benchmarks.md, "mineru-worker serve under load"):
//!
//! - text: `mineru-worker serve --backend text` (`POST /file_parse`) against `mineru-api`
//!   4.0.12 in its model-free `flash` tier (`POST /v1/file_parse?tier=flash`, which submits a
//!   job and answers when it has ended);
//! - vlm: `mineru-worker serve --backend vlm` against MinerU 3.4.5's `mineru-api`
//!   (`POST /file_parse` with `backend=vlm-http-client`), both against the same in-process vLLM
//!   simulator with no added latency;
//! - the worker also with `--render-processes 0`, pdfium in process: what isolation costs.
//!
//! Every cell starts a fresh server (and simulator), parses one document untimed, then runs
//! closed-loop clients for [`WINDOW`]: each sends the document, waits for the answer and sends
//! it again; after a 429 it waits for `Retry-After` (or [`PAUSE`]). Answers still outstanding
//! when the window closes are dropped and counted, not timed. Every server keeps its default
//! admission: the worker refuses past `--max-concurrent-documents` (4), MinerU's servers queue.
//! Server CPU is the server's process tree's (`/proc/<pid>/stat`); the clients and the
//! simulator run in this process. Run with `cargo bench -p mineru-worker --bench serve`.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::runtime::Runtime;

use support::{Result, WORKER, own_cpu, tree_pss_kib};

/// Long enough for MinerU's servers to finish a few documents at every concurrency.
const WINDOW: Duration = Duration::from_secs(20);
/// A client's wait after a refusal without `Retry-After`, or an error, so neither spins.
const PAUSE: Duration = Duration::from_millis(100);
const CONCURRENCY: [usize; 4] = [1, 4, 16, 64];
/// Where the worker's in-process pdfium is measured.
const IN_PROCESS_CONCURRENCY: [usize; 2] = [1, 4];
/// The first 4 pages of `long.pdf`: one document takes MinerU's servers over a second, so that
/// each cell still holds several at one client.
const DOCUMENT: &str = "long-4";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("serve: a benchmark; run it with `cargo bench -p mineru-worker --bench serve`");
        return;
    }
    if let Err(error) = run() {
        eprintln!("serve: {error}");
        std::process::exit(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Text,
    Vlm,
}

#[derive(Debug, Clone, Copy)]
enum Server {
    Worker {
        backend: Backend,
        in_process: bool,
    },
    /// `mineru-api` 4.0.12, `--tier flash`.
    Flash,
    /// `mineru-api` 3.4.5, its vlm-http-client backend.
    Mineru3,
}

impl Server {
    fn label(self) -> &'static str {
        match self {
            Server::Worker {
                in_process: false, ..
            } => "worker, render subprocesses",
            Server::Worker {
                in_process: true, ..
            } => "worker, `--render-processes 0`",
            Server::Flash => "mineru-api 4.0.12 flash",
            Server::Mineru3 => "mineru-api 3.4.5 vlm-http-client",
        }
    }
}

/// What the clients of one cell saw, and what the server spent.
struct Cell {
    latencies: Vec<Duration>,
    rejected: u64,
    errors: u64,
    /// The first error's message, to say what the errors were.
    first_error: Option<String>,
    unfinished: u64,
    server_cpu: Duration,
    bench_cpu: Duration,
    peak_mib: f64,
}

impl Cell {
    fn docs_per_s(&self) -> f64 {
        self.latencies.len() as f64 / WINDOW.as_secs_f64()
    }

    fn cpu_per_doc(&self) -> Option<f64> {
        let docs = self.latencies.len();
        (docs > 0).then(|| self.server_cpu.as_secs_f64() / docs as f64)
    }

    /// Nearest-rank percentile of the successful documents' latencies, in seconds.
    fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.latencies.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        self.latencies.get(rank - 1).map(Duration::as_secs_f64)
    }
}

fn run() -> Result<()> {
    let workspace = support::Workspace::prepare()?;
    let pdf =
        std::fs::read(workspace.pdfs.join(format!("{DOCUMENT}.pdf"))).map_err(|e| e.to_string())?;
    let runtime = Runtime::new().map_err(|e| e.to_string())?;

    for backend in [Backend::Text, Backend::Vlm] {
        let (name, peer) = match backend {
            Backend::Text => ("text", Server::Flash),
            Backend::Vlm => ("vlm", Server::Mineru3),
        };
        println!(
            "\n## {name} backend: {DOCUMENT}.pdf, {} s per cell\n",
            WINDOW.as_secs()
        );
        println!(
            "| clients | server | docs | docs/s | p50 ms | p95 ms | 429 share | other errors | unfinished | server CPU s/doc | server peak MiB | client + simulator CPU s |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut ratios = Vec::new();
        for clients in CONCURRENCY {
            let worker = |in_process| Server::Worker {
                backend,
                in_process,
            };
            let mut servers = vec![worker(false)];
            if IN_PROCESS_CONCURRENCY.contains(&clients) {
                servers.push(worker(true));
            }
            servers.push(peer);
            let mut cells = Vec::new();
            for server in servers {
                let cell = measure(&runtime, &workspace, server, &pdf, clients)?;
                let ms = |p| {
                    cell.percentile(p)
                        .map_or("—".into(), |s| format!("{:.1}", s * 1e3))
                };
                let answers = cell.latencies.len() as u64 + cell.rejected + cell.errors;
                println!(
                    "| {clients} | {} | {} | {:.2} | {} | {} | {:.0}% | {} | {} | {} | {:.0} | {:.1} |",
                    server.label(),
                    cell.latencies.len(),
                    cell.docs_per_s(),
                    ms(0.5),
                    ms(0.95),
                    cell.rejected as f64 * 100.0 / answers.max(1) as f64,
                    cell.errors,
                    cell.unfinished,
                    cell.cpu_per_doc().map_or("—".into(), |s| format!("{s:.3}")),
                    cell.peak_mib,
                    cell.bench_cpu.as_secs_f64(),
                );
                if let Some(error) = &cell.first_error {
                    eprintln!("serve: {} at {clients} clients: {error}", server.label());
                }
                cells.push(cell);
            }
            let p50 = |c: &Cell| c.percentile(0.5);
            let (worker, peer) = (&cells[0], &cells[cells.len() - 1]);
            let (isolated, in_process) = match &cells[1..cells.len() - 1] {
                [in_process] => (
                    ratio(Some(in_process.docs_per_s()), Some(worker.docs_per_s())),
                    ratio(worker.cpu_per_doc(), in_process.cpu_per_doc()),
                ),
                _ => ("—".into(), "—".into()),
            };
            ratios.push(format!(
                "| {clients} | {} | {} | {} | {isolated} | {in_process} |",
                ratio(Some(worker.docs_per_s()), Some(peer.docs_per_s())),
                ratio(p50(peer), p50(worker)),
                ratio(peer.cpu_per_doc(), worker.cpu_per_doc()),
            ));
        }
        println!(
            "\n### {name}: ratios\n\nThe worker with render subprocesses against {}, and against itself with \
             pdfium in process.\n\n| clients | docs/s, worker / MinerU | p50, MinerU / worker | \
             server CPU per doc, MinerU / worker | docs/s, in process / subprocesses | \
             server CPU per doc, subprocesses / in process |\n|---:|---:|---:|---:|---:|---:|",
            peer.label()
        );
        for row in ratios {
            println!("{row}");
        }
    }
    Ok(())
}

/// `a / b` as `2.5×`, or `—` when either side has no figure.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a > 0.0 => format!("{:.1}×", a / b),
        _ => "—".into(),
    }
}

/// One cell: a fresh server, one untimed document, then `clients` closed-loop clients.
fn measure(
    runtime: &Runtime,
    workspace: &support::Workspace,
    server: Server,
    pdf: &[u8],
    clients: usize,
) -> Result<Cell> {
    let sim = match server {
        Server::Worker {
            backend: Backend::Vlm,
            ..
        }
        | Server::Mineru3 => Some(support::start_simulator(runtime, 0)?),
        _ => None,
    };
    let sim_url = sim.as_ref().map(|s| s.url());
    let dir = tempfile::tempdir_in(workspace.dir.path()).map_err(|e| e.to_string())?;
    let running = Running::start(runtime, server, workspace, sim_url.as_deref(), dir.path())?;
    let http = reqwest::Client::new();
    let request = Request {
        server,
        url: running.url.clone(),
        sim_url,
        pdf: pdf.to_vec(),
    };
    let warm = runtime.block_on(request.send(&http));
    if !matches!(warm, Answer::Parsed) {
        return Err(format!(
            "{}: the untimed document failed: {warm:?}\n{}",
            server.label(),
            running.log_tail()
        ));
    }

    let pid = running.child.id();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(tree_pss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    let (server_cpu, bench_cpu) = (tree_cpu(pid), own_cpu());
    let request = Arc::new(request);
    let deadline = tokio::time::Instant::now() + WINDOW;
    let tallies = runtime.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| tokio::spawn(client(http.clone(), request.clone(), deadline)))
            .collect();
        futures::future::join_all(tasks).await
    });
    let server_cpu = tree_cpu(pid).saturating_sub(server_cpu);
    let bench_cpu = own_cpu() - bench_cpu;
    sampling.store(false, Ordering::Relaxed);
    let peak_kib = sampler
        .join()
        .map_err(|_| "the memory sampler failed".to_owned())?;
    drop(running);
    if let Some(sim) = sim {
        let deviations = sim.stats().deviations;
        runtime.block_on(sim.shutdown());
        if deviations != 0 {
            return Err(format!(
                "{}: {deviations} protocol deviations",
                server.label()
            ));
        }
    }

    let mut cell = Cell {
        latencies: Vec::new(),
        rejected: 0,
        errors: 0,
        first_error: None,
        unfinished: 0,
        server_cpu,
        bench_cpu,
        peak_mib: peak_kib as f64 / 1024.0,
    };
    for tally in tallies {
        let tally = tally.map_err(|e| e.to_string())?;
        cell.latencies.extend(tally.latencies);
        cell.rejected += tally.rejected;
        cell.errors += tally.errors;
        cell.first_error = cell.first_error.or(tally.first_error);
        cell.unfinished += u64::from(tally.unfinished);
    }
    cell.latencies.sort();
    Ok(cell)
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    rejected: u64,
    errors: u64,
    first_error: Option<String>,
    unfinished: bool,
}

/// One closed-loop client until `deadline`.
async fn client(
    http: reqwest::Client,
    request: Arc<Request>,
    deadline: tokio::time::Instant,
) -> Tally {
    let mut tally = Tally::default();
    while tokio::time::Instant::now() < deadline {
        let started = Instant::now();
        let Ok(answer) = tokio::time::timeout_at(deadline, request.send(&http)).await else {
            tally.unfinished = true;
            break;
        };
        let pause = match answer {
            Answer::Parsed => {
                tally.latencies.push(started.elapsed());
                continue;
            }
            Answer::Busy(retry_after) => {
                tally.rejected += 1;
                retry_after.unwrap_or(PAUSE)
            }
            Answer::Failed(error) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(error);
                PAUSE
            }
        };
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + pause)).await;
    }
    tally
}

/// One document's request to one kind of server.
struct Request {
    server: Server,
    url: String,
    sim_url: Option<String>,
    pdf: Vec<u8>,
}

#[derive(Debug)]
enum Answer {
    /// 200 with the document's Markdown.
    Parsed,
    /// 429, with its `Retry-After`.
    Busy(Option<Duration>),
    Failed(String),
}

impl Request {
    async fn send(&self, http: &reqwest::Client) -> Answer {
        let part = Part::bytes(self.pdf.clone()).file_name(format!("{DOCUMENT}.pdf"));
        let form = Form::new().part("files", part);
        let (path, form) = match self.server {
            Server::Worker { backend, .. } => (
                "/file_parse",
                form.text(
                    "backend",
                    if backend == Backend::Text {
                        "text"
                    } else {
                        "vlm"
                    },
                ),
            ),
            Server::Flash => ("/v1/file_parse?tier=flash", form),
            Server::Mineru3 => (
                "/file_parse",
                form.text("backend", "vlm-http-client")
                    .text("server_url", self.sim_url.clone().unwrap_or_default()),
            ),
        };
        let response = match http
            .post(format!("{}{path}", self.url))
            .multipart(form)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => return Answer::Failed(e.to_string()),
        };
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_secs);
            return Answer::Busy(retry_after);
        }
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(e) => return Answer::Failed(format!("{status}: {e}")),
        };
        // MinerU 4 answers 202 when its wait ran out: not a result.
        let markdown = match self.server {
            Server::Flash => body["files"][0]["content"]["markdown"].as_str(),
            _ => body["results"]
                .as_object()
                .and_then(|results| results.values().next()?["md_content"].as_str()),
        };
        match markdown {
            Some(md) if status.is_success() && !md.trim().is_empty() => Answer::Parsed,
            _ => {
                let body: String = body.to_string().chars().take(300).collect();
                Answer::Failed(format!("{status}: {body}"))
            }
        }
    }
}

/// A server process in its own process group, killed with everything it started.
struct Running {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Running {
    fn start(
        runtime: &Runtime,
        server: Server,
        workspace: &support::Workspace,
        sim_url: Option<&str>,
        dir: &Path,
    ) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut command = match server {
            Server::Worker {
                backend,
                in_process,
            } => {
                let mut c = Command::new(WORKER);
                c.args(["serve", "--host", "127.0.0.1"])
                    .arg(format!("--port={port}"));
                match backend {
                    Backend::Text => c.args(["--backend", "text"]),
                    Backend::Vlm => c
                        .args(["--backend", "vlm", "--server-url"])
                        .arg(sim_url.unwrap_or_default()),
                };
                if in_process {
                    c.arg("--render-processes=0");
                }
                c
            }
            Server::Flash => {
                let mut c = Command::new(workspace.mineru4.join("bin/mineru-api"));
                c.args(["--tier", "flash", "--host", "127.0.0.1"])
                    .arg(format!("--port={port}"))
                    .arg(format!("--upload-dir={}", dir.join("store").display()))
                    .env("HF_HUB_OFFLINE", "1");
                c
            }
            Server::Mineru3 => {
                let mut c = Command::new(workspace.mineru3.join("bin/mineru-api"));
                c.args(["--host", "127.0.0.1"])
                    .arg(format!("--port={port}"))
                    .env("MINERU_API_OUTPUT_ROOT", dir.join("output"));
                c
            }
        };
        let log = dir.join("server.log");
        let out = File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        use std::os::unix::process::CommandExt as _;
        let child = command
            .current_dir(dir)
            .env("TMPDIR", dir)
            .env("MINERU_API_ENABLE_FASTAPI_DOCS", "0")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("{command:?}: {e}"))?;
        let mut running = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let health = match server {
            Server::Flash => "/v1/health",
            _ => "/health",
        };
        running.wait_healthy(runtime, health, server)?;
        Ok(running)
    }

    fn wait_healthy(&mut self, runtime: &Runtime, path: &str, server: Server) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(180);
        let url = format!("{}{path}", self.url);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before serving\n{}",
                    server.label(),
                    self.log_tail()
                ));
            }
            let healthy = runtime.block_on(async {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            });
            if healthy {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "{} did not serve in 180 s\n{}",
            server.label(),
            self.log_tail()
        ))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = log.lines().rev().take(30).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(group) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: the group is the one this child leads (`process_group(0)`).
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) of `root` and its descendants, reaped children included.
fn tree_cpu(root: u32) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let total: u64 = std::iter::once(root)
        .chain(support::descendants(root))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command, which may hold spaces, closed by the last ')'.
            let fields: Vec<u64> = stat[stat.rfind(')')? + 2..]
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            // utime, stime, cutime, cstime: fields 14 to 17 of proc(5), 12 to 15 here.
            Some(fields.get(11..15)?.iter().sum::<u64>())
        })
        .sum();
    Duration::from_secs_f64(total as f64 / ticks)
}
