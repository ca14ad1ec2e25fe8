//! The whole worker side by side with MinerU's own code, as processes on the same PDFs
//! (docs/benchmarks.md, "Whole documents"):
//!
//! - the vlm backend (`mineru-worker parse --backend vlm`) against MinerU 3.4.5's own vlm path
//!   (`bench/python/vlm_peer.py`: `do_parse` with `mineru_vl_utils`' http-client), both against
//!   the same in-process vLLM simulator, with no added latency at concurrency 1 and 100, then
//!   with 200 ms per call;
//! - the text backend (`mineru-worker parse`) against raw text extraction with pypdfium2 and
//!   MinerU 4.0.12's model-free `flash` tier (`bench/python/text_peer.py`).
//!
//! Each client runs as a child process. Its CPU time (user + system, its subprocesses included:
//! MinerU renders pages in a process pool) comes from `wait4`. Its peak memory is the largest sum
//! of the proportional set sizes (`Pss` of `/proc/<pid>/smaps_rollup`, so pages a pool's
//! processes share count once) over the process and its descendants, read every 10 ms while it
//! runs; `wait4`'s `ru_maxrss` would count this process's own RSS, which a child carries until it
//! execs. Both are the client's alone: the simulator runs in this process. Run with
//! `cargo bench -p mineru-worker --bench clients` (`make bench`); it installs MinerU's
//! virtualenvs through `e2e/scripts/install-deps.sh` and writes the PDFs with
//! `bench/python/make_bench_pdfs.py`. Without `--bench` (as `cargo test --all-targets` runs
//! benchmarks) it only says so.

mod support;

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{MAX_NUM_SEQS, Result, WORKER, own_cpu, repo, timeval, tree_pss_kib};

const FULL_CONCURRENCY: usize = 100;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "clients: a benchmark; run it with `cargo bench -p mineru-worker --bench clients`"
        );
        return;
    }
    if let Err(error) = run() {
        eprintln!("clients: {error}");
        std::process::exit(1);
    }
}

/// What one client process cost.
#[derive(Debug, Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: Duration,
    peak_memory_mib: f64,
    pages: u64,
}

