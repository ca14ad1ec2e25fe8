//! `mineru-worker serve`: the CPU tier's HTTP service, compatible with MinerU's `mineru-api`.
//!
//! `POST /file_parse` extracts uploaded PDFs with either backend; `GET /health` is liveness,
//! `GET /ready` readiness: what this worker itself can do (pdfium loads, it is not leaving, and
//! a vlm worker has once seen its tier serve the expected model). Trouble upstream later does
//! not take a worker out of the Service — every worker would leave at once and clients would
//! get connection errors — it turns into fast 503s with `Retry-After`. `GET /metrics` serves
//! Prometheus metrics labelled with the revision, `GET /openapi.json` the API description
//! (committed as docs/openapi/worker.yaml). Limits bound what one worker holds: documents in
//! progress, upload size, pages, a deadline per request. On SIGTERM `/ready` turns false at once,
//! documents are still taken for `--shutdown-delay` (while endpoints update), then the listener
//! closes and requests in progress get `--shutdown-grace` to finish.

mod admission;
mod breaker;
mod config;
mod error;
mod file_parse;
mod form;
mod logging;
mod metrics;
mod openapi;
mod upstream;
mod v1;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use config::{LogFormat, ServeArgs};

use crate::output::Backend;
use crate::parse::Pdfium;
use crate::render_pool::{PoolConfig, RenderPool};
use admission::Admission;
use breaker::Breaker;
use metrics::Metrics;
use mineru_protocol::client::{ClientConfig, ClientError, VlmClient};
use upstream::{KeyFile, KeyFileError, Recorder, Upstream};

/// Room for the form fields and multipart framing around a maximal file.
const FORM_OVERHEAD_BYTES: u64 = 1 << 20;
/// The least a caller is asked to wait after a failure of the vLLM tier.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything the handlers share.
struct App {
    config: ServeArgs,
    metrics: Arc<Metrics>,
    breaker: Arc<Breaker>,
    /// The client settings every vLLM client starts from (without a key).
    template: ClientConfig,
    key: Option<Arc<KeyFile>>,
    upstream: Option<Upstream>,
    admission: Admission,
    /// Set once the configured tier answered (the model list included).
    tier_seen: Arc<AtomicBool>,
    /// Set on SIGTERM: readiness turns false while documents are still taken.
    leaving: AtomicBool,
    pdfium: Pdfium,
    /// The `/v1` jobs: their store and the ones this worker runs.
    jobs: v1::Jobs,
    /// When the worker started (seconds since the epoch), as `/v1/models` reports it.
    started_at_s: i64,
}

impl App {
    fn new(config: ServeArgs, store: v1::store::Store) -> Result<Self, ServeError> {
        if config.backend == Backend::Vlm && config.server_url.is_none() {
            return Err(ServeError::Config(
                "--backend vlm needs --server-url (or MINERU_SERVER_URL); use --backend text \
                 for a worker without a vLLM tier"
                    .into(),
            ));
        }
        if config.vllm_timeout >= config.request_timeout {
            return Err(ServeError::Config(format!(
                "--vllm-timeout ({}s) must be shorter than --request-timeout ({}s): one hung \
                 call would use the whole deadline and never be retried",
                config.vllm_timeout.as_secs_f64(),
                config.request_timeout.as_secs_f64()
            )));
        }
        if config.render_cpu_limit < Duration::from_secs(1) {
            return Err(ServeError::Config(format!(
                "--render-cpu-limit ({}s) must be at least 1s: the kernel counts CPU in whole \
                 seconds",
                config.render_cpu_limit.as_secs_f64()
            )));
        }
        for url in &config.allowed_server_urls {
            origin(url).map_err(|reason| {
                ServeError::Config(format!("--allow-server-url {url:?}: {reason}"))
            })?;
        }
        let metrics = Arc::new(Metrics::new(&config.revision));
        let tier_seen = Arc::new(AtomicBool::new(false));
        let breaker = Arc::new(Breaker::new(
            config.breaker_failures,
            config.breaker_cool_down,
        ));
        let key = config
            .api_key_file
            .as_deref()
            .map(KeyFile::load)
            .transpose()?
            .map(Arc::new);
        let template = ClientConfig {
            model: config.model_name.clone(),
            max_in_flight: config.vllm_max_in_flight,
            request_timeout: config.vllm_timeout,
            max_retries: config.vllm_retries,
            backoff_base: config.vllm_backoff,
            observer: Some(Arc::new(Recorder {
                metrics: metrics.clone(),
                breaker: breaker.clone(),
                answered: tier_seen.clone(),
            })),
            ..ClientConfig::new(config.server_url.clone().unwrap_or_default())
        };
        let upstream = config.server_url.as_ref().map(|_| {
            Upstream::new(
                template.clone(),
                key.clone(),
                breaker.clone(),
                config.ready_cache,
            )
        });
        let admission = Admission::new(config.max_concurrent_documents, metrics.inflight().clone());
        let pdfium = render_pool(&config, &metrics)?;
        let jobs = v1::Jobs::new(
            store,
            worker_id(&config),
            config.revision.clone(),
            v1::JobTiming {
                lease: config.job_lease,
                poll: config.job_poll,
                retention: config.job_retention,
            },
        );
        Ok(Self {
            config,
            metrics,
            breaker,
            template,
            key,
            upstream,
            admission,
            tier_seen,
            leaving: AtomicBool::new(false),
            pdfium,
            jobs,
            started_at_s: v1::store::now_ms() / 1000,
        })
    }

