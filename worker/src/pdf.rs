//! PDF access through pdfium: locating and binding libpdfium, opening untrusted documents with
//! typed errors, rendering pages as MinerU does (200 DPI, long side ≤ 3500 px, RGB) and reading
//! the text layer in display coordinates for the `text` backend.
//!
//! pdfium-render's `thread_safe` feature puts every pdfium call behind one process-wide lock, so
//! pdfium work never runs in parallel inside a process. [`Document`] is cheap to clone, `Send` and
//! `Sync`, so an async caller moves it into `tokio::task::spawn_blocking` and keeps its network
//! requests in flight while a page renders. [`Pages`] is what the backends need of a document;
//! the server gets it from [`crate::render_pool`], whose subprocesses run this module.

use std::borrow::Cow;
use std::env;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use image::RgbImage;
use mineru_protocol::model::{BBOX_SCALE, BBox};
use pdfium_render::prelude::*;
use serde::{Deserialize, Serialize};

/// The environment variable users point at a pdfium-binaries build (file or directory).
pub const PDFIUM_PATH_ENV: &str = "PDFIUM_DYNAMIC_LIB_PATH";
/// The pypdfium2 release whose wheel the install script takes libpdfium.so from.
pub const PDFIUM_CACHE_VERSION: &str = "5.15.2";
/// MinerU renders at 200 DPI.
pub const RENDER_DPI: f32 = 200.0;
/// MinerU caps the long side of a render at this many pixels.
pub const MAX_RENDER_SIDE: u32 = 3500;
/// Page sides outside this range (in points) are rejected: Acrobat's limit is 14 400 pt (200
/// inches), and anything under a point cannot hold content.
pub const PAGE_SIDE_RANGE_PT: std::ops::RangeInclusive<f32> = 1.0..=14_400.0;

/// Why libpdfium could not be made available.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum LibraryError {
    #[error(
        "libpdfium.so not found (searched: {searched}); run worker/scripts/install-pdfium.sh, or \
         download a pdfium-binaries build (https://github.com/bblanchon/pdfium-binaries) and set \
         PDFIUM_DYNAMIC_LIB_PATH to libpdfium.so or its directory"
    )]
    NotFound { searched: String },
    #[error(
        "cannot load pdfium from {path}: {reason}; reinstall it with worker/scripts/install-pdfium.sh \
         or point PDFIUM_DYNAMIC_LIB_PATH at a pdfium-binaries build"
    )]
    Load { path: PathBuf, reason: String },
    /// A render subprocess could not be started or given its document.
    #[error("pdfium's render subprocess is unavailable: {0}")]
    Subprocess(String),
}

/// Why a document or page could not be processed. Every variant is a property of the input (or of
/// the pdfium installation), never a panic. `page` fields are 0-based indices; messages count
/// pages from 1, as readers do. Serialisable, so a render subprocess reports it as it is.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
pub enum PdfError {
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error("not a PDF (no %PDF- header in the first 1024 bytes)")]
    NotPdf,
    #[error("truncated PDF (no %%EOF marker at the end of the file)")]
    Truncated,
    #[error("corrupt PDF: pdfium cannot parse it ({0})")]
    Corrupt(Cow<'static, str>),
    #[error("encrypted PDF: a password is required to open it")]
    Encrypted,
    #[error("encrypted PDF with an unsupported security handler")]
    UnsupportedSecurity,
    #[error("PDF has no pages")]
    NoPages,
    #[error("page {}: size {width}x{height} pt is outside 1..=14400 pt", page + 1)]
    AbsurdPageSize {
        page: usize,
        width: f32,
        height: f32,
    },
    #[error("page {} does not exist (the document has {count} pages)", page + 1)]
    PageOutOfRange { page: usize, count: usize },
    #[error("page {}: {operation} failed in pdfium: {detail}", page + 1)]
    Page {
        page: usize,
        operation: Cow<'static, str>,
        detail: String,
    },
    /// The page's images would decode to more pixels than a page may hold.
    #[error(
        "page {}: its images decode to {} megapixels, over the limit of {} per page \
         (--max-page-pixels)",
        page + 1, pixels / 1_000_000, limit / 1_000_000
    )]
    PageTooManyPixels {
        page: usize,
        pixels: u64,
        limit: u64,
    },
    /// The document's images, page after page, would decode to more pixels than one document
    /// may hold.
    #[error(
        "page {}: the document's images decode to more than {} megapixels in all, the limit per \
         document (--max-document-pixels)",
        page + 1, limit / 1_000_000
    )]
    DocumentTooManyPixels { page: usize, limit: u64 },
    /// The subprocess working on the document was stopped: it crossed its memory or CPU limit,
    /// ran past its deadline, or crashed. The document costs itself, nobody else.
    #[error("{}pdfium {reason}", page.map(|p| format!("page {}: ", p + 1)).unwrap_or_default())]
    Stopped { page: Option<usize>, reason: String },
    /// Reading the document's file failed (the upload spilled to disk).
    #[error("cannot read the document: {0}")]
    Io(String),
}

