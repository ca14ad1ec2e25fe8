//! Strict request checking: what a vLLM server hosting MinerU2.5 accepts, and what MinerU's own
//! client sends. Every difference is a [`Deviation`], answered with the status a real server
//! would give and counted.
//!
//! The expected request is built by [`ChatRequest`] itself, so the check and the client share one
//! definition of the protocol.

use base64::Engine as _;
use image::RgbImage;
use serde::Deserialize as _;
use serde_json::{Map, Value};

use mineru_protocol::chat::{
    ChatRequest, ContentPart, LAYOUT_IMAGE_SIZE, MAX_IMAGE_EDGE_RATIO, MIN_IMAGE_EDGE, Message,
    PNG_DATA_URL_PREFIX, SYSTEM_PROMPT, Step,
};

/// Fields a vLLM server accepts beyond MinerU's body, checked against the model's length.
const LENGTH_FIELDS: [&str; 2] = ["max_tokens", "max_completion_tokens"];

/// A request that a strict server refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Deviation {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("request body is not a JSON object: {0}")]
    MalformedBody(String),
    #[error("the model `{0}` does not exist")]
    UnknownModel(String),
    #[error("messages differ from MinerU's system + user(image, prompt) shape: {0}")]
    Messages(String),
    #[error("the user message carries no image")]
    MissingImage,
    #[error("image is not a PNG data URL: {0}")]
    ImageNotPng(String),
    #[error("image cannot be decoded: {0}")]
    UndecodableImage(String),
    #[error("layout image is {width}x{height}, expected {LAYOUT_IMAGE_SIZE}x{LAYOUT_IMAGE_SIZE}")]
    LayoutImageSize { width: u32, height: u32 },
    #[error(
        "block image {width}x{height} has an edge under {MIN_IMAGE_EDGE} px or an aspect ratio over {MAX_IMAGE_EDGE_RATIO}"
    )]
    BlockImageSize { width: u32, height: u32 },
    #[error("unknown prompt {0:?}")]
    UnknownPrompt(String),
    #[error("skip_special_tokens must be false, got {0}")]
    SkipSpecialTokens(String),
    #[error("sampling parameter `{field}` is {actual}, MinerU sends {expected}")]
    Sampling {
        field: String,
        actual: String,
        expected: String,
    },
    #[error("`{field}` = {value} exceeds the model's maximum length {max_model_len}")]
    MaxTokens {
        field: String,
        value: String,
        max_model_len: u64,
    },
    #[error("unexpected field `{0}`")]
    UnexpectedField(String),
}

impl Deviation {
    /// Every value of [`Deviation::kind`].
    pub const KINDS: [&'static str; 14] = [
        "unauthorized",
        "malformed_body",
        "unknown_model",
        "messages",
        "missing_image",
        "image_not_png",
        "undecodable_image",
        "layout_image_size",
        "block_image_size",
        "unknown_prompt",
        "skip_special_tokens",
        "sampling",
        "max_tokens",
        "unexpected_field",
    ];

    /// Label for the deviation counter.
    pub fn kind(&self) -> &'static str {
        match self {
            Deviation::Unauthorized => "unauthorized",
            Deviation::MalformedBody(_) => "malformed_body",
            Deviation::UnknownModel(_) => "unknown_model",
            Deviation::Messages(_) => "messages",
            Deviation::MissingImage => "missing_image",
            Deviation::ImageNotPng(_) => "image_not_png",
            Deviation::UndecodableImage(_) => "undecodable_image",
            Deviation::LayoutImageSize { .. } => "layout_image_size",
            Deviation::BlockImageSize { .. } => "block_image_size",
            Deviation::UnknownPrompt(_) => "unknown_prompt",
            Deviation::SkipSpecialTokens(_) => "skip_special_tokens",
            Deviation::Sampling { .. } => "sampling",
            Deviation::MaxTokens { .. } => "max_tokens",
            Deviation::UnexpectedField(_) => "unexpected_field",
        }
    }

    /// The status vLLM answers with: 401 without the key, 404 for an unknown model (vLLM's
    /// `NotFoundError`), 400 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            Deviation::Unauthorized => 401,
            Deviation::UnknownModel(_) => 404,
            _ => 400,
        }
    }

    /// vLLM's error type name for the status.
    pub fn error_type(&self) -> &'static str {
        match self.status() {
            401 => "Unauthorized",
            404 => "NotFoundError",
            _ => "BadRequestError",
        }
    }
}

/// A request that passed every check.
#[derive(Debug)]
pub struct Accepted {
    pub step: Step,
    pub image: RgbImage,
}

