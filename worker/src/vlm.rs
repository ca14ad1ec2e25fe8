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
use crate::signals::has_ink;
use crate::tokens::{LayoutError, parse_layout, select_for_recognition};
use mineru_protocol::chat::{LAYOUT_IMAGE_SIZE, MAX_IMAGE_EDGE_RATIO, MIN_IMAGE_EDGE, Step};
use mineru_protocol::client::{ClientError, VlmClient};
use mineru_protocol::model::{Angle, Block, BlockType, Page, PageSignals};

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
}

impl Default for VlmOptions {
    fn default() -> Self {
        Self {
            page_window: 8,
            image_analysis: true,
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

/// Failure of an image operation (resize or PNG encoding).
#[derive(Debug, thiserror::Error)]
pub enum ImageOpError {
    #[error("image is empty ({width}x{height} px)")]
    Empty { width: u32, height: u32 },
    #[error("resize: {0}")]
    Resize(#[from] fast_image_resize::ResizeError),
    #[error("PNG encoding: {0}")]
    Encode(#[from] image::ImageError),
}

/// Extracts `pages` of a document, yielding results in page order.
pub fn extract_pages<R: PageRenderer>(
    client: VlmClient,
    renderer: Arc<R>,
    pages: Vec<usize>,
    options: VlmOptions,
) -> impl Stream<Item = Result<Page, VlmError>> {
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
) -> Result<Page, VlmError> {
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
    let (images, inked) = blocking(page, move || {
        let images = regions
            .iter()
            .map(|block| block_png(&render, block))
            .collect::<Result<Vec<_>, _>>();
        let inked = nothing_found.then(|| has_ink(&render));
        // The render goes here, before any recognition call is waited on.
        drop(render);
        images
            .map(|images| (images, inked))
            .map_err(|source| VlmError::Image { page, source })
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
    let mut result = Page::from_blocks(page, post_process(blocks));
    result.signals = PageSignals {
        truncated_answers,
        inked,
    };
    Ok(result)
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

/// Image-analysis answers tag their fields (`<|class_start|>table<|class_end|>` …).
const CLASS_TAGS: (&str, &str) = ("<|class_start|>", "<|class_end|>");
const CAPTION_TAGS: (&str, &str) = ("<|caption_start|>", "<|caption_end|>");
const CONTENT_TAGS: (&str, &str) = ("<|content_start|>", "<|content_end|>");
/// What the model answers for a block without text.
const NON_TEXT_PLACEHOLDER: &str = "[Non-Text]";

/// MinerU's post-processing of recognised blocks: tables to HTML, image-analysis answers
/// resolved, list items as text, `[Non-Text]` placeholders removed, equations as bare LaTeX
/// (writers add the display-math delimiters), `equation_block` containers dropped.
pub fn post_process(blocks: Vec<Block>) -> Vec<Block> {
    let blocks: Vec<Block> = blocks
        .into_iter()
        .filter_map(|mut block| {
            if let Some(content) = block.content.take() {
                let (kind, content) = resolve_content(block.kind, content);
                block.kind = kind;
                block.content = Some(content);
            }
            if block.kind == BlockType::ListItem {
                block.kind = BlockType::Text;
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
    combine_equation_blocks(blocks)
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

fn resolve_content(kind: BlockType, content: String) -> (BlockType, String) {
    match kind {
        BlockType::Table => (kind, otsl_to_html(&content)),
        BlockType::Image | BlockType::Chart => resolve_image_analysis(kind, content),
        _ => (kind, content),
    }
}

/// An image-analysis answer: a table or formula found in an image becomes one; otherwise the
/// image keeps its structured content, or its caption when there is none.
fn resolve_image_analysis(kind: BlockType, answer: String) -> (BlockType, String) {
    let Some(class) = tagged(&answer, CLASS_TAGS) else {
        return (kind, answer.trim().to_owned());
    };
    let content = tagged(&answer, CONTENT_TAGS).unwrap_or_default();
    match class.to_lowercase().as_str() {
        "pure_table" => (BlockType::Table, otsl_to_html(content)),
        "pure_formula" => (BlockType::Equation, content.to_owned()),
        class => {
            let kind = if class == "chart" {
                BlockType::Chart
            } else {
                BlockType::Image
            };
            let text = if content.is_empty() || class == "natural_image" || class == "chemical" {
                tagged(&answer, CAPTION_TAGS).unwrap_or_default()
            } else {
                content
            };
            (kind, text.to_owned())
        }
    }
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
