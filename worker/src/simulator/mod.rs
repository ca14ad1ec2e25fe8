//! A vLLM server simulator that speaks the MinerU2.5 protocol exactly and is strict about it.
//!
//! OpenAI-compatible endpoints (`/v1/models`, `/v1/chat/completions`), `/health`, and `vllm:`
//! metrics on `/metrics`. Every chat request is checked against the protocol ([`strict`]); a
//! deviation is refused with the status a real server would give, logged and counted. Answers come
//! deterministically from a [`Scenario`]. Faults ([`Faults`]) and restarts can be injected at run
//! time through `/admin/*` or the [`SimHandle`].
//!
//! Connections are served one by one on hyper, so a fault can close a socket without an answer
//! and a restart can close the listener (refusing connections, like a dead process).

pub mod faults;
pub mod metrics;
pub mod scenario;
pub mod strict;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

pub use faults::{Faults, Injected};
pub use scenario::{LayoutAnswer, Scenario, ScenarioError, page_key};
pub use strict::Deviation;

use mineru_protocol::chat::{
    AssistantMessage, ChatResponse, Choice, ErrorResponse, ModelCard, ModelList, Step, Usage,
};

/// Largest request body accepted (a 3500 px page crop as PNG, base64-encoded, fits easily).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Deviation messages kept for inspection.
const DEVIATION_LOG_LIMIT: usize = 1000;

/// How the simulated server behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The served model name (vLLM's `--served-model-name`).
    pub model: String,
    /// When set, every `/v1` request needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    pub scenario: Scenario,
    pub faults: Faults,
    /// Requests processed at once (vLLM's `--max-num-seqs`); the rest wait.
    pub max_num_seqs: usize,
    /// `max_tokens` above this is refused, as vLLM does.
    pub max_model_len: u64,
    /// Seed of the fault-injection random draws.
    pub seed: u64,
}

impl SimConfig {
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            api_key: None,
            scenario: Scenario::default(),
            faults: Faults::default(),
            max_num_seqs: 256,
            max_model_len: 16384,
            seed: 0,
        }
    }
}

/// Counters for tests and the admin endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Chat requests received (including refused and faulted ones).
    pub requests: u64,
    /// Bytes of their bodies: what a client sends per page.
    pub request_bytes: u64,
    /// Chat requests answered 200, per step name.
    pub answered: BTreeMap<String, u64>,
    pub deviations: u64,
    pub injected_errors: u64,
    pub dropped_connections: u64,
    pub in_flight: usize,
    /// Most chat requests seen in flight at once.
    pub max_in_flight: usize,
}

enum Control {
    Restart(Duration),
    Shutdown,
}

struct Shared {
    config: SimConfig,
    /// The key requests must carry; `config.api_key` until a restart with a new one.
    api_key: Mutex<Option<String>>,
    faults: Mutex<(Faults, StdRng)>,
    metrics: metrics::Metrics,
    scheduler: Semaphore,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: AtomicU64,
    request_bytes: AtomicU64,
    deviations: AtomicU64,
    injected_errors: AtomicU64,
    dropped: AtomicU64,
    answered: Mutex<BTreeMap<String, u64>>,
    deviation_log: Mutex<Vec<String>>,
    next_id: AtomicU64,
    /// Bumped to close every open connection (restart, shutdown).
    epoch: watch::Sender<u64>,
    control: mpsc::UnboundedSender<Control>,
}

/// Closes the connection a request arrived on, without an answer.
#[derive(Clone)]
struct ConnectionKill(Arc<Notify>);

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the base URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests refused for deviating from the protocol.
    pub fn deviations(&self) -> u64 {
        self.shared.deviations.load(Ordering::Relaxed)
    }

    /// The refused requests' reasons, oldest first.
    pub fn deviation_log(&self) -> Vec<String> {
        lock(&self.shared.deviation_log).clone()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    pub fn set_faults(&self, faults: Faults) {
        lock(&self.shared.faults).0 = faults;
    }

    /// Simulates a server restart: open connections are dropped, connections are refused for
    /// `down`, then the server accepts again on the same address.
    pub fn restart(&self, down: Duration) {
        // The accept loop only stops when the server shuts down, and then nothing is left to restart.
        let _ = self.shared.control.send(Control::Restart(down));
    }

    /// A restart with another API key, as vLLM reads `VLLM_API_KEY` only when it starts: a
    /// key rotation on the GPU tier.
    pub fn restart_with_key(&self, down: Duration, key: Option<String>) {
        *lock(&self.shared.api_key) = key;
        self.restart(down);
    }

    /// Stops accepting, closes every connection and waits for the server task.
    pub async fn shutdown(self) {
        let _ = self.shared.control.send(Control::Shutdown);
        let _ = self.task.await;
    }
}

