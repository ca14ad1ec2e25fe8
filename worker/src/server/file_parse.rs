//! `POST /file_parse`: admission, the form, one document after another, a MinerU-shaped answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;

use crate::middle::{DocumentInfo, middle_json};
use crate::output::{self, Backend};
use crate::parse::{
    DocumentBytes, Extractor, Job, PageRange, PixelLimits, Wanted, Work, open_document, parse_pages,
};
use crate::signals::DocumentSignals;
use crate::vlm::{self, VlmOptions};

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
    results: BTreeMap<String, DocumentResult>,
}

/// One document's result, its fields in `mineru-api`'s order (MinerU 3's `build_result_dict`).
/// The JSON outputs are JSON-encoded strings, as `mineru-api` returns the files it wrote; images
/// are data URIs keyed by the file names the Markdown links under `images/`.
#[derive(Debug, Serialize)]
struct DocumentResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    md_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    middle_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_list: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    images: Option<BTreeMap<String, String>>,
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
    if form.return_model_output && backend == Backend::Text {
        return Err(ApiError::BadRequest(
            "return_model_output cannot be produced by backend text: it reads the PDF's text \
             layer and runs no model, so there is no model output; use backend vlm, or leave \
             return_model_output false"
                .into(),
        ));
    }
    let range = PageRange::from_zero_based(form.start_page_id, form.end_page_id)
        .map_err(ApiError::BadRequest)?;
    let (extractor, _pass) = extractor(
        app,
        backend,
        form.server_url.as_deref(),
        form.image_analysis,
    )
    .await?;
    let mut results = BTreeMap::new();
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
        results.insert(stem, result);
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
    image_analysis: bool,
) -> Result<(Extractor, Option<Pass>), ApiError> {
    if backend == Backend::Text {
        return Ok((Extractor::Text, None));
    }
    let vlm = |client| Extractor::Vlm {
        client,
        options: VlmOptions {
            image_analysis: image_analysis && !app.config.vlm.no_image_analysis,
            ..app.config.vlm.options()
        },
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
    let wanted = Wanted {
        images: form.return_images,
        model_output: form.return_model_output,
    };
    let parsed = parse_pages(&doc, range, extractor, wanted, Arc::new(|_| ()), work)
        .await
        .map_err(fail)?;
    let pages = &parsed.pages;
    app.metrics.document(
        backend,
        source,
        &DocumentSignals::of(pages),
        started.elapsed(),
    );
    let out = output::build(pages);
    let middle_json = form
        .return_middle_json
        .then(|| {
            let info = DocumentInfo::with_page_count(pages, doc.page_count());
            json(&middle_json(pages, &info))
        })
        .transpose()?;
    let model_output = parsed
        .model_output
        .as_deref()
        .map(|pages| json(&vlm::model_output_json(pages)))
        .transpose()?;
    let content_list = form
        .return_content_list
        .then(|| json(&out.content_list))
        .transpose()?;
    let image_bytes: usize = parsed.images.iter().map(|i| i.jpeg.len()).sum();
    if image_bytes > MAX_IMAGE_BYTES_PER_DOCUMENT {
        return Err(ApiError::TooLarge(format!(
            "{file}: its images take {image_bytes} bytes, more than the {MAX_IMAGE_BYTES_PER_DOCUMENT} \
             one answer may carry (base64 adds a third); ask for fewer pages or without \
             return_images"
        )));
    }
    let images = form.return_images.then(|| {
        parsed
            .images
            .into_iter()
            .map(|image| {
                let data = base64::engine::general_purpose::STANDARD.encode(&image.jpeg);
                (image.name, format!("data:image/jpeg;base64,{data}"))
            })
            .collect()
    });
    Ok(DocumentResult {
        md_content: form.return_md.then_some(out.markdown),
        middle_json,
        model_output,
        content_list,
        images,
    })
}

/// The most JPEG bytes the images of one document may add to an answer, which holds them
/// base64-encoded in memory until it is sent.
const MAX_IMAGE_BYTES_PER_DOCUMENT: usize = 256 << 20;

/// A JSON output as the text of the file `mineru-api` would have written.
fn json(value: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_string_pretty(value).map_err(|e| ApiError::Internal(e.to_string()))
}
