//! pdfium in subprocesses. A crash or a hang inside a C library is no Rust panic anything could
//! catch, and pdfium-render serialises every call of a process on one lock; so the server runs
//! pdfium in a pool of `mineru-worker render-child` processes, one call at a time each. A child
//! lives under an address-space limit (`RLIMIT_AS`) and a CPU budget per call (`RLIMIT_CPU`,
//! raised before each call), and a watchdog kills one that runs past a wall-clock deadline. A
//! child that dies costs the call it was making a [`PdfError::Stopped`], and the next call
//! starts a fresh one: the document that did it fails with a clear error, every other document
//! on the pod carries on.
//!
//! Calls are stateless for the parent: each names the document's file and its id, and a child
//! opens the file on first use and keeps the last few documents open, so any child serves any
//! page and one document's pages render on every core.
//!
//! The wire is a pair of pipes: each message is a JSON header and a byte payload (the pixels of
//! a render, a page's images as JPEG), each prefixed by its little-endian length.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::pdf::{Document, LibraryError, MAX_RENDER_SIDE, PageImage, PageText, Pages, PdfError};
use mineru_protocol::model::BBox;

/// The subcommand a child runs.
pub const CHILD_COMMAND: &str = "render-child";
/// Documents a child keeps open; another one closes the least recently used.
const OPEN_DOCUMENTS_PER_CHILD: usize = 4;
/// A header larger than this (a page's text layer as JSON) is not read: the child is stopped.
const MAX_HEADER_BYTES: u32 = 32 << 20;
/// The largest render there is: MinerU's long-side cap, square, RGB.
const MAX_PAYLOAD_BYTES: u64 = MAX_RENDER_SIDE as u64 * MAX_RENDER_SIDE as u64 * 3;
/// What a render's pipe holds at once: the kernel's default `pipe-max-size` for an unprivileged
/// process.
const PIPE_BYTES: libc::c_int = 1 << 20;
/// A call may take this many times its CPU budget in wall-clock time (a loaded node) before the
/// watchdog kills it as hung.
const WALL_CLOCK_FACTOR: u32 = 3;

/// How the pool runs its children.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The `mineru-worker` executable (the server's own).
    pub program: PathBuf,
    /// Children, at most one call in flight each.
    pub processes: usize,
    /// Address space of one child, in bytes.
    pub memory_limit: u64,
    /// CPU time one call may use.
    pub cpu_limit: Duration,
}

impl PoolConfig {
    /// As many children as the process may use cores (cgroup quota included), 1 GiB each, 60 s of
    /// CPU per call.
    pub fn new(program: PathBuf) -> Self {
        Self {
            program,
            processes: std::thread::available_parallelism().map_or(1, usize::from),
            memory_limit: 1 << 30,
            cpu_limit: Duration::from_secs(60),
        }
    }
}

/// How a render subprocess ended mid-call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Over its CPU budget for the call (`SIGXCPU`).
    Cpu,
    /// Killed: past its wall-clock deadline, or by the kernel for memory (`SIGKILL`).
    Killed,
    /// Aborted: out of its address space, or a failed check (`SIGABRT`).
    Abort,
    /// Any other signal: an invalid memory access, a trap.
    Crash,
    /// Exited, or broke the protocol.
    Exit,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Cpu => "cpu",
            StopReason::Killed => "killed",
            StopReason::Abort => "abort",
            StopReason::Crash => "crash",
            StopReason::Exit => "exit",
        }
    }
}

/// Told about every child that stopped mid-call (a server's metrics).
pub trait PoolObserver: Send + Sync + std::fmt::Debug {
    fn stopped(&self, reason: StopReason);
}

/// A pool of render subprocesses. Calls block: make them from the blocking thread pool.
#[derive(Debug)]
pub struct RenderPool {
    config: PoolConfig,
    observer: Option<Arc<dyn PoolObserver>>,
    idle: Mutex<Vec<Option<Running>>>,
    returned: Condvar,
    /// Children in a call, by process id, with the instant past which the watchdog kills them.
    busy: Arc<Mutex<HashMap<u32, Instant>>>,
    next_document: AtomicU64,
    children_started: AtomicU64,
}

