//! `mineru-worker serve`: the CPU tier's HTTP service, compatible with MinerU's `mineru-api`.
//!
//! `POST /file_parse` extracts uploaded PDFs with either backend; `GET /health` is liveness,
//! `GET /ready` readiness (pdfium loads and the vLLM tier serves the expected model, breaker not
//! open), `GET /metrics` Prometheus metrics labelled with the revision, `GET /openapi.json` the
//! API description (committed as docs/openapi/worker.yaml). Limits bound what one worker holds:
//! documents in progress, upload size, pages, a deadline per request. On SIGTERM the listener
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

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use config::{ByteSize, LogFormat, ServeArgs};
pub use metrics::{DOCUMENT_SECONDS_BUCKETS, PAGE_SECONDS_BUCKETS};

use crate::client::{ClientConfig, ClientError, VlmClient};
use crate::output::Backend;
use admission::Admission;
use breaker::Breaker;
use metrics::Metrics;
use upstream::{KeyFile, KeyFileError, Recorder, Upstream, with_key};

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
}

impl App {
    fn new(config: ServeArgs) -> Result<Self, ServeError> {
        if config.backend == Backend::Vlm && config.server_url.is_none() {
            return Err(ServeError::Config(
                "--backend vlm needs --server-url (or MINERU_SERVER_URL); use --backend text \
                 for a worker without a vLLM tier"
                    .into(),
            ));
        }
        let metrics = Arc::new(Metrics::new(&config.revision));
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
        Ok(Self {
            config,
            metrics,
            breaker,
            template,
            key,
            upstream,
            admission,
        })
    }

    /// How long a caller should wait after the vLLM tier failed: the breaker's cool-down when it
    /// is open, else a second.
    fn retry_after(&self) -> Duration {
        self.breaker
            .retry_after(Instant::now())
            .max(MIN_RETRY_AFTER)
    }

    /// A one-off client for a caller-supplied server (`--allow-server-url`), kept out of the
    /// metrics and the breaker, which describe the configured tier.
    async fn upstream_for_caller(&self, server_url: &str) -> Result<VlmClient, ClientError> {
        VlmClient::connect(ClientConfig {
            server_url: server_url.to_owned(),
            model: None,
            observer: None,
            ..with_key(&self.template, self.key.as_deref())
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

async fn readiness(app: &App) -> Result<(), String> {
    if app.admission.is_closed() {
        return Err("shutting down".into());
    }
    // The first call binds libpdfium (dlopen); later calls return the remembered outcome.
    tokio::task::spawn_blocking(|| crate::pdf::library().map(drop))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // A text-tier worker serves without the vLLM tier, so only a vlm worker waits for it.
    match (&app.upstream, app.config.backend) {
        (Some(upstream), Backend::Vlm) => upstream.ready().await,
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
    let grace = config.shutdown_grace;
    let app = Arc::new(App::new(config)?);
    let watcher = app
        .key
        .clone()
        .map(|key| tokio::spawn(key.watch(app.config.api_key_poll)));
    let draining = Arc::new(Notify::new());
    let signal = {
        let app = app.clone();
        let draining = draining.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests, finishing those in progress");
            app.admission.close();
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
async fn terminated() {
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