static PDFIUM: OnceLock<Result<Pdfium, LibraryError>> = OnceLock::new();

/// The process-wide pdfium binding, bound on first use. A failed lookup is remembered so every
/// caller gets the same actionable message without retrying dlopen.
pub fn library() -> Result<&'static Pdfium, LibraryError> {
    PDFIUM
        .get_or_init(bind)
        .as_ref()
        .map_err(LibraryError::clone)
}

fn bind() -> Result<Pdfium, LibraryError> {
    let candidates = library_candidates(
        env::var_os(PDFIUM_PATH_ENV).map(PathBuf::from),
        env::current_exe().ok(),
        cache_dir(),
    );
    let found = candidates.iter().find(|p| p.is_file());
    let Some(path) = found else {
        let searched = candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(LibraryError::NotFound { searched });
    };
    let bindings = Pdfium::bind_to_library(path).map_err(|e| LibraryError::Load {
        path: path.clone(),
        reason: match e {
            PdfiumError::LoadLibraryError(err) => with_sources(&err),
            other => format!("{other:?}"),
        },
    })?;
    Ok(Pdfium::new(bindings))
}

/// An error and its causes on one line (libloading keeps dlerror's text in the source).
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Where libpdfium may live, in lookup order: the environment variable (a file, or a directory
/// holding libpdfium.so), next to the executable, then the install script's cache.
pub fn library_candidates(
    env_path: Option<PathBuf>,
    current_exe: Option<PathBuf>,
    cache: Option<PathBuf>,
) -> Vec<PathBuf> {
    let name = Pdfium::pdfium_platform_library_name();
    let mut out = Vec::new();
    if let Some(p) = env_path.filter(|p| !p.as_os_str().is_empty()) {
        if p.is_dir() {
            out.push(p.join(&name));
        } else {
            out.push(p);
        }
    }
    if let Some(dir) = current_exe.as_deref().and_then(Path::parent) {
        out.push(dir.join(&name));
    }
    if let Some(dir) = cache {
        out.push(dir.join(&name));
    }
    out
}

/// The install script's cache directory:
/// `${MINERU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mineru-operator}/pdfium/<version>`.
pub fn cache_dir() -> Option<PathBuf> {
    let non_empty = |k: &str| env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let root = non_empty("MINERU_CACHE").or_else(|| {
        non_empty("XDG_CACHE_HOME")
            .or_else(|| non_empty("HOME").map(|h| h.join(".cache")))
            .map(|c| c.join("mineru-operator"))
    })?;
    Some(root.join("pdfium").join(PDFIUM_CACHE_VERSION))
}

/// An open PDF. Cloning shares the same pdfium document.
#[derive(Clone)]
pub struct Document {
    inner: Arc<PdfDocument<'static>>,
    page_count: usize,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("page_count", &self.page_count)
            .finish_non_exhaustive()
    }
}

impl Document {
    /// Opens a PDF from memory. Checks the header and trailer before pdfium sees the bytes (pdfium
    /// silently repairs truncated files), then every page's size.
    pub fn open(bytes: Vec<u8>) -> Result<Self, PdfError> {
        check_envelope(&bytes, &bytes)?;
        let doc = library()?
            .load_pdf_from_byte_vec(bytes, None)
            .map_err(load_error)?;
        Self::checked(doc)
    }

