//! The MinerU2.5 wire protocol in one place: prompts, sampling parameters, the chat-completions
//! request body and the interpretation of answers.
//!
//! Both the client and the simulator build and check requests through this module, so the two
//! cannot drift apart. The values mirror `mineru_vl_utils` (`DEFAULT_PROMPTS`,
//! `DEFAULT_SAMPLING_PARAMS`, `HttpVlmClient.build_request_body` / `get_response_content`).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::BlockType;

/// System message of every request.
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant.";
/// End-of-turn token some servers leave at the end of an answer; stripped from answers.
pub const END_TOKEN: &str = "<|im_end|>";
/// Side of the square, stretched page image sent to the layout step.
pub const LAYOUT_IMAGE_SIZE: u32 = 1036;
/// Shortest edge of a block image sent for recognition.
pub const MIN_IMAGE_EDGE: u32 = 28;
/// Largest long-edge / short-edge ratio of a block image sent for recognition.
pub const MAX_IMAGE_EDGE_RATIO: u32 = 50;
/// Every image travels as an inline PNG data URL.
pub const PNG_DATA_URL_PREFIX: &str = "data:image/png;base64,";

/// One kind of inference call; each has its own prompt and sampling parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Layout,
    Table,
    Equation,
    /// Images and charts.
    ImageAnalysis,
    /// Every other block type.
    Text,
}

/// The protocol table: step, short name, prompt, presence penalty, frequency penalty.
const STEPS: [(Step, &str, &str, f64, f64); 5] = [
    (Step::Layout, "layout", "\nLayout Detection:", 0.0, 0.0),
    (Step::Table, "table", "\nTable Recognition:", 1.0, 0.005),
    (
        Step::Equation,
        "equation",
        "\nFormula Recognition:",
        1.0,
        0.05,
    ),
    (Step::ImageAnalysis, "image", "\nImage Analysis:", 1.0, 0.05),
    (Step::Text, "text", "\nText Recognition:", 1.0, 0.05),
];

impl Step {
    pub const ALL: [Step; 5] = [
        Step::Layout,
        Step::Table,
        Step::Equation,
        Step::ImageAnalysis,
        Step::Text,
    ];

    fn row(self) -> &'static (Step, &'static str, &'static str, f64, f64) {
        // STEPS holds one row per variant, in declaration order.
        &STEPS[self as usize]
    }

    /// The recognition step for a block of the given type.
    pub fn for_block(kind: BlockType) -> Step {
        match kind {
            BlockType::Table => Step::Table,
            BlockType::Equation => Step::Equation,
            BlockType::Image | BlockType::Chart => Step::ImageAnalysis,
            _ => Step::Text,
        }
    }

    /// Short name, used for scenario keys and metric labels.
    pub fn name(self) -> &'static str {
        self.row().1
    }

    pub fn from_name(name: &str) -> Option<Step> {
        STEPS.iter().find(|row| row.1 == name).map(|row| row.0)
    }

    pub fn prompt(self) -> &'static str {
        self.row().2
    }

    pub fn from_prompt(prompt: &str) -> Option<Step> {
        STEPS.iter().find(|row| row.2 == prompt).map(|row| row.0)
    }

    pub fn sampling(self) -> Sampling {
        let &(_, _, _, presence_penalty, frequency_penalty) = self.row();
        Sampling {
            presence_penalty,
            frequency_penalty,
            ..Sampling::BASE
        }
    }
}

/// Sampling parameters of one call. MinerU sends no `max_tokens`: the server's
/// `max_model_len` bounds the answer, which avoids the `max_tokens` 400s of MinerU issue #4118.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: u32,
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    pub repetition_penalty: f64,
    pub no_repeat_ngram_size: u32,
}

impl Sampling {
    /// Greedy decoding shared by every step; steps override only the penalties.
    pub const BASE: Sampling = Sampling {
        temperature: 0.0,
        top_p: 0.01,
        top_k: 1,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        repetition_penalty: 1.0,
        no_repeat_ngram_size: 100,
    };
}

/// The body of `POST /v1/chat/completions`, field for field as MinerU sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: u32,
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    pub repetition_penalty: f64,
    pub vllm_xargs: VllmXargs,
    /// Must be false: layout boxes and rotations are special tokens.
    pub skip_special_tokens: bool,
}

