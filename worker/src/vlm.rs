//! Backend `vlm`: MinerU2.5's two-step extraction against a vLLM server.
//!
//! Per page: render → layout call on the stretched 1036×1036 image → parse and filter the blocks →
//! crop each block from the full render (rotated, padded, upscaled) → recognition calls →
//! post-processing. Pages run in a bounded window, and a page's render is dropped as soon as its
//! crops are cut, so memory stays flat however long the document is; CPU work runs on the blocking
//! pool so it overlaps the network waits of other pages.

use std::sync::Arc;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use futures::{Stream, StreamExt as _};
use image::codecs::png::{self, PngEncoder};
use image::{ImageEncoder as _, Rgb, RgbImage, imageops};

use crate::otsl::otsl_to_html;
use crate::output::{crop_jpeg, is_cropped};
use crate::signals::has_ink;
use crate::tokens::{LayoutError, parse_layout, select_for_recognition};
use mineru_protocol::chat::{LAYOUT_IMAGE_SIZE, MAX_IMAGE_EDGE_RATIO, MIN_IMAGE_EDGE, Step};
use mineru_protocol::client::{ClientError, VlmClient};
use mineru_protocol::model::{Angle, BBOX_SCALE, BBox, Block, BlockType, Page, PageSignals};

/// Renders pages of one document. Implementations may serialise internally (pdfium does);
/// `render` is always called from the blocking thread pool.
pub trait PageRenderer: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Page `index` (0-based) as RGB, at the resolution blocks are cropped from.
    fn render(&self, index: usize) -> Result<RgbImage, Self::Error>;
}

impl PageRenderer for crate::pdf::Document {
    type Error = crate::pdf::PdfError;

    fn render(&self, index: usize) -> Result<RgbImage, Self::Error> {
        self.render_page(index)
    }
}

#[derive(Debug, Clone)]
pub struct VlmOptions {
    /// Pages in flight at once. Each holds at most one full render, so this bounds memory; the
    /// client's concurrency limit bounds the server load.
    pub page_window: usize,
    /// Send images and charts for analysis (MinerU's `image_analysis`).
    pub image_analysis: bool,
    /// Mark formulas in table cells as `<eq>…</eq>`, which the writers render as inline math
    /// (MinerU's `enable_table_formula_eq_wrap`); off, cells keep the model's `\(…\)`.
    pub table_formula_wrap: bool,
    /// Cut JPEG crops of the image, chart and table blocks while the render is alive (MinerU's
    /// `images/`), instead of rendering the page again for them.
    pub crops: bool,
    /// Keep the page's blocks as the model gave them, furniture in place (MinerU's model
    /// output).
    pub model_output: bool,
}

/// The vlm backend's MinerU options as command-line flags; both are on by default, as in MinerU.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct VlmFlags {
    /// Do not send images and charts for analysis (MinerU's `image_analysis=False`): their crops
    /// are linked without a description.
    #[arg(long)]
    pub no_image_analysis: bool,
    /// Keep the model's `\(…\)` in table cells instead of writing them as inline math
    /// (MinerU's `enable_table_formula_eq_wrap=False`).
    #[arg(long)]
    pub no_table_formula_wrap: bool,
    /// Pages of a document in flight at once, each holding one render (about 11 MB for a
    /// letter page at 200 DPI): what one document can keep a GPU tier busy with.
    #[arg(long, default_value_t = VlmOptions::default().page_window)]
    pub page_window: usize,
}

impl VlmFlags {
    pub fn options(self) -> VlmOptions {
        VlmOptions {
            image_analysis: !self.no_image_analysis,
            table_formula_wrap: !self.no_table_formula_wrap,
            page_window: self.page_window.max(1),
            ..VlmOptions::default()
        }
    }
}

