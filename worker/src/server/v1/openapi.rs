//! The `/v1` part of the OpenAPI document: paths as the router serves them, schemas generated
//! from the very types the handlers read and write, so the two cannot drift apart.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::model::{
    CompleteUploadRequest, CreateJobRequest, CreateUploadRequest, ErrorDetail,
    FileDeletionResponse, FileObject, JobCancelResponse, JobListItem, JobResponse, ListResponse,
    UploadResponse,
};

struct Schemas(SchemaGenerator);

impl Schemas {
    fn of<T: JsonSchema>(&mut self) -> Value {
        self.0.subschema_for::<T>().to_value()
    }
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn answer(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn failure(description: &str) -> Value {
    answer(description, json!({"$ref": "#/components/schemas/V1Error"}))
}

/// Errors every `/v1` call may answer.
fn with_failures(mut responses: Value, codes: &[(&str, &str)]) -> Value {
    for (code, description) in codes {
        responses[*code] = failure(description);
    }
    responses["503"] = failure("The job store cannot be reached (`job_store_unavailable`)");
    responses
}

fn operation(summary: &str, responses: Value) -> Value {
    json!({"summary": summary, "tags": ["v1"], "responses": responses})
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// The parse options of the form and raw-body submissions, in the query string.
fn task_parameters(sync: bool) -> Vec<Value> {
    let mut parameters = vec![
        query(
            "tier",
            "flash (text layer) or standard (MinerU2.5 through the GPU tier)",
            json!({"enum": ["flash", "basic", "standard", "advanced"]}),
        ),
        query(
            "ocr_mode",
            "auto, txt or ocr",
            json!({"enum": ["auto", "txt", "ocr"], "default": "auto"}),
        ),
        query(
            "page_range",
            "1-based pages, e.g. 1-5,8,r3-r1; blank or all for every page",
            json!({"type": "string"}),
        ),
        query(
            "output_formats",
            "Repeatable: markdown, middle_json, structured_content, zip",
            json!({"type": "array", "items": {"type": "string"}, "default": ["markdown"]}),
        ),
        query(
            "filename",
            "The file's name (raw bodies only)",
            json!({"type": "string", "minLength": 1}),
        ),
        query(
            "sha256sum",
            "The file's SHA-256 (raw bodies only)",
            json!({"type": "string", "pattern": "^[a-f0-9]{64}$"}),
        ),
    ];
    if sync {
        parameters.push(query(
            "response_format",
            "json or zip",
            json!({"enum": ["json", "zip"], "default": "json"}),
        ));
        parameters.push(query(
            "wait_timeout",
            "Seconds to wait before answering 202 with the task",
            json!({"type": "integer", "minimum": 1, "maximum": 3600, "default": 300}),
        ));
    }
    parameters
}

fn task_body(job: &Value) -> Value {
    json!({"required": true, "content": {
        "application/json": {"schema": job},
        "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
            "files": {"type": "array", "maxItems": 100, "items": {"type": "string", "format": "binary"}}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }})
}

/// `(paths, schemas)` to merge into the worker's document.
pub fn paths_and_schemas() -> (Map<String, Value>, Map<String, Value>) {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
    });
    let mut s = Schemas(settings.into_generator());
    let job_request = s.of::<CreateJobRequest>();
    let upload_request = s.of::<CreateUploadRequest>();
    let complete_request = s.of::<CompleteUploadRequest>();
    let upload = s.of::<UploadResponse>();
    let file = s.of::<FileObject>();
    let files = s.of::<ListResponse<FileObject>>();
    let deleted = s.of::<FileDeletionResponse>();
    let job = s.of::<JobResponse>();
    let jobs = s.of::<ListResponse<JobListItem>>();
    let canceled = s.of::<JobCancelResponse>();
    let error = s.of::<ErrorDetail>();
    let task = json!({"description": "The job under /v1/tasks: task_id for job_id, and status_url and result_url",
                      "type": "object"});
    let result = json!({"description": "The task with each file's content (markdown, middle_json, structured_content) inline",
                        "type": "object"});
    let zip = json!({"description": "The outputs as MinerU's archive", "content": {"application/zip": {
        "schema": {"type": "string", "format": "binary"}}}});
    let ok = |d: &str, schema: &Value| json!({"200": answer(d, schema.clone())});
    let id = |name: &str| json!([{"name": name, "in": "path", "required": true, "schema": {"type": "string"}}]);
    let mut paths = Map::new();
    let mut add = |path: &str, item: Value| {
        paths.insert(path.to_owned(), item);
    };
    add(
        "/v1/health",
        json!({"get": operation("Health and features: output formats, sources (file_id, inline)",
        with_failures(json!({"200": answer("Healthy", json!({"type": "object"}))}), &[]))}),
    );
    add(
        "/v1/models",
        json!({"get": operation("The one virtual model, named after the worker version",
        json!({"200": answer("Models", json!({"type": "object"}))}))}),
    );
    add(
        "/v1/models/{model}",
        json!({"get": {"summary": "One model", "tags": ["v1"], "parameters": id("model"),
        "responses": {"200": answer("The model", json!({"type": "object"})), "404": failure("No such model")}}}),
    );
    add(
        "/v1/tiers",
        json!({"get": operation("Tiers served: flash, and standard where a vLLM tier is configured",
        json!({"200": answer("Tiers", json!({"type": "object"}))}))}),
    );
    add(
        "/v1/usage",
        json!({"get": operation("Pages, files and jobs in the store, and this worker's limits",
        with_failures(json!({"200": answer("Usage", json!({"type": "object"}))}), &[]))}),
    );
    add(
        "/v1/uploads",
        json!({"post": {"summary": "Create an upload (already complete when the SHA-256 is known)",
        "tags": ["v1"], "requestBody": body(upload_request),
        "responses": with_failures(ok("The upload, with where to PUT its bytes", &upload),
            &[("400", "Invalid request or size mismatch"), ("413", "Larger than --max-file-bytes")])}}),
    );
    add(
        "/v1/uploads/{id}",
        json!({"get": {"summary": "An upload", "tags": ["v1"], "parameters": id("id"),
        "responses": with_failures(ok("The upload", &upload), &[("404", "Unknown or expired")])}}),
    );
    add(
        "/v1/uploads/{id}/content",
        json!({"put": {"summary": "The upload's bytes, exactly as many as declared",
        "tags": ["v1"], "parameters": id("id"),
        "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": with_failures(json!({"200": {"description": "Stored"}}),
            &[("404", "Unknown or expired"), ("409", "No longer pending"), ("413", "Not the declared size")])}}),
    );
    add(
        "/v1/uploads/{id}/complete",
        json!({"post": {"summary": "Complete an upload: the file it becomes",
        "tags": ["v1"], "parameters": id("id"), "requestBody": {"required": false, "content": {"application/json": {"schema": complete_request}}},
        "responses": with_failures(ok("The completed upload and its file", &upload),
            &[("400", "SHA-256 mismatch"), ("404", "Unknown or expired"), ("409", "No bytes yet, or no longer pending"), ("413", "Not the declared size")])}}),
    );
    add(
        "/v1/uploads/{id}/cancel",
        json!({"post": {"summary": "Cancel a pending upload", "tags": ["v1"], "parameters": id("id"),
        "responses": with_failures(ok("The canceled upload", &upload), &[("404", "Unknown or expired"), ("409", "No longer pending")])}}),
    );
    add(
        "/v1/files",
        json!({"get": {"summary": "Files, newest first (after, limit, order, purpose)", "tags": ["v1"],
        "parameters": [query("after", "Cursor: last_id of the previous page", json!({"type": "string"})),
                       query("limit", "Items per page", json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})),
                       query("order", "By created_at", json!({"enum": ["asc", "desc"], "default": "desc"})),
                       query("purpose", "parse, parse_output or input_image", json!({"type": "string"}))],
        "responses": with_failures(ok("A page of files", &files), &[("400", "Invalid query")])}}),
    );
    add(
        "/v1/files/{id}",
        json!({
        "get": {"summary": "A file", "tags": ["v1"], "parameters": id("id"),
                "responses": with_failures(ok("The file", &file), &[("404", "Unknown or expired")])},
        "delete": {"summary": "Forget a file", "tags": ["v1"], "parameters": id("id"),
                   "responses": with_failures(ok("Deleted", &deleted), &[("404", "Unknown")])}}),
    );
    add(
        "/v1/files/{id}/content",
        json!({"get": {"summary": "A parse output's bytes (sources are not served back)",
        "tags": ["v1"], "parameters": id("id"),
        "responses": with_failures(json!({"200": {"description": "The bytes", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}),
            &[("403", "A source file"), ("404", "Unknown or expired")])}}),
    );
    add(
        "/v1/parse/jobs",
        json!({
        "post": {"summary": "Submit a parse job; any worker sharing the store may run it", "tags": ["v1"],
                 "requestBody": body(job_request.clone()),
                 "responses": with_failures(json!({"202": answer("Queued", job.clone())}),
                     &[("400", "Invalid request, page range, format, source or tier"), ("403", "A format that needs an API key"), ("404", "Unknown file_id")])},
        "get": {"summary": "Jobs (status, limit, after, order, created_after)", "tags": ["v1"],
                "parameters": [query("status", "Comma-separated statuses", json!({"type": "string"})),
                               query("limit", "Items per page", json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20})),
                               query("after", "Cursor: last_id of the previous page", json!({"type": "string"})),
                               query("order", "By created_at", json!({"enum": ["asc", "desc"], "default": "desc"})),
                               query("created_after", "ISO-8601 lower bound", json!({"type": "string"}))],
                "responses": with_failures(ok("A page of jobs", &jobs), &[("400", "Invalid query")])}}),
    );
    add(
        "/v1/parse/jobs/{id}",
        json!({
        "get": {"summary": "A job: status, progress, each file's outputs or error", "tags": ["v1"], "parameters": id("id"),
                "responses": with_failures(ok("The job", &job), &[("404", "Unknown or expired")])},
        "delete": {"summary": "Cancel a job; its worker stops at the next page", "tags": ["v1"], "parameters": id("id"),
                   "responses": with_failures(ok("Canceled", &canceled), &[("404", "Unknown"), ("409", "Already ended")])}}),
    );
    add(
        "/v1/tasks",
        json!({"post": {"summary": "Submit a task: a JSON job, files in a form, or one raw file",
        "tags": ["v1"], "parameters": task_parameters(false), "requestBody": task_body(&job_request),
        "responses": with_failures(json!({"202": answer("Queued", task.clone())}),
            &[("400", "Invalid request"), ("411", "A raw body without Content-Length"), ("413", "A file too large"), ("415", "Another content type")])}}),
    );
    add(
        "/v1/tasks/{id}",
        json!({
        "get": {"summary": "A task", "tags": ["v1"], "parameters": id("id"),
                "responses": with_failures(ok("The task", &task), &[("404", "Unknown or expired")])},
        "delete": {"summary": "Cancel a task", "tags": ["v1"], "parameters": id("id"),
                   "responses": with_failures(ok("The canceled task", &task), &[("404", "Unknown"), ("409", "Already ended")])}}),
    );
    let mut result_responses = with_failures(
        json!({"200": answer("Done: the outputs", result.clone()),
        "202": answer("Still running", task.clone()), "409": answer("Failed or canceled", task.clone())}),
        &[
            ("400", "zip asked for but not produced"),
            ("404", "Unknown or expired"),
        ],
    );
    result_responses["200"]["content"]["application/zip"] =
        zip["content"]["application/zip"].clone();
    add(
        "/v1/tasks/{id}/result",
        json!({"get": {"summary": "A task's result, JSON or zip", "tags": ["v1"],
        "parameters": [id("id")[0].clone(), query("response_format", "json or zip", json!({"enum": ["json", "zip"], "default": "json"}))],
        "responses": result_responses.clone()}}),
    );
    add(
        "/v1/file_parse",
        json!({"post": {"summary": "Submit and wait (wait_timeout): the result, or 202 with the task",
        "tags": ["v1"], "parameters": task_parameters(true), "requestBody": task_body(&job_request),
        "responses": result_responses}}),
    );
    let mut schemas = s.0.take_definitions(true);
    schemas.insert(
        "V1Error".into(),
        json!({
        "type": "object", "required": ["error"], "properties": {"error": error},
        "description": "MinerU's error envelope"}),
    );
    (paths, schemas)
}
