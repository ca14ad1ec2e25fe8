//! HTTP client for a vLLM server hosting MinerU2.5.
//!
//! One client (cheap to clone) carries one concurrency limit shared by every page and block of
//! every document it serves, so a busy worker never floods the server. Transient failures (429,
//! 5xx, connection errors, timeouts) are retried with jittered exponential backoff, honouring
//! `Retry-After`; everything else fails at once with the server's own message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio::sync::Semaphore;

use crate::chat::{Answer, AnswerError, ModelList, Step, parse_answer, request_body};

/// Longest wait a server's `Retry-After` can impose on one retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Longest error body kept in an error message.
const MAX_ERROR_BODY: usize = 512;
/// Largest answer read from the server: a MinerU2.5 answer at its token limit is tens of KB,
/// so anything near this is not an answer, and must not be held whole.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// How to reach the server and how hard to try.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server base URL, e.g. `http://vllm:8000` (a trailing `/v1` is accepted).
    pub server_url: String,
    /// Served model name; when `None` the server must serve exactly one model.
    pub model: Option<String>,
    /// Sent as `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// The key before a rotation, tried when the server refuses `api_key` with 401 (and the
    /// other way round): while a new key reaches workers and vLLM at different moments, each
    /// call finds the one the server holds.
    pub previous_api_key: Option<String>,
    /// Requests in flight at once, across all pages and blocks.
    pub max_in_flight: usize,
    pub connect_timeout: Duration,
    /// Whole-request timeout (a long table can take minutes on a loaded GPU).
    pub request_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry; doubles per retry up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Told about every HTTP attempt (a server's metrics and circuit breaker).
    pub observer: Option<Arc<dyn CallObserver>>,
}

/// Sees every HTTP attempt the client makes, as it ends, and may hold attempts back.
pub trait CallObserver: Send + Sync + std::fmt::Debug {
    /// `outcome` is `Ok` for a usable 200; `retrying` is true when another attempt follows.
    fn attempt(&self, outcome: Result<(), &CallError>, elapsed: Duration, retrying: bool);

    /// Asked before every attempt: how long to wait instead of calling a tier known to be down
    /// (an open circuit breaker), or `None` to call now.
    fn hold_off(&self) -> Option<Duration> {
        None
    }
}

impl ClientConfig {
    /// 100 in flight (as MinerU), 10 s connect, 120 s per attempt (a long table on a loaded
    /// GPU takes tens of seconds; MinerU's 600 s would let one hung call use a whole request's
    /// deadline), 3 retries.
    pub fn new(server_url: impl Into<String>) -> Self {
        Self {
            server_url: server_url.into(),
            model: None,
            api_key: None,
            previous_api_key: None,
            max_in_flight: 100,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            max_retries: 3,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            observer: None,
        }
    }
}

/// One failed HTTP exchange.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("HTTP {status}: {body}")]
    Status {
        status: StatusCode,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("timed out: {0}")]
    Timeout(reqwest::Error),
    #[error("transport error: {0}")]
    Transport(reqwest::Error),
    #[error("unusable answer: {0}")]
    Answer(#[from] AnswerError),
    #[error("the answer exceeds {limit} bytes")]
    TooLarge { limit: usize },
}

impl CallError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
            CallError::Timeout(_) => true,
            CallError::Transport(e) => !e.is_builder() && !e.is_redirect(),
            CallError::Answer(_) | CallError::TooLarge { .. } => false,
        }
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            CallError::Timeout(e)
        } else {
            CallError::Transport(e)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid API key: it must be printable ASCII")]
    InvalidApiKey,
    #[error("could not build the HTTP client: {0}")]
    Build(reqwest::Error),
    #[error("could not list models at {url}: {source}")]
    Models { url: String, source: CallError },
    #[error("model {wanted:?} is not served by {url} (served: {served:?})")]
    ModelNotServed {
        url: String,
        wanted: String,
        served: Vec<String>,
    },
    #[error("{url} serves {} models ({served:?}); configure the model name", served.len())]
    AmbiguousModel { url: String, served: Vec<String> },
    #[error("cannot encode the request body: {0}")]
    Encode(serde_json::Error),
    #[error("{step} request failed after {attempts} attempt(s): {source}")]
    Call {
        step: &'static str,
        attempts: u32,
        source: CallError,
    },
    /// Not sent: the tier stayed known-down (breaker open) for the whole retry budget.
    #[error("{step} request not sent: the vLLM tier is unavailable (circuit breaker open)")]
    HeldOff { step: &'static str },
}

impl ClientError {
    /// Whether the failure was transient (retries ran out) rather than a refusal.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Models { source, .. } | ClientError::Call { source, .. } => {
                source.is_retryable()
            }
            ClientError::HeldOff { .. } => true,
            _ => false,
        }
    }

    /// The message without the text a server sent back, for a caller: another host's words
    /// (its error pages, what it echoes of a request) are not reflected through the worker.
    pub fn without_server_text(&self) -> String {
        match self {
            ClientError::Models {
                url,
                source: CallError::Status { status, .. },
            } => format!("could not list models at {url}: HTTP {status}"),
            ClientError::Call {
                step,
                attempts,
                source: CallError::Status { status, .. },
            } => format!("{step} request failed after {attempts} attempt(s): HTTP {status}"),
            other => other.to_string(),
        }
    }
}

