//! Every way a request can fail, and the one place each becomes an HTTP status, a `Retry-After`
//! and a metrics outcome. Bodies are MinerU-shaped: `{"error": "<one line>"}`.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::parse::ParseError;
use crate::pdf::PdfError;
use crate::vlm::VlmError;
use mineru_protocol::client::ClientError;

use super::metrics::Outcome;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The form is wrong: a missing or malformed field, an unsupported option.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    /// The upload is not a PDF pdfium can open, or the page selection does not fit it.
    #[error("{file}: {source}")]
    Document { file: String, source: ParseError },
    #[error(
        "{file}: {selected} pages selected, this worker extracts at most {limit} per document; \
         split the request with start_page_id/end_page_id"
    )]
    TooManyPages {
        file: String,
        selected: usize,
        limit: usize,
    },
    #[error("busy: {limit} documents in progress; retry later")]
    Busy { limit: usize, retry_after: Duration },
    /// A probe document turned away to keep the worker's slots for clients.
    #[error(
        "probe documents hold at most {probe_limit} slots and never the last free one; retry later"
    )]
    ProbeDeferred {
        probe_limit: usize,
        retry_after: Duration,
    },
    #[error("the vLLM tier is unavailable (circuit breaker open); retry later")]
    BreakerOpen { retry_after: Duration },
    #[error("shutting down; retry on another worker")]
    ShuttingDown,
    /// The vLLM tier failed after the client's retries; `retryable` when trying later may work.
    #[error("{file}: {reason}")]
    Upstream {
        file: String,
        reason: String,
        retryable: bool,
        retry_after: Duration,
    },
    #[error("the request did not finish within its {}s deadline", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A document's failure: the input's fault (4xx), the tier's (502/503) or ours (500).
    pub fn from_parse(file: &str, err: ParseError, retry_after: Duration) -> Self {
        let upstream = |source: &ClientError| {
            tracing::warn!(file, error = %source, "the vLLM tier failed");
            ApiError::Upstream {
                file: file.to_owned(),
                reason: source.without_server_text(),
                retryable: source.is_retryable(),
                retry_after,
            }
        };
        match &err {
            ParseError::Pdf(PdfError::Library(_) | PdfError::Io(_))
            | ParseError::Task(_)
            | ParseError::Abandoned => ApiError::Internal(format!("{file}: {err}")),
            ParseError::Pdf(_) | ParseError::PagesOutOfRange { .. } => ApiError::Document {
                file: file.to_owned(),
                source: err,
            },
            ParseError::Vlm(VlmError::Server { source, .. }) => upstream(source),
            ParseError::Vlm(VlmError::Layout { .. }) => ApiError::Upstream {
                file: file.to_owned(),
                reason: err.to_string(),
                retryable: false,
                retry_after,
            },
            ParseError::Vlm(_) => ApiError::Internal(format!("{file}: {err}")),
        }
    }

    /// The vLLM tier could not be reached or refused us before any document work.
    pub fn from_client(err: &ClientError, retry_after: Duration) -> Self {
        tracing::warn!(error = %err, "the vLLM tier cannot be used");
        ApiError::Upstream {
            file: "vLLM tier".to_owned(),
            reason: err.without_server_text(),
            retryable: err.is_retryable(),
            retry_after,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) | ApiError::TooManyPages { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Document { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Busy { .. } | ApiError::ProbeDeferred { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BreakerOpen { .. } | ApiError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Upstream {
                retryable: true, ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// When the caller may try again; every 429, 503 and 504 carries one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Busy { retry_after, .. }
            | ApiError::ProbeDeferred { retry_after, .. }
            | ApiError::BreakerOpen { retry_after } => Some(*retry_after),
            ApiError::Upstream {
                retryable: true,
                retry_after,
                ..
            } => Some(*retry_after),
            // Another worker (or this one, a moment later) may well finish it.
            ApiError::ShuttingDown | ApiError::Timeout(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            ApiError::BadRequest(_)
            | ApiError::TooLarge(_)
            | ApiError::TooManyPages { .. }
            | ApiError::Document { .. } => Outcome::ClientError,
            ApiError::Busy { .. } | ApiError::BreakerOpen { .. } | ApiError::ShuttingDown => {
                Outcome::Rejected
            }
            ApiError::ProbeDeferred { .. } => Outcome::Deferred,
            ApiError::Upstream { .. } | ApiError::Internal(_) => Outcome::Error,
            ApiError::Timeout(_) => Outcome::Timeout,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after();
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if let Some(wait) = retry_after {
            // Whole seconds, at least one: `Retry-After: 0` invites a busy loop.
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(7);

    fn upstream(retryable: bool) -> ApiError {
        ApiError::Upstream {
            file: "a".into(),
            reason: "HTTP 503".into(),
            retryable,
            retry_after: WAIT,
        }
    }

    #[test]
    fn each_failure_has_one_status_retry_advice_and_outcome() {
        let cases = [
            (
                ApiError::BadRequest("x".into()),
                400,
                None,
                Outcome::ClientError,
            ),
            (
                ApiError::TooLarge("x".into()),
                413,
                None,
                Outcome::ClientError,
            ),
            (
                ApiError::TooManyPages {
                    file: "a".into(),
                    selected: 9,
                    limit: 2,
                },
                413,
                None,
                Outcome::ClientError,
            ),
            (
                ApiError::Document {
                    file: "a".into(),
                    source: ParseError::Pdf(PdfError::NotPdf),
                },
                422,
                None,
                Outcome::ClientError,
            ),
            (
                ApiError::Busy {
                    limit: 4,
                    retry_after: WAIT,
                },
                429,
                Some(WAIT),
                Outcome::Rejected,
            ),
            (
                ApiError::ProbeDeferred {
                    probe_limit: 1,
                    retry_after: WAIT,
                },
                429,
                Some(WAIT),
                Outcome::Deferred,
            ),
            (
                ApiError::BreakerOpen { retry_after: WAIT },
                503,
                Some(WAIT),
                Outcome::Rejected,
            ),
            (
                ApiError::ShuttingDown,
                503,
                Some(Duration::from_secs(1)),
                Outcome::Rejected,
            ),
            (upstream(true), 503, Some(WAIT), Outcome::Error),
            (upstream(false), 502, None, Outcome::Error),
            (
                ApiError::Timeout(WAIT),
                504,
                Some(Duration::from_secs(1)),
                Outcome::Timeout,
            ),
            (ApiError::Internal("x".into()), 500, None, Outcome::Error),
        ];
        for (error, status, retry_after, outcome) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.retry_after(), retry_after, "{error:?}");
            assert_eq!(error.outcome(), outcome, "{error:?}");
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_and_never_zero() {
        let response = ApiError::BreakerOpen {
            retry_after: Duration::from_millis(200),
        }
        .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = ApiError::BreakerOpen {
            retry_after: Duration::from_millis(2_100),
        }
        .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }
}