impl Default for VlmOptions {
    fn default() -> Self {
        Self {
            page_window: 8,
            image_analysis: true,
            table_formula_wrap: true,
            crops: false,
            model_output: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VlmError {
    #[error("page {page}: rendering failed: {source}")]
    Render {
        page: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("page {page}: {source}")]
    Server { page: usize, source: ClientError },
    #[error("page {page}: the server's layout answer is unusable: {source}")]
    Layout { page: usize, source: LayoutError },
    #[error("page {page}: image processing failed: {source}")]
    Image { page: usize, source: ImageOpError },
    #[error("page {page}: a processing task was lost: {reason}")]
    Task { page: usize, reason: String },
}

/// Failure of an image operation (resize, PNG or JPEG encoding).
#[derive(Debug, thiserror::Error)]
pub enum ImageOpError {
    #[error("image is empty ({width}x{height} px)")]
    Empty { width: u32, height: u32 },
    #[error("resize: {0}")]
    Resize(#[from] fast_image_resize::ResizeError),
    #[error("encoding: {0}")]
    Encode(#[from] image::ImageError),
}

/// One extracted page with what the options asked for beyond it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractedPage {
    pub page: Page,
    /// JPEG crops by index in `page.blocks` ([`VlmOptions::crops`]).
    pub crops: Vec<(usize, Vec<u8>)>,
    /// The post-processed blocks in the model's order ([`VlmOptions::model_output`]).
    pub model_output: Option<Vec<Block>>,
}

/// Extracts `pages` of a document, yielding results in page order.
pub fn extract_pages<R: PageRenderer>(
    client: VlmClient,
    renderer: Arc<R>,
    pages: Vec<usize>,
    options: VlmOptions,
) -> impl Stream<Item = Result<ExtractedPage, VlmError>> {
    let window = options.page_window.max(1);
    futures::stream::iter(pages)
        .map(move |page| extract_page(client.clone(), renderer.clone(), page, options.clone()))
        .buffered(window)
}

/// Extracts one page.
pub async fn extract_page<R: PageRenderer>(
    client: VlmClient,
    renderer: Arc<R>,
    page: usize,
    options: VlmOptions,
) -> Result<ExtractedPage, VlmError> {
    let (render, layout) = blocking(page, move || {
        let render = renderer.render(page).map_err(|e| VlmError::Render {
            page,
            source: Box::new(e),
        })?;
        let layout = layout_png(&render).map_err(|source| VlmError::Image { page, source })?;
        Ok((render, layout))
    })
    .await?;

    let answer = client
        .complete(Step::Layout, &layout)
        .await
        .map_err(|source| VlmError::Server { page, source })?;
    drop(layout);
    let mut truncated_answers = usize::from(answer.truncated);
    let mut blocks =
        parse_layout(&answer.content).map_err(|source| VlmError::Layout { page, source })?;
    let chosen = select_for_recognition(&mut blocks, options.image_analysis);

    let crops: Vec<(usize, Step)> = chosen
        .iter()
        .map(|&i| (i, Step::for_block(blocks[i].kind)))
        .collect();
    let regions: Vec<Block> = chosen.iter().map(|&i| blocks[i].clone()).collect();
    // Ink matters only on a page the model found nothing on (not even a header), so only such
    // pages are scanned.
    let nothing_found = blocks.is_empty();
    // Post-processing may turn an image into a table or a formula and drop blocks, never make
    // a block image-like: every block linked as an image in the end is cut here, by its bbox.
    let to_crop: Vec<BBox> = blocks
        .iter()
        .filter(|b| options.crops && is_cropped(b.kind))
        .map(|b| b.bbox)
        .collect();
    let (images, mut cut, inked) = blocking(page, move || {
        let image_error = |source| VlmError::Image { page, source };
        let images = regions
            .iter()
            .map(|block| block_png(&render, block))
            .collect::<Result<Vec<_>, _>>()
            .map_err(image_error)?;
        let cut = to_crop
            .into_iter()
            .map(|bbox| crop_jpeg(&render, bbox).map(|jpeg| (bbox, jpeg)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| image_error(ImageOpError::Encode(e)))?;
        let inked = nothing_found.then(|| has_ink(&render));
        // The render goes here, before any recognition call is waited on.
        drop(render);
        Ok((images, cut, inked))
    })
    .await?;

    let calls = crops
        .iter()
        .zip(&images)
        .map(|(&(_, step), png)| client.complete(step, png));
    let answers = futures::future::try_join_all(calls)
        .await
        .map_err(|source| VlmError::Server { page, source })?;
    for ((index, _), answer) in crops.into_iter().zip(answers) {
        truncated_answers += usize::from(answer.truncated);
        blocks[index].content = Some(answer.content);
    }
    let blocks = post_process(blocks, &options);
    let model_output = options.model_output.then(|| blocks.clone());
    let mut result = Page::from_blocks(page, blocks);
    result.signals = PageSignals {
        truncated_answers,
        inked,
    };
    let crops = result
        .blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| is_cropped(b.kind))
        .filter_map(|(index, b)| {
            let at = cut.iter().position(|(bbox, _)| *bbox == b.bbox)?;
            Some((index, cut.swap_remove(at).1))
        })
        .collect();
    Ok(ExtractedPage {
        page: result,
        crops,
        model_output,
    })
}

async fn blocking<T: Send + 'static>(
    page: usize,
    work: impl FnOnce() -> Result<T, VlmError> + Send + 'static,
) -> Result<T, VlmError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| VlmError::Task {
            page,
            reason: e.to_string(),
        })?
}

/// The layout step's image: the page stretched to 1036×1036 (bicubic), as PNG.
pub fn layout_png(page: &RgbImage) -> Result<Vec<u8>, ImageOpError> {
    non_empty(page)?;
    let resized = resize(page, LAYOUT_IMAGE_SIZE, LAYOUT_IMAGE_SIZE)?;
    encode_png(&resized)
}

/// A block's recognition image: cropped from the full render, turned upright, padded to an
/// aspect ratio of at most 50 and upscaled so the short edge is at least 28 px, as PNG.
pub fn block_png(page: &RgbImage, block: &Block) -> Result<Vec<u8>, ImageOpError> {
    non_empty(page)?;
    let rect = block.bbox.to_pixels(page.width(), page.height());
    let crop = imageops::crop_imm(page, rect.x, rect.y, rect.width, rect.height).to_image();
    // The angle says how far the content is turned; undo it counter-clockwise, as Pillow's
    // `rotate(angle, expand=True)` does.
    let upright = match block.angle.unwrap_or_default() {
        Angle::Up => crop,
        Angle::Right => imageops::rotate270(&crop),
        Angle::Down => imageops::rotate180(&crop),
        Angle::Left => imageops::rotate90(&crop),
    };
    let padded = pad_to_ratio(upright);
    let (w, h) = (padded.width(), padded.height());
    let short = w.min(h);
    if short >= MIN_IMAGE_EDGE {
        return encode_png(&padded);
    }
    // ceil(v × 28 / short) in integers, so exact sizes do not gain a pixel from rounding.
    let scaled =
        |v: u32| (u64::from(v) * u64::from(MIN_IMAGE_EDGE)).div_ceil(u64::from(short)) as u32;
    encode_png(&resize(&padded, scaled(w), scaled(h))?)
}

fn non_empty(image: &RgbImage) -> Result<(), ImageOpError> {
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageOpError::Empty { width, height });
    }
    Ok(())
}