/// One live child.
#[derive(Debug)]
struct Running {
    process: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Open {
        document: u64,
        path: PathBuf,
    },
    Page {
        document: u64,
        path: PathBuf,
        page: usize,
        op: PageOp,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum PageOp {
    Render,
    Text,
    ImagePixels,
    Images,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// A new child has its limits and pdfium.
    Ready,
    Opened {
        page_count: usize,
    },
    /// The pixels follow as the payload, RGB rows without padding.
    Rendered {
        width: u32,
        height: u32,
    },
    Text(PageText),
    ImagePixels(u64),
    /// Each image's bbox and the length of its JPEG; the JPEGs follow as the payload, in order.
    Images(Vec<(BBox, usize)>),
    Failed(PdfError),
}

impl RenderPool {
    /// A pool whose children start on first use. The watchdog thread lives as long as the pool.
    pub fn new(config: PoolConfig) -> Arc<Self> {
        Self::observed(config, None)
    }

    /// A pool that tells `observer` about every child that stopped mid-call.
    pub fn observed(config: PoolConfig, observer: Option<Arc<dyn PoolObserver>>) -> Arc<Self> {
        let processes = config.processes.max(1);
        let pool = Arc::new(Self {
            config: PoolConfig {
                processes,
                ..config
            },
            observer,
            idle: Mutex::new((0..processes).map(|_| None).collect()),
            returned: Condvar::new(),
            busy: Arc::default(),
            next_document: AtomicU64::new(0),
            children_started: AtomicU64::new(0),
        });
        let (busy, pool_alive) = (pool.busy.clone(), Arc::downgrade(&pool));
        std::thread::Builder::new()
            .name("render-watchdog".into())
            .spawn(move || {
                while pool_alive.strong_count() > 0 {
                    kill_overdue(&busy, Instant::now());
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
            .expect("spawn the render watchdog");
        pool
    }

    /// Children started so far, restarts included.
    pub fn children_started(&self) -> u64 {
        self.children_started.load(Ordering::Relaxed)
    }

    /// Process ids of the children alive and idle now (for tests that stop one).
    pub fn idle_children(&self) -> Vec<u32> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.iter().flatten().map(|r| r.process.id()).collect()
    }

    /// Process ids of the children in a call now.
    pub fn busy_children(&self) -> Vec<u32> {
        let busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        busy.keys().copied().collect()
    }

    /// Opens the PDF at `path` in a child; the file must stay as it is while the document is in
    /// use. The returned document owns `file` (a temporary file is deleted with it).
    pub fn open(
        self: &Arc<Self>,
        file: impl AsRef<Path> + Send + Sync + std::fmt::Debug + 'static,
    ) -> Result<PooledDocument, PdfError> {
        let document = self.next_document.fetch_add(1, Ordering::Relaxed);
        let path = file.as_ref().to_owned();
        let request = Request::Open {
            document,
            path: path.clone(),
        };
        match self.call(&request, None)? {
            (Reply::Opened { page_count }, _) => Ok(PooledDocument {
                pool: self.clone(),
                id: document,
                path,
                page_count,
                _file: Box::new(file),
            }),
            (other, _) => Err(unexpected(&other, None)),
        }
    }

    /// Opens PDF bytes: they are written to a temporary file under `TMPDIR` first.
    pub fn open_bytes(self: &Arc<Self>, bytes: &[u8]) -> Result<PooledDocument, PdfError> {
        let io = |e: std::io::Error| {
            PdfError::Library(LibraryError::Subprocess(format!(
                "cannot write the document to a temporary file: {e}"
            )))
        };
        let mut file = tempfile::Builder::new()
            .prefix("mineru-document-")
            .suffix(".pdf")
            .tempfile()
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        self.open(file.into_temp_path())
    }

    /// One request and its reply on an idle child, started first if need be.
    fn call(&self, request: &Request, page: Option<usize>) -> Result<(Reply, Vec<u8>), PdfError> {
        let mut lease = Lease {
            pool: self,
            slot: self.checkout(),
        };
        match self.call_on(&mut lease.slot, request, page)? {
            (Reply::Failed(err), _) => Err(err),
            reply => Ok(reply),
        }
    }

    fn call_on(
        &self,
        slot: &mut Option<Running>,
        request: &Request,
        page: Option<usize>,
    ) -> Result<(Reply, Vec<u8>), PdfError> {
        // A child that dies before it has taken the call is replaced once, and the document
        // is not blamed for it.
        for _ in 0..2 {
            self.replace_if_dead(slot)?;
            let running = slot.as_mut().expect("a live child");
            let pid = running.process.id();
            let deadline = Instant::now() + self.config.cpu_limit.saturating_mul(WALL_CLOCK_FACTOR);
            self.busy
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(pid, deadline);
            let written = write_message(&mut running.stdin, request, &[]);
            let exchanged = written.and_then(|()| read_message(&mut running.stdout));
            self.busy
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&pid);
            return match exchanged {
                Ok(reply) => {
                    // The watchdog may have killed it as it answered: keep the answer only.
                    if Instant::now() >= deadline {
                        *slot = None;
                    }
                    Ok(reply)
                }
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                    self.reap(slot, None, &err);
                    continue;
                }
                Err(err) => Err(PdfError::Stopped {
                    page,
                    reason: self.reap(slot, page, &err),
                }),
            };
        }
        Err(PdfError::Library(LibraryError::Subprocess(
            "render subprocesses die before they take a call".into(),
        )))
    }

    /// Starts a child in an empty slot, and replaces one that died while idle (the OOM
    /// killer's first choice).
    fn replace_if_dead(&self, slot: &mut Option<Running>) -> Result<(), PdfError> {
        if let Some(running) = slot.as_mut()
            && !matches!(running.process.try_wait(), Ok(None))
        {
            self.reap(slot, None, &std::io::Error::other("it died while idle"));
        }
        if slot.is_none() {
            *slot = Some(self.spawn()?);
        }
        Ok(())
    }

    /// Kills and reaps the slot's child, logs and counts how it ended, and says why.
    fn reap(
        &self,
        slot: &mut Option<Running>,
        page: Option<usize>,
        err: &std::io::Error,
    ) -> String {
        let mut running = slot.take().expect("the child that failed");
        let pid = running.process.id();
        let status = stop(&mut running.process);
        let (kind, reason) = self.why_stopped(status, err);
        tracing::warn!(pid, page, %reason, "a render subprocess stopped");
        if let Some(observer) = &self.observer {
            observer.stopped(kind);
        }
        reason
    }

    fn spawn(&self) -> Result<Running, PdfError> {
        let mut process = Command::new(&self.config.program)
            .arg(CHILD_COMMAND)
            .arg(format!("--memory-limit={}", self.config.memory_limit))
            .arg(format!(
                "--cpu-limit-ms={}",
                self.config.cpu_limit.as_millis()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                PdfError::Library(LibraryError::Subprocess(format!(
                    "cannot start {} {CHILD_COMMAND}: {e}",
                    self.config.program.display()
                )))
            })?;
        self.children_started.fetch_add(1, Ordering::Relaxed);
        let stdin = process.stdin.take().expect("piped stdin");
        let stdout = process.stdout.take().expect("piped stdout");
        widen_pipe(&stdout);
        let mut running = Running {
            process,
            stdin: BufWriter::new(stdin),
            stdout: BufReader::new(stdout),
        };
        // A child that cannot take its limits or load pdfium fails here, as the server's fault.
        match read_message(&mut running.stdout) {
            Ok((Reply::Ready, _)) => Ok(running),
            Ok((Reply::Failed(err), _)) => Err(err),
            Ok((other, _)) => Err(PdfError::Library(LibraryError::Subprocess(format!(
                "a new render subprocess said {other:?} instead of being ready"
            )))),
            Err(err) => {
                let status = stop(&mut running.process);
                let (_, reason) = self.why_stopped(status, &err);
                Err(PdfError::Library(LibraryError::Subprocess(format!(
                    "a new render subprocess {reason} before it was ready"
                ))))
            }
        }
    }

    fn why_stopped(
        &self,
        status: Option<ExitStatus>,
        err: &std::io::Error,
    ) -> (StopReason, String) {
        use std::os::unix::process::ExitStatusExt as _;
        let cpu = self.config.cpu_limit.as_secs_f64();
        let memory = self.config.memory_limit >> 20;
        let crash = |what: &str| (StopReason::Crash, format!("crashed ({what})"));
        match status.and_then(|s| s.signal()) {
            Some(libc::SIGXCPU) => (
                StopReason::Cpu,
                format!("used more than its {cpu} s of CPU and was stopped"),
            ),
            Some(libc::SIGKILL) => (
                StopReason::Killed,
                format!(
                    "ran past its deadline of {} s, or was killed for memory, and was stopped",
                    cpu * f64::from(WALL_CLOCK_FACTOR)
                ),
            ),
            Some(libc::SIGABRT) => (
                StopReason::Abort,
                format!("aborted (out of its {memory} MiB of memory, or a failed check)"),
            ),
            Some(libc::SIGSEGV | libc::SIGBUS) => crash("invalid memory access"),
            Some(libc::SIGILL | libc::SIGTRAP) => crash("a failed check inside pdfium"),
            Some(signal) => crash(&format!("signal {signal}")),
            None => (
                StopReason::Exit,
                match status.and_then(|s| s.code()) {
                    Some(code) => format!("exited with status {code}"),
                    None => format!("stopped answering: {err}"),
                },
            ),
        }
    }

    fn checkout(&self) -> Option<Running> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(slot) = idle.pop() {
                return slot;
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn checkin(&self, slot: Option<Running>) {
        // Called as the lease unwinds too: a slot is never lost.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Live children first in line: a call should not pay for a start it can avoid.
        if slot.is_some() {
            idle.push(slot);
        } else {
            idle.insert(0, slot);
        }
        self.returned.notify_one();
    }
}

/// A render is megabytes: a pipe of the default 64 KiB makes the two processes take turns a
/// hundred times per page, one of the largest the kernel allows a handful of times. A pipe that
/// cannot grow works all the same, slower.
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl(F_SETPIPE_SZ) on a pipe we own; it changes the pipe's capacity only.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
}

/// A slot taken from the pool, given back when dropped (on every path, panics included).
struct Lease<'a> {
    pool: &'a RenderPool,
    slot: Option<Running>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.pool.checkin(self.slot.take());
    }
}

