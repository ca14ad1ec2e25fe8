//! Logs: text or JSON lines on stderr, each line of a request carrying its request id (the
//! caller's `x-request-id`, or a fresh one echoed back), so one request can be followed across a
//! gateway, the worker and its vLLM calls.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use rand::Rng as _;
use tracing::Instrument as _;

use super::config::LogFormat;

pub const REQUEST_ID: &str = "x-request-id";
/// Longer caller ids are replaced: they end up on every log line.
const MAX_REQUEST_ID: usize = 128;

/// Installs the global subscriber; `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Runs the request inside a span holding its id and logs its end.
pub async fn request_span(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID)
        .map_or_else(new_id, str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    // Probes and scrapes arrive every few seconds; at info they would drown the documents.
    let routine = matches!(request.uri().path(), "/health" | "/ready" | "/metrics");
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        let status = response.status().as_u16();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if routine {
            tracing::debug!(status, elapsed_ms, "request done");
        } else {
            tracing::info!(status, elapsed_ms, "request done");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

fn new_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}