/// A connected client; clones share the connection pool and the concurrency limit.
#[derive(Debug, Clone)]
pub struct VlmClient {
    http: reqwest::Client,
    keys: Arc<Keys>,
    chat_url: String,
    model: Arc<str>,
    permits: Arc<Semaphore>,
    config: Arc<ClientConfig>,
}

impl VlmClient {
    /// Builds the client and resolves the model name with `GET /v1/models`.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let base = api_base(&config.server_url)?;
        let keys = Arc::new(Keys::new(&config)?);
        let http = reqwest::Client::builder()
            // vLLM never redirects; a server that does is not followed with the key.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(ClientError::Build)?;

        let models_url = format!("{base}/models");
        let served = list_models(&http, &keys, &models_url, &config).await?;
        let model = match &config.model {
            Some(wanted) if served.iter().any(|m| m == wanted) => wanted.clone(),
            Some(wanted) => {
                return Err(ClientError::ModelNotServed {
                    url: models_url,
                    wanted: wanted.clone(),
                    served,
                });
            }
            None if served.len() == 1 => served[0].clone(),
            None => {
                return Err(ClientError::AmbiguousModel {
                    url: models_url,
                    served,
                });
            }
        };
        Ok(Self {
            http,
            keys,
            chat_url: format!("{base}/chat/completions"),
            model: model.into(),
            permits: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config: Arc::new(config),
        })
    }

    /// The served model name used in every request.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Runs one inference call for `step` on a PNG image.
    pub async fn complete(&self, step: Step, png: &[u8]) -> Result<Answer, ClientError> {
        let body = request_body(&self.model, step, png).map_err(ClientError::Encode)?;
        let answer = with_retries(&self.config, step.name(), || async {
            let _permit = self.permits.acquire().await;
            let response = self
                .keys
                .send(|| {
                    self.http
                        .post(&self.chat_url)
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone())
                })
                .await
                .map_err(CallError::from_reqwest)?;
            let bytes = read_success(response).await?;
            Ok(parse_answer(&bytes)?)
        })
        .await?;
        if answer.truncated {
            tracing::warn!(
                step = step.name(),
                "answer truncated at the server's length limit"
            );
        }
        Ok(answer)
    }
}

async fn list_models(
    http: &reqwest::Client,
    keys: &Keys,
    url: &str,
    config: &ClientConfig,
) -> Result<Vec<String>, ClientError> {
    let fetch = || async {
        let response = keys
            .send(|| http.get(url))
            .await
            .map_err(CallError::from_reqwest)?;
        let bytes = read_success(response).await?;
        serde_json::from_slice::<ModelList>(&bytes)
            .map_err(|e| CallError::Answer(AnswerError::NotJson(e.to_string())))
    };
    match with_retries(config, "models", fetch).await {
        Ok(list) => Ok(list.data.into_iter().map(|m| m.id).collect()),
        Err(ClientError::Call { source, .. }) => Err(ClientError::Models {
            url: url.to_owned(),
            source,
        }),
        Err(other) => Err(other),
    }
}

/// The `Authorization` values a client may send: the current key, then the one before a
/// rotation. Each call sends the one that last worked; a 401 makes it try the other once, and
/// the other is preferred from then on if the server took it.
#[derive(Debug)]
struct Keys {
    values: Vec<HeaderValue>,
    preferred: std::sync::atomic::AtomicUsize,
}