/// Kills every child in a call past its deadline. Children are reaped only after their call
/// left the busy map, so a listed process id cannot have been reused.
fn kill_overdue(busy: &Mutex<HashMap<u32, Instant>>, now: Instant) {
    let busy = busy.lock().unwrap_or_else(PoisonError::into_inner);
    for (&pid, _) in busy.iter().filter(|(_, deadline)| **deadline <= now) {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) takes plain integers; the pid is an unreaped child of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Kills and reaps a child that failed mid-call, returning how it ended.
fn stop(process: &mut Child) -> Option<ExitStatus> {
    // A child that broke the protocol is still running: give it no second chance.
    match process.try_wait() {
        Ok(Some(status)) => Some(status),
        _ => {
            // A crash may still be on its way out: let it finish so the signal tells why.
            std::thread::sleep(Duration::from_millis(20));
            if let Ok(Some(status)) = process.try_wait() {
                return Some(status);
            }
            let _ = process.kill();
            process.wait().ok()
        }
    }
}

fn unexpected(reply: &Reply, page: Option<usize>) -> PdfError {
    PdfError::Stopped {
        page,
        reason: format!("gave an unexpected answer: {reply:?}"),
    }
}

/// A document open in the pool. Each call may run on any child.
#[derive(Debug)]
pub struct PooledDocument {
    pool: Arc<RenderPool>,
    id: u64,
    path: PathBuf,
    page_count: usize,
    _file: Box<dyn std::fmt::Debug + Send + Sync>,
}

impl PooledDocument {
    fn page_call(&self, page: usize, op: PageOp) -> Result<(Reply, Vec<u8>), PdfError> {
        if page >= self.page_count {
            return Err(PdfError::PageOutOfRange {
                page,
                count: self.page_count,
            });
        }
        let request = Request::Page {
            document: self.id,
            path: self.path.clone(),
            page,
            op,
        };
        self.pool.call(&request, Some(page))
    }
}

impl Pages for PooledDocument {
    fn page_count(&self) -> usize {
        self.page_count
    }

    fn render_page(&self, page: usize) -> Result<RgbImage, PdfError> {
        match self.page_call(page, PageOp::Render)? {
            (Reply::Rendered { width, height }, pixels) => {
                RgbImage::from_raw(width, height, pixels).ok_or_else(|| PdfError::Stopped {
                    page: Some(page),
                    reason: "sent a render that does not match its size".into(),
                })
            }
            (other, _) => Err(unexpected(&other, Some(page))),
        }
    }

    fn page_text(&self, page: usize) -> Result<PageText, PdfError> {
        match self.page_call(page, PageOp::Text)? {
            (Reply::Text(text), _) => Ok(text),
            (other, _) => Err(unexpected(&other, Some(page))),
        }
    }

    fn image_pixels(&self, page: usize) -> Result<u64, PdfError> {
        match self.page_call(page, PageOp::ImagePixels)? {
            (Reply::ImagePixels(pixels), _) => Ok(pixels),
            (other, _) => Err(unexpected(&other, Some(page))),
        }
    }

    fn page_images(&self, page: usize) -> Result<Vec<PageImage>, PdfError> {
        match self.page_call(page, PageOp::Images)? {
            (Reply::Images(images), payload) => {
                let mut rest = payload.as_slice();
                let images = images
                    .into_iter()
                    .map(|(bbox, len)| {
                        let (jpeg, after) = rest.split_at_checked(len)?;
                        rest = after;
                        Some(PageImage {
                            bbox,
                            jpeg: jpeg.to_vec(),
                        })
                    })
                    .collect::<Option<Vec<_>>>();
                images
                    .filter(|_| rest.is_empty())
                    .ok_or_else(|| PdfError::Stopped {
                        page: Some(page),
                        reason: "sent images that do not match their lengths".into(),
                    })
            }
            (other, _) => Err(unexpected(&other, Some(page))),
        }
    }
}

fn write_message(
    w: &mut impl Write,
    header: &impl Serialize,
    payload: &[u8],
) -> std::io::Result<()> {
    let header = serde_json::to_vec(header)?;
    let header_len = u32::try_from(header.len()).map_err(std::io::Error::other)?;
    w.write_all(&header_len.to_le_bytes())?;
    w.write_all(&header)?;
    w.write_all(&(payload.len() as u64).to_le_bytes())?;
    w.write_all(payload)?;
    w.flush()
}

fn read_message<T: DeserializeOwned>(r: &mut impl Read) -> std::io::Result<(T, Vec<u8>)> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let header_len = u32::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES {
        return Err(std::io::Error::other(format!(
            "a header of {header_len} bytes, over {MAX_HEADER_BYTES}"
        )));
    }
    let mut header = vec![0; header_len as usize];
    r.read_exact(&mut header)?;
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let payload_len = u64::from_le_bytes(len);
    if payload_len > MAX_PAYLOAD_BYTES {
        return Err(std::io::Error::other(format!(
            "a payload of {payload_len} bytes, over {MAX_PAYLOAD_BYTES}"
        )));
    }
    let mut payload = vec![0; payload_len as usize];
    r.read_exact(&mut payload)?;
    Ok((serde_json::from_slice(&header)?, payload))
}