    /// Opens a PDF from a file, as [`Document::open`] does; pdfium reads only the parts it needs.
    pub fn open_file(path: &Path) -> Result<Self, PdfError> {
        let io = |e: std::io::Error| PdfError::Io(e.to_string());
        let mut file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut head = vec![0; len.min(1024) as usize];
        file.read_exact(&mut head).map_err(io)?;
        let mut tail = vec![0; len.min(1024) as usize];
        file.seek(SeekFrom::End(-(tail.len() as i64))).map_err(io)?;
        file.read_exact(&mut tail).map_err(io)?;
        check_envelope(&head, &tail)?;
        file.rewind().map_err(io)?;
        let doc = library()?
            .load_pdf_from_reader(file, None)
            .map_err(load_error)?;
        Self::checked(doc)
    }

    fn checked(doc: PdfDocument<'static>) -> Result<Self, PdfError> {
        let pages = doc.pages();
        let page_count = usize::try_from(pages.len()).unwrap_or(0);
        if page_count == 0 {
            return Err(PdfError::NoPages);
        }
        for (page, index) in (0..pages.len()).enumerate() {
            let size = pages
                .page_size(index)
                .map_err(|e| page_error(page, "size", e))?;
            let (width, height) = (size.width().value, size.height().value);
            if !PAGE_SIDE_RANGE_PT.contains(&width) || !PAGE_SIDE_RANGE_PT.contains(&height) {
                return Err(PdfError::AbsurdPageSize {
                    page,
                    width,
                    height,
                });
            }
        }
        Ok(Self {
            inner: Arc::new(doc),
            page_count,
        })
    }

    pub fn page_count(&self) -> usize {
        self.page_count
    }

