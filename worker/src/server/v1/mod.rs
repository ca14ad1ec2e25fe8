//! MinerU 4's `/v1` API on `mineru-worker serve`, so `MinerUApiParser(api_url=…)` works against
//! the split stack unchanged: health, models, tiers and usage; uploads and files; parse jobs;
//! and the convenience forms, `POST /v1/tasks` and the synchronous `POST /v1/file_parse`.
//!
//! Shapes, status codes and error bodies are MinerU 4.0.12's (`mineru/parser/api_server.py`,
//! `task_api.py`). Two tiers are served: `flash` is the text backend (MinerU's own `flash` is
//! its model-free text extraction too) and `standard` the vlm backend (MinerU2.5 through the GPU
//! tier, MinerU's default quality tier), the latter only where a vLLM tier is configured. Jobs
//! and files live in the [`store`], shared by every worker when it is PostgreSQL; [`runner`]
//! says who runs a job and what happens when that worker goes away.

mod error;
pub mod model;
pub mod openapi;
pub mod page_range;
pub mod runner;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::App;
use super::metrics::Source;
use error::V1Error;
use model::{
    CompleteUploadRequest, CreateJobRequest, CreateUploadRequest, FileDeletionResponse, FileObject,
    FileSource, FileStatus, JobCancelResponse, JobFileEntry, JobFileResult, JobLinks, JobListItem,
    JobProgress, JobResponse, JobStatus, ListResponse, OUTPUT_FORMATS, OcrMode, Tier,
    UploadResponse, UploadTaskOptions,
};
use page_range::{PageRangeError, PageSelection};
use runner::iso;
use store::{FileRecord, JobDoc, JobInput, JobRow, UploadRecord, new_id, now_ms, sha256_hex};

pub use runner::{JobTiming, Jobs};

/// Most files one job may carry, as in MinerU.
const MAX_FILES_PER_JOB: usize = 100;
/// How often a synchronous `/v1/file_parse` looks whether its job is done (any worker may run it).
const WAIT_POLL: Duration = Duration::from_millis(200);

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model_by_id))
        .route("/v1/tiers", get(tiers))
        .route("/v1/usage", get(usage))
        .route("/v1/uploads", post(create_upload))
        .route("/v1/uploads/{id}", get(get_upload))
        .route(
            "/v1/uploads/{id}/content",
            axum::routing::put(upload_content),
        )
        .route("/v1/uploads/{id}/complete", post(complete_upload))
        .route("/v1/uploads/{id}/cancel", post(cancel_upload))
        .route("/v1/files", get(list_files))
        .route("/v1/files/{id}", get(get_file).delete(delete_file))
        .route("/v1/files/{id}/content", get(file_content))
        .route("/v1/parse/jobs", post(create_job).get(list_jobs))
        .route("/v1/parse/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/v1/tasks", post(create_task))
        .route("/v1/tasks/{id}", get(get_task).delete(cancel_task))
        .route("/v1/tasks/{id}/result", get(task_result))
        .route("/v1/file_parse", post(file_parse))
}

type V1Result<T> = Result<T, V1Error>;

fn now_s() -> i64 {
    now_ms() / 1000
}

fn model_id() -> String {
    format!("mineru-worker-{}", env!("CARGO_PKG_VERSION"))
}

const MODEL_DESCRIPTION: &str = "mineru-worker: quality is selected per request via tier \
     (flash: the PDF text layer; standard: MinerU2.5 through the GPU tier); this id identifies \
     the worker version, not a specific engine.";

/// The tiers this worker can serve, best first.
fn served_tiers(app: &App) -> Vec<Tier> {
    let mut tiers = Vec::new();
    if app.upstream.is_some() {
        tiers.push(Tier::Standard);
    }
    tiers.push(Tier::Flash);
    tiers
}

fn tier_description(tier: Tier) -> &'static str {
    match tier {
        Tier::Flash => "Fast local text extraction.",
        _ => "Standard parsing for most documents.",
    }
}

// ── health, models, tiers, usage ─────────────────────────────────────

async fn health(State(app): State<Arc<App>>) -> V1Result<Json<Value>> {
    app.jobs.store.ensure_schema().await?;
    app.jobs.store.ping().await?;
    Ok(Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "features": {
            "webhook": false,
            "output_formats": OUTPUT_FORMATS,
            // No `url` or `local`: the worker fetches nothing a caller names.
            "sources": ["file_id", "inline"],
        },
    })))
}

fn model_info(app: &App) -> Value {
    json!({
        "id": model_id(),
        "object": "model",
        "created": app.started_at_s,
        "owned_by": "mineru",
        "description": MODEL_DESCRIPTION,
    })
}

async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({ "object": "list", "data": [model_info(&app)] }))
}

async fn model_by_id(
    State(app): State<Arc<App>>,
    Path(model): Path<String>,
) -> V1Result<Json<Value>> {
    if model != model_id() {
        return Err(V1Error::not_found(
            "model_not_found",
            format!("Model '{model}' not found"),
        ));
    }
    Ok(Json(model_info(&app)))
}

async fn tiers(State(app): State<Arc<App>>) -> Json<Value> {
    let data: Vec<Value> = served_tiers(&app)
        .into_iter()
        .map(|tier| {
            json!({
                "id": tier,
                "description": tier_description(tier),
                "current_model": model_id(),
            })
        })
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn usage(State(app): State<Arc<App>>) -> V1Result<Json<Value>> {
    let jobs = app.jobs.store.jobs(false).await?;
    let completed = || {
        jobs.iter()
            .flat_map(|j| &j.doc.files)
            .filter(|f| f.status == FileStatus::Completed)
    };
    let pages: usize = completed().map(|f| page_count_of(&f.page_range)).sum();
    let retention_days = app.jobs.retention.as_secs().div_ceil(86_400);
    Ok(Json(json!({
        "object": "usage",
        "access_level": "anonymous",
        "billing_period": { "start": app.jobs.started_at, "end": null },
        "current": {
            "pages_processed": pages,
            "files_processed": completed().count(),
            "jobs_created": jobs.len(),
        },
        "limits": {
            "max_pages_per_file": app.config.max_pages,
            "max_file_size_bytes": app.config.max_file_bytes.0,
            "max_files_per_job": MAX_FILES_PER_JOB,
            "max_concurrent_jobs": app.config.max_concurrent_documents,
            "max_file_retention_days": if retention_days == 0 { Value::Null } else { json!(retention_days) },
        },
    })))
}

/// Pages in a resolved range such as `1-3,5`.
fn page_count_of(resolved: &str) -> usize {
    resolved
        .split(',')
        .filter_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            Some(b.trim().parse::<usize>().ok()? + 1 - a.trim().parse::<usize>().ok()?)
        })
        .sum()
}