/// Checks a chat-completions body against the protocol.
pub fn check_request(
    body: &[u8],
    served_model: &str,
    max_model_len: u64,
) -> Result<Accepted, Deviation> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| Deviation::MalformedBody(e.to_string()))?;
    // The image is most of the body: move it out once instead of copying it through every check,
    // leaving the empty URL the expected body is built with.
    let taken_url = match value
        .pointer_mut(IMAGE_URL_POINTER)
        .map(|v| std::mem::replace(v, Value::String(String::new())))
    {
        Some(Value::String(url)) => Some(url),
        Some(_) => return Err(Deviation::Messages("image_url.url is not a string".into())),
        None => None,
    };
    let Value::Object(fields) = value else {
        return Err(Deviation::MalformedBody(
            "top level is not an object".into(),
        ));
    };
    let model = fields
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if model != served_model {
        return Err(Deviation::UnknownModel(model.to_owned()));
    }
    let (other_url, prompt) = image_and_prompt(&fields)?;
    let step = Step::from_prompt(&prompt).ok_or(Deviation::UnknownPrompt(prompt))?;
    compare_fields(&fields, &expected_fields(served_model, step), max_model_len)?;
    let image_url = taken_url.unwrap_or(other_url);
    let image = decode_png_url(&image_url)?;
    let (width, height) = image.dimensions();
    if step == Step::Layout {
        if (width, height) != (LAYOUT_IMAGE_SIZE, LAYOUT_IMAGE_SIZE) {
            return Err(Deviation::LayoutImageSize { width, height });
        }
    } else {
        let (long, short) = (width.max(height), width.min(height));
        if short < MIN_IMAGE_EDGE || long > short.saturating_mul(MAX_IMAGE_EDGE_RATIO) {
            return Err(Deviation::BlockImageSize { width, height });
        }
    }
    Ok(Accepted { step, image })
}

/// Where MinerU puts the image URL.
const IMAGE_URL_POINTER: &str = "/messages/1/content/0/image_url/url";

/// The image URL and prompt of MinerU's message pair, or what is wrong with it.
fn image_and_prompt(fields: &Map<String, Value>) -> Result<(String, String), Deviation> {
    let messages = fields.get("messages").unwrap_or(&Value::Null);
    let messages =
        Vec::<Message>::deserialize(messages).map_err(|e| Deviation::Messages(e.to_string()))?;
    let [
        Message::System { content: system },
        Message::User { content: parts },
    ] = messages.as_slice()
    else {
        return Err(Deviation::Messages(
            "expected exactly [system, user]".into(),
        ));
    };
    if system != SYSTEM_PROMPT {
        return Err(Deviation::Messages(format!("system prompt is {system:?}")));
    }
    let images: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            ContentPart::ImageUrl { image_url } => Some(image_url.url.as_str()),
            ContentPart::Text { .. } => None,
        })
        .collect();
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            ContentPart::Text { text } => Some(text.as_str()),
            ContentPart::ImageUrl { .. } => None,
        })
        .collect();
    match (images.as_slice(), texts.as_slice()) {
        ([], _) => Err(Deviation::MissingImage),
        ([url], [text]) => Ok(((*url).to_owned(), (*text).to_owned())),
        _ => Err(Deviation::Messages(format!(
            "expected one image then one text part, got {} image(s) and {} text(s)",
            images.len(),
            texts.len()
        ))),
    }
}

/// The body MinerU sends for `step`, with an empty image URL.
fn expected_fields(model: &str, step: Step) -> Map<String, Value> {
    let request = ChatRequest::with_image_url(model, step, String::new());
    match serde_json::to_value(request) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

fn compare_fields(
    actual: &Map<String, Value>,
    expected: &Map<String, Value>,
    max_model_len: u64,
) -> Result<(), Deviation> {
    for (field, want) in expected {
        let got = actual.get(field).unwrap_or(&Value::Null);
        if same_value(got, want) {
            continue;
        }
        return Err(match field.as_str() {
            "messages" => Deviation::Messages("parts are not [image_url, text]".into()),
            "skip_special_tokens" => Deviation::SkipSpecialTokens(got.to_string()),
            _ => Deviation::Sampling {
                field: field.clone(),
                actual: got.to_string(),
                expected: want.to_string(),
            },
        });
    }
    for (field, value) in actual {
        if expected.contains_key(field) {
            continue;
        }
        if LENGTH_FIELDS.contains(&field.as_str()) {
            if value.as_u64().is_none_or(|v| v > max_model_len) {
                return Err(Deviation::MaxTokens {
                    field: field.clone(),
                    value: value.to_string(),
                    max_model_len,
                });
            }
            continue;
        }
        return Err(Deviation::UnexpectedField(field.clone()));
    }
    Ok(())
}

/// JSON equality where numbers compare by value (`0` equals `0.0`).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_value(v, w))
        }
        _ => a == b,
    }
}

fn decode_png_url(url: &str) -> Result<RgbImage, Deviation> {
    let Some(data) = url.strip_prefix(PNG_DATA_URL_PREFIX) else {
        let shown: String = url.chars().take(32).collect();
        return Err(Deviation::ImageNotPng(shown));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| Deviation::UndecodableImage(format!("base64: {e}")))?;
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(Deviation::ImageNotPng("data is not PNG".into()));
    }
    let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .map_err(|e| Deviation::UndecodableImage(e.to_string()))?;
    Ok(image.into_rgb8())
}
