//! MinerU 4 middle JSON (docvortex `MiddleJson`, `schema: "docvortex.middle"`, version 2.0) and
//! the structured content MinerU renders from it, built from our own page results.
//!
//! MinerU 4's API client asks a server for `middle_json` only, validates it with
//! `ParseResult.from_dict` and renders Markdown and structured content itself. The document built
//! here follows what [`crate::output::build`] does, so that MinerU's renderer gives the Markdown
//! our worker writes: captions and footnotes are children of the table, image, chart or code block
//! they are attached to, a formula number becomes the equation's `\tag{…}`, a paragraph our
//! output merges into the previous one is marked `continues_prev`, page furniture (headers,
//! footers, page numbers) and asides are kept as the page-auxiliary blocks MinerU leaves out of
//! Markdown, and inline math (`$…$`, `\(…\)`, a `\[…\]` inside text) is an `equation_inline`
//! span, which MinerU writes `$…$` as `output::dollar_math` does.
//!
//! Bounding boxes are MinerU's page-relative 0..1 floats (ours divided by 1000).
//!
//! Where MinerU's renderer (docvortex 0.6.4 in MinerU 4.0.12) necessarily writes other Markdown
//! than `output::build` (the cases in the tests, checked by `e2e/python/middle_json_check.py`):
//! - text: `*`, `_`, `` ` ``, `~` and a `$` that is not inline math get a backslash, tag-like text
//!   (`<b>`) and entity-like text (`&amp;`) are escaped, a leading `# `, `- ` or `+ ` gets a
//!   backslash;
//! - a table without merged cells is a GFM pipe table, not HTML;
//! - an algorithm is an HTML `<div>`;
//! - a `page_footnote` is wrapped in `<small><span …>`;
//! - continued paragraphs are joined by MinerU's rules (a hyphen after an acronym or a compound
//!   prefix is kept, no space inside brackets or before `,.;:!?%`), not `text::join_text`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::output::{Backend, Owner, PageResult, attaches_to, nearest, owner_of};
use mineru_protocol::model::{BBOX_SCALE, BBox, Block, BlockType};

/// `schema` of a docvortex middle JSON document.
pub const SCHEMA: &str = "docvortex.middle";
/// `schema_version` MinerU 4 accepts.
pub const SCHEMA_VERSION: &str = "2.0";
/// `metadata.producer.name`: MinerU validates only its `extensions.mineru`, not the producer, so
/// the document names the program that really produced it.
pub const PRODUCER: &str = "mineru-worker";

/// MinerU's product tier (`extensions.mineru.tier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Text layer only, no model (our text backend).
    Flash,
    /// The VLM (our vlm backend).
    Standard,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flash => "flash",
            Self::Standard => "standard",
        }
    }

    /// The tier a backend corresponds to.
    pub fn of(backend: Backend) -> Self {
        match backend {
            Backend::Text => Self::Flash,
            Backend::Vlm => Self::Standard,
        }
    }
}

/// How the text was obtained (`extensions.mineru.parse_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseMode {
    /// From the PDF's text layer.
    Txt,
    /// Recognised from page images.
    Ocr,
}

impl ParseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Txt => "txt",
            Self::Ocr => "ocr",
        }
    }

    /// The mode a backend works in: the text backend reads the text layer (pages that would need
    /// OCR stay unread), the vlm backend reads everything from page images.
    pub fn of(backend: Backend) -> Self {
        match backend {
            Backend::Text => Self::Txt,
            Backend::Vlm => Self::Ocr,
        }
    }
}

/// A page's size in PDF points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageSize {
    pub width_pt: f32,
    pub height_pt: f32,
}

/// What is known about the document beyond its pages.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentInfo {
    /// Pages in the whole PDF (not only the parsed ones), when known.
    pub page_count: Option<usize>,
    /// Sizes of the parsed pages by page index; pages without an entry are left out of
    /// `extensions.docvortex_layout`.
    pub page_sizes: BTreeMap<usize, PageSize>,
    /// The PDF's declared title (its metadata, not a heading), when known.
    pub title: Option<String>,
    /// Every page of the document was parsed (MinerU's `is_full_document`).
    pub full_document: bool,
    pub tier: Tier,
    pub parse_mode: ParseMode,
}

impl DocumentInfo {
    /// [`DocumentInfo::from_pages`] for a document of `page_count` pages: full when every one
    /// of them was parsed.
    pub fn with_page_count(pages: &[PageResult], page_count: usize) -> Self {
        let info = Self::from_pages(pages);
        Self {
            page_count: Some(page_count),
            full_document: info.full_document && pages.len() == page_count,
            ..info
        }
    }

    /// What the pages alone tell: tier and parse mode from the backend of the first page, and a
    /// full document when the pages are 0, 1, 2, … without a gap (the page count is not known
    /// here, so a parse of the first pages only also counts as full).
    pub fn from_pages(pages: &[PageResult]) -> Self {
        let backend = pages.first().map_or(Backend::Text, |p| p.backend);
        let contiguous = pages.iter().enumerate().all(|(i, p)| p.page.page_idx == i);
        Self {
            page_count: None,
            page_sizes: BTreeMap::new(),
            title: None,
            full_document: contiguous,
            tier: Tier::of(backend),
            parse_mode: ParseMode::of(backend),
        }
    }
}

