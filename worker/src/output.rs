//! MinerU-compatible output, the same for both backends: Markdown, `content_list.json` (a flat
//! list in reading order, fields named as MinerU names them) and a per-page summary.
//!
//! The reference is MinerU's own writer (`vlm_middle_json_mkcontent` of MinerU 3.4.5; see
//! docs/mineru-compatibility.md for what differs and why). Captions and footnotes are attached
//! to the nearest table, image or code block of their page and written in layout order with it;
//! text blocks that continue the previous one are merged into it; page furniture (headers,
//! footers, page numbers, asides, page footnotes) is listed in `content_list.json` after each
//! page's content, in layout order, but kept out of the Markdown. Text is written as MinerU
//! writes its spans: inline math `$…$`, a `\[…\]` left in the text as plain brackets, the
//! characters Markdown gives a meaning to escaped; display equations `$$\n…\n$$`; an image's
//! analysis in a `<details>` element after it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use crate::text::join_text;
use mineru_protocol::model::{BBox, Block, BlockType, Page};

/// Which extraction backend produced a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// pdfium's text layer, no model.
    Text,
    /// MinerU2.5 through a vLLM server.
    Vlm,
}

/// One extracted page with what the summary reports about it.
#[derive(Debug, Clone, PartialEq)]
pub struct PageResult {
    pub page: Page,
    pub backend: Backend,
    /// The page's text could not be read from the text layer (a scan, or unmapped glyphs).
    pub needs_ocr: bool,
    /// Human-readable remarks: why OCR is needed, what the backend cannot recognise.
    pub notes: Vec<String>,
    /// Saved crops of image-like blocks: index in `page.blocks` → path relative to the output
    /// directory.
    pub images: BTreeMap<usize, String>,
}

impl PageResult {
    /// A page from the vlm backend: everything it read came from the model, so no OCR is missing.
    pub fn from_vlm(page: Page) -> Self {
        Self {
            page,
            backend: Backend::Vlm,
            needs_ocr: false,
            notes: Vec::new(),
            images: BTreeMap::new(),
        }
    }
}

/// One `content_list.json` entry. Optional fields are omitted when absent, as in MinerU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContentItem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_level: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub img_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_caption: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_footnote: Option<Vec<String>>,
    /// What image analysis read in an image or chart (empty when nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart_caption: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart_footnote: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_caption: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_footnote: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_caption: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_items: Option<Vec<String>>,
    pub bbox: [u16; 4],
    pub page_idx: usize,
    /// An image's, table's or code block's body, captions and footnotes by layout index, for the
    /// Markdown, which writes them in that order.
    #[serde(skip)]
    parts: Vec<(usize, Part)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Body,
    Caption(String),
}

impl ContentItem {
    fn new(kind: &'static str, block: &Block, page_idx: usize) -> Self {
        Self {
            kind,
            sub_type: None,
            text: None,
            text_level: None,
            text_format: None,
            img_path: None,
            image_caption: None,
            image_footnote: None,
            table_caption: None,
            table_footnote: None,
            table_body: None,
            code_caption: None,
            code_body: None,
            list_items: None,
            content: None,
            chart_caption: None,
            chart_footnote: None,
            bbox: block.bbox.into(),
            page_idx,
            parts: Vec::new(),
        }
    }

    fn is_plain_text(&self) -> bool {
        self.kind == "text" && self.text_level.is_none()
    }
}

/// The per-page summary written to `<stem>_pages.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageSummary {
    pub page_idx: usize,
    pub backend: Backend,
    pub blocks: usize,
    pub discarded: usize,
    pub needs_ocr: bool,
    pub notes: Vec<String>,
}

/// Everything written for one document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentOutput {
    pub markdown: String,
    pub content_list: Vec<ContentItem>,
    pub pages: Vec<PageSummary>,
    /// MinerU 4's middle JSON of the same pages (see [`crate::middle`]).
    pub middle_json: serde_json::Value,
}

/// Why output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialise {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// The files written for a document.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenFiles {
    pub markdown: PathBuf,
    pub content_list: PathBuf,
    pub pages: PathBuf,
    pub middle_json: PathBuf,
}