/// Centres the image on a white canvas so long edge / short edge ≤ 50.
fn pad_to_ratio(image: RgbImage) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    let (long, short) = (w.max(h), w.min(h));
    if long <= short.saturating_mul(MAX_IMAGE_EDGE_RATIO) {
        return image;
    }
    let needed = long.div_ceil(MAX_IMAGE_EDGE_RATIO);
    let (nw, nh) = if w > h { (w, needed) } else { (needed, h) };
    let mut canvas = RgbImage::from_pixel(nw, nh, Rgb([255, 255, 255]));
    imageops::replace(
        &mut canvas,
        &image,
        i64::from((nw - w) / 2),
        i64::from((nh - h) / 2),
    );
    canvas
}

/// Catmull-Rom (Pillow's BICUBIC) resize on the SIMD resizer.
fn resize(image: &RgbImage, width: u32, height: u32) -> Result<RgbImage, ImageOpError> {
    let mut out = RgbImage::new(width, height);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    Resizer::new().resize(image, &mut out, &options)?;
    Ok(out)
}

/// Fast deflate with the Sub filter: on rendered text pages it encodes about 40% faster than the
/// adaptive filter for under 10% more bytes, and bytes are cheap on the way to a local GPU.
fn encode_png(image: &RgbImage) -> Result<Vec<u8>, ImageOpError> {
    let mut out = Vec::with_capacity(image.as_raw().len() / 4);
    PngEncoder::new_with_quality(&mut out, png::CompressionType::Fast, png::FilterType::Sub)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )?;
    Ok(out)
}