// ── request helpers ──────────────────────────────────────────────────

/// A JSON body, refused in MinerU's words.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> V1Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        let message = e.to_string();
        let refusal = V1Error::bad_request(format!("Invalid request: {message}"));
        // serde names the missing or unknown field in backticks; MinerU names it in `param`.
        match message.split('`').nth(1) {
            Some(field) if message.contains("field `") => refusal.with_param(field),
            _ => refusal,
        }
    })
}

/// `key=value` pairs of a query string, in order.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    reqwest::Url::parse(&format!("http://q/?{query}"))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// A list's query: every pair, and the paging options read from it.
struct ListQuery {
    pairs: Vec<(String, String)>,
    limit: usize,
    descending: bool,
    after: Option<String>,
}

/// Paging options; other keys are the caller's filters (unknown ones are ignored, as by MinerU).
fn list_options(
    query: Option<&str>,
    default_limit: usize,
    max_limit: usize,
) -> V1Result<ListQuery> {
    let pairs = query_pairs(query);
    let mut limit = default_limit;
    let mut descending = true;
    let mut after = None;
    for (key, value) in &pairs {
        match key.as_str() {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=max_limit).contains(n))
                    .ok_or_else(|| {
                        V1Error::bad_request(format!(
                            "Invalid request: limit: Input should be between 1 and {max_limit}"
                        ))
                        .with_param("limit")
                    })?;
            }
            "order" => {
                descending = match value.as_str() {
                    "desc" => true,
                    "asc" => false,
                    _ => {
                        return Err(V1Error::bad_request(
                            "Invalid request: order: Input should be 'asc' or 'desc'",
                        )
                        .with_param("order"));
                    }
                }
            }
            "after" => after = Some(value.clone()),
            _ => {}
        }
    }
    Ok(ListQuery {
        pairs,
        limit,
        descending,
        after,
    })
}

/// One page of a list after the item named `after`.
fn page_of<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    after: Option<&str>,
    limit: usize,
) -> (Vec<T>, bool) {
    let start = after
        .and_then(|after| items.iter().position(|item| id(item) == after))
        .map_or(0, |i| i + 1);
    let has_more = start + limit < items.len();
    (
        items.into_iter().skip(start).take(limit).collect(),
        has_more,
    )
}

fn list<T: serde::Serialize>(
    data: Vec<T>,
    id: impl Fn(&T) -> String,
    has_more: bool,
) -> ListResponse<T> {
    ListResponse {
        object: "list",
        first_id: data.first().map(&id),
        last_id: data.last().map(&id),
        data,
        has_more,
    }
}

// ── uploads ──────────────────────────────────────────────────────────

fn sha256_pattern(value: &Option<String>, param: &str) -> V1Result<()> {
    match value {
        Some(sha)
            if sha.len() != 64 || !sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Err(V1Error::bad_request(format!(
                "Invalid request: {param}: String should match pattern '^[a-f0-9]{{64}}$'"
            ))
            .with_param(param))
        }
        _ => Ok(()),
    }
}

fn file_object(file: &FileRecord) -> FileObject {
    FileObject {
        id: file.id.clone(),
        object: "file",
        bytes: file.bytes,
        created_at: file.created_at,
        expires_at: file.expires_at,
        filename: file.filename.clone(),
        purpose: file.purpose.clone(),
        sha256sum: file.sha256.clone(),
    }
}

async fn upload_response(
    app: &App,
    upload: &UploadRecord,
    upload_url: Option<String>,
) -> V1Result<UploadResponse> {
    let file = match (&upload.file_id, upload.status.as_str()) {
        (Some(id), "completed") => app
            .jobs
            .store
            .file(id, now_s())
            .await?
            .map(|f| file_object(&f)),
        _ => None,
    };
    let pending = upload.status == "pending";
    Ok(UploadResponse {
        id: upload.id.clone(),
        object: "upload",
        bytes: upload.bytes,
        created_at: upload.created_at,
        expires_at: upload.expires_at,
        filename: upload.filename.clone(),
        purpose: upload.purpose.clone(),
        mime_type: upload.mime_type.clone(),
        sha256sum: upload.sha256.clone(),
        status: upload.status.clone(),
        upload_method: upload_url.as_ref().filter(|_| pending).map(|_| "PUT"),
        upload_headers: upload_url.as_ref().filter(|_| pending).map(|_| {
            let mut headers = serde_json::Map::new();
            headers.insert("Content-Type".into(), json!(upload.mime_type));
            headers
        }),
        upload_url: upload_url.filter(|_| pending),
        file,
    })
}

/// `http://host` as the caller addressed this worker (the Service name behind a Service).
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