/// Starts the simulator on `listener`.
pub fn start(listener: TcpListener, config: SimConfig) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let (control, control_rx) = mpsc::unbounded_channel();
    let rng = StdRng::seed_from_u64(config.seed);
    let shared = Arc::new(Shared {
        metrics: metrics::Metrics::new(&config.model, &Deviation::KINDS),
        scheduler: Semaphore::new(config.max_num_seqs.max(1)),
        faults: Mutex::new((config.faults.clone(), rng)),
        api_key: Mutex::new(config.api_key.clone()),
        config,
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        request_bytes: AtomicU64::new(0),
        deviations: AtomicU64::new(0),
        injected_errors: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        answered: Mutex::new(BTreeMap::new()),
        deviation_log: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(0),
        epoch: watch::Sender::new(0),
        control,
    });
    let router = router(shared.clone());
    let task = tokio::spawn(accept_loop(
        listener,
        addr,
        router,
        shared.clone(),
        control_rx,
    ));
    Ok(SimHandle { addr, shared, task })
}

/// Starts the simulator on an ephemeral loopback port.
pub async fn start_local(config: SimConfig) -> std::io::Result<SimHandle> {
    start(TcpListener::bind(("127.0.0.1", 0)).await?, config)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/admin/faults", get(get_faults).put(put_faults))
        .route("/admin/restart", post(restart))
        .route("/admin/stats", get(stats))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

async fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    shared: Arc<Shared>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, router.clone(), shared.epoch.subscribe()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            command = control.recv() => match command {
                Some(Control::Restart(down)) => {
                    tracing::info!(?down, "simulated restart: refusing connections");
                    drop(listener);
                    shared.epoch.send_modify(|e| *e += 1);
                    tokio::time::sleep(down).await;
                    listener = rebind(addr).await;
                    tracing::info!("simulated restart: accepting again");
                }
                Some(Control::Shutdown) | None => {
                    shared.epoch.send_modify(|e| *e += 1);
                    return;
                }
            },
        }
    }
}