/// Builds Markdown, content list and summaries from pages in document order.
pub fn build(pages: &[PageResult]) -> DocumentOutput {
    let mut items: Vec<ContentItem> = Vec::new();
    let mut markdown_items: Vec<MarkdownPart> = Vec::new();
    let mut last_flow: Option<usize> = None;
    for result in pages {
        let page_idx = result.page.page_idx;
        let flow = page_items(result);
        if flow.is_empty() || result.needs_ocr {
            markdown_items.push(MarkdownPart::Note(page_note(result)));
        }
        for (item, continues) in flow {
            match last_flow {
                Some(prev) if continues && item.is_plain_text() && items[prev].is_plain_text() => {
                    if let (Some(text), Some(more)) = (items[prev].text.as_mut(), &item.text) {
                        join_text(text, more);
                    }
                    // MinerU keeps a paragraph the model continued as an empty item where it
                    // stood.
                    if result.backend == Backend::Vlm {
                        items.push(ContentItem {
                            text: Some(String::new()),
                            ..item
                        });
                    }
                }
                _ => {
                    // A paragraph continues the last one past images, tables and code, as
                    // MinerU looks past them (on a vlm page its flag says so only then, see
                    // `vlm::post_process`); anything else stands between.
                    if !matches!(item.kind, "image" | "chart" | "table" | "code") {
                        last_flow = Some(items.len());
                    }
                    markdown_items.push(MarkdownPart::Item(items.len()));
                    items.push(item);
                }
            }
        }
        for block in &result.page.discarded {
            let mut item = ContentItem::new(block.kind.as_str(), block, page_idx);
            item.text = Some(mineru_text(
                block.content.as_deref().unwrap_or_default(),
                Escape::Markdown,
            ));
            items.push(item);
        }
    }
    for item in items.iter_mut().filter(|i| i.is_plain_text()) {
        item.text = item.text.as_deref().map(escape_block_marker);
    }
    let markdown = markdown_items
        .iter()
        .filter_map(|part| match part {
            MarkdownPart::Item(i) => item_markdown(&items[*i]),
            MarkdownPart::Note(note) => Some(note.clone()),
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    DocumentOutput {
        markdown: if markdown.is_empty() {
            markdown
        } else {
            markdown + "\n"
        },
        content_list: items,
        pages: pages.iter().map(summary).collect(),
        middle_json: crate::middle::middle_json(
            pages,
            &crate::middle::DocumentInfo::from_pages(pages),
        ),
    }
}

enum MarkdownPart {
    Item(usize),
    Note(String),
}

fn page_note(result: &PageResult) -> String {
    let reason = result
        .notes
        .first()
        .cloned()
        .unwrap_or_else(|| "no content found".to_string());
    format!("> **Page {}:** {reason}", result.page.page_idx + 1)
}

fn summary(result: &PageResult) -> PageSummary {
    PageSummary {
        page_idx: result.page.page_idx,
        backend: result.backend,
        blocks: result.page.blocks.len(),
        discarded: result.page.discarded.len(),
        needs_ocr: result.needs_ocr,
        notes: result.notes.clone(),
    }
}

/// What a caption or footnote attaches to.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Owner {
    Image,
    Table,
    Code,
}

pub(crate) fn owner_of(kind: BlockType) -> Option<Owner> {
    match kind {
        BlockType::Image | BlockType::Chart | BlockType::Unknown | BlockType::ImageBlock => {
            Some(Owner::Image)
        }
        BlockType::Table => Some(Owner::Table),
        BlockType::Code | BlockType::Algorithm => Some(Owner::Code),
        _ => None,
    }
}

pub(crate) fn attaches_to(kind: BlockType) -> Option<Owner> {
    match kind {
        BlockType::ImageCaption | BlockType::ImageFootnote => Some(Owner::Image),
        BlockType::TableCaption | BlockType::TableFootnote => Some(Owner::Table),
        BlockType::CodeCaption => Some(Owner::Code),
        _ => None,
    }
}

/// The page's content items in reading order, each with its `continues_previous` flag.
fn page_items(result: &PageResult) -> Vec<(ContentItem, bool)> {
    let page_idx = result.page.page_idx;
    let blocks = &result.page.blocks;
    let mut items: Vec<(ContentItem, bool)> = Vec::new();
    // Index into `items` of each owner block, with its kind and bbox, for caption attachment.
    let mut owners: Vec<(usize, Owner, &Block)> = Vec::new();
    let mut equations: Vec<(usize, &Block)> = Vec::new();
    let mut pending: Vec<(usize, &Block)> = Vec::new();
    let mut unattached: Vec<(&Block, String)> = Vec::new();
    let lists = list_members(blocks);
    for (index, block) in blocks.iter().enumerate() {
        if attaches_to(block.kind).is_some() || block.kind == BlockType::FormulaNumber {
            pending.push((index, block));
            continue;
        }
        if lists.values().flatten().any(|&member| member == index) {
            continue;
        }
        let item = match lists.get(&index) {
            Some(members) => Some(list_item(block, page_idx, members, blocks)),
            None => block_item(block, page_idx, result.images.get(&index)),
        };
        let Some(mut item) = item else {
            continue;
        };
        if let Some(owner) = owner_of(block.kind) {
            item.parts.push((index, Part::Body));
            owners.push((items.len(), owner, block));
        }
        if block.kind == BlockType::Equation {
            equations.push((items.len(), block));
        }
        items.push((item, block.continues_previous));
    }
    for (index, block) in pending {
        let text = block.content.clone().unwrap_or_default();
        if block.kind == BlockType::FormulaNumber
            && let Some(i) = nearest(block, equations.iter().map(|&(i, b)| (i, b)))
        {
            let tag = text
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .trim();
            if let Some(latex) = items[i].0.text.as_mut() {
                let body_end = latex.strip_suffix("\n$$").map_or(latex.len(), str::len);
                latex.insert_str(body_end, &format!(" \\tag{{{tag}}}"));
            }
            continue;
        }
        let text = mineru_text(&text, Escape::Markdown);
        if let Some(owner) = attaches_to(block.kind) {
            let candidates = owners
                .iter()
                .filter(|(_, o, _)| *o == owner)
                .map(|&(i, _, b)| (i, b));
            if let Some(i) = nearest(block, candidates) {
                let item = &mut items[i].0;
                let chart = item.kind == "chart";
                let list = match block.kind {
                    BlockType::ImageCaption if chart => &mut item.chart_caption,
                    BlockType::ImageFootnote if chart => &mut item.chart_footnote,
                    BlockType::ImageCaption => &mut item.image_caption,
                    BlockType::ImageFootnote => &mut item.image_footnote,
                    BlockType::TableCaption => &mut item.table_caption,
                    BlockType::TableFootnote => &mut item.table_footnote,
                    _ => &mut item.code_caption,
                };
                list.get_or_insert_with(Vec::new).push(text.clone());
                item.parts.push((index, Part::Caption(text)));
                continue;
            }
        }
        unattached.push((block, text));
    }
    // Nothing to attach to: keep the words as text where they stand, inserted only once every
    // caption is attached (the owners' indices into `items` would be stale otherwise).
    for (block, text) in unattached {
        let mut item = ContentItem::new("text", block, page_idx);
        item.text = Some(text);
        let at = items
            .iter()
            .position(|(i, _)| i.bbox[1] > block.bbox.y0())
            .unwrap_or(items.len());
        items.insert(at, (item, false));
    }
    items
}

/// Share of a text block inside a list above which it is one of the list's items.
const LIST_ITEM_THRESHOLD: f64 = 0.8;

/// The items of each list container (MinerU's `fix_list_blocks`): its text blocks, then its
/// reference entries, each taken by the first list holding 80% of it. Lists without items are
/// left out.
pub(crate) fn list_members(blocks: &[Block]) -> BTreeMap<usize, Vec<usize>> {
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let lists: Vec<usize> = (0..blocks.len())
        .filter(|&i| blocks[i].kind == BlockType::List)
        .collect();
    if lists.is_empty() {
        return members;
    }
    for kind in [BlockType::Text, BlockType::RefText] {
        for (i, block) in blocks.iter().enumerate().filter(|(_, b)| b.kind == kind) {
            let holder = lists
                .iter()
                .find(|&&l| block.bbox.fraction_inside(blocks[l].bbox) >= LIST_ITEM_THRESHOLD);
            if let Some(&l) = holder {
                members.entry(l).or_default().push(i);
            }
        }
    }
    members
}

fn list_item(list: &Block, page_idx: usize, members: &[usize], blocks: &[Block]) -> ContentItem {
    // The list's kind is its items' most common kind, the first one on a tie.
    let mut counts: Vec<(BlockType, usize)> = Vec::new();
    for &m in members {
        match counts.iter_mut().find(|(k, _)| *k == blocks[m].kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((blocks[m].kind, 1)),
        }
    }
    let most = counts.iter().map(|(_, n)| *n).max().unwrap_or_default();
    let kind = counts.iter().find(|(_, n)| *n == most).map(|(k, _)| *k);
    ContentItem {
        sub_type: kind.map(|k| k.as_str().to_owned()),
        list_items: Some(
            members
                .iter()
                .filter_map(|&m| blocks[m].content.as_deref())
                .map(|t| mineru_text(t, Escape::Markdown))
                .filter(|t| !t.trim().is_empty())
                .collect(),
        ),
        ..ContentItem::new("list", list, page_idx)
    }
}

/// The candidate (item index, block) closest to `block` vertically.
pub(crate) fn nearest<'a>(
    block: &Block,
    candidates: impl Iterator<Item = (usize, &'a Block)>,
) -> Option<usize> {
    let distance = |b: &Block| {
        let above = i32::from(block.bbox.y0()) - i32::from(b.bbox.y1());
        let below = i32::from(b.bbox.y0()) - i32::from(block.bbox.y1());
        above.max(below).max(0)
    };
    candidates.min_by_key(|(_, b)| distance(b)).map(|(i, _)| i)
}

fn block_item(block: &Block, page_idx: usize, image: Option<&String>) -> Option<ContentItem> {
    let content = block.content.clone();
    let words = || {
        block
            .content
            .as_deref()
            .map(|t| mineru_text(t, Escape::Markdown))
    };
    let item = |kind| ContentItem::new(kind, block, page_idx);
    Some(match block.kind {
        BlockType::Title | BlockType::DocTitle | BlockType::ParagraphTitle => ContentItem {
            // A title is one line.
            text: Some(mineru_text(
                &block
                    .content
                    .as_deref()?
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                Escape::Markdown,
            )),
            text_level: Some(if block.kind == BlockType::ParagraphTitle {
                2
            } else {
                1
            }),
            ..item("text")
        },
        BlockType::Text
        | BlockType::ListItem
        | BlockType::Caption
        | BlockType::Footnote
        | BlockType::Index => ContentItem {
            text: words(),
            ..item("text")
        },
        // A list none of whose items the model found: its own text, if it has any.
        BlockType::List => ContentItem {
            text: Some(words()?),
            ..item("text")
        },
        BlockType::RefText
        | BlockType::Phonetic
        | BlockType::AsideText
        | BlockType::PageFootnote
        | BlockType::Header
        | BlockType::Footer
        | BlockType::PageNumber => ContentItem {
            text: Some(words()?),
            ..item(block.kind.as_str())
        },
        BlockType::Equation | BlockType::EquationBlock => ContentItem {
            text: Some(format!("$$\n{}\n$$", content?.trim())),
            text_format: Some("latex"),
            ..item("equation")
        },
        BlockType::Table => ContentItem {
            img_path: Some(image.cloned().unwrap_or_default()),
            table_caption: Some(Vec::new()),
            table_footnote: Some(Vec::new()),
            table_body: content.as_deref().map(table_html),
            ..item("table")
        },
        BlockType::Chart => ContentItem {
            img_path: Some(image.cloned().unwrap_or_default()),
            content: Some(content.unwrap_or_default()),
            chart_caption: Some(Vec::new()),
            chart_footnote: Some(Vec::new()),
            sub_type: block.sub_type.clone(),
            ..item("chart")
        },
        BlockType::Image | BlockType::Unknown | BlockType::ImageBlock => {
            if content.is_none() && image.is_none() && block.kind == BlockType::ImageBlock {
                return None;
            }
            ContentItem {
                img_path: Some(image.cloned().unwrap_or_default()),
                image_caption: Some(Vec::new()),
                image_footnote: Some(Vec::new()),
                content: Some(content.unwrap_or_default()),
                sub_type: block.sub_type.clone(),
                ..item("image")
            }
        }
        BlockType::Code => ContentItem {
            sub_type: Some("code".into()),
            code_caption: Some(Vec::new()),
            code_body: Some(format!(
                "```txt\n{}\n```",
                mineru_text(content?.trim(), Escape::None)
            )),
            ..item("code")
        },
        BlockType::Algorithm => ContentItem {
            sub_type: Some("algorithm".into()),
            code_caption: Some(Vec::new()),
            code_body: Some(algorithm_html(content?.trim())),
            ..item("code")
        },
        BlockType::FormulaNumber
        | BlockType::TableCaption
        | BlockType::ImageCaption
        | BlockType::CodeCaption
        | BlockType::TableFootnote
        | BlockType::ImageFootnote => return None,
    })
}

/// How a visual block's part is joined to the next: HTML stands apart by a blank line, Markdown
/// lines follow each other with a hard break (MinerU's `_get_visual_block_separator`).
#[derive(Clone, Copy, PartialEq)]
enum Segment {
    Line,
    Html,
}

fn item_markdown(item: &ContentItem) -> Option<String> {
    let part = match item.kind {
        "text" => {
            let text = item.text.as_deref()?.trim();
            match item.text_level {
                Some(level) => format!("{} {text}", "#".repeat(usize::from(level))),
                None => text.to_string(),
            }
        }
        "equation" => item.text.clone()?,
        "list" => item.list_items.as_ref()?.join("  \n"),
        "image" | "chart" | "table" | "code" => visual_markdown(item),
        // Reference lists are part of the text MinerU writes out; furniture, asides and page
        // footnotes are not, though the content list keeps them.
        "ref_text" | "phonetic" => item.text.clone()?,
        _ => return None,
    };
    let part = part.trim_matches('\n').to_string();
    (!part.trim().is_empty()).then_some(part)
}

/// An image, table or code block: its body and captions in layout order (MinerU's
/// `_merge_visual_blocks_to_markdown`).
fn visual_markdown(item: &ContentItem) -> String {
    let mut parts = item.parts.clone();
    parts.sort_by_key(|(index, _)| *index);
    let mut segments: Vec<(String, Segment)> = Vec::new();
    for (_, part) in parts {
        match part {
            Part::Caption(text) => segments.push((text, Segment::Line)),
            Part::Body => segments.extend(body_segments(item)),
        }
    }
    let mut out = String::new();
    let mut previous: Option<Segment> = None;
    for (text, segment) in segments.into_iter().filter(|(t, _)| !t.trim().is_empty()) {
        if let Some(before) = previous {
            out.push_str(if before == Segment::Html || segment == Segment::Html {
                "\n\n"
            } else {
                "  \n"
            });
        }
        out.push_str(&text);
        previous = Some(segment);
    }
    out
}

fn body_segments(item: &ContentItem) -> Vec<(String, Segment)> {
    let path = item.img_path.as_deref().filter(|p| !p.is_empty());
    let link = |p: &str| (format!("![]({p})"), Segment::Line);
    match item.kind {
        "image" | "chart" => {
            let mut segments: Vec<_> = path.map(link).into_iter().collect();
            if let Some(content) = item.content.as_deref().filter(|c| !c.trim().is_empty()) {
                let summary = item
                    .sub_type
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(if item.kind == "chart" {
                        "chart content"
                    } else {
                        "image content"
                    });
                segments.push((
                    format!("<details>\n<summary>{summary}</summary>\n\n{content}\n</details>"),
                    Segment::Html,
                ));
            }
            segments
        }
        "table" => match &item.table_body {
            Some(html) => vec![(html.trim().to_string(), Segment::Html)],
            None => path.map(link).into_iter().collect(),
        },
        _ => {
            let body = item.code_body.clone().unwrap_or_default();
            let segment = if item.sub_type.as_deref() == Some("algorithm") {
                Segment::Html
            } else {
                Segment::Line
            };
            vec![(body, segment)]
        }
    }
}

/// Whether a text's Markdown characters are escaped: everywhere but in code.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Escape {
    Markdown,
    None,
}