async fn create_upload(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> V1Result<Json<UploadResponse>> {
    let body = body.map_err(too_large)?;
    let request: CreateUploadRequest = parse_json(&body)?;
    if request.filename.is_empty() || request.mime_type.is_empty() {
        return Err(V1Error::bad_request(
            "Invalid request: filename and mime_type must not be empty",
        ));
    }
    if request.bytes <= 0 {
        return Err(
            V1Error::bad_request("Invalid request: bytes: Input should be greater than 0")
                .with_param("bytes"),
        );
    }
    if !matches!(request.purpose.as_str(), "parse" | "input_image") {
        return Err(V1Error::bad_request(
            "Invalid request: purpose: Input should be 'parse' or 'input_image'",
        )
        .with_param("purpose"));
    }
    sha256_pattern(&request.sha256sum, "sha256sum")?;
    let expires_seconds = request.expires_after.as_ref().map_or(3600, |e| e.seconds);
    if !(3600..=2_592_000).contains(&expires_seconds) {
        return Err(V1Error::bad_request(
            "Invalid request: expires_after.seconds: Input should be between 3600 and 2592000",
        )
        .with_param("expires_after.seconds"));
    }
    if request.bytes as u64 > app.config.max_file_bytes.0 {
        return Err(V1Error::invalid(
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
            format!(
                "File exceeds this worker's limit of {} bytes",
                app.config.max_file_bytes.0
            ),
        ));
    }
    room(&app, request.bytes.max(0) as u64).await?;
    let store = &app.jobs.store;
    let now = now_s();
    let mut upload = UploadRecord {
        id: new_id("upload_"),
        filename: request.filename.clone(),
        bytes: request.bytes,
        mime_type: request.mime_type.clone(),
        created_at: now,
        expires_at: now + expires_seconds,
        purpose: request.purpose.clone(),
        sha256: request.sha256sum.clone(),
        status: "pending".into(),
        file_id: None,
        has_data: false,
    };
    // Bytes already held under this hash need not be sent again.
    if let Some(sha) = &request.sha256sum
        && let Some(size) = store.blob_size(sha).await?
    {
        if size != request.bytes {
            return Err(
                V1Error::bad_request("Declared size does not match the cached file")
                    .with_param("bytes")
                    .coded("upload_size_mismatch"),
            );
        }
        let file = FileRecord {
            id: new_id("file-"),
            filename: request.filename,
            bytes: request.bytes,
            created_at: now,
            expires_at: Some(upload.expires_at),
            purpose: request.purpose,
            sha256: Some(sha.clone()),
        };
        store.insert_file(&file, None).await?;
        upload.status = "completed".into();
        upload.file_id = Some(file.id);
    }
    store.insert_upload(&upload).await?;
    let url = format!("{}/v1/uploads/{}/content", base_url(&headers), upload.id);
    Ok(Json(upload_response(&app, &upload, Some(url)).await?))
}

/// An upload that exists and has not expired.
async fn live_upload(app: &App, id: &str) -> V1Result<UploadRecord> {
    let upload = app.jobs.store.upload(id).await?;
    match upload {
        Some(upload) if upload.expires_at > now_s() => Ok(upload),
        Some(_) => Err(V1Error::not_found(
            "upload_not_found",
            format!("Upload {id} expired"),
        )),
        None => Err(V1Error::not_found(
            "upload_not_found",
            format!("Upload {id} not found"),
        )),
    }
}

async fn get_upload(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> V1Result<Json<UploadResponse>> {
    let upload = live_upload(&app, &id).await?;
    Ok(Json(upload_response(&app, &upload, None).await?))
}

fn terminal_upload(status: &str) -> V1Error {
    let message = if status == "completed" {
        "Upload is already completed".to_owned()
    } else {
        format!("Upload is {status}")
    };
    V1Error::conflict("upload_already_terminal", message)
}

fn size_mismatch(expected: i64, received: usize) -> V1Error {
    V1Error::invalid(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_size_mismatch",
        format!("Upload expects {expected} bytes, received {received}"),
    )
}

async fn upload_content(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> V1Result<StatusCode> {
    let body = body.map_err(too_large)?;
    let upload = live_upload(&app, &id).await?;
    if upload.status != "pending" {
        return Err(terminal_upload(&upload.status));
    }
    if body.len() as i64 != upload.bytes {
        return Err(size_mismatch(upload.bytes, body.len()));
    }
    room(&app, body.len() as u64).await?;
    if !app.jobs.store.put_upload_data(&id, &body).await? {
        let upload = live_upload(&app, &id).await?;
        return Err(terminal_upload(&upload.status));
    }
    Ok(StatusCode::OK)
}

async fn complete_upload(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> V1Result<Json<UploadResponse>> {
    let body = body.map_err(too_large)?;
    let request: CompleteUploadRequest = if body.is_empty() {
        CompleteUploadRequest::default()
    } else {
        parse_json(&body)?
    };
    sha256_pattern(&request.sha256sum, "sha256sum")?;
    let store = &app.jobs.store;
    let mut upload = live_upload(&app, &id).await?;
    if upload.status != "pending" {
        return Err(terminal_upload(&upload.status));
    }
    let Some(data) = store.upload_data(&id).await? else {
        return Err(V1Error::conflict(
            "upload_not_ready",
            "Upload bytes not yet received",
        ));
    };
    if data.len() as i64 != upload.bytes {
        return Err(size_mismatch(upload.bytes, data.len()));
    }
    let actual = sha256_hex(&data);
    let mismatch = |declared: &Option<String>| declared.as_ref().is_some_and(|d| *d != actual);
    if mismatch(&request.sha256sum) || mismatch(&upload.sha256) {
        return Err(V1Error::bad_request("SHA-256 mismatch").coded("file_hash_mismatch"));
    }
    store.put_blob(&data).await?;
    let file = FileRecord {
        id: new_id("file-"),
        filename: upload.filename.clone(),
        bytes: upload.bytes,
        created_at: now_s(),
        expires_at: Some(upload.expires_at),
        purpose: upload.purpose.clone(),
        sha256: Some(actual.clone()),
    };
    store.insert_file(&file, None).await?;
    if !store
        .finish_upload(&id, "completed", Some(&actual), Some(&file.id))
        .await?
    {
        store.delete_file(&file.id).await?;
        let upload = live_upload(&app, &id).await?;
        return Err(terminal_upload(&upload.status));
    }
    upload.status = "completed".into();
    upload.sha256 = Some(actual);
    upload.file_id = Some(file.id);
    Ok(Json(upload_response(&app, &upload, None).await?))
}

async fn cancel_upload(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> V1Result<Json<UploadResponse>> {
    let mut upload = live_upload(&app, &id).await?;
    if upload.status != "pending"
        || !app
            .jobs
            .store
            .finish_upload(&id, "cancelled", None, None)
            .await?
    {
        let upload = live_upload(&app, &id).await?;
        return Err(terminal_upload(&upload.status));
    }
    upload.status = "cancelled".into();
    Ok(Json(upload_response(&app, &upload, None).await?))
}

// ── files ────────────────────────────────────────────────────────────

async fn existing_file(app: &App, id: &str) -> V1Result<FileRecord> {
    app.jobs
        .store
        .file(id, now_s())
        .await?
        .ok_or_else(|| V1Error::not_found("file_not_found", format!("File {id} not found")))
}

async fn list_files(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
) -> V1Result<Json<ListResponse<FileObject>>> {
    let ListQuery {
        pairs,
        limit,
        descending,
        after,
    } = list_options(query.as_deref(), 100, 1000)?;
    let purpose = pairs
        .iter()
        .find(|(k, _)| k == "purpose")
        .map(|(_, v)| v.as_str());
    if let Some(p) = purpose
        && !matches!(p, "parse" | "parse_output" | "input_image")
    {
        return Err(V1Error::bad_request(
            "Invalid request: purpose: Input should be 'parse', 'parse_output' or 'input_image'",
        )
        .with_param("purpose"));
    }
    let files = app.jobs.store.files(now_s(), purpose, descending).await?;
    let (page, has_more) = page_of(files, |f| &f.id, after.as_deref(), limit);
    let objects = page.iter().map(file_object).collect();
    Ok(Json(list(objects, |f: &FileObject| f.id.clone(), has_more)))
}

async fn get_file(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> V1Result<Json<FileObject>> {
    Ok(Json(file_object(&existing_file(&app, &id).await?)))
}

async fn delete_file(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> V1Result<Json<FileDeletionResponse>> {
    if !app.jobs.store.delete_file(&id).await? {
        return Err(V1Error::not_found(
            "file_not_found",
            format!("File {id} not found"),
        ));
    }
    Ok(Json(FileDeletionResponse {
        id,
        object: "file",
        deleted: true,
    }))
}

/// The bytes of a parse output; sources are not served back.
async fn output_bytes(app: &App, id: &str) -> V1Result<Vec<u8>> {
    let file = existing_file(app, id).await?;
    if file.purpose != "parse_output" {
        return Err(V1Error::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "feature_requires_api_key",
            "Source files cannot be downloaded",
        ));
    }
    let sha = file.sha256.unwrap_or_default();
    app.jobs.store.blob(&sha).await?.ok_or_else(|| {
        V1Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal_error",
            "File content is missing",
        )
    })
}

async fn file_content(State(app): State<Arc<App>>, Path(id): Path<String>) -> V1Result<Response> {
    let data = output_bytes(&app, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

// ── jobs ─────────────────────────────────────────────────────────────

/// Which request form a submission came in: the forms check output formats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Job,
    Task,
}

/// A file the caller sent with the request itself (the task forms).
struct SentFile {
    filename: String,
    data: Vec<u8>,
}

fn check_formats(formats: &[String], form: Form) -> V1Result<()> {
    for format in formats {
        if OUTPUT_FORMATS.contains(&format.as_str()) {
            continue;
        }
        return Err(match (form, format.as_str()) {
            (Form::Job, "html" | "latex" | "docx") => V1Error::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                "feature_requires_api_key",
                format!("Output format '{format}' requires an API key"),
            ),
            (Form::Job, _) => V1Error::bad_request(format!("Unknown output format: {format}"))
                .coded("unsupported_output_format"),
            (Form::Task, _) => V1Error::bad_request("Unsupported output format")
                .coded("unsupported_output_format")
                .with_param("output_formats"),
        });
    }
    Ok(())
}

fn page_range_refusal(e: PageRangeError, param: String) -> V1Error {
    V1Error::bad_request(e.message())
        .coded(PageRangeError::CODE)
        .with_param(param)
}

/// Room in the embedded store for more uploads and jobs, or a 503 that says why not.
/// Room in the embedded store for `more` bytes besides what it holds.
async fn room(app: &App, more: u64) -> V1Result<()> {
    if runner::make_room(
        &app.jobs,
        app.config.job_store_max_bytes.0.saturating_sub(more),
        runner::KEPT_AT_LEAST,
    )
    .await?
    {
        return Ok(());
    }
    Err(V1Error::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "engine_error",
        "job_store_full",
        format!(
            "this worker's job store holds its --job-store-max-bytes ({} bytes) in jobs not \
             yet finished and uploads; retry later, or give the workers a shared store",
            app.config.job_store_max_bytes.0
        ),
    ))
}

/// Checks a submission as MinerU does, stores what it needs and queues it.
async fn submit(
    app: &App,
    mut request: CreateJobRequest,
    source: Source,
    form: Form,
) -> V1Result<JobRow> {
    if app.admission.is_closed() {
        return Err(V1Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_error",
            "server_shutting_down",
            "Server is shutting down",
        ));
    }
    if request.files.is_empty() || request.files.len() > MAX_FILES_PER_JOB {
        return Err(V1Error::bad_request(format!(
            "Invalid request: files: a job carries 1 to {MAX_FILES_PER_JOB} files"
        ))
        .with_param("files"));
    }
    for (index, entry) in request.files.iter_mut().enumerate() {
        let raw = entry.page_range.clone().unwrap_or_default();
        let normal = PageSelection::normalized(&raw)
            .map_err(|e| page_range_refusal(e, format!("files.{index}.page_range")))?;
        entry.page_range = (!normal.is_empty()).then_some(normal);
    }
    if request.callback.is_some() {
        return Err(V1Error::bad_request(
            "Webhook callback is not supported by this worker. Use polling via GET \
             /v1/parse/jobs/{job_id}.",
        ));
    }
    check_formats(&request.output_formats, form)?;
    let served = served_tiers(app);
    let tier = match request.tier {
        Some(tier) if served.contains(&tier) => tier,
        Some(tier) => {
            return Err(V1Error::bad_request(format!(
                "Tier '{}' not available in this server",
                tier.as_str()
            )));
        }
        // As MinerU: the best quality tier served; a text-only worker wants `flash` named.
        None if served.contains(&Tier::Standard) => Tier::Standard,
        None => {
            return Err(V1Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "engine_error",
                "quality_tier_unavailable",
                "No basic, standard, or advanced tier available in this server. Pass \
                 tier='flash' explicitly for flash parsing.",
            ));
        }
    };
    if tier == Tier::Flash && request.ocr_mode == OcrMode::Ocr {
        return Err(V1Error::bad_request(
            "ocr_mode 'ocr' needs the standard tier: the flash tier reads the PDF text layer only",
        )
        .with_param("ocr_mode"));
    }
    room(app, 0).await?;
    let store = &app.jobs.store;
    let mut files = Vec::with_capacity(request.files.len());
    let mut inputs = Vec::with_capacity(request.files.len());
    for (index, entry) in request.files.iter().enumerate() {
        let param = format!("files.{index}.source");
        let (file_id, name, sha256) = match &entry.source {
            FileSource::FileId { file_id } => {
                let file = existing_file(app, file_id).await?;
                let sha = file.sha256.clone().unwrap_or_default();
                (Some(file.id), file.filename, sha)
            }
            FileSource::Inline { name, data } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|_| {
                        V1Error::bad_request("inline source data must be valid base64")
                            .with_param(param.clone())
                    })?;
                if bytes.len() as u64 > app.config.max_inline_bytes.0 {
                    return Err(V1Error::bad_request(format!(
                        "inline source exceeds max_inline_bytes ({})",
                        app.config.max_inline_bytes.0
                    ))
                    .with_param(param));
                }
                (None, name.clone(), store.put_blob(&bytes).await?)
            }
            FileSource::Url { .. } | FileSource::Local { .. } => {
                return Err(V1Error::bad_request(
                    "url and local sources are not supported by this worker: it fetches \
                     nothing a caller names. Upload the file (POST /v1/uploads) or send it \
                     inline",
                )
                .coded("unsupported_source")
                .with_param(param));
            }
        };
        files.push(JobFileResult {
            file_id,
            name,
            page_range: entry.page_range.clone().unwrap_or_default(),
            status: FileStatus::Queued,
            parse: None,
            output_files: None,
            error: None,
        });
        inputs.push(JobInput {
            sha256,
            page_range: entry.page_range.clone().unwrap_or_default(),
        });
    }
    let doc = JobDoc {
        created_at: iso(now_ms()),
        started_at: None,
        finished_at: None,
        tier,
        output_formats: request.output_formats,
        ocr_mode: request.ocr_mode,
        source: source.as_str().to_owned(),
        progress: JobProgress {
            total: files.len(),
            ..JobProgress::default()
        },
        files,
        inputs,
        note: None,
    };
    let id = new_id("job_");
    store.insert_job(&id, &app.jobs.revision, &doc).await?;
    app.jobs.wake();
    Ok(JobRow {
        id,
        status: JobStatus::Queued,
        revision: app.jobs.revision.clone(),
        owner: None,
        attempts: 0,
        version: 0,
        doc,
    })
}