    /// How long a caller should wait after the vLLM tier failed: the breaker's cool-down when it
    /// is open, else a second.
    fn retry_after(&self) -> Duration {
        self.breaker
            .retry_after(Instant::now())
            .max(MIN_RETRY_AFTER)
    }

    /// Whether a caller may name `server_url`: its origin is one of `--allow-server-url`.
    fn allows_server_url(&self, server_url: &str) -> bool {
        origin(server_url).is_ok_and(|wanted| {
            self.config
                .allowed_server_urls
                .iter()
                .any(|allowed| origin(allowed).is_ok_and(|allowed| allowed == wanted))
        })
    }

    /// A one-off client for a caller-supplied server, kept out of the metrics and the breaker,
    /// which describe the configured tier, and without the configured tier's API key.
    async fn upstream_for_caller(&self, server_url: &str) -> Result<VlmClient, ClientError> {
        VlmClient::connect(ClientConfig {
            server_url: server_url.to_owned(),
            model: None,
            observer: None,
            api_key: None,
            ..self.template.clone()
        })
        .await
    }
}

fn router(app: Arc<App>) -> Router {
    let body_limit = app
        .config
        .max_file_bytes
        .0
        .saturating_add(FORM_OVERHEAD_BYTES);
    Router::new()
        .route("/file_parse", post(file_parse::file_parse))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .merge(v1::router())
        .layer(DefaultBodyLimit::max(
            usize::try_from(body_limit).unwrap_or(usize::MAX),
        ))
        .layer(axum::middleware::from_fn(logging::request_span))
        .with_state(app)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    let verdict = readiness(&app).await;
    let (status, body) = match verdict {
        Ok(()) => (StatusCode::OK, serde_json::json!({ "ready": true })),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "ready": false, "reason": reason }),
        ),
    };
    (status, Json(body)).into_response()
}

/// `--worker-id`, else the host name (a pod's) with a random suffix: two workers never share a
/// name, whatever machine or process they run in.
fn worker_id(config: &ServeArgs) -> String {
    config.worker_id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".to_owned());
        v1::store::new_id(&format!("{host}-"))
    })
}

/// `--job-store`, else a SQLite file of this worker alone in a directory under `TMPDIR` that
/// goes with the process (as MinerU's own server keeps its jobs: they end with it). A database
/// that cannot be reached yet does not keep the worker from serving `/file_parse`.
async fn job_store(
    config: &ServeArgs,
) -> Result<(v1::store::Store, Option<tempfile::TempDir>), ServeError> {
    let config_error = |e: &dyn std::fmt::Display| ServeError::Config(format!("--job-store: {e}"));
    let (url, dir) = match &config.job_store {
        Some(url) => (url.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("mineru-worker-jobs-")
                .tempdir()
                .map_err(|e| config_error(&e))?;
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
            (url, Some(dir))
        }
    };
    let store = v1::store::Store::open(&url).map_err(|e| config_error(&e))?;
    match tokio::time::timeout(Duration::from_secs(5), store.ensure_schema()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "job store unavailable; /v1 answers 503 until it is back")
        }
        Err(_) => tracing::warn!("job store slow to answer; /v1 answers 503 until it does"),
    }
    Ok((store, dir))
}