/// A piece of a text block: words or inline math.
enum Span<'a> {
    Words(&'a str),
    Math(&'a str),
}

/// Text as MinerU writes a block's spans (`vlm_magic_model` and `merge_para_with_text`): a
/// balanced `\[…\]` left in it becomes plain `[…]` (display math in a paragraph was made inline
/// before), each `\(…\)` is inline math `$…$`, the pieces around it are trimmed and joined by
/// single spaces, and in words full-width letters and digits become ASCII and the characters
/// Markdown reads as inline markup are escaped.
pub(crate) fn mineru_text(text: &str, escape: Escape) -> String {
    let text = brackets_for_display_math(text);
    let spans = inline_spans(&text);
    let rendered: Vec<String> = spans
        .iter()
        .filter_map(|span| {
            let piece = match span {
                Span::Words(words) if escape == Escape::Markdown => {
                    escape_markdown(&half_width(words.trim()))
                }
                Span::Words(words) => half_width(words.trim()),
                Span::Math(latex) => format!("${}$", latex.trim()),
            };
            (!piece.is_empty()).then_some(piece)
        })
        .collect();
    rendered.join(" ")
}

/// `\[…\]` on one line as `[…]`, when the text opens and closes as many (`clean_content`).
fn brackets_for_display_math(text: &str) -> std::borrow::Cow<'_, str> {
    let opens = text.matches("\\[").count();
    if opens == 0 || opens != text.matches("\\]").count() {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("\\[") {
        let body = &rest[start + 2..];
        let line = line_of(body);
        match line.find("\\]") {
            Some(end) => {
                out.push_str(&rest[..start]);
                out.push('[');
                out.push_str(&body[..end]);
                out.push(']');
                rest = &body[end + 2..];
            }
            // No later opening on this line can close either.
            None => {
                out.push_str(&rest[..start + 2 + line.len()]);
                rest = &body[line.len()..];
            }
        }
    }
    out.push_str(rest);
    out.into()
}

/// The text split at each `\(…\)` on one line holding something, when the text opens and closes
/// as many; otherwise one span of words.
fn inline_spans(text: &str) -> Vec<Span<'_>> {
    let opens = text.matches("\\(").count();
    if opens == 0 || opens != text.matches("\\)").count() {
        return vec![Span::Words(text)];
    }
    let mut spans = Vec::new();
    let mut rest = text;
    let mut words_from = 0;
    let mut at = 0;
    while let Some(found) = rest[at..].find("\\(") {
        let start = at + found;
        let body = &rest[start + 2..];
        // Something, then the first `\)` on the same line.
        let line = line_of(body);
        let end = line
            .char_indices()
            .nth(1)
            .and_then(|(first, _)| line[first..].find("\\)").map(|end| first + end));
        match end {
            Some(end) => {
                spans.push(Span::Words(&rest[words_from..start]));
                spans.push(Span::Math(&body[..end]));
                rest = &body[end + 2..];
                words_from = 0;
                at = 0;
            }
            // No later opening on this line can close either.
            None => at = start + 2 + line.len(),
        }
    }
    spans.push(Span::Words(&rest[words_from..]));
    spans
}

