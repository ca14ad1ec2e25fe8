//! One document through either backend: open, pick pages, extract, and report progress. Shared by
//! the `parse` CLI and any other front end, so both backends stay interchangeable behind it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt as _;

use crate::output::{ImageFile, PageResult, attach_images};
use crate::pdf::{Document, PageImage, Pages, PdfError};
use crate::render_pool::RenderPool;
use crate::text;
use crate::vlm::{self, ExtractedPage, PageRenderer, VlmError, VlmOptions};
use mineru_protocol::client::VlmClient;
use mineru_protocol::model::{BBox, Block, BlockType};

/// Which backend extracts the pages, with what it needs.
#[derive(Debug, Clone)]
pub enum Extractor {
    Text,
    Vlm {
        client: VlmClient,
        options: VlmOptions,
        pixels: PixelLimits,
    },
}

/// Where pdfium runs for a document.
#[derive(Debug, Clone)]
pub enum Pdfium {
    /// In this process (the CLI: one user, their own files).
    InProcess,
    /// In the pool's subprocesses (the server: documents from strangers).
    Isolated(Arc<RenderPool>),
}

/// An open document, wherever pdfium runs for it.
pub type OpenDocument = Arc<dyn Pages>;

/// A document's bytes as they arrived: in memory, or spilled to a temporary file (deleted with
/// it) while a large upload was read.
#[derive(Debug)]
pub enum DocumentBytes {
    Memory(Vec<u8>),
    Spilled(tempfile::TempPath),
}

/// How many pixels the images a render decodes may hold: a scanned page at 600 DPI is about 35
/// megapixels, so the defaults (100 per page, 10 000 per document: 1,000 pages scanned at 300
/// DPI) pass real documents and stop image bombs before pdfium decodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelLimits {
    pub per_page: u64,
    pub per_document: u64,
}

impl Default for PixelLimits {
    fn default() -> Self {
        Self {
            per_page: 100_000_000,
            per_document: 10_000_000_000,
        }
    }
}

impl PixelLimits {
    /// Counts `pixels` for `page` against the limits, given what the document's earlier pages
    /// already used (`used`, updated).
    fn admit(&self, page: usize, pixels: u64, used: &AtomicU64) -> Result<(), PdfError> {
        if pixels > self.per_page {
            return Err(PdfError::PageTooManyPixels {
                page,
                pixels,
                limit: self.per_page,
            });
        }
        let before = used.fetch_add(pixels, Ordering::Relaxed);
        if before.saturating_add(pixels) > self.per_document {
            return Err(PdfError::DocumentTooManyPixels {
                page,
                limit: self.per_document,
            });
        }
        Ok(())
    }
}

/// An inclusive, 1-based page selection as users write it: `3`, `2-5` or `4-` (to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    first: usize,
    last: Option<usize>,
}

impl PageRange {
    pub const ALL: PageRange = PageRange {
        first: 1,
        last: None,
    };

    /// Pages `first..=last`, 1-based.
    pub fn between(first: usize, last: usize) -> Self {
        Self {
            first: first.max(1),
            last: Some(last),
        }
    }

    /// The range from MinerU's 0-based, inclusive `start_page_id`/`end_page_id`.
    pub fn from_zero_based(start: usize, end: Option<usize>) -> Result<Self, String> {
        if let Some(end) = end.filter(|&e| e < start) {
            return Err(format!("end page {end} is before start page {start}"));
        }
        let first = start
            .checked_add(1)
            .ok_or_else(|| format!("start page {start} is past any document's end"))?;
        Ok(Self {
            first,
            last: end.map(|e| e.saturating_add(1)),
        })
    }

    /// The 0-based page indices selected in a document of `count` pages; the end is clamped to the
    /// document, a start past its end is an error.
    pub fn resolve(&self, count: usize) -> Result<std::ops::Range<usize>, ParseError> {
        if self.first > count {
            return Err(ParseError::PagesOutOfRange {
                range: *self,
                count,
            });
        }
        let last = self.last.map_or(count, |l| l.min(count));
        Ok(self.first - 1..last)
    }
}

