//! The vLLM tier as the server sees it: one shared client (rebuilt when the API key changes),
//! readiness (does the tier list the expected model?), and the observer that turns every HTTP
//! attempt into metrics and circuit-breaker input.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mineru_protocol::client::{CallError, CallObserver, ClientConfig, ClientError, VlmClient};

use super::breaker::{Breaker, Transition};
use super::metrics::Metrics;

/// A readiness check's calls get this long, so a hung tier cannot hang the probe.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// Feeds every HTTP attempt to the metrics and the breaker, and remembers that the tier once
/// answered.
#[derive(Debug)]
pub struct Recorder {
    pub metrics: Arc<Metrics>,
    pub breaker: Arc<Breaker>,
    /// Set by the first usable answer.
    pub answered: Arc<AtomicBool>,
}

impl CallObserver for Recorder {
    fn attempt(&self, outcome: Result<(), &CallError>, elapsed: Duration, retrying: bool) {
        self.metrics.vllm_call(outcome, elapsed, retrying);
        if outcome.is_ok() {
            self.answered.store(true, Ordering::SeqCst);
        }
        // A refusal (401, 400) proves the server is up; only unavailability counts against it.
        let ok = !matches!(outcome, Err(e) if e.is_retryable());
        let now = Instant::now();
        match self.breaker.record(ok, now) {
            Transition::Opened => {
                self.metrics.breaker_opened();
                tracing::warn!("circuit breaker opened: the vLLM tier keeps failing");
            }
            Transition::Closed => tracing::info!("circuit breaker closed: the vLLM tier answers"),
            Transition::None => {}
        }
        self.metrics.breaker(self.breaker.state(now));
    }

    fn hold_off(&self) -> Option<Duration> {
        Some(self.breaker.retry_after(Instant::now())).filter(|wait| !wait.is_zero())
    }
}

/// The API key file of a mounted Secret. Kubernetes replaces the file's content in place (a
/// symlink swap), so the content is compared, not the path.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    /// The key, and the one it replaced (kept for calls to a vLLM that still holds it).
    key: RwLock<(String, Option<String>)>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the API key file {path}: {source}")]
pub struct KeyFileError {
    path: PathBuf,
    source: std::io::Error,
}

impl KeyFile {
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        Ok(Self {
            path: path.to_owned(),
            key: RwLock::new((read_key(path)?, None)),
        })
    }

    pub fn current(&self) -> String {
        self.key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// The key the current one replaced, if it changed since the start.
    pub fn previous(&self) -> Option<String> {
        self.key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// Re-reads the file; a file that cannot be read keeps the last key (a Secret update is not
    /// atomic for readers that race it).
    pub fn reload(&self) -> bool {
        match read_key(&self.path) {
            Ok(key) => {
                let mut keys = self.key.write().unwrap_or_else(PoisonError::into_inner);
                if keys.0 == key {
                    return false;
                }
                let replaced = std::mem::replace(&mut keys.0, key);
                keys.1 = Some(replaced);
                tracing::info!(path = %self.path.display(), "API key changed; reconnecting with it");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "keeping the previous API key");
                false
            }
        }
    }

    /// Checks the file every `every` for as long as the server runs.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let key = self.clone();
            // A blocking read on a mounted volume stays off the async threads.
            if let Err(e) = tokio::task::spawn_blocking(move || key.reload()).await {
                tracing::warn!(error = %e, "API key reload task failed");
            }
        }
    }
}

fn read_key(path: &Path) -> Result<String, KeyFileError> {
    std::fs::read_to_string(path)
        .map(|k| k.trim().to_owned())
        .map_err(|source| KeyFileError {
            path: path.to_owned(),
            source,
        })
}

/// `template` with the current key from `key`, and the one it replaced.
fn with_key(template: &ClientConfig, key: Option<&KeyFile>) -> ClientConfig {
    ClientConfig {
        api_key: key.map(KeyFile::current),
        previous_api_key: key.and_then(KeyFile::previous),
        ..template.clone()
    }
}

struct Connected {
    client: VlmClient,
    key: Option<String>,
}

/// The configured vLLM tier.
pub struct Upstream {
    template: ClientConfig,
    key: Option<Arc<KeyFile>>,
    breaker: Arc<Breaker>,
    client: tokio::sync::Mutex<Option<Connected>>,
    ready_ttl: Duration,
    ready: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Upstream {
    /// `template` carries the URL, model, limits and the [`Recorder`]; the key comes from `key`.
    pub fn new(
        template: ClientConfig,
        key: Option<Arc<KeyFile>>,
        breaker: Arc<Breaker>,
        ready_ttl: Duration,
    ) -> Self {
        Self {
            template,
            key,
            breaker,
            client: tokio::sync::Mutex::new(None),
            ready_ttl,
            ready: tokio::sync::Mutex::new(None),
        }
    }

    fn config(&self) -> ClientConfig {
        with_key(&self.template, self.key.as_deref())
    }

    /// The shared client, connecting first (and again after a key change). Clones share one
    /// concurrency limit toward the tier.
    pub async fn client(&self) -> Result<VlmClient, ClientError> {
        let config = self.config();
        let mut slot = self.client.lock().await;
        if let Some(connected) = slot.as_ref().filter(|c| c.key == config.api_key) {
            return Ok(connected.client.clone());
        }
        let key = config.api_key.clone();
        let client = VlmClient::connect(config).await?;
        *slot = Some(Connected {
            client: client.clone(),
            key,
        });
        Ok(client)
    }

    /// Whether the tier serves the expected model: one `GET /v1/models` without retries, reused
    /// for `ready_ttl`. False at once while the breaker is open.
    pub async fn ready(&self) -> Result<(), String> {
        let wait = self.breaker.retry_after(Instant::now());
        if !wait.is_zero() {
            return Err(format!(
                "circuit breaker open toward the vLLM tier for another {}s",
                wait.as_secs_f64().ceil()
            ));
        }
        let mut cached = self.ready.lock().await;
        if let Some((at, verdict)) = cached.as_ref()
            && at.elapsed() < self.ready_ttl
        {
            return verdict.clone();
        }
        let probe = ClientConfig {
            max_retries: 0,
            connect_timeout: READY_TIMEOUT,
            request_timeout: READY_TIMEOUT,
            ..self.config()
        };
        let verdict = VlmClient::connect(probe)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        *cached = Some((Instant::now(), verdict.clone()));
        verdict
    }
}