/// Full-width Latin letters and digits as ASCII (MinerU's `full_to_half_exclude_marks`; the
/// full-width punctuation of CJK text stays).
fn half_width(words: &str) -> String {
    words
        .chars()
        .map(|c| match c {
            '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
                char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c)
            }
            c => c,
        })
        .collect()
}

/// `text` up to its first line break: MinerU's patterns do not cross lines, and looking no
/// further keeps a long answer of unclosed delimiters linear.
fn line_of(text: &str) -> &str {
    text.split('\n').next().unwrap_or_default()
}

/// MinerU's `escape_conservative_markdown_text`: `*`, `_`, `` ` ``, `~` and `$` get a backslash
/// unless one already escapes them.
pub(crate) fn escape_markdown(words: &str) -> String {
    let mut out = String::with_capacity(words.len());
    let mut backslashes = 0;
    for c in words.chars() {
        if c == '\\' {
            backslashes += 1;
            out.push(c);
            continue;
        }
        if matches!(c, '*' | '_' | '`' | '~' | '$') && backslashes % 2 == 0 {
            out.push('\\');
        }
        backslashes = 0;
        out.push(c);
    }
    out
}

/// A paragraph opening with what Markdown takes for a heading or list marker (`#`…`######`,
/// `+` or `-`, then a space) gets it escaped (`escape_text_block_markdown_prefix`).
pub(crate) fn escape_block_marker(text: &str) -> String {
    let indent = text.len() - text.trim_start_matches([' ', '\t']).len();
    if indent > 3 {
        return text.to_owned();
    }
    let rest = &text[indent..];
    let marker = match rest.chars().next() {
        Some('#') => rest.len() - rest.trim_start_matches('#').len(),
        Some('+' | '-') => 1,
        _ => return text.to_owned(),
    };
    if marker > 6 || !rest[marker..].starts_with([' ', '\t']) {
        return text.to_owned();
    }
    format!("{}\\{rest}", &text[..indent])
}

