//! The layout step's token stream, and MinerU's choice of which blocks to recognise.
//!
//! The layout model answers with repeated records
//! `<|box_start|>x1 y1 x2 y2<|box_end|><|ref_start|>TYPE<|ref_end|>[<|rotate_…|>]tail`.
//! Parsing follows `MinerUClientHelper.parse_layout_output`: malformed records are skipped, boxes
//! outside 0..=1000 or without area are dropped, `unknown` becomes `image`, `inline_formula` is
//! skipped, near-duplicate boxes are suppressed and text inside tables is removed.

use mineru_protocol::model::{Angle, BBox, Block, BlockType};

const BOX_START: &str = "<|box_start|>";
const BOX_END_REF_START: &str = "<|box_end|><|ref_start|>";
const REF_END: &str = "<|ref_end|>";
const CONTINUES_PREVIOUS: &str = "txt_contd_tgt";
const ROTATE_TOKENS: [(&str, Angle); 4] = [
    ("<|rotate_up|>", Angle::Up),
    ("<|rotate_right|>", Angle::Right),
    ("<|rotate_down|>", Angle::Down),
    ("<|rotate_left|>", Angle::Left),
];

/// Share of a block's area inside a container above which it counts as part of the container.
const INTERNAL_BLOCK_THRESHOLD: f64 = 0.9;
/// Two boxes of the same type and angle overlapping more than this (IoU) are one box.
const DEDUPLICATION_IOU_THRESHOLD: f64 = 0.9;
/// Images and charts are analysed only when both sides exceed this share of the page…
const IMAGE_ANALYSIS_MIN_SIDE: u32 = 100;
/// …or their area exceeds this share of the page (in 1000ths squared: 0.01 of the page).
const IMAGE_ANALYSIS_MIN_AREA: u32 = 10_000;

/// A layout answer that holds no layout record at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layout answer is not a layout token stream ({len} bytes, starting {excerpt:?})")]
pub struct LayoutError {
    pub len: usize,
    pub excerpt: String,
}

/// Parses a layout answer into blocks in the model's reading order.
///
/// An empty answer is an empty page; a non-empty answer without a single well-formed record is a
/// [`LayoutError`] (the server is not speaking the MinerU protocol).
pub fn parse_layout(output: &str) -> Result<Vec<Block>, LayoutError> {
    let mut matched = false;
    let mut blocks = Vec::new();
    let mut records = output.split(BOX_START);
    // Text before the first box_start belongs to no record.
    records.next();
    for record in records {
        let Some(raw) = parse_record(record) else {
            continue;
        };
        matched = true;
        if let Some(block) = raw.into_block() {
            blocks.push(block);
        }
    }
    if !matched && !output.trim().is_empty() {
        return Err(LayoutError {
            len: output.len(),
            excerpt: output.chars().take(80).collect(),
        });
    }
    let blocks = deduplicate(blocks);
    Ok(drop_covered(
        blocks,
        &[
            BlockType::Text,
            BlockType::Equation,
            BlockType::EquationBlock,
        ],
        &[BlockType::Table],
    ))
}

/// One syntactically valid record, before its values are checked.
struct RawRecord<'a> {
    coords: [u32; 4],
    kind: &'a str,
    angle: Option<Angle>,
    tail: &'a str,
}

impl RawRecord<'_> {
    fn into_block(self) -> Option<Block> {
        let [x0, y0, x1, y1] = self.coords;
        let Some(bbox) = BBox::new(x0, y0, x1, y1) else {
            tracing::debug!(coords = ?self.coords, "layout box out of range or empty, dropped");
            return None;
        };
        let kind = match self.kind.to_lowercase().as_str() {
            "unknown" => BlockType::Image,
            "inline_formula" => return None,
            name => match BlockType::from_name(name) {
                Some(kind) => kind,
                None => {
                    tracing::warn!(kind = name, "unknown layout block type, dropped");
                    return None;
                }
            },
        };
        Some(Block {
            kind,
            bbox,
            angle: self.angle,
            content: None,
            continues_previous: kind == BlockType::Text && self.tail.contains(CONTINUES_PREVIOUS),
            sub_type: None,
        })
    }
}