/// The child's side: `mineru-worker render-child`, spoken to over stdin and stdout.
#[derive(Debug, clap::Args)]
pub struct ChildArgs {
    /// Address space of this process, in bytes.
    #[arg(long)]
    memory_limit: u64,
    /// CPU time one call may use, in milliseconds.
    #[arg(long)]
    cpu_limit_ms: u64,
}

/// Serves calls until stdin closes. Nothing but messages goes to stdout.
pub fn child_main(args: &ChildArgs) -> ExitCode {
    if let Err(err) = limit_self(args.memory_limit) {
        eprintln!("render-child: cannot set its limits: {err}");
        return ExitCode::FAILURE;
    }
    let cpu_budget = Duration::from_millis(args.cpu_limit_ms);
    let mut stdin = BufReader::new(std::io::stdin().lock());
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    let ready = match crate::pdf::library() {
        Ok(_) => Reply::Ready,
        Err(err) => Reply::Failed(PdfError::Library(err)),
    };
    if write_message(&mut stdout, &ready, &[]).is_err() || !matches!(ready, Reply::Ready) {
        return ExitCode::FAILURE;
    }
    let mut open: Vec<OpenEntry> = Vec::new();
    loop {
        let request: Request = match read_message(&mut stdin) {
            Ok((request, _)) => request,
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                return ExitCode::SUCCESS;
            }
            Err(err) => {
                eprintln!("render-child: unreadable request: {err}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(err) = budget_cpu(cpu_budget) {
            eprintln!("render-child: cannot set its CPU budget: {err}");
            return ExitCode::FAILURE;
        }
        let (reply, payload) = match serve(&mut open, request) {
            Ok(answer) => answer,
            Err(err) => (Reply::Failed(err), Vec::new()),
        };
        if write_message(&mut stdout, &reply, &payload).is_err() {
            // The parent is gone.
            return ExitCode::SUCCESS;
        }
    }
}

/// A document a child keeps open: its id, its file and pdfium's handle.
type OpenEntry = (u64, PathBuf, Document);

fn serve(open: &mut Vec<OpenEntry>, request: Request) -> Result<(Reply, Vec<u8>), PdfError> {
    let (document, path) = match &request {
        Request::Open { document, path } | Request::Page { document, path, .. } => {
            (*document, path)
        }
    };
    // A document whose file is gone is finished: closing it frees its memory and the disk its
    // deleted file still holds.
    open.retain(|(_, file, _)| file.exists());
    let doc = match open.iter().position(|(id, _, _)| *id == document) {
        Some(at) => {
            let entry = open.remove(at);
            open.push(entry);
            &open.last().expect("just pushed").2
        }
        None => {
            let doc = Document::open_file(path)?;
            if open.len() == OPEN_DOCUMENTS_PER_CHILD {
                open.remove(0);
            }
            open.push((document, path.clone(), doc));
            &open.last().expect("just pushed").2
        }
    };
    let Request::Page { page, op, .. } = request else {
        return Ok((
            Reply::Opened {
                page_count: doc.page_count(),
            },
            Vec::new(),
        ));
    };
    Ok(match op {
        PageOp::Render => {
            let image = doc.render_page(page)?;
            let (width, height) = image.dimensions();
            (Reply::Rendered { width, height }, image.into_raw())
        }
        PageOp::Text => (Reply::Text(doc.page_text(page)?), Vec::new()),
        PageOp::ImagePixels => (Reply::ImagePixels(doc.image_pixels(page)?), Vec::new()),
        PageOp::Images => {
            let images = doc.page_images(page)?;
            let lengths = images.iter().map(|i| (i.bbox, i.jpeg.len())).collect();
            let jpegs = images.into_iter().flat_map(|i| i.jpeg).collect();
            (Reply::Images(lengths), jpegs)
        }
    })
}

/// The limits a child lives under for good: its address space, no core files, and first in
/// line for the kernel's OOM killer, so that a pod over its memory limit loses a render, not
/// the server. (A child whose parent died reads the end of stdin after its call and exits;
/// `PR_SET_PDEATHSIG` would fire when the blocking-pool thread that spawned it retires.)
fn limit_self(memory: u64) -> std::io::Result<()> {
    set_limit(libc::RLIMIT_AS, memory)?;
    set_limit(libc::RLIMIT_CORE, 0)?;
    // Raising one's own score needs no privilege; a /proc that refuses it costs only the order.
    if let Err(err) = std::fs::write("/proc/self/oom_score_adj", "1000") {
        eprintln!("render-child: cannot volunteer for the OOM killer: {err}");
    }
    Ok(())
}

/// Lets the next call use `budget` more CPU time: the soft `RLIMIT_CPU` (whole seconds, so up to
/// a second more) is set that far past what the process has used, so the kernel stops a call
/// that spends more.
fn budget_cpu(budget: Duration) -> std::io::Result<()> {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let used = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    let soft = (used + budget.as_secs_f64().max(1.0)).ceil() as u64;
    set_limit(libc::RLIMIT_CPU, soft)
}

/// Sets the soft limit of `resource`, and the hard one too where it is higher (lowering a hard
/// limit is for good, so only what must stay low gets it).
fn set_limit(resource: libc::__rlimit_resource_t, soft: u64) -> std::io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the struct they are given.
    unsafe {
        if libc::getrlimit(resource, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit.rlim_cur = soft.min(limit.rlim_max);
        if resource != libc::RLIMIT_CPU {
            limit.rlim_max = limit.rlim_cur;
        }
        if libc::setrlimit(resource, &limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_as_written() {
        let mut wire = Vec::new();
        let request = Request::Page {
            document: 7,
            path: "/tmp/a.pdf".into(),
            page: 3,
            op: PageOp::Render,
        };
        write_message(&mut wire, &request, b"pixels").unwrap();
        let (back, payload): (Request, _) = read_message(&mut wire.as_slice()).unwrap();
        assert!(matches!(
            back,
            Request::Page {
                document: 7,
                page: 3,
                op: PageOp::Render,
                ..
            }
        ));
        assert_eq!(payload, b"pixels");
    }

    #[test]
    fn oversized_or_cut_messages_are_errors_not_allocations() {
        let mut huge = (MAX_HEADER_BYTES + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(read_message::<Reply>(&mut huge.as_slice()).is_err());
        let mut wire = Vec::new();
        write_message(&mut wire, &Reply::ImagePixels(1), &[]).unwrap();
        wire.truncate(wire.len() - 3);
        assert!(read_message::<Reply>(&mut wire.as_slice()).is_err());
    }

    #[test]
    fn an_error_crosses_the_wire_with_its_message() {
        let err = PdfError::PageTooManyPixels {
            page: 1,
            pixels: 300_000_000,
            limit: 100_000_000,
        };
        let message = err.to_string();
        let mut wire = Vec::new();
        write_message(&mut wire, &Reply::Failed(err), &[]).unwrap();
        let (back, _): (Reply, _) = read_message(&mut wire.as_slice()).unwrap();
        let Reply::Failed(back) = back else {
            panic!("{back:?}")
        };
        assert_eq!(back.to_string(), message);
    }

    #[test]
    fn the_watchdog_kills_only_what_is_overdue() {
        let mut late = Command::new("sleep").arg("30").spawn().unwrap();
        let mut on_time = Command::new("sleep").arg("30").spawn().unwrap();
        let now = Instant::now();
        let busy = Mutex::new(HashMap::from([
            (late.id(), now - Duration::from_secs(1)),
            (on_time.id(), now + Duration::from_secs(60)),
        ]));
        kill_overdue(&busy, now);
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(late.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(on_time.try_wait().unwrap().is_none());
        on_time.kill().unwrap();
        on_time.wait().unwrap();
    }
}