/// A table's HTML as MinerU writes it: each formula the recognition marked `<eq>…</eq>` as
/// inline math set off by spaces (`_replace_eq_tags_in_table_html`).
pub(crate) fn table_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find("<eq>") {
        let Some(len) = rest[start + 4..].find("</eq>") else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&format!(
            " ${}$ ",
            unescape_html(&rest[start + 4..start + 4 + len])
        ));
        rest = &rest[start + 4 + len + 5..];
    }
    out.push_str(rest);
    out
}

/// HTML character references decoded, as Python's `html.unescape` does for those a table
/// holds: the five named ones and numeric ones (`&#39;`, `&#x27;`).
fn unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let reference = &rest[at + 1..];
        let decoded = reference.find(';').and_then(|end| {
            let name = &reference[..end];
            let c = match name {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .map(|hex| u32::from_str_radix(hex, 16))
                    .or_else(|| name.strip_prefix('#').map(str::parse::<u32>))
                    .and_then(Result::ok)
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &reference[len..];
            }
            None => {
                out.push('&');
                rest = reference;
            }
        }
    }
    out.push_str(rest);
    out
}

/// An algorithm (code holding inline math) as MinerU renders it: HTML keeping its indentation,
/// with the math as `$…$` (`render_algorithm_html_from_lines`).
fn algorithm_html(code: &str) -> String {
    let code = brackets_for_display_math(code);
    let mut body = String::new();
    let mut after_math = false;
    for span in inline_spans(&code) {
        match span {
            // MinerU keeps no span of blanks between two formulas.
            Span::Words(words) if words.trim().is_empty() => {}
            Span::Words(words) => {
                body.push_str(&escape_html(&half_width(words)));
                after_math = false;
            }
            Span::Math(latex) if !latex.trim().is_empty() => {
                if after_math && !body.ends_with([' ', '\n', '\t']) {
                    body.push(' ');
                }
                body.push_str(&format!("${}$", escape_html(latex.trim())));
                after_math = true;
            }
            Span::Math(_) => {}
        }
    }
    // MinerU writes nothing for an algorithm without a body.
    if body.trim().is_empty() {
        return String::new();
    }
    format!(
        "<div class=\"mineru-algorithm\" style=\"white-space: pre-wrap; font-family:monospace;\">\n{body}\n</div>"
    )
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text with its inline math written as MinerU writes it: `\(…\)`, and a `\[…\]` inside
/// text, become `$…$`. A backslash escapes the character after it (`\\(` is no math), as
/// [`crate::middle`] reads inline math.
pub(crate) fn dollar_math(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some((latex, len)) = delimited_math(tail) {
            out.push('$');
            out.push_str(latex);
            out.push('$');
            rest = &tail[len..];
            continue;
        }
        // An unclosed `\(` or `\[` is kept as it is; any other backslash with what it escapes.
        let escaped = match tail[1..].chars().next() {
            Some('(' | '[') | None => 0,
            Some(c) => c.len_utf8(),
        };
        out.push_str(&tail[..1 + escaped]);
        rest = &tail[1 + escaped..];
    }
    out.push_str(rest);
    out
}

