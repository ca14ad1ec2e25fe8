//! The `/file_parse` form as MinerU's `mineru-api` takes it, read from multipart with every upload
//! bounded while it streams in.

use std::time::Duration;

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use tokio::io::AsyncWriteExt as _;

use crate::output::Backend;
use crate::parse::DocumentBytes;

use super::error::ApiError;

/// MinerU clients send `end_page_id=99999` for "to the end".
const TO_THE_END: usize = 99_999;

#[derive(Debug)]
pub struct Upload {
    /// The file name without directories and extension: the key of its result.
    pub stem: String,
    pub bytes: DocumentBytes,
}

/// How uploads are read: each is bounded by `max_bytes`, and one larger than `spill_above`
/// goes to a temporary file under `TMPDIR` as it streams in instead of staying in memory.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub max_bytes: u64,
    pub spill_above: u64,
}

#[derive(Debug)]
pub struct ParseForm {
    pub files: Vec<Upload>,
    pub backend: Option<Backend>,
    /// The backend as the caller wrote it, echoed in the answer.
    pub backend_name: Option<String>,
    pub return_md: bool,
    pub return_content_list: bool,
    pub return_middle_json: bool,
    pub return_model_output: bool,
    pub return_images: bool,
    /// Send images and charts for analysis (vlm backend; MinerU's `image_analysis`).
    pub image_analysis: bool,
    pub start_page_id: usize,
    pub end_page_id: Option<usize>,
    pub server_url: Option<String>,
}

/// How long a refused request's upload is read (and dropped) so that its client, still sending,
/// receives the refusal instead of a reset connection.
const DISCARD_FOR: Duration = Duration::from_secs(10);

/// Reads and drops what is left of the upload, for at most [`DISCARD_FOR`] (the body limit
/// bounds how much). A server that answers before the request is read closes the connection
/// under a client that is still sending, which then sees a reset instead of the answer and
/// its `Retry-After`.
pub async fn discard(multipart: &mut Multipart) {
    let drain = async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    };
    let _ = tokio::time::timeout(DISCARD_FOR, drain).await;
}

/// Reads the whole form, each upload within `limits`.
pub async fn read(multipart: &mut Multipart, limits: UploadLimits) -> Result<ParseForm, ApiError> {
    let mut form = ParseForm {
        files: Vec::new(),
        backend: None,
        backend_name: None,
        return_md: true,
        return_content_list: false,
        return_middle_json: false,
        return_model_output: false,
        return_images: false,
        image_analysis: true,
        start_page_id: 0,
        end_page_id: None,
        server_url: None,
    };
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "files" {
            form.files.push(read_file(field, limits).await?);
            continue;
        }
        let value = field.text().await.map_err(multipart_error)?;
        let value = value.trim();
        match name.as_str() {
            "backend" => {
                form.backend = backend(value)?;
                form.backend_name = form.backend.map(|_| value.to_owned());
            }
            "return_md" => form.return_md = flag(&name, value)?,
            "return_content_list" => form.return_content_list = flag(&name, value)?,
            "return_middle_json" => form.return_middle_json = flag(&name, value)?,
            "return_model_output" => form.return_model_output = flag(&name, value)?,
            "return_images" => form.return_images = flag(&name, value)?,
            "image_analysis" => form.image_analysis = flag(&name, value)?,
            "start_page_id" => form.start_page_id = number(&name, value)?,
            "end_page_id" => {
                form.end_page_id = Some(number(&name, value)?).filter(|&e| e < TO_THE_END)
            }
            "server_url" => form.server_url = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "response_format_zip" if flag(&name, value)? => {
                return Err(ApiError::BadRequest(
                    "response_format_zip is not supported: results come back as JSON".into(),
                ));
            }
            // Accepted for compatibility: formula and table recognition always run, and the rest
            // only steers MinerU's pipeline backend.
            "formula_enable" | "table_enable" | "response_format_zip" => {
                flag(&name, value)?;
            }
            _ => {}
        }
    }
    if form.files.is_empty() {
        return Err(ApiError::BadRequest(
            "no file uploaded: send one or more PDFs as multipart field \"files\"".into(),
        ));
    }
    let mut stems: Vec<&str> = form.files.iter().map(|f| f.stem.as_str()).collect();
    stems.sort_unstable();
    if let Some(pair) = stems.windows(2).find(|w| w[0] == w[1]) {
        return Err(ApiError::BadRequest(format!(
            "two files are named {:?}: results are keyed by file name, so names must differ",
            pair[0]
        )));
    }
    Ok(form)
}