impl Keys {
    fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let mut values = Vec::new();
        for key in [&config.api_key, &config.previous_api_key]
            .into_iter()
            .flatten()
        {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| ClientError::InvalidApiKey)?;
            value.set_sensitive(true);
            if !values.contains(&value) {
                values.push(value);
            }
        }
        Ok(Self {
            values,
            preferred: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Sends the request `build` makes with the preferred key, and once more with the other
    /// when the server answers 401.
    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(count) = std::num::NonZeroUsize::new(self.values.len()) else {
            return build().send().await;
        };
        let first = self.preferred.load(Relaxed) % count;
        let response = build()
            .header(AUTHORIZATION, self.values[first].clone())
            .send()
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED || count.get() < 2 {
            return Ok(response);
        }
        let other = (first + 1) % count;
        let retried = build()
            .header(AUTHORIZATION, self.values[other].clone())
            .send()
            .await?;
        if retried.status() != StatusCode::UNAUTHORIZED {
            self.preferred.store(other, Relaxed);
        }
        Ok(retried)
    }
}

/// The body of a 200 response, or the status as an error.
async fn read_success(response: reqwest::Response) -> Result<Vec<u8>, CallError> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = read_capped(response, MAX_RESPONSE_BYTES).await?;
    if status == StatusCode::OK {
        return Ok(bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let body = match text.char_indices().nth(MAX_ERROR_BODY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    };
    Err(CallError::Status {
        status,
        body,
        retry_after,
    })
}

/// The body, read chunk by chunk and refused past `limit` bytes (a `Content-Length` over it is
/// refused before anything is read).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, CallError> {
    let too_large = CallError::TooLarge { limit };
    let announced = response.content_length().unwrap_or(0);
    if usize::try_from(announced).map_or(true, |n| n > limit) {
        return Err(too_large);
    }
    let mut body = Vec::with_capacity(announced as usize);
    while let Some(chunk) = response.chunk().await.map_err(CallError::from_reqwest)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Runs `attempt` until it succeeds, fails for good, or the retries run out (a server's
/// `Retry-After` is honoured, up to a minute). While the observer
/// holds attempts off (the tier is known to be down) no call is sent: the call waits the hold
/// out, but all it waits, backoffs and holds together, stays within what its retries could wait
/// ([`retry_wait_budget`]); a hold longer than what is left is waited for what is left, then the
/// call is tried once all the same. A restart shorter than the budget costs a wait, not the
/// document; a tier down for longer fails the call with a retryable error once the budget is
/// spent, so a worker taken out of traffic does not keep answering long after.
async fn with_retries<T, F, Fut>(
    config: &ClientConfig,
    step: &'static str,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let budget = retry_wait_budget(config);
    let mut waited = Duration::ZERO;
    let mut attempts = 0;
    loop {
        if let Some(hold) = config.observer.as_ref().and_then(|o| o.hold_off()) {
            let left = budget.saturating_sub(waited);
            if left.is_zero() {
                return Err(ClientError::HeldOff { step });
            }
            let wait = hold.min(MAX_RETRY_AFTER).min(left);
            waited += wait;
            tracing::debug!(
                step,
                ?wait,
                "vLLM tier known to be down; waiting before calling"
            );
            tokio::time::sleep(wait).await;
            if wait < left {
                // The hold is over (or was capped): ask again, another call may have reopened it.
                continue;
            }
            // The budget is spent: the call is tried once all the same.
        }
        attempts += 1;
        let started = Instant::now();
        let result = attempt().await;
        let retrying =
            matches!(&result, Err(e) if e.is_retryable() && attempts <= config.max_retries);
        if let Some(observer) = &config.observer {
            observer.attempt(result.as_ref().map(|_| ()), started.elapsed(), retrying);
        }
        match result {
            Ok(value) => return Ok(value),
            Err(err) if retrying => {
                let wait = backoff(config, attempts, &err);
                waited += wait;
                tracing::debug!(step, attempts, ?wait, error = %err, "retrying");
                tokio::time::sleep(wait).await;
            }
            Err(source) => {
                return Err(ClientError::Call {
                    step,
                    attempts,
                    source,
                });
            }
        }
    }
}

/// The wait before retry number `retry` (1-based): the server's `Retry-After` when it sent one,
/// otherwise an exponential step with jitter, so clients that failed together do not return
/// together.
fn backoff(config: &ClientConfig, retry: u32, err: &CallError) -> Duration {
    if let CallError::Status {
        retry_after: Some(wait),
        ..
    } = err
    {
        return (*wait).min(MAX_RETRY_AFTER);
    }
    backoff_step(config, retry).mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// The exponential step before retry number `retry` (1-based), before jitter.
fn backoff_step(config: &ClientConfig, retry: u32) -> Duration {
    config
        .backoff_base
        .saturating_mul(1u32 << (retry - 1).min(16))
        .min(config.backoff_max)
}

/// The most one call waits in all, backoffs and holds together: the sum of its backoff steps
/// before jitter (3.5 s with the defaults).
fn retry_wait_budget(config: &ClientConfig) -> Duration {
    (1..=config.max_retries)
        .map(|retry| backoff_step(config, retry))
        .sum()
}

/// `<server>/v1` from a configured server URL.
fn api_base(server_url: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: server_url.to_owned(),
        reason: reason.to_owned(),
    };
    let url = reqwest::Url::parse(server_url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    let trimmed = server_url.trim_end_matches('/');
    let base = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
    Ok(format!("{base}/v1"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Holds attempts off for the scripted durations, then lets them through, and counts the
    /// calls that go out.
    #[derive(Debug)]
    struct Holds(Mutex<Vec<Duration>>);

    impl CallObserver for Holds {
        fn attempt(&self, _: Result<(), &CallError>, _: Duration, _: bool) {}

        fn hold_off(&self) -> Option<Duration> {
            self.0.lock().expect("holds").pop()
        }
    }

    fn config(holds: Vec<Duration>) -> ClientConfig {
        ClientConfig {
            observer: Some(Arc::new(Holds(Mutex::new(holds)))),
            ..ClientConfig::new("http://127.0.0.1:9")
        }
    }

    fn unavailable() -> CallError {
        CallError::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: String::new(),
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    #[test]
    fn the_wait_budget_is_the_sum_of_the_backoff_steps() {
        let defaults = ClientConfig::new("http://127.0.0.1:9");
        assert_eq!(retry_wait_budget(&defaults), Duration::from_millis(3500));
        let capped = ClientConfig {
            max_retries: 5,
            backoff_max: Duration::from_secs(2),
            ..defaults
        };
        assert_eq!(retry_wait_budget(&capped), Duration::from_millis(7500));
    }

    /// One call through `with_retries` under the scripted holds, every attempt ending in
    /// `outcome()`: its result, the attempts made and the (paused) time it took.
    async fn call_held(
        holds: Vec<Duration>,
        outcome: fn() -> Result<(), CallError>,
    ) -> (Result<(), ClientError>, u32, Duration) {
        let config = config(holds);
        let started = tokio::time::Instant::now();
        let mut calls = 0;
        let result = with_retries(&config, "test", || {
            calls += 1;
            async move { outcome() }
        })
        .await;
        (result, calls, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_within_the_budget_is_waited_out_and_the_call_goes_through() {
        let holds = vec![Duration::from_secs(1), Duration::from_secs(2)];
        let (result, calls, took) = call_held(holds, || Ok(())).await;
        assert!(result.is_ok());
        assert_eq!(calls, 1);
        assert_eq!(took, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_past_the_budget_is_waited_for_the_budget_then_the_call_is_tried() {
        // A 30 s cool-down: the call goes out once its 3.5 s are spent, and succeeds.
        let (result, calls, took) = call_held(vec![Duration::from_secs(30)], || Ok(())).await;
        assert!(result.is_ok());
        assert_eq!(calls, 1);
        assert_eq!(took, Duration::from_millis(3500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tier_that_stays_down_fails_the_call_once_the_budget_is_spent() {
        // Holds after every failure, as a breaker that keeps reopening does.
        let holds = vec![Duration::from_secs(30); 8];
        let (result, calls, took) = call_held(holds, || Err(unavailable())).await;
        assert!(matches!(result, Err(ClientError::HeldOff { step: "test" })));
        assert_eq!(calls, 1, "the one call at the end of the budget");
        // The budget, then the server's Retry-After of 1 s before the breaker is asked again.
        assert_eq!(took, Duration::from_millis(4500));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_honour_the_servers_retry_after() {
        let (result, calls, took) = call_held(Vec::new(), || Err(unavailable())).await;
        assert!(matches!(result, Err(ClientError::Call { attempts: 4, .. })));
        assert_eq!(calls, 4);
        assert_eq!(took, Duration::from_secs(3));
    }
}
