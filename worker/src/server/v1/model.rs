//! The `/v1` request and response bodies, field for field as MinerU 4.0.12 declares them
//! (`mineru/parser/api_server.py`, `task_api.py`): unknown request fields are refused, as
//! MinerU's `extra="forbid"` models do, and absent optional response fields are `null`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// MinerU's error envelope: `{"error": {type, code, message, param}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    pub code: Option<String>,
    pub message: String,
    pub param: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody<'a> {
    pub error: &'a ErrorDetail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Flash,
    Basic,
    Standard,
    Advanced,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Flash => "flash",
            Tier::Basic => "basic",
            Tier::Standard => "standard",
            Tier::Advanced => "advanced",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OcrMode {
    #[default]
    Auto,
    Txt,
    Ocr,
}

/// The formats this worker produces (MinerU's local server produces the same four).
pub const OUTPUT_FORMATS: [&str; 4] = ["markdown", "middle_json", "structured_content", "zip"];

/// Where a job's file comes from. `url` and `local` are MinerU's too; this worker refuses them
/// (it reads no caller-named address or path), but must parse them to say so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FileSource {
    FileId { file_id: String },
    Url { url: String },
    Inline { name: String, data: String },
    Local { path: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFileEntry {
    pub source: FileSource,
    #[serde(default)]
    pub page_range: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    pub url: String,
    #[serde(default)]
    pub secret: Option<String>,
}

fn default_output_formats() -> Vec<String> {
    vec!["markdown".to_owned()]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    pub files: Vec<JobFileEntry>,
    #[serde(default)]
    pub tier: Option<Tier>,
    #[serde(default)]
    pub ocr_mode: OcrMode,
    #[serde(default = "default_output_formats")]
    pub output_formats: Vec<String>,
    #[serde(default)]
    pub callback: Option<CallbackConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpiresAfter {
    #[serde(default = "created_at")]
    pub anchor: String,
    #[serde(default = "an_hour")]
    pub seconds: i64,
}

fn created_at() -> String {
    "created_at".to_owned()
}

fn an_hour() -> i64 {
    3600
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUploadRequest {
    pub filename: String,
    pub bytes: i64,
    pub mime_type: String,
    #[serde(default = "parse_purpose")]
    pub purpose: String,
    #[serde(default)]
    pub sha256sum: Option<String>,
    #[serde(default)]
    pub expires_after: Option<ExpiresAfter>,
}

fn parse_purpose() -> String {
    "parse".to_owned()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteUploadRequest {
    #[serde(default)]
    pub sha256sum: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileObject {
    pub id: String,
    pub object: &'static str,
    pub bytes: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub filename: String,
    pub purpose: String,
    pub sha256sum: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct UploadResponse {
    pub id: String,
    pub object: &'static str,
    pub bytes: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub filename: String,
    pub purpose: String,
    pub mime_type: String,
    pub sha256sum: Option<String>,
    pub status: String,
    pub upload_url: Option<String>,
    pub upload_method: Option<&'static str>,
    pub upload_headers: Option<serde_json::Map<String, serde_json::Value>>,
    pub file: Option<FileObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ListResponse<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Partial,
    Failed,
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Partial => "partial",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "partial" => JobStatus::Partial,
            "failed" => JobStatus::Failed,
            "canceled" => JobStatus::Canceled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Queued,
    Running,
    Completed,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobProgress {
    pub completed: usize,
    pub failed: usize,
    pub total: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileParseInfo {
    pub model_used: Option<String>,
    pub duration_ms: Option<u64>,
    pub parser_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutputFileRef {
    pub file_id: String,
    pub bytes: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutputFiles {
    pub markdown: Option<OutputFileRef>,
    pub middle_json: Option<OutputFileRef>,
    pub structured_content: Option<OutputFileRef>,
    pub html: Option<OutputFileRef>,
    pub latex: Option<OutputFileRef>,
    pub docx: Option<OutputFileRef>,
    pub zip: Option<OutputFileRef>,
}

impl OutputFiles {
    pub fn get(&self, format: &str) -> Option<&OutputFileRef> {
        match format {
            "markdown" => self.markdown.as_ref(),
            "middle_json" => self.middle_json.as_ref(),
            "structured_content" => self.structured_content.as_ref(),
            "zip" => self.zip.as_ref(),
            _ => None,
        }
    }

    pub fn set(&mut self, format: &str, file: OutputFileRef) {
        match format {
            "markdown" => self.markdown = Some(file),
            "middle_json" => self.middle_json = Some(file),
            "structured_content" => self.structured_content = Some(file),
            "zip" => self.zip = Some(file),
            _ => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobFileResult {
    pub file_id: Option<String>,
    pub name: String,
    pub page_range: String,
    pub status: FileStatus,
    pub parse: Option<FileParseInfo>,
    pub output_files: Option<OutputFiles>,
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct JobLinks {
    #[serde(rename = "self")]
    pub this: String,
    pub cancel: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct JobResponse {
    pub job_id: String,
    pub status: JobStatus,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub tier: Tier,
    pub output_formats: Vec<String>,
    pub access_level: &'static str,
    pub progress: JobProgress,
    pub files: Vec<JobFileResult>,
    pub links: JobLinks,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct JobListItem {
    pub job_id: String,
    pub status: JobStatus,
    pub created_at: String,
    pub file_count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct JobCancelResponse {
    pub job_id: String,
    pub status: JobStatus,
    pub canceled_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct FileDeletionResponse {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}

/// The query string of `POST /v1/tasks` and `/v1/file_parse` with a form or raw body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UploadTaskOptions {
    pub tier: Option<Tier>,
    pub ocr_mode: OcrMode,
    pub page_range: String,
    pub output_formats: Vec<String>,
    pub filename: Option<String>,
    pub sha256sum: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields_and_take_minerus_defaults() {
        let job: CreateJobRequest =
            serde_json::from_str(r#"{"files":[{"source":{"type":"file_id","file_id":"f"}}]}"#)
                .unwrap();
        assert_eq!(job.output_formats, ["markdown"]);
        assert_eq!(job.ocr_mode, OcrMode::Auto);
        assert_eq!(job.tier, None);
        for bad in [
            r#"{"files":[],"extra":1}"#,
            r#"{"files":[{"source":{"type":"file_id","file_id":"f","x":1}}]}"#,
            r#"{"files":[{"source":{"type":"s3","key":"k"}}]}"#,
            r#"{"files":[{"source":{"type":"file_id","file_id":"f"}}],"tier":"turbo"}"#,
        ] {
            assert!(
                serde_json::from_str::<CreateJobRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn responses_spell_absent_fields_as_null() {
        let file = JobFileResult {
            file_id: None,
            name: "a.pdf".into(),
            page_range: String::new(),
            status: FileStatus::Queued,
            parse: None,
            output_files: None,
            error: None,
        };
        let json = serde_json::to_value(file).unwrap();
        assert_eq!(json["parse"], serde_json::Value::Null);
        assert_eq!(json["status"], "queued");
    }
}