fn run() -> Result<()> {
    let support::Workspace {
        mineru3,
        mineru4,
        dir: work,
        pdfs,
    } = support::Workspace::prepare()?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;

    println!("## vlm backend: the worker and MinerU's client against the same simulator\n");
    println!(
        "| document | latency | concurrency | client | pages | wall s | CPU s | CPU ms/page | pages/s | pages per CPU-s | peak memory MiB | KiB sent/page | calls/page | simulator CPU s |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut ceilings = Vec::new();
    // (latency, concurrency, the worker's page window); MinerU's client takes every page at
    // once, so it runs only beside the default window.
    let runs = [
        (0, 1, 8),
        (0, FULL_CONCURRENCY, 8),
        (200, FULL_CONCURRENCY, 8),
        (200, FULL_CONCURRENCY, 32),
    ];
    for (latency_ms, concurrency, window) in runs {
        // With latency, a document long enough for the pipeline to reach its steady state.
        let docs: &[&str] = if latency_ms == 0 {
            &["long", "scan"]
        } else {
            &["long-120"]
        };
        for &doc in docs {
            let pdf = pdfs.join(format!("{doc}.pdf"));
            {
                let clients: &[&str] = if window == 8 {
                    &["worker", "MinerU 3.4.5"]
                } else {
                    &["worker"]
                };
                for &client in clients {
                    let label = if client == "worker" {
                        format!("worker, window {window}")
                    } else {
                        client.to_owned()
                    };
                    let sim = support::start_simulator(&runtime, latency_ms)?;
                    let out = work.path().join("out");
                    let _ = std::fs::remove_dir_all(&out);
                    let mut command = if client == "worker" {
                        let mut c = Command::new(WORKER);
                        c.args(["parse", "--backend", "vlm", "--server-url", &sim.url()])
                            .arg(format!("--vllm-max-in-flight={concurrency}"))
                            .arg(format!("--page-window={window}"))
                            .arg("-o")
                            .arg(&out)
                            .arg(&pdf);
                        c
                    } else {
                        let mut c = Command::new(mineru3.join("bin/python"));
                        c.arg(repo("bench/python/vlm_peer.py"))
                            .arg(&pdf)
                            .arg(&out)
                            .arg(sim.url())
                            .arg(concurrency.to_string());
                        c
                    };
                    let sim_cpu = own_cpu();
                    let (cost, _) = measure(&mut command, &pdf)?;
                    // This process is the simulator (and this loop): on 2 cores it shares the
                    // machine with the client.
                    let sim_cpu = own_cpu() - sim_cpu;
                    let stats = sim.stats();
                    runtime.block_on(sim.shutdown());
                    if stats.deviations != 0 {
                        return Err(format!(
                            "{client} on {doc}: {} protocol deviations",
                            stats.deviations
                        ));
                    }
                    let pages = cost.pages as f64;
                    let calls_per_page = stats.requests as f64 / pages;
                    println!(
                        "| {doc} | {latency_ms} ms | {concurrency} | {label} | {} | {:.2} | {:.2} | {:.1} | {:.2} | {:.1} | {:.0} | {:.0} | {:.1} | {:.2} |",
                        cost.pages,
                        cost.wall.as_secs_f64(),
                        cost.cpu.as_secs_f64(),
                        cost.cpu.as_secs_f64() * 1000.0 / pages,
                        pages / cost.wall.as_secs_f64(),
                        pages / cost.cpu.as_secs_f64(),
                        cost.peak_memory_mib,
                        stats.request_bytes as f64 / 1024.0 / pages,
                        calls_per_page,
                        sim_cpu.as_secs_f64(),
                    );
                    if latency_ms > 0 {
                        let per_call = latency_ms as f64 / 1000.0;
                        ceilings.push(format!(
                            "| {doc} | {label} | {:.2} | {:.2} | {:.2} |",
                            pages / cost.wall.as_secs_f64(),
                            concurrency as f64 / (per_call * calls_per_page),
                            MAX_NUM_SEQS as f64 / (per_call * calls_per_page),
                        ));
                    }
                }
            }
        }
    }
    println!(
        "\n### With 200 ms per call: pages/s against the ceilings\n\n| document | client | pages/s | client ceiling ({FULL_CONCURRENCY} in flight) | simulator ceiling ({MAX_NUM_SEQS} at once) |\n|---|---|---:|---:|---:|"
    );
    for row in ceilings {
        println!("{row}");
    }

    println!("\n## text backend: the worker, raw pdfium text, MinerU 4's flash tier\n");
    println!(
        "| document | pages | client | wall s | work s | CPU s | peak memory MiB | work / pdfium |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|");
    for doc in ["text-50", "text-500", "long"] {
        let pdf = pdfs.join(format!("{doc}.pdf"));
        let out = work.path().join("text-out");
        let _ = std::fs::remove_dir_all(&out);
        let (worker, _) = measure(
            Command::new(WORKER)
                .args(["parse", "-o"])
                .arg(&out)
                .arg(&pdf),
            &pdf,
        )?;
        let peer = |mode: &str| -> Result<(Cost, f64)> {
            let (cost, stdout) = measure(
                Command::new(mineru4.join("bin/python"))
                    .arg(repo("bench/python/text_peer.py"))
                    .arg(mode)
                    .arg(&pdf),
                &pdf,
            )?;
            Ok((cost, work_seconds(&stdout)?))
        };
        let (pdfium, pdfium_work) = peer("pdfium")?;
        let (flash, flash_work) = peer("flash")?;
        // The worker's process is its work: it starts in milliseconds.
        let worker_work = worker.wall.as_secs_f64();
        for (client, cost, work) in [
            ("worker", worker, worker_work),
            ("pypdfium2 get_text_range", pdfium, pdfium_work),
            ("MinerU 4.0.12 flash", flash, flash_work),
        ] {
            println!(
                "| {doc} | {} | {client} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1}× |",
                cost.pages,
                cost.wall.as_secs_f64(),
                work,
                cost.cpu.as_secs_f64(),
                cost.peak_memory_mib,
                work / pdfium_work,
            );
        }
    }
    Ok(())
}

/// The `seconds` a peer prints: the wall time of its work, imports left out.
fn work_seconds(stdout: &str) -> Result<f64> {
    let line = stdout.lines().last().unwrap_or_default();
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("peer answer {line:?}: {e}"))?;
    value["seconds"]
        .as_f64()
        .ok_or_else(|| format!("peer answer without seconds: {line}"))
}

/// Runs `command` to its end: its CPU time from `wait4`, its peak memory from `/proc`.
fn measure(command: &mut Command, pdf: &Path) -> Result<(Cost, String)> {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{command:?}: {e}"))?;
    let root = child.id();
    // A zombie maps nothing, so sampling ends when the client has exited.
    let peak_kib = std::thread::spawn(move || {
        let mut peak = 0u64;
        while let Some(tree) = tree_pss_kib(root) {
            peak = peak.max(tree);
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout)
            .map_err(|e| format!("{command:?}: {e}"))?;
    }
    let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for the child we spawned and did not
    // wait for otherwise.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    let peak_kib = peak_kib
        .join()
        .map_err(|_| "the memory reader failed".to_owned())?;
    if waited != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{command:?} failed (status {status})"));
    }
    let pages = mineru_worker::pdf::Document::open_file(pdf)
        .map_err(|e| e.to_string())?
        .page_count() as u64;
    Ok((
        Cost {
            wall,
            cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
            peak_memory_mib: peak_kib as f64 / 1024.0,
            pages,
        },
        stdout,
    ))
}
