//! What the simulator answers: a scenario file (YAML or JSON) with a default layout for any page,
//! per-page overrides keyed by a hash of the layout image, and one answer per recognition step.
//!
//! ```yaml
//! layout:                      # any page not listed under `pages`
//!   - {type: title, bbox: [100, 60, 900, 110]}
//!   - {type: text, bbox: [100, 130, 900, 400], angle: 0}
//! pages:                       # page key -> blocks, or a raw token stream; vllm-sim logs each
//!                              # layout request's key with RUST_LOG=debug (see `page_key`)
//!   "3f2a…": "<|box_start|>0 0 1000 1000<|box_end|><|ref_start|>image<|ref_end|>"
//! content:                     # step name -> answer; `{size}` becomes the image's WxH pixels,
//!   text: "Hello {size}"       # so blocks of one step get answers of their own
//!   table: "<fcel>a<fcel>b<nl>"
//! truncated: [text]            # steps answered with finish_reason "length" (cut at the limit)
//! ```
//!
//! Pages are identified by content, not by arrival order, so answers stay deterministic however
//! many requests run at once.

use std::collections::BTreeMap;
use std::path::Path;

use image::RgbImage;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::tokens::render_layout;
use mineru_protocol::chat::Step;
use mineru_protocol::model::{Angle, BBox, Block, BlockType};

/// A layout answer: blocks rendered as tokens, or a raw stream sent verbatim (to test how a
/// client copes with malformed streams).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum LayoutAnswer {
    Blocks(Vec<Block>),
    Raw(String),
}

impl LayoutAnswer {
    fn render(&self) -> String {
        match self {
            LayoutAnswer::Blocks(blocks) => render_layout(blocks),
            LayoutAnswer::Raw(raw) => raw.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "default_layout")]
    pub layout: LayoutAnswer,
    #[serde(default)]
    pub pages: BTreeMap<String, LayoutAnswer>,
    #[serde(default)]
    pub content: BTreeMap<String, String>,
    /// Steps (layout included) whose answers stop at the length limit.
    #[serde(default)]
    pub truncated: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid scenario {path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error(
        "invalid scenario {path}: unknown content step {step:?} (expected table, equation, image or text)"
    )]
    UnknownStep { path: String, step: String },
    #[error(
        "invalid scenario {path}: unknown truncated step {step:?} (expected layout, table, equation, image or text)"
    )]
    UnknownTruncatedStep { path: String, step: String },
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            layout: default_layout(),
            pages: BTreeMap::new(),
            content: BTreeMap::new(),
            truncated: Vec::new(),
        }
    }
}

impl Scenario {
    /// Reads a scenario file; YAML is a superset of JSON, so both parse.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        let scenario: Scenario =
            serde_yaml::from_str(&text).map_err(|source| ScenarioError::Parse {
                path: shown.clone(),
                source,
            })?;
        if let Some(step) = scenario
            .content
            .keys()
            .find(|k| !matches!(Step::from_name(k), Some(s) if s != Step::Layout))
        {
            return Err(ScenarioError::UnknownStep {
                path: shown,
                step: step.clone(),
            });
        }
        if let Some(step) = scenario
            .truncated
            .iter()
            .find(|k| Step::from_name(k).is_none())
        {
            return Err(ScenarioError::UnknownTruncatedStep {
                path: shown,
                step: step.clone(),
            });
        }
        Ok(scenario)
    }

    /// Whether layout answers depend on the page (so the page key must be computed).
    pub fn has_page_overrides(&self) -> bool {
        !self.pages.is_empty()
    }

    /// The layout answer for a page with the given key (`None` when no override applies).
    pub fn layout_for(&self, key: Option<&str>) -> String {
        key.and_then(|k| self.pages.get(k))
            .unwrap_or(&self.layout)
            .render()
    }

    /// The `finish_reason` of an answer to `step`.
    pub fn finish_reason(&self, step: Step) -> &'static str {
        if self.truncated.iter().any(|name| name == step.name()) {
            "length"
        } else {
            "stop"
        }
    }

    /// The answer to a recognition call on an image of `size` (width, height) pixels.
    pub fn content_for(&self, step: Step, (width, height): (u32, u32)) -> String {
        if let Some(answer) = self.content.get(step.name()) {
            return answer.replace("{size}", &format!("{width}x{height}"));
        }
        match step {
            Step::Layout => self.layout.render(),
            Step::Table => "<fcel>Name<fcel>Value<nl><fcel>alpha<fcel>1<nl><fcel>beta<fcel>2<nl>".into(),
            Step::Equation => "E = m c^{2}".into(),
            Step::ImageAnalysis => "<|class_start|>natural_image<|class_end|><|caption_start|>A simulated figure.<|caption_end|>".into(),
            Step::Text => "Simulated text.".into(),
        }
    }
}

/// The key identifying a page: SHA-256 (hex) of the layout image's RGB pixels, so it does not
/// depend on how the PNG was compressed.
pub fn page_key(layout_image: &RgbImage) -> String {
    let digest = Sha256::digest(layout_image.as_raw());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A one-column page: title, two paragraphs (the second continuing on from the first), a
/// table, an equation, a header and a page number.
fn default_layout() -> LayoutAnswer {
    let block = |kind, [x0, y0, x1, y1]: [u32; 4], continues_previous| {
        BBox::new(x0, y0, x1, y1).map(|bbox| Block {
            angle: Some(Angle::Up),
            continues_previous,
            ..Block::new(kind, bbox)
        })
    };
    LayoutAnswer::Blocks(
        [
            block(BlockType::Header, [100, 30, 900, 50], false),
            block(BlockType::Title, [100, 80, 900, 120], false),
            block(BlockType::Text, [100, 140, 900, 300], false),
            block(BlockType::Text, [100, 310, 900, 420], true),
            block(BlockType::Table, [100, 440, 900, 640], false),
            block(BlockType::Equation, [200, 660, 800, 720], false),
            block(BlockType::PageNumber, [480, 950, 520, 970], false),
        ]
        .into_iter()
        .flatten()
        .collect(),
    )
}