/// Binds `addr` again after a restart, retrying while the port is still held.
async fn rebind(addr: SocketAddr) -> TcpListener {
    loop {
        let bound = (|| {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(1024)
        })();
        match bound {
            Ok(listener) => return listener,
            Err(e) => {
                tracing::warn!(error = %e, %addr, "rebinding after restart failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, router: Router, mut epoch: watch::Receiver<u64>) {
    let kill = Arc::new(Notify::new());
    let service = TowerToHyperService::new(router.layer(Extension(ConnectionKill(kill.clone()))));
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = kill.notified() => {}
        _ = epoch.changed() => {}
    }
}

impl Shared {
    fn stats(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            request_bytes: self.request_bytes.load(Ordering::Relaxed),
            answered: lock(&self.answered).clone(),
            deviations: self.deviations.load(Ordering::Relaxed),
            injected_errors: self.injected_errors.load(Ordering::Relaxed),
            dropped_connections: self.dropped.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
        }
    }

    /// Simulated KV-cache usage: the share of batch slots in use.
    fn kv_cache_usage(&self, running: i64) {
        let slots = self.config.max_num_seqs.max(1) as f64;
        self.metrics
            .kv_cache_usage
            .set(running.max(0) as f64 / slots);
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = lock(&self.api_key).clone() else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            == Some(key.as_str())
    }

    fn reject(&self, deviation: Deviation) -> Response {
        tracing::warn!(kind = deviation.kind(), "protocol deviation: {deviation}");
        self.deviations.fetch_add(1, Ordering::Relaxed);
        self.metrics.count_deviation(deviation.kind());
        {
            let mut log = lock(&self.deviation_log);
            if log.len() < DEVIATION_LOG_LIMIT {
                log.push(deviation.to_string());
            }
        }
        error_response(
            deviation.status(),
            deviation.error_type(),
            deviation.to_string(),
        )
    }
}

/// Counts a chat request as in flight for as long as it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A place in the simulated engine's batch (one of `max_num_seqs`), keeping the running, waiting
/// and KV-cache gauges true even when a restart drops the request mid-way.
struct BatchSlot<'a> {
    shared: &'a Shared,
    _permit: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl<'a> BatchSlot<'a> {
    async fn admit(shared: &'a Shared) -> Self {
        let waiting = GaugeGuard::inc(&shared.metrics.waiting);
        // The semaphore is never closed, so acquiring only fails in theory.
        let permit = shared.scheduler.acquire().await.ok();
        drop(waiting);
        let running = shared.metrics.running.inc() + 1;
        shared.kv_cache_usage(running);
        Self {
            shared,
            _permit: permit,
        }
    }
}

impl Drop for BatchSlot<'_> {
    fn drop(&mut self) {
        let running = self.shared.metrics.running.dec() - 1;
        self.shared.kv_cache_usage(running);
    }
}

struct GaugeGuard<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> GaugeGuard<'a> {
    fn inc(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking holder cannot leave these plain counters inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn error_response(status: u16, kind: &str, message: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        Json(ErrorResponse::new(status.as_u16(), kind, message)),
    )
        .into_response()
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    Extension(kill): Extension<ConnectionKill>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    shared.requests.fetch_add(1, Ordering::Relaxed);
    shared
        .request_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let _in_flight = InFlight::enter(&shared);
    if !shared.authorized(&headers) {
        return shared.reject(Deviation::Unauthorized);
    }
    let (injected, latency, retry_after) = {
        let mut guard = lock(&shared.faults);
        let (faults, rng) = &mut *guard;
        (
            faults.draw(rng),
            faults.latency(rng),
            faults.retry_after_secs,
        )
    };
    match injected {
        Injected::DropConnection => {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            kill.0.notify_one();
            // The connection task drops this future together with the socket.
            std::future::pending::<()>().await;
        }
        Injected::ServiceUnavailable => {
            shared.injected_errors.fetch_add(1, Ordering::Relaxed);
            let mut response =
                error_response(503, "ServiceUnavailableError", "simulated overload".into());
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, secs.into());
            }
            return response;
        }
        Injected::Nothing => {}
    }

    let checked = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            strict::check_request(&body, &shared.config.model, shared.config.max_model_len)
        })
        .await
    };
    let accepted = match checked {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(deviation)) => return shared.reject(deviation),
        Err(e) => return error_response(500, "InternalServerError", e.to_string()),
    };

    let batch_slot = BatchSlot::admit(&shared).await;
    let ttft = started.elapsed() + latency / 2;
    tokio::time::sleep(latency).await;
    drop(batch_slot);

    let content = match accepted.step {
        Step::Layout => {
            // The key is logged at debug level so scenario authors can find a page's key.
            let wanted = shared.config.scenario.has_page_overrides()
                || tracing::enabled!(tracing::Level::DEBUG);
            let key = wanted.then(|| page_key(&accepted.image));
            if let Some(key) = &key {
                tracing::debug!(page_key = %key, "layout request");
            }
            shared.config.scenario.layout_for(key.as_deref())
        }
        step => shared
            .config
            .scenario
            .content_for(step, accepted.image.dimensions()),
    };
    let finish_reason = shared.config.scenario.finish_reason(accepted.step);
    let (width, height) = accepted.image.dimensions();
    let prompt_tokens = u64::from(width.div_ceil(28) * height.div_ceil(28)) + 20;
    let completion_tokens = (content.len() as u64).div_ceil(4);
    let response = ChatResponse {
        id: format!(
            "chatcmpl-{}",
            shared.next_id.fetch_add(1, Ordering::Relaxed)
        ),
        object: "chat.completion".into(),
        created: unix_now(),
        model: shared.config.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant".into(),
                content: Some(content),
            },
            finish_reason: Some(finish_reason.into()),
        }],
        usage: Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        },
    };
    *lock(&shared.answered)
        .entry(accepted.step.name().to_owned())
        .or_default() += 1;
    shared.metrics.count_success(finish_reason);
    shared.metrics.prompt_tokens.inc_by(prompt_tokens);
    shared.metrics.generation_tokens.inc_by(completion_tokens);
    shared.metrics.ttft.observe(ttft.as_secs_f64());
    shared
        .metrics
        .e2e_latency
        .observe(started.elapsed().as_secs_f64());
    Json(response).into_response()
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !shared.authorized(&headers) {
        return shared.reject(Deviation::Unauthorized);
    }
    Json(ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: shared.config.model.clone(),
            object: "model".into(),
            owned_by: "vllm".into(),
            max_model_len: Some(shared.config.max_model_len),
        }],
    })
    .into_response()
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Json<Faults> {
    Json(lock(&shared.faults).0.clone())
}

async fn put_faults(State(shared): State<Arc<Shared>>, Json(faults): Json<Faults>) -> Json<Faults> {
    lock(&shared.faults).0 = faults.clone();
    Json(faults)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartRequest {
    down_ms: u64,
}

async fn restart(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<RestartRequest>,
) -> StatusCode {
    let control = shared.control.clone();
    tokio::spawn(async move {
        // Let this answer leave before the restart closes its connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = control.send(Control::Restart(Duration::from_millis(request.down_ms)));
    });
    StatusCode::ACCEPTED
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(shared.stats())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