/// The docvortex middle JSON for `pages` (in document order).
pub fn middle_json(pages: &[PageResult], doc: &DocumentInfo) -> Value {
    let pages: Vec<Value> = plan(pages)
        .iter()
        .map(|page| {
            json!({
                "page_idx": page.page_idx,
                "blocks": page
                    .blocks
                    .iter()
                    .enumerate()
                    .map(|(index, b)| b.to_middle(index))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut out = document_fields(doc);
    out.insert("pages".into(), Value::Array(pages));
    out.insert("schema".into(), SCHEMA.into());
    out.insert("schema_version".into(), SCHEMA_VERSION.into());
    Value::Object(out)
}

/// The structured content MinerU's `render_structured_content` makes of [`middle_json`]: each
/// block's content as a Markdown string, captions and footnotes of visual blocks as lists.
///
/// A table without merged cells is a GFM pipe table here, as MinerU renders it (our Markdown
/// keeps the HTML).
pub fn structured_content(pages: &[PageResult], doc: &DocumentInfo) -> Value {
    let pages: Vec<Value> = plan(pages)
        .iter()
        .map(|page| {
            json!({
                "page_idx": page.page_idx,
                "blocks": page.blocks.iter().map(MiddleBlock::to_structured).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut out = Map::new();
    out.insert("pages".into(), Value::Array(pages));
    out.extend(document_fields(doc));
    Value::Object(out)
}

fn document_fields(doc: &DocumentInfo) -> Map<String, Value> {
    let mut document = Map::new();
    if let Some(title) = doc
        .title
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        document.insert("title".into(), title.into());
    }
    if let Some(count) = doc.page_count {
        document.insert("page_count".into(), count.into());
        document.insert("page_count_kind".into(), "physical".into());
    }
    let mut metadata = Map::new();
    metadata.insert("file_suffix".into(), "pdf".into());
    metadata.insert(
        "producer".into(),
        json!({"name": PRODUCER, "version": env!("CARGO_PKG_VERSION")}),
    );
    if !document.is_empty() {
        metadata.insert("document".into(), Value::Object(document));
    }
    let mut extensions = Map::new();
    extensions.insert(
        "mineru".into(),
        json!({"tier": doc.tier.as_str(), "parse_mode": doc.parse_mode.as_str()}),
    );
    if !doc.page_sizes.is_empty() {
        let points = |v: f32| (f64::from(v) * 1000.0).round() / 1000.0;
        let sizes: Vec<Value> = doc
            .page_sizes
            .iter()
            .map(|(idx, size)| {
                json!({"page_idx": idx, "width_pt": points(size.width_pt), "height_pt": points(size.height_pt)})
            })
            .collect();
        extensions.insert(
            "docvortex_layout".into(),
            json!({"version": 1, "pages": sizes}),
        );
    }
    let mut out = Map::new();
    out.insert("metadata".into(), Value::Object(metadata));
    out.insert("extensions".into(), Value::Object(extensions));
    out.insert("is_full_document".into(), doc.full_document.into());
    out
}

// ── the block plan ──────────────────────────────────────────────────────────────────────────

/// A top-level docvortex block.
#[derive(Debug, Clone, PartialEq)]
struct MiddleBlock {
    kind: Kind,
    bbox: BBox,
    /// Text of text-like blocks, LaTeX of equations, the body of visual blocks.
    text: String,
    /// Sidecar image of an image, chart or table body.
    image_path: Option<String>,
    captions: Vec<Annotation>,
    footnotes: Vec<Annotation>,
    /// The block's own "continues the previous text" flag, before the document-level decision.
    continues: bool,
    /// `continues_prev: true` in the output: MinerU merges it into the previous text as we do.
    continues_prev: bool,
    /// Plain text as `output::build` sees it (`type: text` without a level): may merge or be
    /// merged into.
    plain: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// `text`.
    Text,
    /// The visible note `output::build` writes for a page without content or needing OCR
    /// (`> **Page N:** reason`, N counted from 1).
    Note(usize),
    RefText,
    /// `header`, `footer`, `page_number` or `aside_text`.
    Aux(&'static str),
    PageFootnote,
    /// `doc_title` (1) or `paragraph_title` (2..).
    Title(u8),
    List,
    Equation,
    Visual(Visual),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Visual {
    Image,
    Chart,
    Table,
    Code,
    Algorithm,
}

impl Visual {
    fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Chart => "chart",
            Self::Table => "table",
            Self::Code | Self::Algorithm => "code",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Self::Image => "image_body",
            Self::Chart => "chart_body",
            Self::Table => "table_body",
            Self::Code => "code_body",
            Self::Algorithm => "algorithm_body",
        }
    }

    /// docvortex type of a caption (`true`) or footnote (`false`) of this block.
    fn annotation(self, caption: bool) -> &'static str {
        match (self, caption) {
            (Self::Image, true) => "image_caption",
            (Self::Image, false) => "image_footnote",
            (Self::Chart, true) => "chart_caption",
            (Self::Chart, false) => "chart_footnote",
            (Self::Table, true) => "table_caption",
            (Self::Table, false) => "table_footnote",
            (Self::Code | Self::Algorithm, true) => "code_caption",
            (Self::Code | Self::Algorithm, false) => "code_footnote",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Annotation {
    kind: &'static str,
    bbox: BBox,
    text: String,
}

impl MiddleBlock {
    fn new(kind: Kind, block: &Block, text: String) -> Self {
        Self {
            kind,
            bbox: block.bbox,
            text,
            image_path: None,
            captions: Vec::new(),
            footnotes: Vec::new(),
            continues: false,
            continues_prev: false,
            plain: false,
        }
    }

    /// A docvortex `text` block, or a `list` whose last item is one: what MinerU merges a
    /// continued paragraph into.
    fn is_merge_target(&self) -> bool {
        match self.kind {
            Kind::Text | Kind::Note(_) => true,
            Kind::List => self.text.lines().any(|l| !l.trim().is_empty()),
            _ => false,
        }
    }
}

/// One page of the plan: top-level blocks in the order MinerU reads them.
struct PagePlan {
    page_idx: usize,
    blocks: Vec<MiddleBlock>,
}

/// The pages as docvortex blocks, with `continues_prev` set where `output::build` merges.
fn plan(pages: &[PageResult]) -> Vec<PagePlan> {
    // (page, block) of the last flow item `output::build` kept (what it merges into), and of
    // the block MinerU's planner would merge a continued paragraph into.
    let mut last_flow: Option<(usize, usize)> = None;
    let mut merge_target: Option<(usize, usize)> = None;
    let mut plans: Vec<PagePlan> = Vec::new();
    for result in pages {
        let p = plans.len();
        let flow = page_blocks(result);
        let (top, bottom): (Vec<&Block>, Vec<&Block>) =
            result.page.discarded.iter().partition(|b| {
                u32::from(b.bbox.y0()) + u32::from(b.bbox.y1()) < u32::from(BBOX_SCALE)
            });
        let furniture = |b: &&Block| {
            let kind = match b.kind {
                BlockType::PageFootnote => Kind::PageFootnote,
                BlockType::Footer => Kind::Aux("footer"),
                BlockType::PageNumber => Kind::Aux("page_number"),
                BlockType::AsideText => Kind::Aux("aside_text"),
                _ => Kind::Aux("header"),
            };
            MiddleBlock::new(kind, b, b.content.clone().unwrap_or_default())
        };
        let mut blocks: Vec<MiddleBlock> = top.iter().map(furniture).collect();
        if flow.is_empty() || result.needs_ocr {
            let note = Block::new(BlockType::Text, BBox::FULL_PAGE);
            merge_target = Some((p, blocks.len()));
            blocks.push(MiddleBlock::new(
                Kind::Note(result.page.page_idx + 1),
                &note,
                note_reason(result),
            ));
        }
        for mut block in flow {
            let merges = block.continues
                && block.plain
                && last_flow.is_some_and(|(lp, lb)| {
                    let prev = if lp == p {
                        &blocks[lb]
                    } else {
                        &plans[lp].blocks[lb]
                    };
                    prev.plain
                });
            if merges && block.kind == Kind::Text && merge_target == last_flow {
                // MinerU's planner joins it to the same paragraph `output::build` joins it to.
                block.continues_prev = true;
                blocks.push(block);
                continue;
            }
            // A paragraph of its own: in `output::build` when it does not merge, and in MinerU
            // also when a block MinerU would merge into instead (a page note, ruby text, a
            // continued list) stands between.
            // As `output::build`: a paragraph continues past visual blocks.
            if !merges && !matches!(block.kind, Kind::Visual(_)) {
                last_flow = Some((p, blocks.len()));
            }
            if block.is_merge_target() {
                merge_target = Some((p, blocks.len()));
            } else if block.kind == Kind::List {
                merge_target = None;
            }
            blocks.push(block);
        }
        blocks.extend(bottom.iter().map(furniture));
        plans.push(PagePlan {
            page_idx: result.page.page_idx,
            blocks,
        });
    }
    plans
}

/// The reason `output::build` gives in its page note.
fn note_reason(result: &PageResult) -> String {
    result
        .notes
        .first()
        .cloned()
        .unwrap_or_else(|| "no content found".to_string())
}

/// The page's flow blocks in reading order, captions attached, as `output::page_items` does.
fn page_blocks(result: &PageResult) -> Vec<MiddleBlock> {
    let blocks = &result.page.blocks;
    let mut out: Vec<MiddleBlock> = Vec::new();
    let mut owners: Vec<(usize, Owner, &Block)> = Vec::new();
    let mut equations: Vec<(usize, &Block)> = Vec::new();
    let mut pending: Vec<&Block> = Vec::new();
    let mut unattached: Vec<(&Block, String)> = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        if attaches_to(block.kind).is_some() || block.kind == BlockType::FormulaNumber {
            pending.push(block);
            continue;
        }
        let Some(mut item) = block_item(block, result.images.get(&index)) else {
            continue;
        };
        item.continues = block.continues_previous;
        if let Some(owner) = owner_of(block.kind) {
            owners.push((out.len(), owner, block));
        }
        if block.kind == BlockType::Equation {
            equations.push((out.len(), block));
        }
        out.push(item);
    }
    for block in pending {
        let text = block.content.clone().unwrap_or_default();
        if block.kind == BlockType::FormulaNumber {
            if let Some(i) = nearest(block, equations.iter().map(|&(i, b)| (i, b))) {
                let tag = text
                    .trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .trim();
                out[i].text.push_str(&format!(" \\tag{{{tag}}}"));
                continue;
            }
        } else if let Some(owner) = attaches_to(block.kind) {
            let candidates = owners
                .iter()
                .filter(|(_, o, _)| *o == owner)
                .map(|&(i, _, b)| (i, b));
            if let Some(i) = nearest(block, candidates) {
                let item = &mut out[i];
                if let Kind::Visual(visual) = item.kind {
                    let caption = matches!(
                        block.kind,
                        BlockType::ImageCaption | BlockType::TableCaption | BlockType::CodeCaption
                    );
                    let annotation = Annotation {
                        kind: visual.annotation(caption),
                        bbox: block.bbox,
                        text,
                    };
                    if caption {
                        item.captions.push(annotation);
                    } else {
                        item.footnotes.push(annotation);
                    }
                    continue;
                }
            }
        }
        unattached.push((block, text));
    }
    // Nothing to attach to: the words stay as text where they stand. (Inserted once every
    // caption is attached: `output::page_items` inserts as it goes, so a caption after an
    // unattached one can land on the wrong item there.)
    for (block, text) in unattached {
        let mut item = MiddleBlock::new(Kind::Text, block, text);
        item.plain = true;
        let at = out
            .iter()
            .position(|b| b.bbox.y0() > block.bbox.y0())
            .unwrap_or(out.len());
        out.insert(at, item);
    }
    out
}

/// Our block as the docvortex block it corresponds to; `None` for what `output::build` drops.
fn block_item(block: &Block, image: Option<&String>) -> Option<MiddleBlock> {
    let content = block.content.clone();
    let new = |kind, text| MiddleBlock::new(kind, block, text);
    let item = match block.kind {
        BlockType::Title | BlockType::DocTitle => new(Kind::Title(1), content?),
        BlockType::ParagraphTitle => new(Kind::Title(2), content?),
        BlockType::Text | BlockType::Caption | BlockType::Footnote | BlockType::Index => {
            MiddleBlock {
                plain: true,
                ..new(Kind::Text, content?)
            }
        }
        BlockType::List | BlockType::ListItem => MiddleBlock {
            plain: true,
            ..new(Kind::List, content?)
        },
        // Ruby text is a raw-only type in docvortex: written out as text, as we write it.
        BlockType::Phonetic => new(Kind::Text, content?),
        BlockType::RefText => new(Kind::RefText, content?),
        BlockType::PageFootnote => new(Kind::PageFootnote, content?),
        BlockType::AsideText => new(Kind::Aux("aside_text"), content?),
        BlockType::Header => new(Kind::Aux("header"), content?),
        BlockType::Footer => new(Kind::Aux("footer"), content?),
        BlockType::PageNumber => new(Kind::Aux("page_number"), content?),
        BlockType::Equation | BlockType::EquationBlock => new(Kind::Equation, content?),
        BlockType::Table => {
            // Our Markdown falls back to the crop only when there is no HTML at all.
            let image = image.filter(|_| content.as_deref().is_none_or(|c| !c.trim().is_empty()));
            // Inline math in the cells as our Markdown writes it (`$…$`), which MinerU keeps.
            let html = content.as_deref().map(crate::output::dollar_math);
            MiddleBlock {
                image_path: image.filter(|p| !p.is_empty()).cloned(),
                ..new(Kind::Visual(Visual::Table), html.unwrap_or_default())
            }
        }
        BlockType::Image | BlockType::Chart | BlockType::Unknown | BlockType::ImageBlock => {
            if content.is_none() && image.is_none() && block.kind == BlockType::ImageBlock {
                return None;
            }
            let visual = if block.kind == BlockType::Chart {
                Visual::Chart
            } else {
                Visual::Image
            };
            // Descriptions are not part of our Markdown or content list; MinerU would render a
            // non-empty body as a `<details>` section.
            MiddleBlock {
                image_path: image.filter(|p| !p.is_empty()).cloned(),
                ..new(Kind::Visual(visual), String::new())
            }
        }
        BlockType::Code => new(Kind::Visual(Visual::Code), content?.trim_end().to_string()),
        BlockType::Algorithm => new(Kind::Visual(Visual::Algorithm), content?),
        BlockType::FormulaNumber
        | BlockType::TableCaption
        | BlockType::ImageCaption
        | BlockType::CodeCaption
        | BlockType::TableFootnote
        | BlockType::ImageFootnote => return None,
    };
    Some(item)
}

// ── middle JSON of one block ────────────────────────────────────────────────────────────────

fn bbox(b: BBox) -> Value {
    let c = |v: u16| f64::from(v) / f64::from(BBOX_SCALE);
    json!([c(b.x0()), c(b.y0()), c(b.x1()), c(b.y1())])
}

impl MiddleBlock {
    fn to_middle(&self, index: usize) -> Value {
        let mut out = Map::new();
        let text = self.text.trim();
        match self.kind {
            Kind::Text | Kind::RefText | Kind::PageFootnote | Kind::Aux(_) => {
                out.insert("type".into(), self.type_name().into());
                out.insert("content".into(), spans_json(&spans(text)));
                if self.continues_prev {
                    out.insert("continues_prev".into(), true.into());
                }
            }
            Kind::Note(page) => {
                out.insert("type".into(), "text".into());
                out.insert("content".into(), spans_json(&note_spans(page, &self.text)));
            }
            Kind::Title(level) => {
                out.insert("type".into(), self.type_name().into());
                out.insert("content".into(), spans_json(&spans(text)));
                out.insert("level".into(), level.into());
            }
            Kind::List => {
                let items: Vec<Value> = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| json!({"type": "text", "content": spans_json(&spans(l.trim_end()))}))
                    .collect();
                out.insert("type".into(), "list".into());
                out.insert("content".into(), Value::Array(items));
                out.insert("sub_type".into(), "text".into());
            }
            Kind::Equation => {
                out.insert("type".into(), "equation".into());
                out.insert("content".into(), text.into());
            }
            Kind::Visual(visual) => {
                out.insert("type".into(), visual.name().into());
                let annotation = |a: &Annotation| json!({"type": a.kind, "bbox": bbox(a.bbox), "content": spans_json(&spans(&a.text))});
                let mut body = Map::new();
                body.insert("type".into(), visual.body().into());
                body.insert("index".into(), index.into());
                body.insert("bbox".into(), bbox(self.bbox));
                body.insert(
                    "content".into(),
                    match visual {
                        Visual::Algorithm => spans_json(&spans(&self.text)),
                        Visual::Code => self.text.clone().into(),
                        _ => text.into(),
                    },
                );
                if let Some(path) = &self.image_path {
                    body.insert("image_path".into(), path.clone().into());
                }
                // In the order our Markdown writes them: an image before its captions, a table's
                // or code block's captions before it, footnotes last.
                let captions = self.captions.iter().map(annotation);
                let body = std::iter::once(Value::Object(body));
                let children: Vec<Value> = if matches!(visual, Visual::Image | Visual::Chart) {
                    body.chain(captions).collect()
                } else {
                    captions.chain(body).collect()
                };
                let children: Vec<Value> = children
                    .into_iter()
                    .chain(self.footnotes.iter().map(annotation))
                    .collect();
                out.insert("content".into(), Value::Array(children));
                match visual {
                    Visual::Code => {
                        out.insert("sub_type".into(), "code".into());
                        out.insert("guess_lang".into(), "txt".into());
                    }
                    Visual::Algorithm => {
                        out.insert("sub_type".into(), "algorithm".into());
                    }
                    _ => {}
                }
            }
        }
        out.insert("index".into(), index.into());
        out.insert("bbox".into(), bbox(self.bbox));
        Value::Object(out)
    }

    fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Text | Kind::Note(_) => "text",
            Kind::RefText => "ref_text",
            Kind::Aux(name) => name,
            Kind::PageFootnote => "page_footnote",
            Kind::Title(1) => "doc_title",
            Kind::Title(_) => "paragraph_title",
            Kind::List => "list",
            Kind::Equation => "equation",
            Kind::Visual(v) => v.name(),
        }
    }
}

/// An inline span of docvortex's middle JSON.
#[derive(Debug, Clone, PartialEq)]
enum Span {
    Text { text: String, bold: bool },
    Math(String),
}

fn plain(text: impl Into<String>) -> Span {
    Span::Text {
        text: text.into(),
        bold: false,
    }
}

fn spans_json(spans: &[Span]) -> Value {
    Value::Array(
        spans
            .iter()
            .map(|span| match span {
                Span::Text { text, bold: false } => json!({"type": "text", "content": text}),
                Span::Text { text, bold: true } => {
                    json!({"type": "text", "content": text, "styles": ["bold"]})
                }
                Span::Math(latex) => json!({"type": "equation_inline", "content": latex}),
            })
            .collect(),
    )
}

/// `> **Page N:** reason`, as `output::build` writes it.
fn note_spans(page: usize, reason: &str) -> Vec<Span> {
    vec![
        plain("> "),
        Span::Text {
            text: format!("Page {page}:"),
            bold: true,
        },
        plain(format!(" {reason}")),
    ]
}

/// Inline spans of `text`: `$…$`, `\(…\)` and `\[…\]` become inline equations (as MinerU reads
/// inline math), everything else plain text.
fn spans(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some((latex, len)) = inline_math(rest) {
            if !buf.is_empty() {
                out.push(plain(std::mem::take(&mut buf)));
            }
            out.push(Span::Math(latex.to_string()));
            rest = &rest[len..];
            continue;
        }
        if rest.starts_with('$') {
            // A `$` that opens no inline math, with any `$` right after it (`$$`).
            let run = rest.len() - rest.trim_start_matches('$').len();
            buf.push_str(&rest[..run]);
            rest = &rest[run..];
            continue;
        }
        let mut chars = rest.chars();
        let c = chars.next().unwrap_or_default();
        buf.push(c);
        // A backslash escapes the next character: `\$` is a dollar sign, not math.
        if c == '\\'
            && !rest.starts_with("\\(")
            && !rest.starts_with("\\[")
            && let Some(next) = chars.next()
        {
            buf.push(next);
        }
        rest = chars.as_str();
    }
    if !buf.is_empty() {
        out.push(plain(buf));
    }
    out
}

/// Inline math at the start of `s`: its LaTeX and the length of the whole `$…$`, `\(…\)` or
/// `\[…\]` (a display delimiter inside text is inline math in MinerU's output too, and
/// `output::dollar_math` writes it `$…$`).
/// `$` follows Pandoc's rule: no space after the opening or before the closing `$`, no digit
/// right after the closing one (so `$5 and $6` stays text), and `$$` is not inline math.
fn inline_math(s: &str) -> Option<(&str, usize)> {
    if s.starts_with("\\(") || s.starts_with("\\[") {
        return crate::output::delimited_math(s);
    }
    let body = s.strip_prefix('$')?;
    if body.starts_with('$') || body.starts_with(char::is_whitespace) {
        return None;
    }
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '$' if !escaped => {
                let latex = &body[..i];
                let before_ok = !latex.is_empty() && !latex.ends_with(char::is_whitespace);
                let after_ok = !body[i + 1..].starts_with(|c: char| c.is_ascii_digit() || c == '$');
                return (before_ok && after_ok).then_some((latex, i + 2));
            }
            '\n' => return None,
            _ => escaped = false,
        }
    }
    None
}

// ── structured content: MinerU's Markdown rendering of single blocks ───────────────────────

impl MiddleBlock {
    /// The block as `render_structured_content` renders it from its middle JSON.
    fn to_structured(&self) -> Value {
        let mut out = Map::new();
        out.insert("type".into(), self.type_name().into());
        out.insert("bbox".into(), bbox(self.bbox));
        let text = self.text.trim();
        let content: Value = match self.kind {
            Kind::Text | Kind::Aux(_) | Kind::PageFootnote => {
                if self.continues_prev {
                    out.insert("continues_prev".into(), true.into());
                }
                text_block_markdown(&render_spans(&spans(text))).into()
            }
            Kind::Note(page) => {
                text_block_markdown(&render_spans(&note_spans(page, &self.text))).into()
            }
            Kind::RefText => standalone_rule(&render_spans(&spans(text))).into(),
            Kind::Title(level) => {
                out.insert("level".into(), level.into());
                text_block_markdown(&render_spans(&spans(text))).into()
            }
            Kind::List => {
                out.insert("sub_type".into(), "text".into());
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| standalone_rule(&render_spans(&spans(l.trim_end()))))
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n")
                    .into()
            }
            Kind::Equation => text.into(),
            Kind::Visual(visual) => {
                match visual {
                    Visual::Code => {
                        out.insert("sub_type".into(), "code".into());
                    }
                    Visual::Algorithm => {
                        out.insert("sub_type".into(), "algorithm".into());
                    }
                    _ => {}
                }
                let annotations = |list: &[Annotation]| -> Value {
                    list.iter()
                        .map(|a| {
                            json!({
                                "bbox": bbox(a.bbox),
                                "content": standalone_rule(&render_spans(&spans(&a.text))),
                            })
                        })
                        .collect()
                };
                out.insert("captions".into(), annotations(&self.captions));
                out.insert("footnotes".into(), annotations(&self.footnotes));
                if let Some(path) = &self.image_path {
                    out.insert("image_source".into(), path.clone().into());
                }
                match visual {
                    Visual::Image | Visual::Chart => Value::from(""),
                    Visual::Table if text.is_empty() => "".into(),
                    // MinerU keeps a table with merged cells as HTML and turns a plain grid into
                    // a GFM pipe table.
                    Visual::Table if text.contains("<table") => {
                        pipe_table(text).unwrap_or_else(|| text.to_string()).into()
                    }
                    Visual::Table => fenced(text, None).into(),
                    Visual::Code => fenced(&self.text, Some("txt")).into(),
                    Visual::Algorithm => render_spans(&spans(&self.text)).into(),
                }
            }
        };
        // The annotation lists follow the content in MinerU's payload.
        let captions = out.remove("captions");
        let footnotes = out.remove("footnotes");
        let image_source = out.remove("image_source");
        out.insert("content".into(), content);
        for (key, value) in [
            ("captions", captions),
            ("footnotes", footnotes),
            ("image_source", image_source),
        ] {
            if let Some(value) = value {
                out.insert(key.into(), value);
            }
        }
        Value::Object(out)
    }
}

/// The GFM pipe table MinerU makes of a plain `<table><tr><td>…</td></tr>…</table>` (the HTML
/// `otsl::otsl_to_html` writes); `None` for anything else (merged cells, other markup), which
/// MinerU keeps as HTML — or, for markup this does not know, may still convert.
fn pipe_table(html: &str) -> Option<String> {
    let mut rest = html
        .trim()
        .strip_prefix("<table>")?
        .strip_suffix("</table>")?;
    let mut rows: Vec<Vec<String>> = Vec::new();
    while !rest.is_empty() {
        let (row, after) = rest.strip_prefix("<tr>")?.split_once("</tr>")?;
        rest = after;
        let mut cells = Vec::new();
        let mut row = row;
        while !row.is_empty() {
            let (cell, after) = row.strip_prefix("<td>")?.split_once("</td>")?;
            row = after;
            if cell.contains('<') {
                return None;
            }
            cells.push(pipe_cell(cell));
        }
        if cells.is_empty() {
            return None;
        }
        rows.push(cells);
    }
    let width = rows.iter().map(Vec::len).max()?;
    let line = |cells: &[String]| {
        let mut cells = cells.to_vec();
        cells.resize(width, String::new());
        format!("| {} |", cells.join(" | "))
    };
    let mut lines = vec![line(&rows[0]), line(&vec!["---".to_string(); width])];
    lines.extend(rows[1..].iter().map(|r| line(r)));
    Some(lines.join("\n"))
}

/// A cell's escaped HTML text as a GFM cell: entities decoded, then `&`, `<`, `\\` and `|`
/// escaped and whitespace collapsed.
fn pipe_cell(html: &str) -> String {
    let text = html
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\\', "\\\\")
        .replace('|', "\\|");
    let blank = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n' | '\x0b' | '\x0c');
    escaped
        .split(blank)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A fenced block whose fence is longer than any backtick run inside.
fn fenced(content: &str, language: Option<&str>) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in content.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    let newline = if content.ends_with('\n') { "" } else { "\n" };
    format!(
        "{fence}{}\n{content}{newline}{fence}",
        language.unwrap_or("")
    )
}

/// Spans as MinerU's Markdown renderer writes them.
fn render_spans(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|span| match span {
            Span::Text { text, bold } => {
                let escaped = escape_text(text);
                let core = escaped.trim_matches([' ', '\t']);
                if *bold && !core.is_empty() {
                    let lead =
                        &escaped[..escaped.len() - escaped.trim_start_matches([' ', '\t']).len()];
                    let trail = &escaped[escaped.trim_end_matches([' ', '\t']).len()..];
                    format!("{lead}**{core}**{trail}")
                } else {
                    escaped
                }
            }
            Span::Math(latex) => format!("${latex}$"),
        })
        .collect()
}