fn job_response(row: &JobRow) -> JobResponse {
    let link = format!("/v1/parse/jobs/{}", row.id);
    JobResponse {
        job_id: row.id.clone(),
        status: row.status,
        created_at: row.doc.created_at.clone(),
        started_at: row.doc.started_at.clone(),
        finished_at: row.doc.finished_at.clone(),
        tier: row.doc.tier,
        output_formats: row.doc.output_formats.clone(),
        access_level: "anonymous",
        progress: row.doc.progress.clone(),
        files: row.doc.files.clone(),
        links: JobLinks {
            this: link.clone(),
            cancel: link,
        },
    }
}

async fn existing_job(app: &App, id: &str) -> V1Result<JobRow> {
    app.jobs
        .store
        .job(id)
        .await?
        .ok_or_else(|| V1Error::not_found("job_not_found", format!("Job {id} not found")))
}

async fn create_job(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> V1Result<Response> {
    let body = body.map_err(too_large)?;
    let request: CreateJobRequest = parse_json(&body)?;
    let row = submit(&app, request, Source::of(&headers), Form::Job).await?;
    Ok((StatusCode::ACCEPTED, Json(job_response(&row))).into_response())
}

async fn get_job(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> V1Result<Json<JobResponse>> {
    Ok(Json(job_response(&existing_job(&app, &id).await?)))
}

async fn list_jobs(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
) -> V1Result<Json<ListResponse<JobListItem>>> {
    let ListQuery {
        pairs,
        limit,
        descending,
        after,
    } = list_options(query.as_deref(), 20, 100)?;
    let wanted: Option<Vec<&str>> = pairs
        .iter()
        .find(|(k, _)| k == "status")
        .map(|(_, v)| v.split(',').collect());
    let created_after = pairs
        .iter()
        .find(|(k, _)| k == "created_after")
        .map(|(_, v)| v.clone());
    let rows = app.jobs.store.jobs(descending).await?;
    let items: Vec<JobListItem> = rows
        .into_iter()
        .filter(|r| {
            wanted
                .as_ref()
                .is_none_or(|w| w.contains(&r.status.as_str()))
        })
        .filter(|r| {
            created_after
                .as_ref()
                .is_none_or(|c| r.doc.created_at >= *c)
        })
        .map(|r| JobListItem {
            file_count: r.doc.files.len(),
            created_at: r.doc.created_at,
            status: r.status,
            job_id: r.id,
        })
        .collect();
    let (page, has_more) = page_of(items, |j| &j.job_id, after.as_deref(), limit);
    Ok(Json(list(
        page,
        |j: &JobListItem| j.job_id.clone(),
        has_more,
    )))
}

/// Cancels a job that has not ended; its worker notices at its next lease renewal and stops.
async fn cancel(app: &App, id: &str) -> V1Result<JobRow> {
    loop {
        let mut row = existing_job(app, id).await?;
        if row.status.is_terminal() {
            return Err(V1Error::conflict(
                "job_already_terminal",
                format!("Job is {}", row.status.as_str()),
            ));
        }
        row.status = JobStatus::Canceled;
        row.owner = None;
        row.doc.finished_at = Some(iso(now_ms()));
        if let Some(version) = app.jobs.store.update_job(&row, None).await? {
            return Ok(JobRow { version, ..row });
        }
        // The job changed meanwhile (a file finished): look again.
    }
}

async fn cancel_job(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> V1Result<Json<JobCancelResponse>> {
    let row = cancel(&app, &id).await?;
    Ok(Json(JobCancelResponse {
        job_id: row.id,
        status: JobStatus::Canceled,
        canceled_at: iso(now_ms()),
    }))
}

// ── tasks: the one-request forms ─────────────────────────────────────

/// A job as a task: `task_id`, and links under `/v1/tasks`.
fn task_payload(row: &JobRow) -> Value {
    let mut payload = serde_json::to_value(job_response(row)).unwrap_or_default();
    let base = format!("/v1/tasks/{}", row.id);
    if let Value::Object(map) = &mut payload {
        map.remove("job_id");
        map.insert("task_id".into(), json!(row.id));
        map.insert("links".into(), json!({ "self": base, "cancel": base }));
        map.insert("status_url".into(), json!(base));
        map.insert("result_url".into(), json!(format!("{base}/result")));
    }
    payload
}

fn upload_task_options(query: Option<&str>, sync: bool) -> V1Result<UploadTaskOptions> {
    let mut options = UploadTaskOptions::default();
    let mut formats = Vec::new();
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            "tier" => {
                options.tier = Some(parse_json(json!(value).to_string().as_bytes()).map_err(|_| {
                    V1Error::bad_request(
                        "Invalid request: tier: Input should be 'flash', 'basic', 'standard' or 'advanced'",
                    )
                })?)
            }
            "ocr_mode" => {
                options.ocr_mode = parse_json(json!(value).to_string().as_bytes()).map_err(|_| {
                    V1Error::bad_request("Invalid request: ocr_mode: Input should be 'auto', 'txt' or 'ocr'")
                })?
            }
            "page_range" => options.page_range = value,
            "output_formats" => formats.push(value),
            "filename" if !value.is_empty() => options.filename = Some(value),
            "sha256sum" => options.sha256sum = Some(value),
            "response_format" | "wait_timeout" if sync => {}
            other => {
                return Err(V1Error::bad_request(format!(
                    "Invalid request: {other}: Extra inputs are not permitted"
                )));
            }
        }
    }
    sha256_pattern(&options.sha256sum, "sha256sum")?;
    options.output_formats = if formats.is_empty() {
        vec!["markdown".into()]
    } else {
        formats
    };
    Ok(options)
}

/// Reads a task submission in any of its three forms: a JSON job, files in a form, or one raw
/// file; parse options come in the query string for the latter two.
async fn task_request(
    app: &App,
    request: Request,
    sync: bool,
    force_zip: bool,
) -> V1Result<CreateJobRequest> {
    let media = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let query = request.uri().query().map(str::to_owned);
    let params: Vec<_> = query_pairs(query.as_deref())
        .into_iter()
        .filter(|(k, _)| !(sync && matches!(k.as_str(), "response_format" | "wait_timeout")))
        .collect();
    let mut job = if media == "application/json" {
        if !params.is_empty() {
            return Err(V1Error::bad_request(
                "JSON parse options must be supplied in the request body",
            ));
        }
        let body = Bytes::from_request(request, &()).await.map_err(too_large)?;
        parse_json::<CreateJobRequest>(&body)?
    } else {
        let options = upload_task_options(query.as_deref(), sync)?;
        PageSelection::normalized(&options.page_range)
            .map_err(|e| page_range_refusal(e, "page_range".into()))?;
        check_formats(&options.output_formats, Form::Task)?;
        room(app, 0).await?;
        let sent = match media.as_str() {
            "application/octet-stream" => vec![raw_file(app, request, &options).await?],
            "multipart/form-data" => {
                if options.filename.is_some() || options.sha256sum.is_some() {
                    return Err(V1Error::bad_request(
                        "filename and sha256sum are only supported for raw uploads",
                    ));
                }
                let multipart = Multipart::from_request(request, &())
                    .await
                    .map_err(|e| V1Error::bad_request(e.body_text()))?;
                form_files(app, multipart).await?
            }
            _ => {
                return Err(V1Error::invalid(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "invalid_request",
                    "Use application/json, multipart/form-data or application/octet-stream",
                ));
            }
        };
        let mut files = Vec::with_capacity(sent.len());
        for file in sent {
            let id = register_source(app, &file).await?;
            files.push(JobFileEntry {
                source: FileSource::FileId { file_id: id },
                page_range: (!options.page_range.is_empty()).then(|| options.page_range.clone()),
            });
        }
        CreateJobRequest {
            files,
            tier: options.tier,
            ocr_mode: options.ocr_mode,
            output_formats: options.output_formats,
            callback: None,
        }
    };
    if job.callback.is_some() {
        return Err(
            V1Error::bad_request("Webhook callbacks are not supported by this service")
                .with_param("callback"),
        );
    }
    check_formats(&job.output_formats, Form::Task)?;
    if force_zip && !job.output_formats.iter().any(|f| f == "zip") {
        job.output_formats.push("zip".into());
    }
    Ok(job)
}

fn too_large(e: BytesRejection) -> V1Error {
    V1Error::invalid(e.status(), "file_too_large", e.body_text())
}

async fn raw_file(app: &App, request: Request, options: &UploadTaskOptions) -> V1Result<SentFile> {
    let Some(filename) = options.filename.clone() else {
        return Err(
            V1Error::bad_request("filename is required for raw uploads").with_param("filename")
        );
    };
    let declared: i64 = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or_else(|| {
            V1Error::invalid(
                StatusCode::LENGTH_REQUIRED,
                "invalid_request",
                "Content-Length is required for raw uploads",
            )
        })?;
    if declared <= 0 || declared as u64 > app.config.max_file_bytes.0 {
        return Err(V1Error::invalid(
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
            "Invalid raw file size",
        ));
    }
    let data = Bytes::from_request(request, &()).await.map_err(too_large)?;
    if data.len() as i64 != declared {
        return Err(
            V1Error::bad_request("Declared size does not match uploaded bytes")
                .coded("upload_size_mismatch"),
        );
    }
    if options
        .sha256sum
        .as_ref()
        .is_some_and(|sha| *sha != sha256_hex(&data))
    {
        return Err(V1Error::bad_request("SHA-256 mismatch").coded("file_hash_mismatch"));
    }
    Ok(SentFile {
        filename,
        data: data.to_vec(),
    })
}

async fn form_files(app: &App, mut multipart: Multipart) -> V1Result<Vec<SentFile>> {
    let mut files = Vec::new();
    let malformed = || V1Error::bad_request("Supply one or more files fields").with_param("files");
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| V1Error::bad_request(e.body_text()))?
    {
        if field.name() != Some("files") {
            return Err(malformed());
        }
        let Some(filename) = field
            .file_name()
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
        else {
            return Err(
                V1Error::bad_request("Every files field must contain a named file")
                    .with_param("files"),
            );
        };
        let data = field.bytes().await.map_err(|e| {
            V1Error::invalid(
                StatusCode::PAYLOAD_TOO_LARGE,
                "file_too_large",
                e.body_text(),
            )
        })?;
        if data.is_empty() {
            return Err(V1Error::bad_request("Empty files are not supported").with_param("files"));
        }
        if data.len() as u64 > app.config.max_file_bytes.0 {
            return Err(V1Error::invalid(
                StatusCode::PAYLOAD_TOO_LARGE,
                "file_too_large",
                "File exceeds this worker's limit",
            ));
        }
        files.push(SentFile {
            filename,
            data: data.to_vec(),
        });
        if files.len() > MAX_FILES_PER_JOB {
            return Err(malformed());
        }
    }
    if files.is_empty() {
        return Err(malformed());
    }
    Ok(files)
}

