//! What the benchmarks that run whole processes share: the repository, MinerU's virtualenvs, the
//! benchmark PDFs, the vLLM simulator, and how a process tree's CPU time and memory are read.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mineru_worker::simulator::{self, Faults, Scenario, SimConfig, SimHandle};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
pub const WORKER: &str = env!("CARGO_BIN_EXE_mineru-worker");
/// The simulator's batch (vLLM's `--max-num-seqs`), which bounds its throughput.
pub const MAX_NUM_SEQS: usize = 256;

pub type Result<T> = std::result::Result<T, String>;

pub fn repo(relative: &str) -> PathBuf {
    Path::new(REPO).join(relative)
}

/// A MinerU virtualenv, installed (cached by version) when missing.
fn venv(which: &str) -> Result<PathBuf> {
    let out = Command::new("bash")
        .arg(repo("e2e/scripts/install-deps.sh"))
        .arg(which)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("install-deps.sh {which}: {e}"))?;
    if !out.status.success() {
        return Err(format!("install-deps.sh {which} failed"));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// What both whole-document benchmarks start from: MinerU's virtualenvs and the benchmark PDFs
/// in a temporary directory.
pub struct Workspace {
    pub mineru3: PathBuf,
    pub mineru4: PathBuf,
    pub dir: tempfile::TempDir,
    pub pdfs: PathBuf,
}

impl Workspace {
    pub fn prepare() -> Result<Self> {
        let mineru3 = venv("mineru3")?;
        let mineru4 = venv("mineru4")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let pdfs = dir.path().join("pdfs");
        make_pdfs(&mineru3, &pdfs)?;
        Ok(Self {
            mineru3,
            mineru4,
            dir,
            pdfs,
        })
    }
}

/// Writes `bench/python/make_bench_pdfs.py`'s documents into `out` with `venv`'s Python
/// (reportlab and Pillow come with MinerU).
fn make_pdfs(venv: &Path, out: &Path) -> Result<()> {
    let made = Command::new(venv.join("bin/python"))
        .arg(repo("bench/python/make_bench_pdfs.py"))
        .arg(out)
        .output()
        .map_err(|e| format!("make_bench_pdfs.py: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "make_bench_pdfs.py: {}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    Ok(())
}

/// The strict vLLM simulator on a loopback port, answering every page with
/// `bench/scenario.yaml` after `latency_ms` per call.
pub fn start_simulator(runtime: &tokio::runtime::Runtime, latency_ms: u64) -> Result<SimHandle> {
    let scenario = Scenario::load(&repo("bench/scenario.yaml")).map_err(|e| e.to_string())?;
    runtime
        .block_on(simulator::start_local(SimConfig {
            scenario,
            faults: Faults {
                latency_ms,
                ..Faults::default()
            },
            max_num_seqs: MAX_NUM_SEQS,
            ..SimConfig::new("mineru2.5")
        }))
        .map_err(|e| e.to_string())
}

/// CPU time (user + system) this process has used: the simulator and, for `serve`, its clients.
pub fn own_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid and getrusage only fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

pub fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// The proportional set size of `root` and its descendants, in KiB (`Pss`, so pages a pool's
/// processes share count once); `None` once `root` has exited, as a zombie maps nothing.
pub fn tree_pss_kib(root: u32) -> Option<u64> {
    let own = pss_kib(root)?;
    Some(
        own + descendants(root)
            .into_iter()
            .filter_map(pss_kib)
            .sum::<u64>(),
    )
}

fn pss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Every process below `pid`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}