/// MinerU's model output (its `<name>_model.json`): per page, the post-processed blocks of its
/// two-step extraction as `mineru_vl_utils` `ContentBlock`s, bboxes as page fractions, an
/// equation between `\[` and `\]` and an analysed image's or chart's `sub_type` as MinerU's
/// post-processing leaves them.
pub fn model_output_json(pages: &[Vec<Block>]) -> serde_json::Value {
    let fraction = |c: u16| f64::from(c) / f64::from(BBOX_SCALE);
    let block = |b: &Block| {
        let [x0, y0, x1, y1]: [u16; 4] = b.bbox.into();
        let content = match (&b.content, b.kind) {
            (Some(latex), BlockType::Equation) => Some(format!("\\[\n{latex}\n\\]")),
            (content, _) => content.clone(),
        };
        let mut out = serde_json::json!({
            "type": b.kind.as_str(),
            "bbox": [fraction(x0), fraction(y0), fraction(x1), fraction(y1)],
            "angle": b.angle.map(u16::from),
            "content": content,
        });
        if b.kind == BlockType::Text {
            out["merge_prev"] = b.continues_previous.into();
        }
        if let Some(sub_type) = &b.sub_type {
            out["sub_type"] = sub_type.as_str().into();
        }
        out
    };
    pages
        .iter()
        .map(|blocks| blocks.iter().map(block).collect::<Vec<_>>())
        .collect()
}

/// Image-analysis answers tag their fields (`<|class_start|>table<|class_end|>` …).
const CLASS_TAGS: (&str, &str) = ("<|class_start|>", "<|class_end|>");
const CAPTION_TAGS: (&str, &str) = ("<|caption_start|>", "<|caption_end|>");
const CONTENT_TAGS: (&str, &str) = ("<|content_start|>", "<|content_end|>");
const SUB_CLASS_TAGS: (&str, &str) = ("<|sub_class_start|>", "<|sub_class_end|>");
/// What the model answers for a block without text.
const NON_TEXT_PLACEHOLDER: &str = "[Non-Text]";