/// Parses `x1 y1 x2 y2<|box_end|><|ref_start|>TYPE<|ref_end|>[rotate]tail` (the text after a
/// box_start, up to the next one).
fn parse_record(s: &str) -> Option<RawRecord<'_>> {
    let mut rest = s;
    let mut coords = [0u32; 4];
    for (i, coord) in coords.iter_mut().enumerate() {
        if i > 0 {
            let trimmed = rest.trim_start();
            if trimmed.len() == rest.len() {
                return None;
            }
            rest = trimmed;
        }
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        // Saturate: a huge number is simply out of range and dropped later.
        *coord = rest[..digits].parse().unwrap_or(u32::MAX);
        rest = &rest[digits..];
    }
    rest = rest.strip_prefix(BOX_END_REF_START)?;
    let name_len = rest.len()
        - rest
            .trim_start_matches(|c: char| c.is_alphanumeric() || c == '_')
            .len();
    if name_len == 0 {
        return None;
    }
    let kind = &rest[..name_len];
    rest = rest[name_len..].strip_prefix(REF_END)?;
    let mut angle = None;
    for (token, a) in ROTATE_TOKENS {
        if let Some(after) = rest.strip_prefix(token) {
            angle = Some(a);
            rest = after;
            break;
        }
    }
    Some(RawRecord {
        coords,
        kind,
        angle,
        tail: rest,
    })
}

/// Suppresses boxes that repeat an earlier box of the same type and angle (IoU above the
/// threshold), keeping the first and the reading order.
fn deduplicate(blocks: Vec<Block>) -> Vec<Block> {
    let mut kept: Vec<Block> = Vec::with_capacity(blocks.len());
    for block in blocks {
        let duplicate = kept.iter().any(|k| {
            k.kind == block.kind
                && k.angle == block.angle
                && iou(k.bbox, block.bbox) > DEDUPLICATION_IOU_THRESHOLD
        });
        if !duplicate {
            kept.push(block);
        }
    }
    kept
}

fn iou(a: BBox, b: BBox) -> f64 {
    let inter = f64::from(a.intersection_area(b));
    let union = f64::from(a.area()) + f64::from(b.area()) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Indices of blocks of a `candidates` type lying (≥ 90%) inside another block of a
/// `containers` type.
fn covered(blocks: &[Block], candidates: &[BlockType], containers: &[BlockType]) -> Vec<bool> {
    blocks
        .iter()
        .enumerate()
        .map(|(i, block)| {
            candidates.contains(&block.kind)
                && blocks.iter().enumerate().any(|(j, outer)| {
                    i != j
                        && containers.contains(&outer.kind)
                        && block.bbox.fraction_inside(outer.bbox) >= INTERNAL_BLOCK_THRESHOLD
                })
        })
        .collect()
}

fn drop_covered(
    blocks: Vec<Block>,
    candidates: &[BlockType],
    containers: &[BlockType],
) -> Vec<Block> {
    let covered = covered(&blocks, candidates, containers);
    blocks
        .into_iter()
        .zip(covered)
        .filter_map(|(block, covered)| (!covered).then_some(block))
        .collect()
}

/// Prepares a parsed page for recognition as `MinerUClientHelper.prepare_for_extract` does:
/// drops image captions lying inside an image or chart, and returns the indices of the blocks
/// that are sent for recognition.
///
/// Containers (`list`, `equation_block`, `image_block`) are never sent; images and charts are
/// sent only when `image_analysis` is on, they are large enough and they are not part of an
/// `image_block`.
pub fn select_for_recognition(blocks: &mut Vec<Block>, image_analysis: bool) -> Vec<usize> {
    let visual = [BlockType::Image, BlockType::Chart];
    let caption_containers = [BlockType::Image, BlockType::Chart, BlockType::ImageBlock];
    *blocks = drop_covered(
        std::mem::take(blocks),
        &[BlockType::ImageCaption],
        &caption_containers,
    );
    let in_image_block = covered(blocks, &visual, &[BlockType::ImageBlock]);
    blocks
        .iter()
        .enumerate()
        .filter(|&(i, block)| match block.kind {
            BlockType::List | BlockType::EquationBlock | BlockType::ImageBlock => false,
            BlockType::Image | BlockType::Chart => {
                image_analysis && !in_image_block[i] && large_enough_for_analysis(block.bbox)
            }
            _ => true,
        })
        .map(|(i, _)| i)
        .collect()
}

fn large_enough_for_analysis(bbox: BBox) -> bool {
    (bbox.width() > IMAGE_ANALYSIS_MIN_SIDE && bbox.height() > IMAGE_ANALYSIS_MIN_SIDE)
        || bbox.area() > IMAGE_ANALYSIS_MIN_AREA
}

/// Renders blocks back into the layout token stream (the inverse of [`parse_layout`] for valid
/// blocks); the simulator answers layout calls with it.
pub fn render_layout(blocks: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks {
        let [x0, y0, x1, y1]: [u16; 4] = block.bbox.into();
        out.push_str(&format!(
            "{BOX_START}{x0} {y0} {x1} {y1}{BOX_END_REF_START}{}{REF_END}",
            block.kind
        ));
        if let Some(angle) = block.angle {
            let token = ROTATE_TOKENS
                .iter()
                .find(|(_, a)| *a == angle)
                .map_or("", |(t, _)| t);
            out.push_str(token);
        }
        if block.continues_previous {
            out.push_str(CONTINUES_PREVIOUS);
        }
        out.push('\n');
    }
    out
}