    fn page(&self, page: usize) -> Result<PdfPage<'static>, PdfError> {
        let index = PdfPageIndex::try_from(page)
            .ok()
            .filter(|_| page < self.page_count)
            .ok_or(PdfError::PageOutOfRange {
                page,
                count: self.page_count,
            })?;
        self.inner
            .pages()
            .get(index)
            .map_err(|e| page_error(page, "load", e))
    }

    /// Renders a page as MinerU does: scale 200/72, lowered so the long side stays within 3500 px,
    /// with page rotation applied, as RGB. Blocks on pdfium's process-wide lock.
    pub fn render_page(&self, page: usize) -> Result<RgbImage, PdfError> {
        let pdf_page = self.page(page)?;
        let (width, height) = render_size(pdf_page.width().value, pdf_page.height().value);
        let (w, h) = (width as usize, height as usize);
        // pdfium renders straight into the image's own buffer: BGR with reversed byte order is
        // RGB, and rows are padded to 4 bytes (pdfium's pitch), squeezed out afterwards.
        let row = w * 3;
        let stride = row.next_multiple_of(4);
        let mut pixels = vec![0u8; stride * h];
        let config = PdfRenderConfig::new()
            .set_target_size(width as Pixels, height as Pixels)
            .set_reverse_byte_order(true);
        {
            let mut bitmap = PdfBitmap::from_bytes(
                width as Pixels,
                height as Pixels,
                PdfBitmapFormat::BGR,
                &mut pixels,
            )
            .map_err(|e| page_error(page, "render", e))?;
            pdf_page
                .render_into_bitmap_with_config(&mut bitmap, &config)
                .map_err(|e| page_error(page, "render", e))?;
        }
        if stride != row {
            for y in 1..h {
                pixels.copy_within(y * stride..y * stride + row, y * row);
            }
            pixels.truncate(row * h);
        }
        RgbImage::from_raw(width, height, pixels).ok_or_else(|| PdfError::Page {
            page,
            operation: Cow::Borrowed("render"),
            detail: "bitmap buffer does not match its dimensions".into(),
        })
    }

    /// Pixels the page's images decode to (images inside forms included), read from their
    /// dictionaries without decoding them.
    pub fn image_pixels(&self, page: usize) -> Result<u64, PdfError> {
        let pdf_page = self.page(page)?;
        let display = DisplayTransform::of(&pdf_page).map_err(|e| page_error(page, "layout", e))?;
        Ok(Graphics::of(&pdf_page, &display).image_pixels)
    }

    /// The page's images (those drawn on the page itself, not inside form XObjects) as stored:
    /// each image object's bitmap without its mask or transform, as JPEG, with where it is shown.
    /// Images too small to be figures (rules, bullets, spacers) are left out.
    pub fn page_images(&self, page: usize) -> Result<Vec<PageImage>, PdfError> {
        let pdf_page = self.page(page)?;
        let display = DisplayTransform::of(&pdf_page).map_err(|e| page_error(page, "layout", e))?;
        let mut images = Vec::new();
        // Every draw of an image decodes it again, so the page's budget counts draws.
        let mut pixels_left = MAX_IMAGE_PIXELS;
        for object in pdf_page.objects().iter() {
            let Some(image) = object.as_image_object() else {
                continue;
            };
            if images.len() == MAX_IMAGES_PER_PAGE {
                tracing::warn!(
                    page,
                    "more images than {MAX_IMAGES_PER_PAGE}: the rest are left out"
                );
                break;
            }
            let Some(bbox) = object
                .bounds()
                .ok()
                .and_then(|b| display.bbox(&b.to_rect()))
                .filter(|b| b.x1() - b.x0() >= MIN_IMAGE_SIDE && b.y1() - b.y0() >= MIN_IMAGE_SIDE)
            else {
                continue;
            };
            // The size is read from the image's header, so a bomb is refused before pdfium
            // decodes it; an image that is refused or does not decode is left out, the page's
            // text is not lost for it.
            let pixels = match (image.width(), image.height()) {
                (Ok(w), Ok(h)) => u64::from(w.unsigned_abs()) * u64::from(h.unsigned_abs()),
                _ => u64::MAX,
            };
            if pixels > pixels_left {
                tracing::warn!(
                    page,
                    pixels,
                    "an image past the page's pixel budget is left out"
                );
                continue;
            }
            pixels_left -= pixels;
            let jpeg = image
                .get_raw_image()
                .map_err(|e| e.to_string())
                .and_then(|bitmap| {
                    crate::output::encode_jpeg(&bitmap.to_rgb8()).map_err(|e| e.to_string())
                });
            match jpeg {
                Ok(jpeg) => images.push(PageImage { bbox, jpeg }),
                Err(error) => {
                    tracing::warn!(page, %error, "an image that does not decode is left out")
                }
            }
        }
        Ok(images)
    }

    /// The page's text layer and a summary of its graphics, in display coordinates (points, origin
    /// top-left, page rotation applied).
    pub fn page_text(&self, page: usize) -> Result<PageText, PdfError> {
        let pdf_page = self.page(page)?;
        let display = DisplayTransform::of(&pdf_page).map_err(|e| page_error(page, "layout", e))?;
        let text = pdf_page.text().map_err(|e| page_error(page, "text", e))?;
        let mut chars = Vec::with_capacity(usize::try_from(text.len()).unwrap_or(0));
        for c in text.chars().iter() {
            let ch = match c.unicode_char() {
                None | Some('\r' | '\n') => continue,
                // pdfium marks a hyphen that breaks a word at a line end with U+0002.
                Some('\u{2}') => '-',
                Some(ch) => ch,
            };
            let Ok(bounds) = c.loose_bounds() else {
                continue;
            };
            let rect = display.rect(&bounds);
            let font_size = c.scaled_font_size().value;
            // Extreme matrices give characters no place on the page; they cannot be laid out
            // (nor cross the render subprocesses' JSON).
            if ![rect.x0, rect.y0, rect.x1, rect.y1, font_size]
                .iter()
                .all(|v| v.is_finite())
            {
                continue;
            }
            let angle = c.angle_degrees().unwrap_or(0.0);
            chars.push(TextChar {
                ch,
                rect,
                font_size,
                bold: is_bold(&c),
                orientation: display.orientation(angle),
                generated: c.is_generated().unwrap_or(false),
            });
        }
        let graphics = Graphics::of(&pdf_page, &display);
        Ok(PageText {
            width: display.width,
            height: display.height,
            rotation: match pdf_page.rotation() {
                Ok(PdfPageRenderRotation::Degrees90) => 90,
                Ok(PdfPageRenderRotation::Degrees180) => 180,
                Ok(PdfPageRenderRotation::Degrees270) => 270,
                _ => 0,
            },
            chars,
            graphics,
        })
    }
}

/// What the backends need of an open document, whether pdfium runs in this process
/// ([`Document`]) or in a render subprocess ([`crate::render_pool::PooledDocument`]).
pub trait Pages: Send + Sync + std::fmt::Debug {
    fn page_count(&self) -> usize;
    /// The page rendered as MinerU does (see [`Document::render_page`]).
    fn render_page(&self, page: usize) -> Result<RgbImage, PdfError>;
    fn page_text(&self, page: usize) -> Result<PageText, PdfError>;
    /// Pixels the page's images decode to (see [`Document::image_pixels`]).
    fn image_pixels(&self, page: usize) -> Result<u64, PdfError>;
    /// The page's images (see [`Document::page_images`]).
    fn page_images(&self, page: usize) -> Result<Vec<PageImage>, PdfError>;
}