/// `\(…\)` or `\[…\]` at the start of `s`: its LaTeX, trimmed, and the length of the whole.
/// `None` when it is not closed or holds nothing.
pub(crate) fn delimited_math(s: &str) -> Option<(&str, usize)> {
    let close = if s.starts_with("\\(") {
        "\\)"
    } else if s.starts_with("\\[") {
        "\\]"
    } else {
        return None;
    };
    let body = &s[2..];
    let end = body.find(close)?;
    let latex = body[..end].trim();
    (!latex.is_empty()).then_some((latex, 2 + end + close.len()))
}

/// Writes `<dir>/<stem>/<stem>.md`, `<stem>_content_list.json`, `<stem>_pages.json` and
/// `<stem>_middle.json`.
pub fn write(dir: &Path, stem: &str, output: &DocumentOutput) -> Result<WrittenFiles, OutputError> {
    let doc_dir = dir.join(stem);
    fs::create_dir_all(&doc_dir).map_err(|source| OutputError::Io {
        path: doc_dir.clone(),
        source,
    })?;
    let files = WrittenFiles {
        markdown: doc_dir.join(format!("{stem}.md")),
        content_list: doc_dir.join(format!("{stem}_content_list.json")),
        pages: doc_dir.join(format!("{stem}_pages.json")),
        middle_json: doc_dir.join(format!("{stem}_middle.json")),
    };
    let content_list = to_json("content list", &output.content_list)?;
    let pages = to_json("page summary", &output.pages)?;
    let middle_json = to_json("middle json", &output.middle_json)?;
    for (path, data) in [
        (&files.markdown, output.markdown.as_bytes()),
        (&files.content_list, content_list.as_bytes()),
        (&files.pages, pages.as_bytes()),
        (&files.middle_json, middle_json.as_bytes()),
    ] {
        fs::write(path, data).map_err(|source| OutputError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(files)
}

/// An image the Markdown and content list link as `images/<name>`, with its JPEG bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub name: String,
    pub jpeg: Vec<u8>,
}

/// Pillow's default JPEG quality, which MinerU saves its images with.
const JPEG_QUALITY: u8 = 75;

/// Whether MinerU links blocks of this kind as image files (its `cut_image_and_table`).
pub fn is_cropped(kind: BlockType) -> bool {
    matches!(
        kind,
        BlockType::Image | BlockType::Chart | BlockType::Unknown | BlockType::Table
    )
}

/// An image as MinerU saves it: JPEG.
pub fn encode_jpeg(image: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode_image(image)?;
    Ok(out)
}

/// The JPEG of a block's region of its page render.
pub fn crop_jpeg(render: &RgbImage, bbox: BBox) -> Result<Vec<u8>, image::ImageError> {
    let r = bbox.to_pixels(render.width(), render.height());
    encode_jpeg(&image::imageops::crop_imm(render, r.x, r.y, r.width, r.height).to_image())
}

/// Names the page's images (JPEG bytes by index in `page.blocks`) and records their paths, so
/// Markdown and content list link them.
pub fn attach_images(result: &mut PageResult, images: Vec<(usize, Vec<u8>)>) -> Vec<ImageFile> {
    images
        .into_iter()
        .map(|(index, jpeg)| {
            let name = format!("p{}_b{index}.jpg", result.page.page_idx + 1);
            result.images.insert(index, format!("images/{name}"));
            ImageFile { name, jpeg }
        })
        .collect()
}

/// Writes the images under `<doc_dir>/images/`.
pub fn save_images(doc_dir: &Path, images: &[ImageFile]) -> Result<(), OutputError> {
    let images_dir = doc_dir.join("images");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OutputError::Io { path, source }
    };
    if !images.is_empty() {
        fs::create_dir_all(&images_dir).map_err(io(&images_dir))?;
    }
    for image in images {
        let path = images_dir.join(&image.name);
        fs::write(&path, &image.jpeg).map_err(io(&path))?;
    }
    Ok(())
}