impl fmt::Display for PageRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.last {
            Some(last) if last == self.first => write!(f, "{last}"),
            Some(last) => write!(f, "{}-{last}", self.first),
            None => write!(f, "{}-", self.first),
        }
    }
}

impl FromStr for PageRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |t: &str| {
            t.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| format!("{t:?} is not a page number (pages count from 1)"))
        };
        let (first, last) = match s.split_once('-') {
            None => {
                let n = number(s)?;
                (n, Some(n))
            }
            Some((a, b)) if b.trim().is_empty() => (number(a)?, None),
            Some((a, b)) => (number(a)?, Some(number(b)?)),
        };
        if last.is_some_and(|l| l < first) {
            return Err(format!("page range {s:?} ends before it starts"));
        }
        Ok(Self { first, last })
    }
}

/// Why a document could not be parsed. Messages are one line and name the cause.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Pdf(#[from] PdfError),
    #[error("pages {range} selected but the document has {count} page(s)")]
    PagesOutOfRange { range: PageRange, count: usize },
    #[error(transparent)]
    Vlm(#[from] VlmError),
    #[error("a pdfium task ended abnormally: {0}")]
    Task(String),
    /// The request that wanted the document is gone; its work stopped at a page boundary.
    #[error("abandoned: the request ended before the document was done")]
    Abandoned,
}

/// The request's side of a document's blocking work. Dropped with the request (its deadline
/// passed, its client left), it tells the work to stop at the next page.
#[derive(Debug)]
pub struct Job {
    work: Work,
}

/// The work's side, cloned into every blocking task of a document. It holds what must live as
/// long as the work really runs (a worker's admission ticket): a slot freed while pdfium still
/// works on an abandoned document would let abandoned work pile up without bound.
#[derive(Debug, Clone)]
pub struct Work(Arc<WorkState>);

struct WorkState {
    abandoned: AtomicBool,
    _held: Box<dyn Send + Sync>,
}

impl fmt::Debug for WorkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkState")
            .field("abandoned", &self.abandoned)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// A job whose work keeps `held` alive until the last of its tasks ends.
    pub fn holding(held: impl Send + Sync + 'static) -> Self {
        Self {
            work: Work(Arc::new(WorkState {
                abandoned: AtomicBool::new(false),
                _held: Box::new(held),
            })),
        }
    }

    /// What the blocking tasks carry.
    pub fn work(&self) -> &Work {
        &self.work
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.work.0.abandoned.store(true, Ordering::Relaxed);
    }
}

impl Work {
    /// True once the request that wanted this work is gone.
    pub fn abandoned(&self) -> bool {
        self.0.abandoned.load(Ordering::Relaxed)
    }

    fn check(&self) -> Result<(), ParseError> {
        if self.abandoned() {
            Err(ParseError::Abandoned)
        } else {
            Ok(())
        }
    }
}

/// A document's pages rendered on behalf of `work`: each render task holds the work, a render
/// asked for after the request is gone is not started, and none decodes more pixels than the
/// limits allow.
struct WorkRenderer {
    doc: OpenDocument,
    work: Work,
    pixels: PixelLimits,
    pixels_used: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
enum WorkRenderError {
    #[error(transparent)]
    Pdf(#[from] PdfError),
    #[error("abandoned")]
    Abandoned,
}

impl PageRenderer for WorkRenderer {
    type Error = WorkRenderError;