/// Keeps a file sent with a task as a source file, as an upload would.
async fn register_source(app: &App, file: &SentFile) -> V1Result<String> {
    let store = &app.jobs.store;
    let sha = store.put_blob(&file.data).await?;
    let now = now_s();
    let record = FileRecord {
        id: new_id("file-"),
        filename: file.filename.clone(),
        bytes: file.data.len() as i64,
        created_at: now,
        expires_at: Some(now + app.jobs.retention.as_secs() as i64),
        purpose: "parse".into(),
        sha256: Some(sha),
    };
    store.insert_file(&record, None).await?;
    Ok(record.id)
}

async fn create_task(State(app): State<Arc<App>>, request: Request) -> V1Result<Response> {
    let source = Source::of(request.headers());
    let job = task_request(&app, request, false, false).await?;
    let row = submit(&app, job, source, Form::Task).await?;
    Ok((StatusCode::ACCEPTED, Json(task_payload(&row))).into_response())
}

async fn get_task(State(app): State<Arc<App>>, Path(id): Path<String>) -> V1Result<Json<Value>> {
    Ok(Json(task_payload(&existing_job(&app, &id).await?)))
}

async fn cancel_task(State(app): State<Arc<App>>, Path(id): Path<String>) -> V1Result<Json<Value>> {
    Ok(Json(task_payload(&cancel(&app, &id).await?)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseFormat {
    Json,
    Zip,
}

fn response_format(query: Option<&str>) -> V1Result<ResponseFormat> {
    match query_pairs(query)
        .iter()
        .find(|(k, _)| k == "response_format")
        .map(|(_, v)| v.as_str())
    {
        None | Some("json") => Ok(ResponseFormat::Json),
        Some("zip") => Ok(ResponseFormat::Zip),
        Some(_) => Err(V1Error::bad_request(
            "Invalid request: response_format: Input should be 'json' or 'zip'",
        )
        .with_param("response_format")),
    }
}

async fn task_result(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> V1Result<Response> {
    let format = response_format(query.as_deref())?;
    let row = existing_job(&app, &id).await?;
    result_response(&app, &row, format).await
}

/// A task's result: 202 while it runs, 409 when it failed or was canceled, else its outputs
/// inline (JSON) or as the zip archive.
async fn result_response(app: &App, row: &JobRow, format: ResponseFormat) -> V1Result<Response> {
    let mut payload = task_payload(row);
    if !row.status.is_terminal() {
        return Ok((StatusCode::ACCEPTED, Json(payload)).into_response());
    }
    if matches!(row.status, JobStatus::Failed | JobStatus::Canceled) {
        return Ok((StatusCode::CONFLICT, Json(payload)).into_response());
    }
    if format == ResponseFormat::Zip {
        if !row.doc.output_formats.iter().any(|f| f == "zip") {
            return Err(V1Error::bad_request(
                "Request zip in output_formats when submitting the task",
            )
            .coded("unsupported_output_format"));
        }
        let mut archives = Vec::new();
        for (index, file) in row.doc.files.iter().enumerate() {
            if file.status != FileStatus::Completed {
                continue;
            }
            let Some(zip) = file.output_files.as_ref().and_then(|o| o.zip.as_ref()) else {
                return Err(V1Error::new(
                    StatusCode::BAD_GATEWAY,
                    "invalid_request_error",
                    "invalid_response",
                    "ZIP output is missing",
                ));
            };
            archives.push((index, output_bytes(app, &zip.file_id).await?));
        }
        let data = if row.doc.files.len() == 1 {
            archives.pop().map(|(_, data)| data).unwrap_or_default()
        } else {
            combine_archives(&archives, &payload)?
        };
        let mut response = ([(header::CONTENT_TYPE, "application/zip")], data).into_response();
        let headers = response.headers_mut();
        for (name, value) in [
            (
                "content-disposition",
                format!("attachment; filename=\"{}.zip\"", row.id),
            ),
            ("x-mineru-task-id", row.id.clone()),
            ("x-mineru-task-status", row.status.as_str().to_owned()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        return Ok(response);
    }
    if let Some(files) = payload.get_mut("files").and_then(Value::as_array_mut) {
        for (file, done) in files.iter_mut().zip(&row.doc.files) {
            let mut content = serde_json::Map::new();
            if let Some(outputs) = done
                .output_files
                .as_ref()
                .filter(|_| done.status == FileStatus::Completed)
            {
                for format in ["markdown", "middle_json", "structured_content"] {
                    let Some(reference) = outputs.get(format) else {
                        continue;
                    };
                    let data = output_bytes(app, &reference.file_id).await?;
                    let value = if format == "markdown" {
                        Value::String(String::from_utf8_lossy(&data).into_owned())
                    } else {
                        serde_json::from_slice(&data).unwrap_or(Value::Null)
                    };
                    content.insert(format.into(), value);
                }
            }
            file["content"] = Value::Object(content);
        }
    }
    Ok(Json(payload).into_response())
}

/// Several files' archives in one, each under its 1-based index, with the task as manifest.
fn combine_archives(archives: &[(usize, Vec<u8>)], payload: &Value) -> V1Result<Vec<u8>> {
    use std::io::{Read as _, Write as _};
    let broken = |e: &dyn std::fmt::Display| {
        V1Error::new(
            StatusCode::BAD_GATEWAY,
            "invalid_request_error",
            "invalid_response",
            format!("ZIP output is broken: {e}"),
        )
    };
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    out.start_file("manifest.json", options)
        .map_err(|e| broken(&e))?;
    out.write_all(payload.to_string().as_bytes())
        .map_err(|e| broken(&e))?;
    for (index, data) in archives {
        let mut archive =
            zip::ZipArchive::new(std::io::Cursor::new(data)).map_err(|e| broken(&e))?;
        for i in 0..archive.len() {
            let mut member = archive.by_index(i).map_err(|e| broken(&e))?;
            let name = format!(
                "{:04}/{}",
                index + 1,
                member.name().map_err(|e| broken(&e))?
            );
            let mut bytes = Vec::new();
            member.read_to_end(&mut bytes).map_err(|e| broken(&e))?;
            out.start_file(name, options).map_err(|e| broken(&e))?;
            out.write_all(&bytes).map_err(|e| broken(&e))?;
        }
    }
    Ok(out.finish().map_err(|e| broken(&e))?.into_inner())
}

async fn file_parse(State(app): State<Arc<App>>, request: Request) -> V1Result<Response> {
    let query = request.uri().query().map(str::to_owned);
    let format = response_format(query.as_deref())?;
    let wait = match query_pairs(query.as_deref())
        .iter()
        .find(|(k, _)| k == "wait_timeout")
    {
        None => 300,
        Some((_, v)) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=3600).contains(n))
            .ok_or_else(|| {
                V1Error::bad_request(
                    "Invalid request: wait_timeout: Input should be between 1 and 3600",
                )
                .with_param("wait_timeout")
            })?,
    };
    let source = Source::of(request.headers());
    let job = task_request(&app, request, true, format == ResponseFormat::Zip).await?;
    let row = submit(&app, job, source, Form::Task).await?;
    // The wait does not cancel the job: past it, the caller gets 202 and polls the task.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut row = row;
    while !row.status.is_terminal() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(WAIT_POLL).await;
        row = existing_job(&app, &row.id).await?;
    }
    result_response(&app, &row, format).await
}

impl V1Error {
    fn coded(mut self, code: &str) -> Self {
        self.detail.code = Some(code.to_owned());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_ranges_count_their_pages() {
        for (range, pages) in [("", 0), ("1-2", 2), ("1-3,5", 4), ("7", 1)] {
            assert_eq!(page_count_of(range), pages, "{range:?}");
        }
    }

    #[test]
    fn lists_page_after_a_cursor() {
        let items = vec!["a", "b", "c", "d"];
        assert_eq!(
            page_of(items.clone(), |s| s, None, 2),
            (vec!["a", "b"], true)
        );
        assert_eq!(
            page_of(items.clone(), |s| s, Some("b"), 2),
            (vec!["c", "d"], false)
        );
        assert_eq!(
            page_of(items, |s| s, Some("zz"), 9),
            (vec!["a", "b", "c", "d"], false)
        );
    }

    #[test]
    fn task_forms_refuse_unknown_options_and_formats() {
        assert!(
            upload_task_options(
                Some("tier=flash&output_formats=markdown&output_formats=zip"),
                false
            )
            .is_ok()
        );
        assert!(upload_task_options(Some("wait_timeout=5"), false).is_err());
        assert!(upload_task_options(Some("wait_timeout=5"), true).is_ok());
        assert!(upload_task_options(Some("tier=turbo"), false).is_err());
        let err = check_formats(&["html".into()], Form::Job).unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        let err = check_formats(&["html".into()], Form::Task).unwrap_err();
        assert_eq!(
            (err.status, err.detail.code.as_deref()),
            (StatusCode::BAD_REQUEST, Some("unsupported_output_format"))
        );
    }
}