/// docvortex's plain-text escaping: Markdown inline markers get a backslash, tag-like text and
/// entity-like text are made inert.
fn escape_text(text: &str) -> String {
    let mut out = String::new();
    let mut plain = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(len) = html_like(rest) {
            out.push_str(&escape_entities(&crate::output::escape_markdown(
                &std::mem::take(&mut plain),
            )));
            out.push_str(
                &rest[..len]
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;"),
            );
            rest = &rest[len..];
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        plain.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.push_str(&escape_entities(&crate::output::escape_markdown(&plain)));
    out
}

/// Length of tag-like text at the start of `s` (`<a …>`, `</a>`, `<!-- … -->`, `<!x …>`,
/// `<? … ?>`), as docvortex recognises it.
fn html_like(s: &str) -> Option<usize> {
    let rest = s.strip_prefix('<')?;
    if let Some(body) = rest.strip_prefix("!--") {
        let line = body.split('\n').next().unwrap_or_default();
        return line.find("-->").map(|end| 4 + end + 3);
    }
    let line_end = |body: &str, stop: &str| -> Option<usize> {
        let end = body.find(['<', '>', '\n'])?;
        (body[end..].starts_with('>') && body[..end].ends_with(stop)).then_some(end)
    };
    if let Some(body) = rest.strip_prefix('?') {
        return line_end(body, "?").map(|end| 2 + end + 1);
    }
    let (skip, body) = match rest.strip_prefix(['/', '!']) {
        Some(body) => (2, body),
        None => (1, rest),
    };
    if !body.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    line_end(body, "").map(|end| skip + end + 1)
}

/// `&amp;` for text that an HTML entity decoder would change (numeric references and the
/// common named ones; docvortex asks Python's full entity table).
fn escape_entities(text: &str) -> String {
    const NAMED: &[&str] = &[
        "amp", "lt", "gt", "quot", "apos", "nbsp", "copy", "reg", "deg", "plusmn", "times",
        "divide", "micro", "middot", "laquo", "raquo", "sect", "para", "cent", "pound", "yen",
        "euro", "hellip", "mdash", "ndash", "lsquo", "rsquo", "ldquo", "rdquo", "bull", "trade",
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let name_len = after
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '#')
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let numeric = name.strip_prefix('#').is_some_and(|n| {
            n.strip_prefix(['x', 'X']).map_or_else(
                || !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()),
                |h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()),
            )
        });
        let named = NAMED.iter().any(|n| name.starts_with(n));
        out.push_str(if numeric || named { "&amp;" } else { "&" });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Text-block escaping: a leading `#`…`######`, `+` or `-` marker followed by a space gets a