/// Where pdfium runs: in subprocesses unless `--render-processes 0`.
fn render_pool(config: &ServeArgs, metrics: &Arc<Metrics>) -> Result<Pdfium, ServeError> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let processes = config
        .render_processes
        .unwrap_or(cores.min(config.max_concurrent_documents.max(1)));
    if processes == 0 {
        tracing::warn!("pdfium runs inside the server (--render-processes 0): no isolation");
        return Ok(Pdfium::InProcess);
    }
    let program = match &config.render_program {
        Some(program) => program.clone(),
        None => std::env::current_exe().map_err(|e| {
            ServeError::Config(format!(
                "cannot find this executable for the render subprocesses: {e}"
            ))
        })?,
    };
    let pool = PoolConfig {
        program,
        processes,
        memory_limit: config.render_memory.0,
        cpu_limit: config.render_cpu_limit,
    };
    Ok(Pdfium::Isolated(RenderPool::observed(
        pool,
        Some(metrics.clone()),
    )))
}

/// `scheme://host:port` of a URL (the port made explicit), or why it is not an http(s) URL.
fn origin(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("the scheme must be http or https".into());
    }
    let host = parsed.host_str().ok_or("the URL has no host")?;
    let port = parsed
        .port_or_known_default()
        .ok_or("the URL has no port")?;
    Ok(format!("{}://{host}:{port}", parsed.scheme()))
}

async fn readiness(app: &App) -> Result<(), String> {
    if app.leaving.load(Ordering::SeqCst) || app.admission.is_closed() {
        return Err("shutting down".into());
    }
    // The first call binds libpdfium (dlopen); later calls return the remembered outcome.
    tokio::task::spawn_blocking(|| crate::pdf::library().map(drop))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // A text-tier worker serves without the vLLM tier, so only a vlm worker waits for it, and
    // only until it has seen it once: a worker that never reached its tier (a wrong model name,
    // a refused key) must not take traffic, one that did keeps its place through a blip.
    match (&app.upstream, app.config.backend) {
        (Some(upstream), Backend::Vlm) if !app.tier_seen.load(Ordering::SeqCst) => {
            upstream.ready().await?;
            app.tier_seen.store(true, Ordering::SeqCst);
            Ok(())
        }
        _ => Ok(()),
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    // The breaker half-opens by the clock alone; the gauge is brought up to date per scrape.
    app.metrics.breaker(app.breaker.state(Instant::now()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

/// Serves on `listener` until `shutdown` completes, then lets requests in progress finish for up
/// to `--shutdown-grace`.
pub async fn run(
    config: ServeArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (delay, grace) = (config.shutdown_delay, config.shutdown_grace);
    let mut config = config;
    config.worker_id = Some(worker_id(&config));
    let (store, store_dir) = job_store(&config).await?;
    let app = Arc::new(App::new(config, store)?);
    let dispatcher = tokio::spawn(v1::runner::dispatch(app.clone()));
    let watcher = app
        .key
        .clone()
        .map(|key| tokio::spawn(key.watch(app.config.api_key_poll)));
    let draining = Arc::new(Notify::new());
    let closed_at = Arc::new(std::sync::OnceLock::new());
    let signal = {
        let app = app.clone();
        let draining = draining.clone();
        let closed_at = closed_at.clone();
        async move {
            shutdown.await;
            app.leaving.store(true, Ordering::SeqCst);
            tracing::info!(
                ?delay,
                "leaving: not ready, still taking documents meanwhile"
            );
            tokio::time::sleep(delay).await;
            tracing::info!("shutting down: no new requests, finishing those in progress");
            app.admission.close();
            let _ = closed_at.set(Instant::now());
            draining.notify_one();
        }
    };
    tracing::info!(addr = %listener.local_addr()?, revision = %app.config.revision, "serving");
    let server = axum::serve(listener, router(app.clone())).with_graceful_shutdown(signal);
    let result = tokio::select! {
        result = server => result.map_err(ServeError::from),
        () = async { draining.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "shutdown grace period over; abandoning requests in progress");
            Ok(())
        }
    };
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    dispatcher.abort();
    // Jobs get what is left of the grace requests had; those still running go back to the queue.
    let left = closed_at
        .get()
        .map_or(Duration::ZERO, |at| grace.saturating_sub(at.elapsed()));
    v1::runner::drain(&app.jobs, left).await;
    app.jobs.store.close().await;
    drop(store_dir);
    result
}

/// The `serve` subcommand: logs, listener, SIGTERM/Ctrl-C, and one line on failure.
pub async fn main(config: ServeArgs) -> ExitCode {
    logging::init(config.log_format);
    let addr = std::net::SocketAddr::new(config.host, config.port);
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(source) => {
            return fail(&ServeError::Bind {
                addr: addr.to_string(),
                source,
            });
        }
    };
    match run(config, listener, terminated()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(err: &ServeError) -> ExitCode {
    tracing::error!(error = %err, "cannot serve");
    ExitCode::FAILURE
}

/// SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
pub async fn terminated() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let sigterm = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = sigterm => {}
    }
}
