//! MinerU-compatible output, the same for both backends: Markdown, `content_list.json` (a flat
//! list in reading order, fields named as MinerU names them) and a per-page summary.
//!
//! Captions and footnotes are attached to the nearest table, image or code block of their page,
//! text blocks that continue the previous one are merged into it (MinerU's cross-column and
//! cross-page paragraph merge), and page furniture (headers, footers, page numbers) is listed in
//! `content_list.json` after each page's content but kept out of the Markdown, as are asides
//! (listed where they stand). As in MinerU's output, inline math is written `$…$` (in text,
//! captions and table cells, a `\[…\]` inside text included), display equations `$$\n…\n$$`,
//! and the parts of an image, table or code block are separated by blank lines.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use crate::text::join_text;
use mineru_protocol::model::{Block, BlockType, Page};

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
    pub sub_type: Option<&'static str>,
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
    pub bbox: [u16; 4],
    pub page_idx: usize,
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
            bbox: block.bbox.into(),
            page_idx,
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
                }
                _ => {
                    last_flow = Some(items.len());
                    markdown_items.push(MarkdownPart::Item(items.len()));
                    items.push(item);
                }
            }
        }
        for block in &result.page.discarded {
            let mut item = ContentItem::new(block.kind.as_str(), block, page_idx);
            item.text = Some(dollar_math(block.content.as_deref().unwrap_or_default()));
            items.push(item);
        }
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
    let mut pending: Vec<&Block> = Vec::new();
    let mut unattached: Vec<(&Block, String)> = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        if attaches_to(block.kind).is_some() || block.kind == BlockType::FormulaNumber {
            pending.push(block);
            continue;
        }
        let Some(item) = block_item(block, page_idx, result.images.get(&index)) else {
            continue;
        };
        if let Some(owner) = owner_of(block.kind) {
            owners.push((items.len(), owner, block));
        }
        if block.kind == BlockType::Equation {
            equations.push((items.len(), block));
        }
        items.push((item, block.continues_previous));
    }
    for block in pending {
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
                latex.push_str(&format!(" \\tag{{{tag}}}"));
            }
            continue;
        }
        let text = dollar_math(&text);
        if let Some(owner) = attaches_to(block.kind) {
            let candidates = owners
                .iter()
                .filter(|(_, o, _)| *o == owner)
                .map(|&(i, _, b)| (i, b));
            if let Some(i) = nearest(block, candidates) {
                let item = &mut items[i].0;
                let list = match block.kind {
                    BlockType::ImageCaption => &mut item.image_caption,
                    BlockType::ImageFootnote => &mut item.image_footnote,
                    BlockType::TableCaption => &mut item.table_caption,
                    BlockType::TableFootnote => &mut item.table_footnote,
                    _ => &mut item.code_caption,
                };
                list.get_or_insert_with(Vec::new).push(text);
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
    // Natural-language text, with its inline math written as MinerU writes it.
    let words = || block.content.as_deref().map(dollar_math);
    let item = |kind| ContentItem::new(kind, block, page_idx);
    Some(match block.kind {
        BlockType::Title | BlockType::DocTitle | BlockType::ParagraphTitle => ContentItem {
            text: Some(words()?),
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
        | BlockType::Index
        | BlockType::List => ContentItem {
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
            text: Some(content?),
            text_format: Some("latex"),
            ..item("equation")
        },
        BlockType::Table => ContentItem {
            img_path: Some(image.cloned().unwrap_or_default()),
            table_caption: Some(Vec::new()),
            table_footnote: Some(Vec::new()),
            // Inline math in the cells too.
            table_body: words(),
            ..item("table")
        },
        BlockType::Image | BlockType::Chart | BlockType::Unknown | BlockType::ImageBlock => {
            if content.is_none() && image.is_none() && block.kind == BlockType::ImageBlock {
                return None;
            }
            ContentItem {
                img_path: Some(image.cloned().unwrap_or_default()),
                image_caption: Some(Vec::new()),
                image_footnote: Some(Vec::new()),
                ..item("image")
            }
        }
        BlockType::Code | BlockType::Algorithm => ContentItem {
            sub_type: Some(if block.kind == BlockType::Code {
                "code"
            } else {
                "algorithm"
            }),
            code_caption: Some(Vec::new()),
            code_body: Some(if block.kind == BlockType::Code {
                format!("```txt\n{}\n```", content?.trim_end())
            } else {
                content?
            }),
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

fn item_markdown(item: &ContentItem) -> Option<String> {
    let lines = |v: &Option<Vec<String>>| v.iter().flatten().cloned().collect::<Vec<_>>();
    let part = match item.kind {
        "text" => {
            let text = item.text.as_deref()?.trim();
            match item.text_level {
                Some(level) => format!("{} {text}", "#".repeat(usize::from(level))),
                None => text.to_string(),
            }
        }
        "equation" => format!("$$\n{}\n$$", item.text.as_deref()?.trim()),
        // The parts of an image, table or code block are separated by blank lines, in the order
        // MinerU's renderer writes them (`_join_visual_parts`): an image before its captions, a
        // table's or code block's captions before it, footnotes last.
        "image" => {
            let mut parts = Vec::new();
            if let Some(path) = item.img_path.as_deref().filter(|p| !p.is_empty()) {
                parts.push(format!("![]({path})"));
            }
            parts.extend(lines(&item.image_caption));
            parts.extend(lines(&item.image_footnote));
            visual_parts(parts)
        }
        "table" => {
            let mut parts = lines(&item.table_caption);
            match (&item.table_body, item.img_path.as_deref()) {
                (Some(html), _) => parts.push(html.trim().to_string()),
                (None, Some(path)) if !path.is_empty() => parts.push(format!("![]({path})")),
                _ => {}
            }
            parts.extend(lines(&item.table_footnote));
            visual_parts(parts)
        }
        "code" => {
            let mut parts = lines(&item.code_caption);
            parts.push(item.code_body.clone()?);
            visual_parts(parts)
        }
        // Reference lists and footnotes are part of the text MinerU writes out; asides (like
        // page furniture) are not, though the content list keeps them.
        "ref_text" | "phonetic" | "page_footnote" => item.text.clone()?,
        _ => return None,
    };
    let part = part.trim_matches('\n').to_string();
    (!part.trim().is_empty()).then_some(part)
}

/// MinerU's `_join_visual_parts`: the non-blank parts, stripped of surrounding newlines, joined
/// by blank lines.
fn visual_parts(parts: Vec<String>) -> String {
    parts
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim_matches('\n'))
        .collect::<Vec<_>>()
        .join("\n\n")
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

/// Whether the page has blocks MinerU links as image files.
pub fn needs_crops(result: &PageResult) -> bool {
    result.page.blocks.iter().any(|b| is_cropped(b.kind))
}

fn is_cropped(kind: BlockType) -> bool {
    matches!(
        kind,
        BlockType::Image | BlockType::Chart | BlockType::Unknown | BlockType::Table
    )
}

/// Saves crops of the page's image-like blocks (images, charts, tables) from its render under
/// `<doc_dir>/images/` and records their paths, so Markdown and content list can link them.
pub fn save_crops(
    doc_dir: &Path,
    render: &RgbImage,
    result: &mut PageResult,
) -> Result<(), OutputError> {
    let images_dir = doc_dir.join("images");
    for (index, block) in result.page.blocks.iter().enumerate() {
        if !is_cropped(block.kind) {
            continue;
        }
        fs::create_dir_all(&images_dir).map_err(|source| OutputError::Io {
            path: images_dir.clone(),
            source,
        })?;
        let r = block.bbox.to_pixels(render.width(), render.height());
        let crop = image::imageops::crop_imm(render, r.x, r.y, r.width, r.height).to_image();
        let name = format!("p{}_b{index}.png", result.page.page_idx + 1);
        let path = images_dir.join(&name);
        crop.save(&path).map_err(|e| OutputError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        result.images.insert(index, format!("images/{name}"));
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
                {"type": "equation", "text": "x^2", "text_format": "latex", "bbox": [100, 60, 900, 100], "page_idx": 3},
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
                "inline math in text is written between dollars",
                page(
                    0,
                    vec![
                        block(BlockType::Title, 10, "On \\(n\\) bodies"),
                        block(BlockType::Text, 60, "Let \\( x_1 \\) and $y$ be given."),
                    ],
                ),
                "# On $n$ bodies\n\nLet $x_1$ and $y$ be given.\n",
            ),
            (
                "a display delimiter inside a paragraph is inline math",
                page(0, vec![block(BlockType::Text, 60, "So \\[a=b\\] here.")]),
                "So $a=b$ here.\n",
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
                            "<table><tr><td>\\(k\\)</td><td>\\(k^2\\)</td></tr></table>",
                        ),
                    ],
                ),
                "Values of $k$\n\n<table><tr><td>$k$</td><td>$k^2$</td></tr></table>\n",
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
                "an image, its caption and footnote are separated by blank lines",
                with_image(
                    vec![
                        block(BlockType::Image, 60, ""),
                        block(BlockType::ImageCaption, 110, "Figure 1: A cat."),
                        block(BlockType::ImageFootnote, 160, "Source: survey."),
                    ],
                    0,
                ),
                "![](images/p1_b0.png)\n\nFigure 1: A cat.\n\nSource: survey.\n",
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
                "Table 2\n\n![](images/p1_b0.png)\n\nn = 4\n",
            ),
            (
                "a code block's caption is separated by a blank line",
                page(
                    0,
                    vec![
                        block(BlockType::CodeCaption, 10, "Listing 1"),
                        block(BlockType::Code, 60, "fn main() {}\n"),
                    ],
                ),
                "Listing 1\n\n```txt\nfn main() {}\n```\n",
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
                "Figure 2: no figure\n\nBody.\n\nTable 2: Values\n\n<table></table>\n",
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
                ("text", Some("Body $x$.")),
                ("aside_text", Some("arXiv:2401.00001"))
            ]
        );
        assert_eq!(out.markdown, "Body $x$.\n");
    }

    #[test]
    fn a_continued_paragraph_is_merged_across_pages() {
        let mut next = block(BlockType::Text, 100, "continues here.");
        next.continues_previous = true;
        let out = build(&[
            page(0, vec![block(BlockType::Text, 900, "A sentence that")]),
            page(1, vec![next]),
        ]);
        assert_eq!(out.content_list.len(), 1);
        assert_eq!(
            out.content_list[0].text.as_deref(),
            Some("A sentence that continues here.")
        );
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