/// MinerU's post-processing of recognised blocks: tables to HTML, image-analysis answers
/// resolved, list items as text, `[Non-Text]` placeholders removed, equations as bare LaTeX
/// (writers add the display-math delimiters), `equation_block` containers dropped.
pub fn post_process(blocks: Vec<Block>, options: &VlmOptions) -> Vec<Block> {
    let blocks: Vec<Block> = blocks
        .into_iter()
        .filter_map(|mut block| {
            if let Some(content) = block.content.take() {
                let (kind, content, sub_type) = resolve_content(block.kind, content, options);
                block.kind = kind;
                block.content = Some(content);
                block.sub_type = sub_type;
            }
            if block.kind == BlockType::ListItem {
                block.kind = BlockType::Text;
            }
            if block.kind == BlockType::Text {
                block.content = block.content.map(|text| {
                    let text = display_math_to_inline(&text);
                    let text = map_inline_math(&text, |latex| {
                        format!("\\({}\\)", space_after_macros(latex))
                    });
                    map_inline_math(&text, underscores_out_of_math)
                });
            }
            if block.kind != BlockType::Text {
                block.continues_previous = false;
            }
            drop_placeholder(block)
        })
        .map(|mut block| {
            if block.kind == BlockType::Equation {
                block.content = block.content.map(|latex| strip_math_delimiters(&latex));
            }
            block
        })
        .collect();
    let mut blocks = combine_equation_blocks(blocks);
    keep_mineru_merges(&mut blocks);
    blocks
}

/// Sentence ends after which MinerU never merges a continued paragraph (`LINE_STOP_FLAG`).
const LINE_STOP_FLAGS: [char; 14] = [
    '.', '!', '?', '。', '！', '？', ')', '）', '"', '”', ':', '：', ';', '；',
];

/// Keeps a text block's `continues_previous` only where MinerU merges it (`merge_prev` in
/// `merge_para_text_blocks`): into the previous text block of the same page, looking past
/// images, tables, charts, code and what MinerU holds apart from the flow (captions, furniture)
/// but not past anything else, when the previous text does not end a sentence, the next does not
/// start with a capital or a digit, their widths are alike and the next starts above the
/// previous one's bottom (it is the next column).
fn keep_mineru_merges(blocks: &mut [Block]) {
    // A list's items are inside it, and a list stops the search.
    let in_lists: Vec<usize> = crate::output::list_members(blocks)
        .into_values()
        .flatten()
        .collect();
    for i in 0..blocks.len() {
        if !blocks[i].continues_previous {
            continue;
        }
        let target = (0..i)
            .rev()
            .find(|&j| in_lists.contains(&j) || !is_merge_transparent(blocks[j].kind))
            .filter(|&j| !in_lists.contains(&j))
            .map(|j| &blocks[j])
            .filter(|b| b.kind == BlockType::Text);
        let merges = target.is_some_and(|prev| mineru_merges(prev, &blocks[i]));
        blocks[i].continues_previous = merges;
    }
}

fn is_merge_transparent(kind: BlockType) -> bool {
    matches!(
        kind,
        BlockType::Image
            | BlockType::Table
            | BlockType::Chart
            | BlockType::Code
            | BlockType::Algorithm
            | BlockType::Unknown
            | BlockType::ImageBlock
            | BlockType::EquationBlock
            | BlockType::FormulaNumber
    ) || kind.is_discarded()
        || crate::output::attaches_to(kind).is_some()
}

fn mineru_merges(prev: &Block, next: &Block) -> bool {
    let (Some(before), Some(after)) = (
        prev.content.as_deref().map(str::trim),
        next.content.as_deref().map(str::trim),
    ) else {
        return false;
    };
    let Some(first) = after.chars().next() else {
        return false;
    };
    let width = |b: &Block| i32::from(b.bbox.x1()) - i32::from(b.bbox.x0());
    let (w_prev, w_next) = (width(prev), width(next));
    let ends_sentence = before.is_empty() || before.ends_with(LINE_STOP_FLAGS);
    let starts_sentence = first.is_numeric() || first.is_uppercase();
    let alike = (w_prev - w_next).abs() < w_prev.min(w_next);
    !ends_sentence && !starts_sentence && alike && next.bbox.y0() < prev.bbox.y1()
}

/// Share of an equation's area inside an `equation_block` above which it is one of its lines.
const EQUATION_IN_BLOCK_THRESHOLD: f64 = 0.9;

