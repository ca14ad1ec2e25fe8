//! `mineru-worker serve` flags, with the units operators write: byte sizes as Kubernetes
//! quantities (`100Mi`) and durations with a suffix (`30s`, `500ms`, `2m`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use mineru_protocol::worker::ByteSize;

use crate::output::Backend;
use crate::parse::PixelLimits;
use crate::vlm::VlmFlags;

#[derive(Debug, Clone, clap::Parser)]
// A later flag wins over an earlier one, so wrappers can append overrides.
#[command(name = "serve", args_override_self = true)]
pub struct ServeArgs {
    #[arg(long, default_value = "0.0.0.0")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Backend for requests that do not name one.
    #[arg(long, value_enum, default_value_t = Backend::Vlm)]
    pub backend: Backend,
    /// The vLLM tier's base URL (needed by backend vlm).
    #[arg(long, env = "MINERU_SERVER_URL")]
    pub server_url: Option<String>,
    /// The model the vLLM tier must serve; when absent it must serve exactly one.
    #[arg(long)]
    pub model_name: Option<String>,
    /// File holding the vLLM API key (a mounted Secret); re-read when it changes.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// How often the API key file is checked for a new key.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub api_key_poll: Duration,
    /// A vLLM server a caller may name in `server_url` (`http://host:port`, repeatable); its
    /// origin must match. None by default: it would let callers aim the worker anywhere. The
    /// configured API key is never sent to such a server.
    #[arg(long = "allow-server-url", value_name = "URL")]
    pub allowed_server_urls: Vec<String>,
    /// Documents processed at once; further requests are answered 429.
    #[arg(long, default_value_t = 4)]
    pub max_concurrent_documents: usize,
    /// Largest uploaded file (`100Mi`, `20M`, `1048576`); a request carries at most this much.
    #[arg(long, default_value = "100Mi")]
    pub max_file_bytes: ByteSize,
    /// Uploads larger than this are written to a temporary file under `TMPDIR` as they stream
    /// in, instead of being held in memory.
    #[arg(long, default_value = "4Mi")]
    pub upload_spill_bytes: ByteSize,
    /// Most pages extracted from one document.
    #[arg(long, default_value_t = 500)]
    pub max_pages: usize,
    /// Render subprocesses: pdfium runs in them, one page at a time each, so a document that
    /// crashes, hangs or exhausts pdfium costs itself only. Default: the cores this process may
    /// use, at most `--max-concurrent-documents`. `0` runs pdfium inside the server, on one
    /// lock and without isolation: for trusted documents only.
    #[arg(long)]
    pub render_processes: Option<usize>,
    /// Address space of one render subprocess (`1Gi`); a page that needs more fails alone.
    #[arg(long, default_value = "1Gi")]
    pub render_memory: ByteSize,
    /// CPU time pdfium may spend on one page (its render or its text layer); a page that takes
    /// three times this in wall-clock time is stopped as hung.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub render_cpu_limit: Duration,
    /// The executable render subprocesses run (default: this one).
    #[arg(long, hide = true)]
    pub render_program: Option<PathBuf>,
    /// Most pixels the images of one page may decode to; a page over it is refused (422) before
    /// pdfium decodes it.
    #[arg(long, default_value_t = PixelLimits::default().per_page)]
    pub max_page_pixels: u64,
    /// Most pixels the images of one document may decode to, all pages together.
    #[arg(long, default_value_t = PixelLimits::default().per_document)]
    pub max_document_pixels: u64,
    /// The vlm backend's MinerU options; a request's `image_analysis=false` turns analysis off
    /// for that request.
    #[command(flatten)]
    pub vlm: VlmFlags,
    /// Deadline of one request, upload included.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// After SIGTERM, how long the worker keeps accepting documents while `/ready` says it is
    /// leaving, so that endpoints stop sending before the listener closes.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Time in-flight requests get to finish once the listener has closed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Consecutive failed vLLM calls that open the circuit breaker.
    #[arg(long, default_value_t = 5)]
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe is let through.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub breaker_cool_down: Duration,
    /// vLLM calls in flight at once, across all documents.
    #[arg(long, default_value_t = 100)]
    pub vllm_max_in_flight: usize,
    /// Retries of a failed vLLM call.
    #[arg(long, default_value_t = 3)]
    pub vllm_retries: u32,
    /// Backoff before the first retry (doubles per retry, with jitter).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub vllm_backoff: Duration,
    /// Timeout of one vLLM call attempt; it must leave room for retries within
    /// `--request-timeout`.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub vllm_timeout: Duration,
    /// How long a readiness verdict about the vLLM tier is reused.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub ready_cache: Duration,
    /// The `revision` label on every metric (the operator sets it from the pod label).
    #[arg(long, env = "MINERU_REVISION", default_value = "unknown")]
    pub revision: String,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Where `/v1` uploads, files and parse jobs live: `postgres://…`, one database shared by
    /// every worker of a deployment (jobs survive any worker and may be polled through any), or
    /// `sqlite://PATH?mode=rwc`, a file of this worker alone. Default: a SQLite file of this
    /// worker alone under `TMPDIR`, removed when it exits.
    #[arg(long, env = "MINERU_JOB_STORE", hide_env_values = true)]
    pub job_store: Option<String>,
    /// This worker's name among those sharing a job store (the operator sets the pod name).
    #[arg(long, env = "MINERU_WORKER_ID")]
    pub worker_id: Option<String>,
    /// How long a running job stays this worker's without a renewal; a worker that dies has its
    /// jobs run again by another this long after.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub job_lease: Duration,
    /// How often the job store is asked for queued jobs (a submission to this worker wakes it
    /// at once).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub job_poll: Duration,
    /// How long finished jobs and their outputs are kept.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub job_retention: Duration,
    /// Bytes of uploads and outputs the embedded job store may hold (it lives in `TMPDIR`):
    /// past it the jobs that finished first are forgotten, and new `/v1` work is refused (503
    /// `job_store_full`) while none can be. Not applied to PostgreSQL.
    #[arg(long, default_value = "1Gi")]
    pub job_store_max_bytes: ByteSize,
    /// Largest file a `/v1` job may carry inline (base64) rather than uploaded.
    #[arg(long, default_value = "1Mi")]
    pub max_inline_bytes: ByteSize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `500ms`, `30s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 2m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        other => Err(format!("unknown duration unit {other:?} in {s:?}")),
    }
}