    fn render(&self, index: usize) -> Result<image::RgbImage, Self::Error> {
        if self.work.abandoned() {
            return Err(WorkRenderError::Abandoned);
        }
        let pixels = self.doc.image_pixels(index)?;
        self.pixels.admit(index, pixels, &self.pixels_used)?;
        Ok(self.doc.render_page(index)?)
    }
}

/// Progress of one document, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The document is open; this many pages will be extracted.
    Started { pages: usize },
    /// One more page is done.
    PageDone,
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Opens `bytes` and extracts the selected pages, in page order.
pub async fn parse_document(
    bytes: Vec<u8>,
    range: PageRange,
    extractor: &Extractor,
    wanted: Wanted,
    progress: ProgressFn,
) -> Result<Parsed, ParseError> {
    let job = Job::holding(());
    let work = job.work().clone();
    let doc = blocking(move || {
        work.check()?;
        Document::open(bytes).map_err(ParseError::from)
    })
    .await?;
    let open: OpenDocument = Arc::new(doc);
    parse_pages(&open, range, extractor, wanted, progress, job.work()).await
}

/// Opens `bytes` with pdfium, so a caller can look at the document (its page count) before
/// extracting it.
pub async fn open_document(
    pdfium: &Pdfium,
    bytes: DocumentBytes,
    work: &Work,
) -> Result<OpenDocument, ParseError> {
    // pdfium calls block (and serialise on one lock): keep them off the async threads.
    let (pdfium, work) = (pdfium.clone(), work.clone());
    blocking(move || {
        work.check()?;
        let doc: OpenDocument = match (pdfium, bytes) {
            (Pdfium::InProcess, DocumentBytes::Memory(bytes)) => Arc::new(Document::open(bytes)?),
            // pdfium keeps the file open: the path may go once it is.
            (Pdfium::InProcess, DocumentBytes::Spilled(path)) => {
                Arc::new(Document::open_file(&path)?)
            }
            (Pdfium::Isolated(pool), DocumentBytes::Memory(bytes)) => {
                Arc::new(pool.open_bytes(&bytes)?)
            }
            (Pdfium::Isolated(pool), DocumentBytes::Spilled(path)) => Arc::new(pool.open(path)?),
        };
        Ok(doc)
    })
    .await
}

/// What a caller wants of a document beyond its pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    /// The images the pages link ([`Parsed::images`]).
    pub images: bool,
    /// The model output ([`Parsed::model_output`]); the text backend has none.
    pub model_output: bool,
}

/// A document's extracted pages, with what was wanted beyond them.
#[derive(Debug)]
pub struct Parsed {
    pub pages: Vec<PageResult>,
    /// The images the pages link, in page order: crops of image, chart and table blocks from
    /// the page renders (vlm), the images drawn on the pages (text).
    pub images: Vec<ImageFile>,
    /// Per page, the blocks as the model gave them (vlm only).
    pub model_output: Option<Vec<Vec<Block>>>,
}

/// Extracts the selected pages of an open document, in page order, for as long as `work` is
/// wanted: an abandoned request stops it at the next page.
pub async fn parse_pages(
    doc: &OpenDocument,
    range: PageRange,
    extractor: &Extractor,
    wanted: Wanted,
    progress: ProgressFn,
    work: &Work,
) -> Result<Parsed, ParseError> {
    let pages = range.resolve(doc.page_count())?;
    progress(Progress::Started { pages: pages.len() });
    match extractor {
        Extractor::Text => {
            let (doc, work) = (doc.clone(), work.clone());
            let progress = progress.clone();
            blocking(move || {
                let mut pages = text::parse(doc.as_ref(), pages, |_| {
                    progress(Progress::PageDone);
                    !work.abandoned()
                })?;
                work.check()?;
                let mut images = Vec::new();
                if wanted.images {
                    for result in &mut pages {
                        // A page whose images cannot be read keeps its text.
                        let found = match doc.page_images(result.page.page_idx) {
                            Ok(found) => found,
                            Err(error) => {
                                tracing::warn!(page = result.page.page_idx, %error, "the page's images are left out");
                                Vec::new()
                            }
                        };
                        let placed = place_images(&mut result.page.blocks, found);
                        images.extend(attach_images(result, placed));
                        work.check()?;
                    }
                }
                Ok(Parsed {
                    pages,
                    images,
                    model_output: None,
                })
            })
            .await
        }
        Extractor::Vlm {
            client,
            options,
            pixels,
        } => {
            let renderer = WorkRenderer {
                doc: doc.clone(),
                work: work.clone(),
                pixels: *pixels,
                pixels_used: AtomicU64::new(0),
            };
            let options = VlmOptions {
                crops: wanted.images,
                model_output: wanted.model_output,
                ..options.clone()
            };
            let mut stream = std::pin::pin!(vlm::extract_pages(
                client.clone(),
                Arc::new(renderer),
                pages.collect(),
                options,
            ));
            let mut parsed = Parsed {
                pages: Vec::new(),
                images: Vec::new(),
                model_output: wanted.model_output.then(Vec::new),
            };
            while let Some(page) = stream.next().await {
                work.check()?;
                let ExtractedPage {
                    page,
                    crops,
                    model_output,
                } = page.map_err(document_fault)?;
                let mut result = PageResult::from_vlm(page);
                parsed.images.extend(attach_images(&mut result, crops));
                if let (Some(all), Some(blocks)) = (&mut parsed.model_output, model_output) {
                    all.push(blocks);
                }
                parsed.pages.push(result);
                progress(Progress::PageDone);
            }
            Ok(parsed)
        }
    }
}

/// Share of a page above which an image is its background.
const BACKGROUND_SHARE: f64 = 0.9;

/// Adds the page's images to its blocks in reading order as image blocks, and returns their
/// JPEGs by index in `blocks`.
fn place_images(blocks: &mut Vec<Block>, images: Vec<PageImage>) -> Vec<(usize, Vec<u8>)> {
    let mut placed: Vec<(usize, Vec<u8>)> = Vec::with_capacity(images.len());
    let has_text = blocks
        .iter()
        .any(|b| b.content.as_deref().is_some_and(|t| !t.trim().is_empty()));
    for PageImage { bbox, jpeg } in images {
        // An image under most of a page with text is the scan beneath an OCR layer, not a
        // figure of it.
        if has_text
            && f64::from(bbox.area()) >= BACKGROUND_SHARE * f64::from(BBox::FULL_PAGE.area())
        {
            continue;
        }
        let at = reading_position(blocks, bbox);
        for (index, _) in &mut placed {
            if *index >= at {
                *index += 1;
            }
        }
        blocks.insert(at, Block::new(BlockType::Image, bbox));
        placed.push((at, jpeg));
    }
    placed.sort_unstable_by_key(|&(index, _)| index);
    placed
}

/// Where an image goes in a page's reading order: before the first block of its column (one
/// that overlaps it horizontally) starting below its top, else after the last block of its
/// column above it, else last.
fn reading_position(blocks: &[Block], image: BBox) -> usize {
    let same_column = |b: &Block| b.bbox.x0() < image.x1() && image.x0() < b.bbox.x1();
    blocks
        .iter()
        .position(|b| same_column(b) && b.bbox.y0() >= image.y0())
        .or_else(|| {
            blocks
                .iter()
                .rposition(|b| same_column(b) && b.bbox.y0() < image.y0())
                .map(|at| at + 1)
        })
        .unwrap_or(blocks.len())
}

/// A render that failed for the document's sake (pdfium refused it, or stopped on it) is the
/// document's fault, as it is on the text backend; other failures stay the backend's.
fn document_fault(err: VlmError) -> ParseError {
    match err {
        VlmError::Render { page, source } => match source.downcast::<WorkRenderError>() {
            Ok(render) => match *render {
                WorkRenderError::Pdf(pdf) => ParseError::Pdf(pdf),
                WorkRenderError::Abandoned => ParseError::Abandoned,
            },
            Err(source) => ParseError::Vlm(VlmError::Render { page, source }),
        },
        other => ParseError::Vlm(other),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ParseError> + Send + 'static,
) -> Result<T, ParseError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ParseError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_take_their_place_in_the_reading_order_of_their_column() {
        use BlockType::{Image, Text};
        let at = |[x0, y0, x1, y1]: [u32; 4]| BBox::new(x0, y0, x1, y1).expect("valid box");
        let text = |bbox| Block::new(BlockType::Text, at(bbox));
        // Two columns, read left then right.
        let mut blocks = vec![
            text([50, 50, 480, 200]),
            text([50, 600, 480, 700]),
            text([520, 50, 950, 400]),
        ];
        let image = |bbox, byte| PageImage {
            bbox: at(bbox),
            jpeg: vec![byte],
        };
        let placed = place_images(
            &mut blocks,
            vec![
                // Below the right column's only block: after it, not at the end of the left.
                image([520, 450, 950, 600], 1),
                // Between the left column's blocks.
                image([50, 250, 480, 500], 2),
            ],
        );
        let kinds: Vec<BlockType> = blocks.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, [Text, Image, Text, Text, Image]);
        assert_eq!(placed, [(1, vec![2]), (4, vec![1])]);
    }