fn to_json<T: Serialize>(what: &'static str, value: &T) -> Result<String, OutputError> {
    serde_json::to_string_pretty(value).map_err(|source| OutputError::Json { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mineru_protocol::model::BBox;

    fn block(kind: BlockType, y: u32, content: &str) -> Block {
        Block {
            content: Some(content.to_string()),
            ..Block::new(kind, BBox::new(100, y, 900, y + 40).expect("valid bbox"))
        }
    }

    fn page(idx: usize, blocks: Vec<Block>) -> PageResult {
        PageResult::from_vlm(Page::from_blocks(idx, blocks))
    }

    #[test]
    fn markdown_renders_each_block_kind_as_mineru_does() {
        let out = build(&[page(
            0,
            vec![
                block(BlockType::Title, 10, "Results"),
                block(BlockType::Text, 60, "Body text."),
                block(BlockType::Equation, 110, "E = mc^2"),
                block(BlockType::TableCaption, 160, "Table 1: Counts"),
                block(BlockType::Table, 200, "<table><tr><td>1</td></tr></table>"),
                block(BlockType::PageNumber, 960, "7"),
            ],
        )]);
        assert_eq!(
            out.markdown,
            "# Results\n\nBody text.\n\n$$\nE = mc^2\n$$\n\nTable 1: Counts\n\n\
             <table><tr><td>1</td></tr></table>\n"
        );
    }

    #[test]
    fn content_list_uses_mineru_field_names_and_lists_furniture_last() {
        let out = build(&[page(
            3,
            vec![
                block(BlockType::PageNumber, 960, "7"),
                block(BlockType::ParagraphTitle, 10, "Methods"),
                block(BlockType::Equation, 60, "x^2"),
                block(BlockType::Table, 110, "<table></table>"),
                block(BlockType::TableFootnote, 160, "n = 3"),
            ],
        )]);
        let json = serde_json::to_value(&out.content_list).expect("serialise");
        assert_eq!(
            json,
            serde_json::json!([
                {"type": "text", "text": "Methods", "text_level": 2, "bbox": [100, 10, 900, 50], "page_idx": 3},
                {"type": "equation", "text": "$$\nx^2\n$$", "text_format": "latex", "bbox": [100, 60, 900, 100], "page_idx": 3},
                {"type": "table", "img_path": "", "table_caption": [], "table_footnote": ["n = 3"],
                 "table_body": "<table></table>", "bbox": [100, 110, 900, 150], "page_idx": 3},
                {"type": "page_number", "text": "7", "bbox": [100, 960, 900, 1000], "page_idx": 3},
            ])
        );
    }

    #[test]
    fn markdown_follows_minerus_post_processing() {
        let with_image = |blocks: Vec<Block>, index: usize| {
            let mut page = page(0, blocks);
            page.images.insert(index, "images/p1_b0.png".into());
            page
        };
        // (name, page, Markdown MinerU writes)
        let cases = [
            (
                "inline math is written between dollars, a dollar of the words escaped",
                page(
                    0,
                    vec![
                        block(BlockType::Title, 10, "On \\(n\\) bodies"),
                        block(BlockType::Text, 60, "Let \\( x_1 \\) and $y$ be given."),
                    ],
                ),
                "# On $n$ bodies\n\nLet $x_1$ and \\$y\\$ be given.\n",
            ),
            (
                "display delimiters left in text are plain brackets",
                page(0, vec![block(BlockType::Text, 60, "So \\[a=b\\] here.")]),
                "So [a=b] here.\n",
            ),
            (
                "inline math does not reach across a line break",
                page(
                    0,
                    vec![block(BlockType::Text, 60, "x \\(a\nb\\) and \\(c\\)")],
                ),
                "x \\(a\nb\\) and $c$\n",
            ),
            (
                "character references in a table formula are decoded",
                page(
                    0,
                    vec![block(
                        BlockType::Table,
                        60,
                        "<table><tr><td><eq>f&#x27;(x) &amp; g</eq></td></tr></table>",
                    )],
                ),
                "<table><tr><td> $f'(x) & g$ </td></tr></table>\n",
            ),
            (
                "full-width letters and digits are ASCII, full-width punctuation stays",
                page(0, vec![block(BlockType::Text, 60, "ＡＢ１２，ｃ")]),
                "AB12，c\n",
            ),
            (
                "Markdown's inline markers and a leading list marker are escaped",
                page(0, vec![block(BlockType::Text, 60, "- a *b* c_d `e` ~f")]),
                "\\- a \\*b\\* c\\_d \\`e\\` \\~f\n",
            ),
            (
                "an escaped or unclosed delimiter stays text",
                page(0, vec![block(BlockType::Text, 60, "A \\\\(x\\) and \\(y")]),
                "A \\\\(x\\) and \\(y\n",
            ),
            (
                "display equations stay display math",
                page(0, vec![block(BlockType::Equation, 60, "a^2")]),
                "$$\na^2\n$$\n",
            ),
            (
                "inline math in table cells and captions",
                page(
                    0,
                    vec![
                        block(BlockType::TableCaption, 10, "Values of \\(k\\)"),
                        block(
                            BlockType::Table,
                            60,
                            "<table><tr><td><eq>k</eq></td><td><eq>k &lt; 2</eq></td></tr></table>",
                        ),
                    ],
                ),
                "Values of $k$\n\n<table><tr><td> $k$ </td><td> $k < 2$ </td></tr></table>\n",
            ),
            (
                "asides are left out",
                page(
                    0,
                    vec![
                        block(BlockType::Text, 60, "Body."),
                        block(BlockType::AsideText, 110, "arXiv:2401.00001"),
                        block(BlockType::Text, 160, "More."),
                    ],
                ),
                "Body.\n\nMore.\n",
            ),
            (
                "an image's parts are Markdown lines, joined by hard breaks",
                with_image(
                    vec![
                        block(BlockType::Image, 60, ""),
                        block(BlockType::ImageCaption, 110, "Figure 1: A cat."),
                        block(BlockType::ImageFootnote, 160, "Source: survey."),
                    ],
                    0,
                ),
                "![](images/p1_b0.png)  \nFigure 1: A cat.  \nSource: survey.\n",
            ),
            (
                "an image's analysis is HTML after it, set apart by blank lines",
                with_image(
                    vec![
                        Block {
                            sub_type: Some("natural_image".into()),
                            ..block(BlockType::Image, 60, "A cat on a mat.")
                        },
                        block(BlockType::ImageCaption, 110, "Figure 1: A cat."),
                    ],
                    0,
                ),
                "![](images/p1_b0.png)\n\n<details>\n<summary>natural_image</summary>\n\nA cat on a mat.\n</details>\n\nFigure 1: A cat.\n",
            ),
            (
                "a caption below its table follows it",
                page(
                    0,
                    vec![
                        block(BlockType::Table, 60, "<table></table>"),
                        block(BlockType::TableCaption, 110, "Table 3"),
                    ],
                ),
                "<table></table>\n\nTable 3\n",
            ),
            (
                "a table's caption, body and footnote are separated by blank lines",
                page(
                    0,
                    vec![
                        block(BlockType::TableCaption, 10, "Table 1"),
                        block(BlockType::Table, 60, "\n<table></table>\n"),
                        block(BlockType::TableFootnote, 110, "n = 3"),
                    ],
                ),
                "Table 1\n\n<table></table>\n\nn = 3\n",
            ),
            (
                "a table without HTML links its crop",
                {
                    let mut table = block(BlockType::Table, 60, "");
                    table.content = None;
                    with_image(
                        vec![
                            block(BlockType::TableCaption, 10, "Table 2"),
                            table,
                            block(BlockType::TableFootnote, 110, "n = 4"),
                        ],
                        1,
                    )
                },
                "Table 2  \n![](images/p1_b0.png)  \nn = 4\n",
            ),
            (
                "a code block's caption and fence are Markdown lines",
                page(
                    0,
                    vec![
                        block(BlockType::CodeCaption, 10, "Listing 1"),
                        block(BlockType::Code, 60, "fn main() {}\n"),
                    ],
                ),
                "Listing 1  \n```txt\nfn main() {}\n```\n",
            ),
            (
                "code holding math is an algorithm, as HTML",
                page(
                    0,
                    vec![block(
                        BlockType::Algorithm,
                        60,
                        "for \\(i<n\\) \\(j\\):\n  x & y",
                    )],
                ),
                "<div class=\"mineru-algorithm\" style=\"white-space: pre-wrap; font-family:monospace;\">\nfor $i&lt;n$ $j$:\n  x &amp; y\n</div>\n",
            ),
            (
                "a list's items are lines of one block",
                page(
                    0,
                    vec![
                        block(BlockType::List, 60, ""),
                        Block {
                            content: Some("- one".into()),
                            ..Block::new(
                                BlockType::Text,
                                BBox::new(100, 60, 900, 80).expect("bbox"),
                            )
                        },
                        Block {
                            content: Some("- two".into()),
                            ..Block::new(
                                BlockType::Text,
                                BBox::new(100, 80, 900, 100).expect("bbox"),
                            )
                        },
                    ],
                ),
                "- one  \n- two\n",
            ),
            (
                "a caption after an unattached one lands on its own block",
                page(
                    0,
                    vec![
                        block(BlockType::Text, 100, "Body."),
                        block(BlockType::Table, 500, "<table></table>"),
                        block(BlockType::ImageCaption, 10, "Figure 2: no figure"),
                        block(BlockType::TableCaption, 450, "Table 2: Values"),
                    ],
                ),
                // Parts in the model's order, the caption given after its table.
                "Figure 2: no figure\n\nBody.\n\n<table></table>\n\nTable 2: Values\n",
            ),
        ];
        for (name, page, markdown) in cases {
            assert_eq!(build(&[page]).markdown, markdown, "{name}");
        }
    }

    #[test]
    fn asides_stay_in_the_content_list_with_their_math_as_mineru_writes_it() {
        let out = build(&[page(
            0,
            vec![
                block(BlockType::Text, 60, "Body \\(x\\)."),
                block(BlockType::AsideText, 110, "arXiv:2401.00001"),
            ],
        )]);
        let listed: Vec<(&str, Option<&str>)> = out
            .content_list
            .iter()
            .map(|i| (i.kind, i.text.as_deref()))
            .collect();
        assert_eq!(
            listed,
            vec![
                // MinerU joins a paragraph's trimmed pieces by spaces.
                ("text", Some("Body $x$ .")),
                ("aside_text", Some("arXiv:2401.00001"))
            ]
        );
        assert_eq!(out.markdown, "Body $x$ .\n");
    }

    #[test]
    fn a_continued_paragraph_is_merged_across_pages() {
        let mut next = block(BlockType::Text, 100, "continues here.");
        next.continues_previous = true;
        let text_page = |idx, blocks| PageResult {
            backend: Backend::Text,
            ..page(idx, blocks)
        };
        let out = build(&[
            text_page(0, vec![block(BlockType::Text, 900, "A sentence that")]),
            text_page(1, vec![next]),
        ]);
        assert_eq!(out.content_list.len(), 1);
        assert_eq!(
            out.content_list[0].text.as_deref(),
            Some("A sentence that continues here.")
        );
    }

    #[test]
    fn a_merged_vlm_paragraph_leaves_an_empty_item_as_mineru_does() {
        let mut next = Block {
            content: Some("and on".into()),
            ..Block::new(
                BlockType::Text,
                BBox::new(520, 100, 900, 300).expect("bbox"),
            )
        };
        next.continues_previous = true;
        let out = build(&[page(
            0,
            vec![
                Block {
                    content: Some("runs on".into()),
                    ..Block::new(
                        BlockType::Text,
                        BBox::new(100, 100, 480, 600).expect("bbox"),
                    )
                },
                next,
            ],
        )]);
        let listed: Vec<(Option<&str>, [u16; 4])> = out
            .content_list
            .iter()
            .map(|i| (i.text.as_deref(), i.bbox))
            .collect();
        assert_eq!(
            listed,
            vec![
                (Some("runs on and on"), [100, 100, 480, 600]),
                (Some(""), [520, 100, 900, 300])
            ]
        );
        assert_eq!(out.markdown, "runs on and on\n");
    }

    #[test]
    fn a_page_that_needs_ocr_gets_a_visible_note() {
        let mut scan = page(0, Vec::new());
        scan.needs_ocr = true;
        scan.notes = vec!["needs OCR: no text layer".into()];
        let out = build(&[scan]);
        assert_eq!(out.markdown, "> **Page 1:** needs OCR: no text layer\n");
        assert!(out.pages[0].needs_ocr);
    }
}