impl Pages for Document {
    fn page_count(&self) -> usize {
        self.page_count
    }

    fn render_page(&self, page: usize) -> Result<RgbImage, PdfError> {
        Document::render_page(self, page)
    }

    fn page_text(&self, page: usize) -> Result<PageText, PdfError> {
        Document::page_text(self, page)
    }

    fn image_pixels(&self, page: usize) -> Result<u64, PdfError> {
        Document::image_pixels(self, page)
    }

    fn page_images(&self, page: usize) -> Result<Vec<PageImage>, PdfError> {
        Document::page_images(self, page)
    }
}

/// The render size for a page of `width`×`height` points: MinerU's scale rule, rounded up as
/// pypdfium2 does.
pub fn render_size(width: f32, height: f32) -> (u32, u32) {
    let long_side = width.max(height);
    let mut scale = RENDER_DPI / 72.0;
    if long_side * scale > MAX_RENDER_SIDE as f32 {
        scale = MAX_RENDER_SIDE as f32 / long_side;
    }
    let side = |v: f32| ((v * scale).ceil() as u32).clamp(1, MAX_RENDER_SIDE);
    (side(width), side(height))
}

/// Checks the first and last kilobyte of a file (`head` and `tail` may be the whole file).
fn check_envelope(head: &[u8], tail: &[u8]) -> Result<(), PdfError> {
    // pdfium accepts the header anywhere in the first kilobyte, as the PDF spec's readers do.
    let head = &head[..head.len().min(1024)];
    if !contains(head, b"%PDF-") {
        return Err(PdfError::NotPdf);
    }
    let tail = &tail[tail.len().saturating_sub(1024)..];
    if !contains(tail, b"%%EOF") {
        return Err(PdfError::Truncated);
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn load_error(e: PdfiumError) -> PdfError {
    match e {
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => {
            PdfError::Encrypted
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::SecurityError) => {
            PdfError::UnsupportedSecurity
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::FormatError) => {
            PdfError::Corrupt(Cow::Borrowed("format error"))
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::FileError) => {
            PdfError::Corrupt(Cow::Borrowed("file error"))
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PageError) => {
            PdfError::Corrupt(Cow::Borrowed("page tree error"))
        }
        _ => PdfError::Corrupt(Cow::Borrowed("unknown error")),
    }
}

fn page_error(page: usize, operation: &'static str, e: PdfiumError) -> PdfError {
    PdfError::Page {
        page,
        operation: Cow::Borrowed(operation),
        detail: format!("{e:?}"),
    }
}

fn is_bold(c: &PdfPageTextChar) -> bool {
    let weight_bold = match c.font_weight() {
        Some(PdfFontWeight::Weight600)
        | Some(PdfFontWeight::Weight700Bold)
        | Some(PdfFontWeight::Weight800)
        | Some(PdfFontWeight::Weight900) => true,
        Some(PdfFontWeight::Custom(w)) => w >= 600,
        _ => false,
    };
    // Built-in (non-embedded) fonts often report no weight; their names still say it.
    weight_bold || c.font_is_bold_reenforced() || {
        let name = c.font_name().to_ascii_lowercase();
        name.contains("bold") || name.contains("black") || name.contains("heavy")
    }
}

/// A rectangle in display space: points, origin at the top-left of the page as shown.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rect {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl Rect {
    pub fn width(&self) -> f32 {
        self.x1 - self.x0
    }
    pub fn height(&self) -> f32 {
        self.y1 - self.y0
    }
    pub fn union(&self, other: &Rect) -> Rect {
        Rect {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
        }
    }
}

/// Which way a character's baseline runs on the displayed page, clockwise from left-to-right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Orientation {
    Up,
    Right,
    Down,
    Left,
}

/// One character of the text layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextChar {
    pub ch: char,
    pub rect: Rect,
    /// Effective font size in points.
    pub font_size: f32,
    pub bold: bool,
    pub orientation: Orientation,
    /// Inserted by pdfium (word spaces it inferred), not present in the content stream.
    pub generated: bool,
}