/// An `equation_block` holding several equations becomes one multi-line equation in its place
/// (MinerU's `do_handle_equation_block`); other `equation_block`s are dropped.
fn combine_equation_blocks(blocks: Vec<Block>) -> Vec<Block> {
    let is_equation = |b: &Block| b.kind == BlockType::Equation;
    let lines_of = |container: &Block| -> Vec<usize> {
        let lines: Vec<usize> = blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                is_equation(b)
                    && b.bbox.fraction_inside(container.bbox) > EQUATION_IN_BLOCK_THRESHOLD
            })
            .map(|(i, _)| i)
            .collect();
        if lines.len() > 1 { lines } else { Vec::new() }
    };
    let groups: Vec<(usize, Vec<usize>)> = blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| b.kind == BlockType::EquationBlock)
        .map(|(i, b)| (i, lines_of(b)))
        .filter(|(_, lines)| !lines.is_empty())
        .collect();
    let absorbed: Vec<usize> = groups
        .iter()
        .flat_map(|(_, lines)| lines.iter().copied())
        .collect();
    let combined: Vec<(usize, String)> = groups
        .iter()
        .map(|(i, lines)| {
            let contents: Vec<&str> = lines
                .iter()
                .map(|&l| blocks[l].content.as_deref().unwrap_or_default())
                .collect();
            (*i, multi_line_equation(&contents))
        })
        .collect();
    blocks
        .into_iter()
        .enumerate()
        .filter_map(|(i, mut block)| {
            if absorbed.contains(&i) {
                return None;
            }
            if block.kind != BlockType::EquationBlock {
                return Some(block);
            }
            let (_, content) = combined.iter().find(|(c, _)| *c == i)?;
            block.kind = BlockType::Equation;
            block.content = Some(content.clone());
            Some(block)
        })
        .collect()
}

/// Equations stacked as rows of one `array`; several `\tag{…}`s would not compile there, so they
/// become plain `(…)` labels.
fn multi_line_equation(lines: &[&str]) -> String {
    let tags: usize = lines.iter().map(|l| tag_spans(l).len()).sum();
    let mut out = String::from("\\begin{array}{l} ");
    for line in lines {
        if tags > 1 {
            let mut last = 0;
            for (start, end, label) in tag_spans(line) {
                out.push_str(&line[last..start]);
                out.push_str(&format!("({label})"));
                last = end;
            }
            out.push_str(&line[last..]);
        } else {
            out.push_str(line);
        }
        out.push_str(" \\\\ ");
    }
    out.push_str("\\end{array}");
    out
}

/// `\tag{label}` occurrences as (start, end, label) byte spans.
fn tag_spans(line: &str) -> Vec<(usize, usize, &str)> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = line[from..].find("\\tag") {
        let start = from + found;
        let after = &line[start + 4..];
        let trimmed = after.trim_start();
        let open = start + 4 + (after.len() - trimmed.len());
        from = start + 4;
        if !trimmed.starts_with('{') {
            continue;
        }
        let Some(close) = line[open + 1..].find('}') else {
            continue;
        };
        let end = open + 1 + close + 1;
        spans.push((start, end, &line[open + 1..end - 1]));
        from = end;
    }
    spans
}

fn resolve_content(
    kind: BlockType,
    content: String,
    options: &VlmOptions,
) -> (BlockType, String, Option<String>) {
    let (kind, content, sub_type) = match kind {
        BlockType::Table => (kind, otsl_to_html(&content), None),
        BlockType::Image | BlockType::Chart => resolve_image_analysis(&content),
        BlockType::Code | BlockType::Algorithm => resolve_code(kind, &content),
        _ => (kind, content, None),
    };
    // A table found by image analysis is wrapped too.
    if kind == BlockType::Table && options.table_formula_wrap {
        return (kind, wrap_table_formulas(&content), sub_type);
    }
    (kind, content, sub_type)
}