async fn read_file(mut field: Field<'_>, limits: UploadLimits) -> Result<Upload, ApiError> {
    let file_name = field.file_name().unwrap_or_default().to_owned();
    let stem = stem(&file_name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "field \"files\" needs a file name (got {file_name:?})"
        ))
    })?;
    let spill_error = |e: std::io::Error| {
        ApiError::Internal(format!(
            "{file_name}: cannot spill the upload to TMPDIR: {e}"
        ))
    };
    let mut bytes = Vec::new();
    let mut spilled: Option<(tokio::fs::File, tempfile::TempPath)> = None;
    let mut size = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        size += chunk.len() as u64;
        if size > limits.max_bytes {
            return Err(ApiError::TooLarge(format!(
                "{file_name}: larger than the {} bytes this worker accepts per file",
                limits.max_bytes
            )));
        }
        if spilled.is_none() && size > limits.spill_above {
            let (file, path) = tempfile::Builder::new()
                .prefix("mineru-upload-")
                .suffix(".pdf")
                .tempfile()
                .map_err(spill_error)?
                .into_parts();
            let mut file = tokio::fs::File::from_std(file);
            file.write_all(&std::mem::take(&mut bytes))
                .await
                .map_err(spill_error)?;
            spilled = Some((file, path));
        }
        match &mut spilled {
            Some((file, _)) => file.write_all(&chunk).await.map_err(spill_error)?,
            None => bytes.extend_from_slice(&chunk),
        }
    }
    let bytes = match spilled {
        Some((mut file, path)) => {
            file.flush().await.map_err(spill_error)?;
            DocumentBytes::Spilled(path)
        }
        None => DocumentBytes::Memory(bytes),
    };
    Ok(Upload { stem, bytes })
}

/// `Path(name).stem` as MinerU computes it, from the last path component of either separator.
fn stem(file_name: &str) -> Option<String> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or_default();
    let stem = match base.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => base,
    };
    (!stem.is_empty()).then(|| stem.to_owned())
}

fn backend(value: &str) -> Result<Option<Backend>, ApiError> {
    match value {
        "" => Ok(None),
        "vlm" | "vlm-http-client" | "vlm-sglang-client" | "vlm-vllm-client" => {
            Ok(Some(Backend::Vlm))
        }
        "text" => Ok(Some(Backend::Text)),
        "pipeline" => Err(ApiError::BadRequest(
            "backend \"pipeline\" is not served here: use \"vlm\" (MinerU2.5 on the vLLM tier, \
             also accepted as \"vlm-http-client\") or \"text\" (the PDF's text layer)"
                .into(),
        )),
        other => Err(ApiError::BadRequest(format!(
            "unknown backend {other:?}: use \"vlm\" (or \"vlm-http-client\") or \"text\""
        ))),
    }
}

/// Booleans as FastAPI reads form fields.
fn flag(name: &str, value: &str) -> Result<bool, ApiError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ApiError::BadRequest(format!(
            "{name} must be true or false, got {value:?}"
        ))),
    }
}

fn number(name: &str, value: &str) -> Result<usize, ApiError> {
    value.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "{name} must be a page index counted from 0, got {value:?}"
        ))
    })
}

fn multipart_error(e: MultipartError) -> ApiError {
    let text = e.body_text();
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(format!("request body too large: {text}"))
    } else {
        ApiError::BadRequest(format!("malformed multipart body: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_drop_directories_and_the_extension() {
        assert_eq!(stem("report.pdf").as_deref(), Some("report"));
        assert_eq!(stem("a/b/c.v2.pdf").as_deref(), Some("c.v2"));
        assert_eq!(stem("C:\\docs\\scan.PDF").as_deref(), Some("scan"));
        assert_eq!(stem(".pdf").as_deref(), Some(".pdf"));
        assert_eq!(stem("dir/"), None);
        assert_eq!(stem(""), None);
    }

    #[test]
    fn mineru_backend_names_map_to_ours() {
        assert_eq!(backend("vlm-http-client").ok(), Some(Some(Backend::Vlm)));
        assert_eq!(backend("text").ok(), Some(Some(Backend::Text)));
        assert_eq!(backend("").ok(), Some(None));
        assert!(backend("pipeline").is_err());
        assert!(backend("hybrid").is_err());
    }
}
