//! `/v1` failures in MinerU's envelope: a status and `{"error": {type, code, message, param}}`,
//! with MinerU's types (`invalid_request_error`, `engine_error`, `api_error`) and codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::model::{ErrorBody, ErrorDetail};
use super::store::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct V1Error {
    pub status: StatusCode,
    pub detail: ErrorDetail,
}

impl V1Error {
    pub fn new(status: StatusCode, kind: &str, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                kind: kind.to_owned(),
                code: Some(code.to_owned()),
                message: message.into(),
                param: None,
            },
        }
    }

    /// A 4xx the caller can fix (`invalid_request_error`).
    pub fn invalid(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self::new(status, "invalid_request_error", code, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::invalid(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::invalid(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::invalid(StatusCode::CONFLICT, code, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.detail.param = Some(param.into());
        self
    }
}

impl From<StoreError> for V1Error {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "job store failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_error",
            "job_store_unavailable",
            "the job store cannot be reached; retry later",
        )
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: &self.detail,
            }),
        )
            .into_response()
    }
}