/// backslash, then [`standalone_rule`].
fn text_block_markdown(content: &str) -> String {
    let indent = content
        .chars()
        .take(3)
        .take_while(|c| *c == ' ' || *c == '\t')
        .count();
    let (lead, rest) = content.split_at(indent);
    let marker = if rest.starts_with('#') {
        rest.chars().take_while(|c| *c == '#').count()
    } else if rest.starts_with(['+', '-']) {
        1
    } else {
        0
    };
    let escaped = if (1..=6).contains(&marker) && rest[marker..].starts_with([' ', '\t']) {
        format!("{lead}\\{rest}")
    } else {
        content.to_string()
    };
    standalone_rule(&escaped)
}

/// A line of only `_` or only `-` gets a backslash, so it is not a thematic break.
fn standalone_rule(content: &str) -> String {
    let only = |c: char| !content.is_empty() && content.chars().all(|x| x == c);
    if only('_') || only('-') {
        format!("\\{content}")
    } else {
        content.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output;
    use mineru_protocol::model::Page;

    fn block(kind: BlockType, y: u32, content: &str) -> Block {
        Block {
            content: Some(content.to_string()),
            ..Block::new(kind, BBox::new(100, y, 900, y + 40).expect("valid bbox"))
        }
    }

    fn bare(kind: BlockType, y: u32) -> Block {
        Block::new(kind, BBox::new(100, y, 900, y + 40).expect("valid bbox"))
    }

    fn vlm(idx: usize, blocks: Vec<Block>) -> PageResult {
        PageResult::from_vlm(Page::from_blocks(idx, blocks))
    }

    fn continued(mut b: Block) -> Block {
        b.continues_previous = true;
        b
    }

    /// One test case: pages, the top-level blocks expected (type and a compact content), and
    /// whether MinerU's renderer gives our Markdown (checked for real with
    /// `e2e/python/middle_json_check.py` on the files `MINERU_MIDDLE_DUMP` writes).
    struct Case {
        name: &'static str,
        pages: Vec<PageResult>,
        blocks: Vec<Vec<&'static str>>,
        same_markdown: bool,
    }

    /// `type` of a block, then `type:content` of each child or span, `continues_prev` as `+`.
    fn summary(block: &Value) -> String {
        let kind = block["type"].as_str().unwrap_or_default();
        let mut out = kind.to_string();
        if let Some(level) = block.get("level") {
            out.push_str(&format!("/{level}"));
        }
        if block.get("continues_prev") == Some(&Value::Bool(true)) {
            out.push('+');
        }
        let parts: Vec<String> = match &block["content"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(children) => children
                .iter()
                .map(|c| match &c["content"] {
                    Value::String(s) => format!("{}:{s}", c["type"].as_str().unwrap_or_default()),
                    Value::Array(_) => summary(c),
                    _ => String::new(),
                })
                .collect(),
            _ => Vec::new(),
        };
        if !parts.is_empty() {
            out.push_str(&format!(" [{}]", parts.join(" | ")));
        }
        out
    }

    fn cases() -> Vec<Case> {
        let table =
            "<table><tr><td colspan=\"2\">Counts</td></tr><tr><td>a</td><td>1</td></tr></table>";
        let mut image = bare(BlockType::Image, 300);
        image.content = Some("a photo of a cat".into());
        let mut figure = vlm(
            0,
            vec![
                image,
                block(BlockType::ImageCaption, 345, "Figure 1: A cat."),
                bare(BlockType::Chart, 500),
                block(BlockType::ImageFootnote, 545, "Source: survey."),
            ],
        );
        figure.images.insert(0, "images/p1_b0.png".into());
        figure.images.insert(2, "images/p1_b2.png".into());
        let mut scan = PageResult {
            needs_ocr: true,
            notes: vec!["needs OCR: no text layer".into()],
            backend: Backend::Text,
            ..vlm(1, Vec::new())
        };
        scan.page.page_idx = 1;
        vec![
            Case {
                name: "title_page",
                pages: vec![
                    vlm(
                        0,
                        vec![
                            block(BlockType::Header, 10, "Running head"),
                            block(BlockType::DocTitle, 60, "A Study"),
                            block(BlockType::ParagraphTitle, 110, "1 Introduction"),
                            block(BlockType::Text, 160, "A sentence that"),
                            continued(block(BlockType::Text, 210, "goes on.")),
                            block(BlockType::PageNumber, 950, "1"),
                        ],
                    ),
                    vlm(
                        1,
                        vec![
                            continued(block(BlockType::Text, 60, "And on to page two.")),
                            block(BlockType::Footer, 950, "Footer text"),
                        ],
                    ),
                ],
                blocks: vec![
                    vec![
                        "header [text:Running head]",
                        "doc_title/1 [text:A Study]",
                        "paragraph_title/2 [text:1 Introduction]",
                        "text [text:A sentence that]",
                        "text+ [text:goes on.]",
                        "page_number [text:1]",
                    ],
                    vec![
                        "text+ [text:And on to page two.]",
                        "footer [text:Footer text]",
                    ],
                ],
                same_markdown: true,
            },
            Case {
                name: "table",
                pages: vec![vlm(
                    0,
                    vec![
                        block(BlockType::TableCaption, 100, "Table 1: Counts"),
                        block(BlockType::Table, 150, table),
                        block(BlockType::TableFootnote, 200, "n = 3"),
                        // Text after a table does not continue the text before it.
                        continued(block(BlockType::Text, 260, "After the table.")),
                    ],
                )],
                blocks: vec![vec![
                    "table [table_caption [text:Table 1: Counts] | table_body:<table><tr><td colspan=\"2\">Counts</td></tr><tr><td>a</td><td>1</td></tr></table> | table_footnote [text:n = 3]]",
                    "text [text:After the table.]",
                ]],
                same_markdown: true,
            },
            Case {
                name: "simple_table",
                pages: vec![vlm(
                    0,
                    vec![block(
                        BlockType::Table,
                        150,
                        "<table><tr><td>a</td><td>1</td></tr></table>",
                    )],
                )],
                blocks: vec![vec![
                    "table [table_body:<table><tr><td>a</td><td>1</td></tr></table>]",
                ]],
                // MinerU writes a table without merged cells as a GFM pipe table.
                same_markdown: false,
            },
            Case {
                name: "captions",
                pages: vec![figure],
                blocks: vec![vec![
                    "image [image_body: | image_caption [text:Figure 1: A cat.]]",
                    "chart [chart_body: | chart_footnote [text:Source: survey.]]",
                ]],
                // Our Markdown follows MinerU 3.4.5's writer (an image's analysis in `<details>`, its
                // parts joined by hard breaks); MinerU 4's renderer writes neither.
                same_markdown: false,
            },
            Case {
                name: "equations",
                pages: vec![vlm(
                    0,
                    vec![
                        block(BlockType::Text, 100, "Let $x_1$ be given and $5 paid."),
                        block(BlockType::Equation, 150, "E = mc^2"),
                        block(BlockType::FormulaNumber, 150, "(1)"),
                        block(BlockType::Equation, 300, "a^2 + b^2 = c^2"),
                    ],
                )],
                blocks: vec![vec![
                    "text [text:Let  | equation_inline:x_1 | text: be given and $5 paid.]",
                    "equation [E = mc^2 \\tag{1}]",
                    "equation [a^2 + b^2 = c^2]",
                ]],
                // MinerU escapes the literal dollar sign (`\$5`).
                same_markdown: false,
            },
            Case {
                name: "joins",
                pages: vec![
                    vlm(0, vec![block(BlockType::Text, 900, "A GPU-")]),
                    vlm(
                        1,
                        vec![
                            continued(block(BlockType::Text, 60, "based tier, see (")),
                            continued(block(BlockType::Text, 120, "below).")),
                        ],
                    ),
                ],
                blocks: vec![
                    vec!["text [text:A GPU-]"],
                    vec!["text+ [text:based tier, see (]", "text+ [text:below).]"],
                ],
                // `text::join_text` drops the hyphen and always puts a space; MinerU keeps the
                // hyphen after an acronym and puts no space inside brackets.
                same_markdown: false,
            },
            Case {
                name: "parenthesised_math",
                pages: vec![vlm(
                    0,
                    vec![block(BlockType::Text, 100, "With \\(x^2\\) only.")],
                )],
                blocks: vec![vec![
                    "text [text:With  | equation_inline:x^2 | text: only.]",
                ]],
                same_markdown: true,
            },
            Case {
                name: "display_math_in_a_paragraph",
                pages: vec![vlm(
                    0,
                    vec![block(BlockType::Text, 100, "So \\[ a = b \\] here.")],
                )],
                blocks: vec![vec![
                    "text [text:So  | equation_inline:a = b | text: here.]",
                ]],
                // Given as the model wrote it: the vlm post-processing makes it `\\(…\\)` before our
                // writer sees it, which then writes `[…]` for what is left, as MinerU 3.4.5 does.
                same_markdown: false,
            },
            Case {
                name: "math_in_table_cells",
                pages: vec![vlm(
                    0,
                    vec![block(
                        BlockType::Table,
                        150,
                        "<table><tr><td colspan=\"2\">\\(x_1\\)</td></tr><tr><td>a</td><td>1</td></tr></table>",
                    )],
                )],
                blocks: vec![vec![
                    "table [table_body:<table><tr><td colspan=\"2\">$x_1$</td></tr><tr><td>a</td><td>1</td></tr></table>]",
                ]],
                // Given as the model wrote it: the vlm post-processing wraps it as `<eq>` first.
                same_markdown: false,
            },
            Case {
                name: "caption_after_an_unattached_one",
                pages: vec![vlm(
                    0,
                    vec![
                        block(BlockType::Text, 100, "Body."),
                        block(
                            BlockType::Table,
                            500,
                            "<table><tr><td rowspan=\"2\">x</td></tr><tr></tr></table>",
                        ),
                        block(BlockType::ImageCaption, 10, "Figure 2: no figure"),
                        block(BlockType::TableCaption, 450, "Table 2: Values"),
                    ],
                )],
                blocks: vec![vec![
                    "text [text:Figure 2: no figure]",
                    "text [text:Body.]",
                    "table [table_caption [text:Table 2: Values] | table_body:<table><tr><td rowspan=\"2\">x</td></tr><tr></tr></table>]",
                ]],
                // Our writer keeps the model's order (the caption after its table), as MinerU 3.4.5's
                // does; MinerU 4's renderer puts a table's caption first.
                same_markdown: false,
            },
            Case {
                name: "inline_math",
                pages: vec![vlm(
                    0,
                    vec![block(BlockType::Text, 100, "Energy $E=mc^2$ holds.")],
                )],
                blocks: vec![vec![
                    "text [text:Energy  | equation_inline:E=mc^2 | text: holds.]",
                ]],
                // A dollar in the model's words is escaped by MinerU 3.4.5's writer (and ours); MinerU
                // 4's renderer reads it as math.
                same_markdown: false,
            },
            Case {
                name: "code_and_lists",
                pages: vec![vlm(
                    0,
                    vec![
                        block(BlockType::List, 100, "- first item\n- second item"),
                        continued(block(BlockType::Text, 150, "still the second.")),
                        block(BlockType::Code, 200, "fn main() {}\n"),
                        block(BlockType::RefText, 300, "[1] A. Author. A paper. 2024."),
                    ],
                )],
                blocks: vec![vec![
                    "list [text [text:- first item] | text [text:- second item]]",
                    "text+ [text:still the second.]",
                    "code [code_body:fn main() {}]",
                    "ref_text [text:[1] A. Author. A paper. 2024.]",
                ]],
                // MinerU 3.4.5's writer (and ours) escapes a paragraph's leading `-`; MinerU 4's does not.
                same_markdown: false,
            },
            Case {
                name: "asides",
                pages: vec![vlm(
                    0,
                    vec![
                        block(BlockType::Text, 100, "Body."),
                        block(BlockType::AsideText, 200, "arXiv:2401.00001"),
                        block(BlockType::Text, 300, "More."),
                    ],
                )],
                // An aside is page furniture, placed by the page half it stands in.
                blocks: vec![vec![
                    "aside_text [text:arXiv:2401.00001]",
                    "text [text:Body.]",
                    "text [text:More.]",
                ]],
                same_markdown: true,
            },
            Case {
                name: "page_footnotes",
                pages: vec![vlm(
                    0,
                    vec![
                        block(BlockType::Text, 100, "Body."),
                        block(BlockType::PageFootnote, 900, "1 A footnote."),
                    ],
                )],
                blocks: vec![vec![
                    "text [text:Body.]",
                    "page_footnote [text:1 A footnote.]",
                ]],
                // MinerU writes page footnotes as small HTML.
                same_markdown: false,
            },
            Case {
                name: "unattached_caption_and_scan",
                pages: vec![
                    vlm(
                        0,
                        vec![
                            block(BlockType::Text, 100, "Intro."),
                            block(BlockType::TableCaption, 50, "Table 9: no table here"),
                        ],
                    ),
                    scan,
                ],
                blocks: vec![
                    vec!["text [text:Table 9: no table here]", "text [text:Intro.]"],
                    vec!["text [text:>  | text:Page 2: | text: needs OCR: no text layer]"],
                ],
                same_markdown: true,
            },
        ]
    }

    #[test]
    fn blocks_map_to_the_docvortex_blocks_mineru_renders() {
        let dump = std::env::var_os("MINERU_MIDDLE_DUMP").map(std::path::PathBuf::from);
        for case in cases() {
            let info = DocumentInfo::from_pages(&case.pages);
            let middle = middle_json(&case.pages, &info);
            let got: Vec<Vec<String>> = middle["pages"]
                .as_array()
                .expect("pages")
                .iter()
                .map(|p| {
                    p["blocks"]
                        .as_array()
                        .expect("blocks")
                        .iter()
                        .map(summary)
                        .collect()
                })
                .collect();
            assert_eq!(got, case.blocks, "case {}", case.name);
            if let Some(dir) = &dump {
                // Known differences get a `known-` prefix for the checker's `--allow-mismatch`.
                let prefix = if case.same_markdown { "" } else { "known-" };
                let stem = format!("{prefix}{}", case.name);
                let out = output::build(&case.pages);
                output::write(dir, &stem, &out).expect("write case");
                let structured = structured_content(&case.pages, &info);
                let path = dir
                    .join(&stem)
                    .join(format!("{stem}_structured_content.json"));
                std::fs::write(path, structured.to_string()).expect("write structured content");
            }
        }
    }

    #[test]
    fn document_fields_say_who_produced_what() {
        let pages = vec![vlm(0, vec![block(BlockType::Text, 100, "x")])];
        let mut info = DocumentInfo::from_pages(&pages);
        assert_eq!(
            (info.tier, info.parse_mode, info.full_document),
            (Tier::Standard, ParseMode::Ocr, true)
        );
        info.page_count = Some(3);
        info.full_document = false;
        info.title = Some("A Title".into());
        info.page_sizes.insert(
            0,
            PageSize {
                width_pt: 612.0,
                height_pt: 792.0,
            },
        );
        let middle = middle_json(&pages, &info);
        assert_eq!(middle["schema"], "docvortex.middle");
        assert_eq!(middle["schema_version"], "2.0");
        assert_eq!(middle["is_full_document"], false);
        assert_eq!(
            middle["metadata"],
            json!({
                "file_suffix": "pdf",
                "producer": {"name": "mineru-worker", "version": env!("CARGO_PKG_VERSION")},
                "document": {"title": "A Title", "page_count": 3, "page_count_kind": "physical"},
            })
        );
        assert_eq!(
            middle["extensions"],
            json!({
                "mineru": {"tier": "standard", "parse_mode": "ocr"},
                "docvortex_layout": {"version": 1, "pages": [{"page_idx": 0, "width_pt": 612.0, "height_pt": 792.0}]},
            })
        );
        assert_eq!(
            middle["pages"][0]["blocks"][0]["bbox"],
            json!([0.1, 0.1, 0.9, 0.14])
        );
        // A text-backend parse of pages 2.. is flash, txt, not the whole document.
        let mut text = vlm(1, Vec::new());
        text.backend = Backend::Text;
        let info = DocumentInfo::from_pages(&[text]);
        assert_eq!(
            (info.tier, info.parse_mode, info.full_document),
            (Tier::Flash, ParseMode::Txt, false)
        );
        // The first page of three is not the whole document either.
        let info = DocumentInfo::with_page_count(&pages, 3);
        assert_eq!((info.page_count, info.full_document), (Some(3), false));
        assert!(DocumentInfo::with_page_count(&pages, 1).full_document);
    }

    #[test]
    fn the_note_of_a_page_without_text_is_the_markdown_we_write() {
        let mut scan = vlm(0, Vec::new());
        scan.needs_ocr = true;
        scan.notes = vec!["needs OCR: no text layer".into()];
        let middle = middle_json(std::slice::from_ref(&scan), &DocumentInfo::from_pages(&[]));
        assert_eq!(
            middle["pages"][0]["blocks"][0]["content"],
            json!([
                {"type": "text", "content": "> "},
                {"type": "text", "content": "Page 1:", "styles": ["bold"]},
                {"type": "text", "content": " needs OCR: no text layer"},
            ])
        );
        let structured = structured_content(&[scan.clone()], &DocumentInfo::from_pages(&[]));
        assert_eq!(
            structured["pages"][0]["blocks"][0]["content"],
            output::build(&[scan]).markdown.trim_end()
        );
    }

    #[test]
    fn structured_content_renders_blocks_as_mineru_does() {
        let mut pages = vec![vlm(
            0,
            vec![
                block(BlockType::Header, 10, "Head"),
                block(BlockType::DocTitle, 60, "A *Study*"),
                block(
                    BlockType::Text,
                    110,
                    "- not a list, snake_case <b>x</b> &amp; $y$",
                ),
                block(BlockType::TableCaption, 160, "Table 1"),
                block(BlockType::Table, 200, "<table><tr><td>1</td></tr></table>"),
                block(BlockType::Code, 300, "let x = 1;"),
                block(BlockType::Equation, 400, " x^2 "),
            ],
        )];
        pages[0].images.insert(3, "images/p1_b3.png".into());
        let got = structured_content(&pages, &DocumentInfo::from_pages(&pages));
        if let Some(dir) = std::env::var_os("MINERU_MIDDLE_DUMP").map(std::path::PathBuf::from) {
            // Our Markdown keeps the characters and the HTML table MinerU escapes or converts.
            let stem = "known-structured";
            output::write(&dir, stem, &output::build(&pages)).expect("write case");
            let path = dir
                .join(stem)
                .join(format!("{stem}_structured_content.json"));
            std::fs::write(path, got.to_string()).expect("write structured content");
        }
        assert_eq!(
            got["pages"][0]["blocks"],
            json!([
                {"type": "header", "bbox": [0.1, 0.01, 0.9, 0.05], "content": "Head"},
                {"type": "doc_title", "bbox": [0.1, 0.06, 0.9, 0.1], "level": 1, "content": "A \\*Study\\*"},
                {"type": "text", "bbox": [0.1, 0.11, 0.9, 0.15],
                 "content": "\\- not a list, snake\\_case &lt;b&gt;x&lt;/b&gt; &amp;amp; $y$"},
                {"type": "table", "bbox": [0.1, 0.2, 0.9, 0.24],
                 "content": "| 1 |\n| --- |",
                 "captions": [{"bbox": [0.1, 0.16, 0.9, 0.2], "content": "Table 1"}],
                 "footnotes": [], "image_source": "images/p1_b3.png"},
                {"type": "code", "bbox": [0.1, 0.3, 0.9, 0.34], "sub_type": "code",
                 "content": "```txt\nlet x = 1;\n```", "captions": [], "footnotes": []},
                {"type": "equation", "bbox": [0.1, 0.4, 0.9, 0.44], "content": "x^2"},
            ])
        );
        assert_eq!(got["is_full_document"], true);
        assert_eq!(got["extensions"]["mineru"]["tier"], "standard");
    }

    #[test]
    fn the_plan_keeps_the_text_and_captions_of_our_content_list() {
        for case in cases() {
            let ours = output::build(&case.pages);
            let texts: Vec<String> = ours
                .content_list
                .iter()
                .filter(|i| i.kind == "text" && i.text_level.is_none())
                .filter_map(|i| i.text.clone())
                // The empty items MinerU leaves where a merged paragraph stood.
                .filter(|t| !t.is_empty())
                .collect();
            // Our merged paragraphs, rebuilt from the plan's continuation marks.
            let mut merged: Vec<String> = Vec::new();
            for page in plan(&case.pages) {
                for b in page.blocks {
                    if b.kind != Kind::Text && b.kind != Kind::List {
                        continue;
                    }
                    // Written as our content list writes text.
                    let text = output::mineru_text(&b.text, output::Escape::Markdown);
                    match merged.last_mut() {
                        Some(last) if b.continues_prev => crate::text::join_text(last, &text),
                        _ => merged.push(text),
                    }
                }
            }
            let merged: Vec<String> = merged
                .iter()
                .map(|t| output::escape_block_marker(t))
                .collect();
            assert_eq!(merged, texts, "case {}", case.name);
        }
    }

    #[test]
    fn inline_math_follows_pandoc_rules() {
        let kinds = |s: &str| -> Vec<String> {
            spans(s)
                .into_iter()
                .map(|sp| match sp {
                    Span::Text { text, .. } => format!("t:{text}"),
                    Span::Math(m) => format!("m:{m}"),
                })
                .collect()
        };
        assert_eq!(kinds("costs $5 and $6"), vec!["t:costs $5 and $6"]);
        assert_eq!(kinds("a $x$ b"), vec!["t:a ", "m:x", "t: b"]);
        assert_eq!(kinds("\\(a+b\\) c"), vec!["m:a+b", "t: c"]);
        assert_eq!(kinds("a \\[ b \\] c"), vec!["t:a ", "m:b", "t: c"]);
        assert_eq!(kinds("\\(x"), vec!["t:\\(x"]);
        assert_eq!(kinds("\\$x$"), vec!["t:\\$x$"]);
        assert_eq!(kinds("$$x$$"), vec!["t:$$x$$"]);
        assert_eq!(kinds("$x $"), vec!["t:$x $"]);
    }
}
