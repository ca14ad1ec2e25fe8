//! `POST /file_parse`: admission, the form, one document after another, a MinerU-shaped answer.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::output::{self, Backend};
use crate::parse::{
    DocumentBytes, Extractor, Job, PageRange, PixelLimits, Work, open_document, parse_pages,
};
use crate::signals::DocumentSignals;
use crate::vlm::VlmOptions;

use super::App;
use super::breaker::Pass;
use super::error::ApiError;
use super::form::{self, ParseForm, Upload};
use super::metrics::{Outcome, Source, backend_label};

/// The answer, as `mineru-api` shapes it.
#[derive(Debug, Serialize)]
pub struct ParseResponse {
    pub backend: String,
    pub version: &'static str,
    pub results: serde_json::Map<String, serde_json::Value>,
}

/// One document's result. `content_list` is a JSON-encoded string, as `mineru-api` returns the
/// file it wrote.
#[derive(Debug, Serialize)]
struct DocumentResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    md_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_list: Option<String>,
}

pub async fn file_parse(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let started = Instant::now();
    let source = Source::of(&headers);
    let mut backend = None;
    let result = match tokio::time::timeout(
        app.config.request_timeout,
        handle(&app, source, multipart, &mut backend),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(ApiError::Timeout(app.config.request_timeout)),
    };
    let outcome = match &result {
        Ok(_) => Outcome::Success,
        Err(e) => e.outcome(),
    };
    app.metrics
        .request(backend, source, outcome, started.elapsed());
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => {
            if outcome == Outcome::Error {
                tracing::warn!(error = %e, "request failed");
            } else {
                tracing::info!(error = %e, status = e.status().as_u16(), "request refused");
            }
            e.into_response()
        }
    }
}

async fn handle(
    app: &App,
    source: Source,
    multipart: Result<Multipart, MultipartRejection>,
    used_backend: &mut Option<Backend>,
) -> Result<ParseResponse, ApiError> {
    let mut multipart = multipart.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    // Admission before the upload is read: an overloaded worker does not buffer what it refuses.
    let ticket = match app.admission.enter(source) {
        Ok(ticket) => ticket,
        Err(refusal) => {
            form::discard(&mut multipart).await;
            return Err(refusal);
        }
    };
    // The slot stays taken until the document's blocking work has really stopped.
    let job = Job::holding(ticket);
    let limits = form::UploadLimits {
        max_bytes: app.config.max_file_bytes.0,
        spill_above: app.config.upload_spill_bytes.0,
    };
    let mut form = match form::read(&mut multipart, limits).await {
        Ok(form) => form,
        Err(refusal) => {
            form::discard(&mut multipart).await;
            return Err(refusal);
        }
    };
    let backend = form.backend.unwrap_or(app.config.backend);
    *used_backend = Some(backend);
    let range = PageRange::from_zero_based(form.start_page_id, form.end_page_id)
        .map_err(ApiError::BadRequest)?;
    let (extractor, _pass) = extractor(app, backend, form.server_url.as_deref()).await?;
    let mut results = serde_json::Map::new();
    for Upload { stem, bytes } in std::mem::take(&mut form.files) {
        let result = document(
            app,
            (&extractor, job.work()),
            (backend, source),
            range,
            (&stem, bytes),
            &form,
        )
        .await?;
        let value = serde_json::to_value(result).map_err(|e| ApiError::Internal(e.to_string()))?;
        results.insert(stem, value);
    }
    Ok(ParseResponse {
        // MinerU echoes the backend as the caller named it.
        backend: form
            .backend_name
            .unwrap_or_else(|| backend_label(Some(backend)).to_owned()),
        version: env!("CARGO_PKG_VERSION"),
        results,
    })
}

/// The extractor for a request and, for the configured vLLM tier, the breaker's leave.
pub(super) async fn extractor(
    app: &App,
    backend: Backend,
    server_url: Option<&str>,
) -> Result<(Extractor, Option<Pass>), ApiError> {
    if backend == Backend::Text {
        return Ok((Extractor::Text, None));
    }
    let vlm = |client| Extractor::Vlm {
        client,
        options: VlmOptions::default(),
        pixels: PixelLimits {
            per_page: app.config.max_page_pixels,
            per_document: app.config.max_document_pixels,
        },
    };
    if let Some(url) = server_url {
        if !app.allows_server_url(url) {
            return Err(ApiError::BadRequest(
                "server_url is refused: this worker only talks to its configured vLLM tier \
                 and the servers named by --allow-server-url"
                    .into(),
            ));
        }
        let client = app
            .upstream_for_caller(url)
            .await
            .map_err(|e| ApiError::from_client(&e, app.retry_after()))?;
        return Ok((vlm(client), None));
    }
    let upstream = app.upstream.as_ref().ok_or_else(|| {
        ApiError::BadRequest(
            "backend vlm needs a vLLM tier and this worker has none (--server-url); use \
             backend text"
                .into(),
        )
    })?;
    let pass = app
        .breaker
        .admit(Instant::now())
        .map_err(|retry_after| ApiError::BreakerOpen { retry_after })?;
    let client = upstream
        .client()
        .await
        .map_err(|e| ApiError::from_client(&e, app.retry_after()))?;
    Ok((vlm(client), Some(pass)))
}

async fn document(
    app: &App,
    (extractor, work): (&Extractor, &Work),
    (backend, source): (Backend, Source),
    range: PageRange,
    (file, bytes): (&str, DocumentBytes),
    form: &ParseForm,
) -> Result<DocumentResult, ApiError> {
    let fail = |e| ApiError::from_parse(file, e, app.retry_after());
    let started = Instant::now();
    let doc = open_document(&app.pdfium, bytes, work)
        .await
        .map_err(fail)?;
    let selected = range.resolve(doc.page_count()).map_err(fail)?.len();
    if selected > app.config.max_pages {
        return Err(ApiError::TooManyPages {
            file: file.to_owned(),
            selected,
            limit: app.config.max_pages,
        });
    }
    let pages = parse_pages(&doc, range, extractor, Arc::new(|_| ()), work)
        .await
        .map_err(fail)?;
    app.metrics.document(
        backend,
        source,
        &DocumentSignals::of(&pages),
        started.elapsed(),
    );
    let out = output::build(&pages);
    let content_list = if form.return_content_list {
        let json = serde_json::to_string_pretty(&out.content_list)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Some(json)
    } else {
        None
    };
    Ok(DocumentResult {
        md_content: form.return_md.then_some(out.markdown),
        content_list,
    })
}