    #[test]
    fn a_scan_beneath_a_text_layer_is_no_figure() {
        let whole_page = PageImage {
            bbox: BBox::new(0, 0, 1000, 1000).expect("valid box"),
            jpeg: vec![1],
        };
        let mut words = vec![Block {
            content: Some("OCR text".into()),
            ..Block::new(
                BlockType::Text,
                BBox::new(50, 50, 950, 200).expect("valid box"),
            )
        }];
        assert!(place_images(&mut words, vec![whole_page.clone()]).is_empty());
        assert_eq!(words.len(), 1);
        // A page of nothing but the image keeps it.
        let mut nothing = Vec::new();
        assert_eq!(place_images(&mut nothing, vec![whole_page]).len(), 1);
    }

    #[test]
    fn page_ranges_parse_as_users_write_them() {
        let r = |s: &str| s.parse::<PageRange>();
        assert_eq!(r("3").map(|p| p.resolve(10).ok()), Ok(Some(2..3)));
        assert_eq!(r("2-5").map(|p| p.resolve(10).ok()), Ok(Some(1..5)));
        assert_eq!(r("4-").map(|p| p.resolve(10).ok()), Ok(Some(3..10)));
        assert_eq!(r("2-50").map(|p| p.resolve(10).ok()), Ok(Some(1..10)));
        assert!(r("0").is_err());
        assert!(r("5-2").is_err());
        assert!(r("a-b").is_err());
        assert!(r("").is_err());
    }