/// Non-text content of a page, for the text-vs-scan decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Graphics {
    /// Page objects of any kind.
    pub objects: usize,
    pub images: usize,
    pub paths: usize,
    /// Share of the page covered by the union of image bounding boxes' areas, capped at 1.
    pub image_coverage: f32,
    /// Pixels the images decode to, by their dictionaries' sizes.
    pub image_pixels: u64,
}

/// The smallest side, in MinerU's 0..=1000 page frame, of an image taken for a figure.
const MIN_IMAGE_SIDE: u16 = 10;
/// The most pixels the images extracted from one page may hold together: a page render's
/// default budget ([`crate::parse::PixelLimits`]).
const MAX_IMAGE_PIXELS: u64 = 100_000_000;
/// The most images extracted from one page.
const MAX_IMAGES_PER_PAGE: usize = 64;

/// An image drawn on a page: where it is shown, and its bitmap as JPEG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageImage {
    pub bbox: BBox,
    pub jpeg: Vec<u8>,
}

/// The text layer of one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageText {
    /// Displayed page size in points.
    pub width: f32,
    pub height: f32,
    /// The page's /Rotate, clockwise degrees.
    pub rotation: u16,
    pub chars: Vec<TextChar>,
    pub graphics: Graphics,
}

/// Maps PDF user space to display space (points, y down, /Rotate applied). pdfium's own
/// page-to-device mapping is sampled at three points once per page, so per-character work stays
/// in Rust instead of crossing the pdfium lock twice per character.
struct DisplayTransform {
    width: f32,
    height: f32,
    origin: (f32, f32),
    ex: (f32, f32),
    ey: (f32, f32),
}

impl DisplayTransform {
    /// Device pixels per point while sampling; large so integer rounding stays far below 0.01 pt.
    const SAMPLE_SCALE: f32 = 100.0;
    const SAMPLE_SPAN: f32 = 1000.0;

    fn of(page: &PdfPage) -> Result<Self, PdfiumError> {
        let config = PdfRenderConfig::new().scale_page_by_factor(Self::SAMPLE_SCALE);
        let sample = |x: f32, y: f32| -> Result<(f32, f32), PdfiumError> {
            let (dx, dy) = page.points_to_pixels(PdfPoints::new(x), PdfPoints::new(y), &config)?;
            Ok((
                dx as f32 / Self::SAMPLE_SCALE,
                dy as f32 / Self::SAMPLE_SCALE,
            ))
        };
        let origin = sample(0.0, 0.0)?;
        let px = sample(Self::SAMPLE_SPAN, 0.0)?;
        let py = sample(0.0, Self::SAMPLE_SPAN)?;
        let unit = |p: (f32, f32)| {
            (
                (p.0 - origin.0) / Self::SAMPLE_SPAN,
                (p.1 - origin.1) / Self::SAMPLE_SPAN,
            )
        };
        Ok(Self {
            width: page.width().value,
            height: page.height().value,
            origin,
            ex: unit(px),
            ey: unit(py),
        })
    }

    fn point(&self, x: f32, y: f32) -> (f32, f32) {
        (
            self.origin.0 + x * self.ex.0 + y * self.ey.0,
            self.origin.1 + x * self.ex.1 + y * self.ey.1,
        )
    }

    fn rect(&self, r: &PdfRect) -> Rect {
        let a = self.point(r.left().value, r.bottom().value);
        let b = self.point(r.right().value, r.top().value);
        Rect {
            x0: a.0.min(b.0),
            y0: a.1.min(b.1),
            x1: a.0.max(b.0),
            y1: a.1.max(b.1),
        }
    }

    /// A rectangle in MinerU's 0..=1000 frame of the displayed page, clipped to the page; `None`
    /// when nothing of it is on the page.
    fn bbox(&self, r: &PdfRect) -> Option<BBox> {
        let d = self.rect(r);
        let scale = f32::from(BBOX_SCALE);
        let frame = |v: f32, size: f32| (v / size * scale).round().clamp(0.0, scale) as u32;
        BBox::new(
            frame(d.x0, self.width),
            frame(d.y0, self.height),
            frame(d.x1, self.width),
            frame(d.y1, self.height),
        )
    }