/// Arguments for MinerU's vLLM logits processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VllmXargs {
    pub no_repeat_ngram_size: u32,
    pub debug: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message {
    System { content: String },
    User { content: Vec<ContentPart> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    ImageUrl { image_url: ImageUrl },
    Text { text: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

impl ChatRequest {
    /// The request for `step` on one PNG image.
    pub fn new(model: &str, step: Step, png: &[u8]) -> Self {
        Self::with_image_url(model, step, png_data_url(png))
    }

    /// The request for `step` carrying an already encoded image URL.
    pub fn with_image_url(model: &str, step: Step, image_url: String) -> Self {
        let s = step.sampling();
        Self {
            model: model.to_owned(),
            messages: vec![
                Message::System {
                    content: SYSTEM_PROMPT.to_owned(),
                },
                Message::User {
                    content: vec![
                        ContentPart::ImageUrl {
                            image_url: ImageUrl { url: image_url },
                        },
                        ContentPart::Text {
                            text: step.prompt().to_owned(),
                        },
                    ],
                },
            ],
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            presence_penalty: s.presence_penalty,
            frequency_penalty: s.frequency_penalty,
            repetition_penalty: s.repetition_penalty,
            vllm_xargs: VllmXargs {
                no_repeat_ngram_size: s.no_repeat_ngram_size,
                debug: false,
            },
            skip_special_tokens: false,
        }
    }
}

/// Stands in for the image while the rest of the body is serialised; it serialises as
/// `"\u0000png\u0000"`.
const IMAGE_SLOT: &str = "\u{0}png\u{0}";
const IMAGE_SLOT_JSON: &str = r#""\u0000png\u0000""#;

/// The JSON body of the request for `step` on one PNG image: byte for byte what serialising
/// [`ChatRequest::new`] gives, but the base64 goes straight into the body instead of through the
/// JSON string escaper (base64 never needs escaping), which saves a pass over every image.
pub fn request_body(model: &str, step: Step, png: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let skeleton = serde_json::to_string(&ChatRequest::with_image_url(
        model,
        step,
        IMAGE_SLOT.to_owned(),
    ))?;
    // Only protocol constants follow the image, so the last slot is the image's (a model name
    // could, in theory, contain the slot too).
    let Some(at) = skeleton.rfind(IMAGE_SLOT_JSON) else {
        return serde_json::to_vec(&ChatRequest::new(model, step, png));
    };
    let mut body = String::with_capacity(
        skeleton.len() + PNG_DATA_URL_PREFIX.len() + png.len().div_ceil(3) * 4,
    );
    body.push_str(&skeleton[..at]);
    body.push('"');
    body.push_str(PNG_DATA_URL_PREFIX);
    base64::engine::general_purpose::STANDARD.encode_string(png, &mut body);
    body.push('"');
    body.push_str(&skeleton[at + IMAGE_SLOT_JSON.len()..]);
    Ok(body.into_bytes())
}

/// `data:image/png;base64,…` for PNG bytes.
pub fn png_data_url(png: &[u8]) -> String {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut url = String::with_capacity(PNG_DATA_URL_PREFIX.len() + png.len().div_ceil(3) * 4);
    url.push_str(PNG_DATA_URL_PREFIX);
    engine.encode_string(png, &mut url);
    url
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub content: String,
    /// The server stopped at its length limit (`finish_reason: "length"`); MinerU accepts the
    /// truncated content with a warning.
    pub truncated: bool,
}

/// Why a 200 response is not a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("response is not a JSON object: {0}")]
    NotJson(String),
    #[error("server reported an error: {0}")]
    Server(String),
    #[error("response has no choices")]
    NoChoices,
    #[error("response choice has no finish_reason")]
    NoFinishReason,
    #[error("unexpected finish_reason {0:?}")]
    UnexpectedFinishReason(String),
    #[error("response choice has no message content")]
    NoContent,
}

/// Interprets the body of a 200 answer to a chat-completions request as MinerU does.
pub fn parse_answer(body: &[u8]) -> Result<Answer, AnswerError> {
    let data: Value =
        serde_json::from_slice(body).map_err(|e| AnswerError::NotJson(e.to_string()))?;
    let Value::Object(data) = data else {
        return Err(AnswerError::NotJson("top level is not an object".into()));
    };
    if data.get("object").and_then(Value::as_str) == Some("error") {
        let message = data
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| Value::Object(data.clone()).to_string(), str::to_owned);
        return Err(AnswerError::Server(message));
    }
    let choice = data
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or(AnswerError::NoChoices)?;
    let truncated = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("stop") => false,
        Some("length") => true,
        Some(other) => return Err(AnswerError::UnexpectedFinishReason(other.to_owned())),
        None => return Err(AnswerError::NoFinishReason),
    };
    let content = match choice.get("message").and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Null) => "",
        _ => return Err(AnswerError::NoContent),
    };
    let content = content.strip_suffix(END_TOKEN).unwrap_or(content);
    Ok(Answer {
        content: content.to_owned(),
        truncated,
    })
}

/// A chat-completions answer as vLLM shapes it (the fields MinerU and this worker read, plus the
/// envelope a client library expects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    pub role: String,
    pub content: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// vLLM's error body (`{"object": "error", …}`), sent with a non-200 status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub object: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: u16,
}

impl ErrorResponse {
    pub fn new(code: u16, kind: &str, message: impl Into<String>) -> Self {
        Self {
            object: "error".into(),
            message: message.into(),
            kind: kind.into(),
            param: None,
            code,
        }
    }
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub owned_by: String,
    #[serde(default)]
    pub max_model_len: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_table_matches_variant_order() {
        for step in Step::ALL {
            assert_eq!(step.row().0, step);
            assert_eq!(Step::from_prompt(step.prompt()), Some(step));
            assert_eq!(Step::from_name(step.name()), Some(step));
        }
    }
}