    #[test]
    fn a_start_page_past_any_end_is_refused_without_overflow() {
        assert!(PageRange::from_zero_based(usize::MAX, None).is_err());
        assert!(PageRange::from_zero_based(usize::MAX - 1, None).is_ok());
    }

    #[test]
    fn dropping_the_job_abandons_its_work_and_the_work_keeps_what_it_holds() {
        let held = Arc::new(());
        let job = Job::holding(held.clone());
        let work = job.work().clone();
        assert!(!work.abandoned());
        drop(job);
        assert!(work.abandoned());
        assert_eq!(Arc::strong_count(&held), 2, "held while the work runs");
        drop(work);
        assert_eq!(Arc::strong_count(&held), 1, "released when it stops");
    }

    #[test]
    fn pixels_are_limited_per_page_and_per_document() {
        let limits = PixelLimits {
            per_page: 10,
            per_document: 25,
        };
        let used = AtomicU64::new(0);
        assert!(limits.admit(0, 10, &used).is_ok());
        assert!(matches!(
            limits.admit(1, 11, &used),
            Err(PdfError::PageTooManyPixels {
                page: 1,
                pixels: 11,
                limit: 10
            })
        ));
        assert!(limits.admit(2, 10, &used).is_ok());
        assert!(matches!(
            limits.admit(3, 6, &used),
            Err(PdfError::DocumentTooManyPixels { page: 3, limit: 25 })
        ));
    }

    #[test]
    fn a_range_past_the_end_is_an_error() {
        let err = "7-9".parse::<PageRange>().map(|p| p.resolve(3));
        assert!(matches!(
            err,
            Ok(Err(ParseError::PagesOutOfRange { count: 3, .. }))
        ));
    }
}