    /// The display orientation of a baseline at `angle` degrees clockwise in user space (pdfium's
    /// FPDFText_GetCharAngle measures atan2(c, a) of the text matrix, i.e. clockwise).
    fn orientation(&self, angle: f32) -> Orientation {
        let (s, c) = (-angle).to_radians().sin_cos();
        let dx = c * self.ex.0 + s * self.ey.0;
        let dy = c * self.ex.1 + s * self.ey.1;
        // Display space points y down, so atan2 gives the clockwise angle.
        let degrees = dy.atan2(dx).to_degrees().rem_euclid(360.0);
        match ((degrees + 45.0) / 90.0) as u32 % 4 {
            1 => Orientation::Right,
            2 => Orientation::Down,
            3 => Orientation::Left,
            _ => Orientation::Up,
        }
    }
}

impl Graphics {
    /// Form XObjects nest at most this deep here; deeper content still renders, it just does not
    /// count towards the scan decision.
    const MAX_FORM_DEPTH: usize = 8;

    fn of(page: &PdfPage, display: &DisplayTransform) -> Self {
        let mut g = Graphics::default();
        let mut image_area = 0.0f32;
        for object in page.objects().iter() {
            g.objects += 1;
            let images = g.count(&object, 0);
            // Scanners often wrap the page image in a form XObject; the form's bounds are in page
            // space, its children's are not, so the form stands in for the images it holds.
            if images > 0
                && let Ok(bounds) = object.bounds()
            {
                let r = display.rect(&bounds.to_rect());
                image_area += r.width().max(0.0) * r.height().max(0.0);
            }
        }
        let page_area = (display.width * display.height).max(1.0);
        g.image_coverage = (image_area / page_area).clamp(0.0, 1.0);
        g
    }

    /// Counts the object's images and paths (inside forms too); returns its number of images.
    fn count(&mut self, object: &PdfPageObject, depth: usize) -> usize {
        match object.object_type() {
            PdfPageObjectType::Image => {
                self.images += 1;
                if let Some(image) = object.as_image_object() {
                    let side = |side: Result<Pixels, PdfiumError>| {
                        side.ok().and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
                    };
                    let pixels = side(image.width()).saturating_mul(side(image.height()));
                    self.image_pixels = self.image_pixels.saturating_add(pixels);
                }
                1
            }
            PdfPageObjectType::Path | PdfPageObjectType::Shading => {
                self.paths += 1;
                0
            }
            PdfPageObjectType::XObjectForm if depth < Self::MAX_FORM_DEPTH => {
                object.as_x_object_form_object().map_or(0, |form| {
                    form.iter().map(|child| self.count(&child, depth + 1)).sum()
                })
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_size_is_200_dpi_rounded_up() {
        // US Letter: 612x792 pt at 200/72.
        assert_eq!(render_size(612.0, 792.0), (1700, 2200));
    }

    #[test]
    fn render_size_caps_the_long_side() {
        let (w, h) = render_size(1224.0, 2000.0);
        assert_eq!(h, MAX_RENDER_SIDE);
        assert_eq!(w, (1224.0f32 * 3500.0 / 2000.0).ceil() as u32);
    }

    #[test]
    fn envelope_rejects_missing_header_and_trailer() {
        let check = |bytes: &[u8]| check_envelope(bytes, bytes);
        assert!(matches!(check(b"hello"), Err(PdfError::NotPdf)));
        assert!(matches!(
            check(b"%PDF-1.7\n1 0 obj"),
            Err(PdfError::Truncated)
        ));
        assert!(check(b"junk%PDF-1.7\n...\n%%EOF\n").is_ok());
        assert!(matches!(check(b""), Err(PdfError::NotPdf)));
    }

    #[test]
    fn library_candidates_follow_lookup_order() {
        let dir = std::env::temp_dir();
        let got = library_candidates(
            Some(dir.clone()),
            Some(PathBuf::from("/opt/bin/mineru-worker")),
            Some(PathBuf::from("/cache/pdfium/5.15.2")),
        );
        assert_eq!(
            got,
            vec![
                dir.join("libpdfium.so"),
                PathBuf::from("/opt/bin/libpdfium.so"),
                PathBuf::from("/cache/pdfium/5.15.2/libpdfium.so"),
            ]
        );
        let file = library_candidates(Some(PathBuf::from("/x/custom.so")), None, None);
        assert_eq!(file, vec![PathBuf::from("/x/custom.so")]);
    }
}