/// Each `\(…\)` and `\[…\]` of a table's HTML as `<eq>…</eq>` (MinerU's
/// `replace_table_formula_delimiters`).
fn wrap_table_formulas(html: &str) -> String {
    let mut out = html.to_owned();
    for (open, close) in [("\\(", "\\)"), ("\\[", "\\]")] {
        let mut wrapped = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(start) = rest.find(open) {
            let body = &rest[start + open.len()..];
            // Without a closing one, no later opening closes either.
            let Some(len) = body.find(close) else {
                break;
            };
            if body[..len].trim().is_empty() {
                wrapped.push_str(&rest[..start + open.len()]);
                rest = body;
                continue;
            }
            wrapped.push_str(&rest[..start]);
            wrapped.push_str(&format!("<eq>{}</eq>", body[..len].trim()));
            rest = &body[len + close.len()..];
        }
        wrapped.push_str(rest);
        out = wrapped;
    }
    out
}

/// An image-analysis answer: a table or formula found in an image becomes one; otherwise the
/// image keeps its structured content, or its caption when there is none, and its class (a
/// chart its sub-class) as MinerU's `sub_type`.
fn resolve_image_analysis(answer: &str) -> (BlockType, String, Option<String>) {
    let field = |tags| tagged(answer, tags).unwrap_or_default();
    // MinerU's `process_image_or_chart`: names compared in lower case, a content cut off by
    // the length limit taken to the end, a chemical structure's content dropped.
    let class = field(CLASS_TAGS).to_lowercase();
    let mut content = match tagged(answer, CONTENT_TAGS) {
        Some(content) => content,
        None if answer.matches(CONTENT_TAGS.0).count() == 1 && !answer.contains(CONTENT_TAGS.1) => {
            answer
                .split(CONTENT_TAGS.0)
                .last()
                .unwrap_or_default()
                .trim()
        }
        None => "",
    };
    if class == "chemical" {
        content = "";
    }
    match class.as_str() {
        "pure_table" => (BlockType::Table, otsl_to_html(content), None),
        "pure_formula" => (BlockType::Equation, content.to_owned(), None),
        "chart" => (
            BlockType::Chart,
            content.to_owned(),
            Some(field(SUB_CLASS_TAGS).to_lowercase()),
        ),
        _ => {
            let text = if content.is_empty() || class == "natural_image" {
                field(CAPTION_TAGS)
            } else {
                content
            };
            (
                BlockType::Image,
                text.to_owned(),
                Some(class).filter(|c| !c.is_empty()),
            )
        }
    }
}

/// Code without the Markdown fence the model may add (MinerU's `code_content_clean`); code
/// holding inline math is an algorithm, as MinerU renders it.
fn resolve_code(kind: BlockType, answer: &str) -> (BlockType, String, Option<String>) {
    let mut lines: Vec<&str> = answer.lines().collect();
    if lines.first().is_some_and(|l| l.starts_with("```")) {
        lines.remove(0);
    }
    if lines.last().is_some_and(|l| l.trim() == "```") {
        lines.pop();
    }
    let code = lines.join("\n").trim().to_owned();
    let opens = code.matches("\\(").count();
    let kind = if opens > 0 && opens == code.matches("\\)").count() {
        BlockType::Algorithm
    } else {
        kind
    };
    (kind, code, None)
}

/// Each `\(…\)` (holding something, across lines) replaced by what `replace` makes of its
/// LaTeX.
fn map_inline_math(text: &str, replace: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("\\(") {
        let body = &rest[start + 2..];
        let close = body
            .char_indices()
            .nth(1)
            .and_then(|(first, _)| body[first..].find("\\)").map(|end| first + end));
        let Some(end) = close else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&replace(&body[..end]));
        rest = &body[end + 2..];
    }
    out.push_str(rest);
    out
}

