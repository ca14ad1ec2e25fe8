//! The OpenAPI 3.1 description of the service, served at `/openapi.json` and committed as
//! docs/openapi/worker.yaml (a test keeps the two equal).

use serde_json::{Value, json};

fn error_response(description: &str, retry_after: bool) -> Value {
    let mut response = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    if retry_after {
        response["headers"] = json!({
            "Retry-After": {
                "description": "Seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 1}
            }
        });
    }
    response
}

fn boolean(description: &str, default: bool) -> Value {
    json!({"type": "boolean", "default": default, "description": description})
}

pub fn document() -> Value {
    let mut document = legacy();
    let (paths, schemas) = super::v1::openapi::paths_and_schemas();
    document["info"]["description"] = json!(
        "MinerU document extraction: MinerU 4's /v1 API (uploads, files, parse jobs, tasks, the \
         synchronous /v1/file_parse) and the legacy POST /file_parse of mineru-api 2.x. See \
         docs/worker-api.md."
    );
    if let Value::Object(target) = &mut document["paths"] {
        target.extend(paths);
    }
    if let Value::Object(target) = &mut document["components"]["schemas"] {
        target.extend(schemas);
    }
    document
}

/// The service without `/v1`: the legacy endpoint, probes, metrics.
fn legacy() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mineru-worker",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "MinerU document extraction, compatible with MinerU's mineru-api \
                            (POST /file_parse). See docs/worker-api.md."
        },
        "paths": {
            "/file_parse": {"post": {
                "summary": "Extract uploaded PDFs to Markdown and a MinerU content list",
                "parameters": [{
                    "name": "x-request-id", "in": "header", "required": false,
                    "description": "Request id for the logs; generated when absent, echoed back",
                    "schema": {"type": "string", "maxLength": 128}
                }],
                "requestBody": {"required": true, "content": {"multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["files"],
                        "properties": {
                            "files": {"type": "array",
                                      "items": {"type": "string", "format": "binary"},
                                      "description": "One or more PDFs; results are keyed by file name without extension"},
                            "backend": {"type": "string",
                                        "enum": ["vlm", "vlm-http-client", "text", "pipeline"],
                                        "description": "vlm (MinerU2.5 on the vLLM tier; MinerU's vlm-http-client) or text (the text layer); pipeline is refused; absent: the worker's --backend"},
                            "return_md": boolean("Return md_content", true),
                            "return_content_list": boolean("Return content_list (a JSON-encoded string, as mineru-api returns it)", false),
                            "return_middle_json": boolean("Return middle_json (MinerU 4's docvortex middle JSON, a JSON-encoded string)", false),
                            "return_model_output": boolean("Return model_output (MinerU's _model.json, a JSON-encoded string); vlm only, refused (400) with text, which runs no model", false),
                            "return_images": boolean("Return images (JPEG data URIs keyed by the names the Markdown and content list link as images/<name>)", false),
                            "response_format_zip": boolean("Only false is supported", false),
                            "image_analysis": boolean("Send images and charts for analysis (vlm backend); their description follows them in the Markdown", true),
                            "formula_enable": boolean("Accepted; formulas are always recognised", true),
                            "table_enable": boolean("Accepted; tables are always recognised", true),
                            "start_page_id": {"type": "integer", "minimum": 0, "default": 0,
                                              "description": "First page, counted from 0"},
                            "end_page_id": {"type": "integer", "minimum": 0, "default": 99999,
                                            "description": "Last page (inclusive), counted from 0"},
                            "server_url": {"type": "string",
                                           "description": "Refused (400) unless its origin is one of the worker's --allow-server-url"}
                        }
                    }
                }}},
                "responses": {
                    "200": {"description": "Every document extracted", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ParseResponse"}}}},
                    "400": error_response("Malformed form, unsupported option, or an output the backend cannot produce", false),
                    "413": error_response("A file exceeds --max-file-bytes or selects more than --max-pages pages", false),
                    "422": error_response("A file is not a PDF pdfium can open, or the page selection is outside it", false),
                    "429": error_response("--max-concurrent-documents in progress; retry later", true),
                    "500": error_response("Worker failure", false),
                    "502": error_response("The vLLM tier refused the request or answered unusably", false),
                    "503": error_response("The vLLM tier is unavailable (retries exhausted or circuit breaker open), or the worker is shutting down; retry later", true),
                    "504": error_response("The request exceeded --request-timeout", false)
                }
            }},
            "/health": {"get": {
                "summary": "Liveness: the process serves HTTP",
                "responses": {"200": {"description": "Alive", "content": {"application/json": {
                    "schema": {"type": "object", "properties": {"status": {"const": "ok"}}}}}}}
            }},
            "/ready": {"get": {
                "summary": "Readiness: pdfium loads and the vLLM tier lists the expected model, circuit breaker not open",
                "responses": {
                    "200": {"description": "Ready", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Readiness"}}}},
                    "503": {"description": "Not ready, with the reason", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Readiness"}}}}
                }
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (OpenMetrics text); see docs/worker-metrics.md",
                "responses": {"200": {"description": "Metrics",
                    "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}
            }},
            "/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}
        },
        "components": {"schemas": {
            "ParseResponse": {
                "type": "object",
                "required": ["backend", "version", "results"],
                "properties": {
                    "backend": {"type": "string"},
                    "version": {"type": "string"},
                    "results": {"type": "object", "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "md_content": {"type": "string"},
                            "middle_json": {"type": "string",
                                            "description": "The middle JSON (docvortex.middle) as a JSON-encoded string"},
                            "model_output": {"type": "string",
                                             "description": "Per page, the post-processed model blocks (type, bbox as page fractions, angle, content, merge_prev) as a JSON-encoded string"},
                            "content_list": {"type": "string",
                                             "description": "content_list.json as a JSON-encoded string"},
                            "images": {"type": "object",
                                       "additionalProperties": {"type": "string"},
                                       "description": "File name (as linked under images/) to data:image/jpeg;base64 URI"}
                        }
                    }}
                }
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}}
            },
            "Readiness": {
                "type": "object",
                "required": ["ready"],
                "properties": {"ready": {"type": "boolean"}, "reason": {"type": "string"}}
            }
        }}
    })
}