/// A space between `\times`, `\to`, `\in`, `\subset` or `\cong` and the single letter the
/// model glued to it (`\timesX`), but not in `\top`, `\int` or `\inf` (MinerU's
/// `try_fix_macro_spacing_in_markdown`).
fn space_after_macros(latex: &str) -> String {
    const MACROS: [&str; 5] = ["\\cong", "\\to", "\\times", "\\subset", "\\in"];
    const KNOWN: [&str; 3] = ["\\top", "\\int", "\\inf"];
    let mut text = latex.to_owned();
    for macro_name in MACROS {
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find(macro_name) {
            let after = &rest[at + macro_name.len()..];
            let mut letters = after.chars();
            let glued = match (letters.next(), letters.next()) {
                (Some(l), next)
                    if l.is_ascii_alphabetic()
                        && !next.is_some_and(|n| n.is_ascii_alphabetic()) =>
                {
                    Some(l)
                }
                _ => None,
            };
            out.push_str(&rest[..at + macro_name.len()]);
            match glued {
                Some(l) if !KNOWN.contains(&format!("{macro_name}{l}").as_str()) => {
                    out.push(' ');
                    out.push(l);
                    rest = &after[1..];
                }
                _ => rest = after,
            }
        }
        out.push_str(rest);
        text = out;
    }
    text
}

/// Blanks to fill in (three underscores or more) taken out of the math around them, the rest
/// kept as math (MinerU's `try_move_underscores_outside`).
fn underscores_out_of_math(latex: &str) -> String {
    let mut parts: Vec<(bool, &str)> = Vec::new();
    let mut from = 0;
    let bytes = latex.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|&&b| b == b'_').count();
        if run >= 3 {
            parts.push((false, &latex[from..i]));
            parts.push((true, &latex[i..i + run]));
            i += run;
            from = i;
        } else {
            i += run.max(1);
        }
    }
    if parts.is_empty() {
        return format!("\\({latex}\\)");
    }
    parts.push((false, &latex[from..]));
    parts
        .into_iter()
        .filter(|(blank, part)| *blank || !part.trim().is_empty())
        .map(|(blank, part)| {
            if blank {
                part.to_owned()
            } else {
                format!("\\({part}\\)")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A paragraph's `\[…\]` becomes inline `\(…\)` unless it holds only numbers, dashes and
/// commas (a citation such as `\[1, 3–5\]`), as MinerU's `try_convert_display_to_inline`.
fn display_math_to_inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("\\[") {
        let Some(len) = rest[start + 2..].find("\\]") else {
            break;
        };
        let inner = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        let citation = inner
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_whitespace() || matches!(c, '–' | '-' | ','));
        if citation {
            out.push_str(&format!("\\[{inner}\\]"));
        } else {
            out.push_str(&format!("\\({inner}\\)"));
        }
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    out
}

fn tagged<'a>(text: &'a str, (start, end): (&str, &str)) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(text[from..from + len].trim())
}

/// Blocks whose whole answer is the `[Non-Text]` placeholder: headers and footers keep their
/// place with empty text, visual and container blocks are kept, others are dropped.
fn drop_placeholder(mut block: Block) -> Option<Block> {
    if block.content.as_deref().map(str::trim) != Some(NON_TEXT_PLACEHOLDER) {
        return Some(block);
    }
    match block.kind {
        BlockType::Header | BlockType::Footer => {
            block.content = Some(String::new());
            Some(block)
        }
        BlockType::Image
        | BlockType::Chart
        | BlockType::Table
        | BlockType::Equation
        | BlockType::List
        | BlockType::ImageBlock
        | BlockType::EquationBlock => Some(block),
        _ => None,
    }
}

/// LaTeX without the `\[…\]` or `$$…$$` delimiters the model sometimes adds.
fn strip_math_delimiters(latex: &str) -> String {
    let mut body = latex.trim();
    for (open, close) in [("\\[", "\\]"), ("$$", "$$")] {
        body = body.strip_prefix(open).unwrap_or(body);
        body = body.strip_suffix(close).unwrap_or(body).trim();
    }
    body.to_owned()
}
