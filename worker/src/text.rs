//! Backend `text`: MinerU-shaped blocks from pdfium's text layer, without a model.
//!
//! The page analysis is a pure function of [`PageText`] (characters with positions, sizes and
//! weights): characters become fragments, fragments become lines grouped by column, lines become
//! paragraphs and headings. Tables and formulas cannot be recognised from the text layer; every
//! page summary says so, and pages whose text layer is missing or unreadable are flagged as
//! needing OCR instead of coming out silently empty.
//!
//! Running headers and footers are told apart from titles by repetition: a line at a page edge is
//! furniture only when another parsed page repeats it near the same edge (see [`parse`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use crate::output::{Backend, PageResult};
use crate::pdf::{Orientation, PageText, Pages, PdfError, Rect, TextChar};
use mineru_protocol::model::{Angle, BBOX_SCALE, BBox, Block, BlockType, Page};

/// MinerU's rule of thumb: fewer clean characters than this on a page means it needs OCR.
pub const MIN_CLEAN_CHARS: usize = 50;
/// Images covering at least this share of a page make a short text layer suspicious.
const SCAN_IMAGE_COVERAGE: f32 = 0.1;
/// A text layer with more unreadable characters than this share is treated as absent.
const MAX_GARBLED_SHARE: f32 = 0.3;
/// Horizontal gap, in font sizes, that splits a line into separate fragments (column gutters,
/// table cells).
const FRAGMENT_GAP_EM: f32 = 1.5;
/// Gap, in font sizes, above which two glyphs without a space between them get one.
const WORD_GAP_EM: f32 = 0.25;
/// A line at least this much larger than the body text is a heading.
const HEADING_SIZE_RATIO: f32 = 1.15;
/// Top and bottom bands (share of page height) where headers, footers and page numbers live.
const FURNITURE_BAND: f32 = 0.1;
/// Furniture stands apart from the body by at least this many of its own line heights.
const FURNITURE_GAP_LINES: f32 = 1.0;
/// More fragments than this at a page edge are content, not a running header or footer.
const MAX_FURNITURE_FRAGMENTS: usize = 6;
/// A running header or footer repeats within this share of the page height of its position.
const RUNNING_OFFSET_TOLERANCE: f32 = 0.03;
/// Font sizes of a repeated header or footer differ by at most this share.
const RUNNING_SIZE_TOLERANCE: f32 = 0.1;
/// A glyph's loose box (font ascent to descent) is about this many font sizes high.
const LOOSE_BOX_EM: f32 = 1.2;
/// The narrowest strip (points) taken for a column gutter.
const MIN_GUTTER_PT: usize = 4;
/// Gutter positions examined per page at most.
const MAX_GUTTER_CANDIDATES: usize = 32;

/// The note every page of this backend carries: what it cannot do.
pub const LIMITATIONS_NOTE: &str =
    "text backend: tables, formulas and images are not recognised (text layer only)";

/// Runs the text backend over `pages` of `doc`, calling `on_page` after each page; it returns
/// false to stop there (the request is gone).
///
/// Running headers and footers are recognised by repetition among the pages parsed here: a
/// selection of one page (or a document of one) keeps its edge lines as content, and only page
/// numbers are discarded.
pub fn parse(
    doc: &dyn Pages,
    pages: Range<usize>,
    mut on_page: impl FnMut(usize) -> bool,
) -> Result<Vec<PageResult>, PdfError> {
    let mut drafts = Vec::with_capacity(pages.len());
    for page_idx in pages {
        let text = doc.page_text(page_idx)?;
        drafts.push(PageDraft::new(&text, page_idx));
        if !on_page(page_idx) {
            break;
        }
    }
    Ok(finish(drafts))
}

/// Blocks, OCR verdict and notes for one page analysed alone: with no other page to repeat its
/// edge lines, only page numbers are furniture.
pub fn analyze_page(text: &PageText, page_idx: usize) -> PageResult {
    let mut pages = finish(vec![PageDraft::new(text, page_idx)]);
    pages.remove(0)
}

/// Settles which edge lines are running furniture across `drafts`, then lays out every page.
fn finish(mut drafts: Vec<PageDraft>) -> Vec<PageResult> {
    confirm_running_furniture(&mut drafts);
    let mut out: Vec<PageResult> = drafts.into_iter().map(PageDraft::into_result).collect();
    link_across_pages(&mut out);
    out
}

/// One page analysed up to the point where its edge lines need the other pages' evidence.
struct PageDraft {
    page_idx: usize,
    needs_ocr: bool,
    notes: Vec<String>,
    groups: Vec<GroupDraft>,
}

/// The fragments of one reading direction of a page, in that direction's upright frame.
struct GroupDraft {
    frame: Frame,
    body: Vec<Fragment>,
    /// Furniture whether or not another page repeats it.
    page_numbers: Vec<Fragment>,
    candidates: Vec<EdgeCandidate>,
}

/// A fragment at a page edge, set apart from the body: a running header or footer if another
/// page repeats it there, content (often a title) otherwise.
struct EdgeCandidate {
    edge: Edge,
    fragment: Fragment,
    /// The text with digit runs folded, so `Page 3 of 10` and `Page 4 of 10` match.
    signature: String,
    /// Distance from its edge as a share of the frame height.
    offset: f32,
    running: bool,
}

impl PageDraft {
    fn new(text: &PageText, page_idx: usize) -> Self {
        let verdict = classify(text);
        let groups = orientation_groups(&text.chars)
            .into_iter()
            .map(|(orientation, chars)| {
                GroupDraft::new(Frame::new(orientation, text.width, text.height), &chars)
            })
            .collect();
        let mut notes = Vec::new();
        if let Some(reason) = verdict.reason {
            notes.push(reason);
        }
        notes.push(LIMITATIONS_NOTE.to_string());
        Self {
            page_idx,
            needs_ocr: verdict.needs_ocr,
            notes,
            groups,
        }
    }

    fn into_result(self) -> PageResult {
        let mut blocks: Vec<Block> = self
            .groups
            .into_iter()
            .flat_map(GroupDraft::layout)
            .collect();
        link_within_page(&mut blocks);
        PageResult {
            page: Page::from_blocks(self.page_idx, blocks),
            backend: Backend::Text,
            needs_ocr: self.needs_ocr,
            notes: self.notes,
            images: BTreeMap::new(),
        }
    }
}

/// Marks the edge candidates whose signature another page repeats at the same edge, at about the
/// same height and size. A line sized like a heading on its page needs more: its very words at
/// that place on two more pages, so that numbered titles ("Question 1", "Question 2") and a title
/// two pages share stay content.
fn confirm_running_furniture(drafts: &mut [PageDraft]) {
    // Each candidate with its page and whether it is sized like a heading there.
    let listed: Vec<(usize, &EdgeCandidate, bool)> = drafts
        .iter()
        .enumerate()
        .flat_map(|(page, d)| {
            d.groups.iter().flat_map(move |g| {
                let body = body_font_size(g.body.iter().map(|f| (f.text.as_str(), f.size)));
                g.candidates.iter().map(move |c| {
                    let heading = body > 0.0 && c.fragment.size >= HEADING_SIZE_RATIO * body;
                    (page, c, heading)
                })
            })
        })
        .collect();
    let mut seen: HashMap<(Edge, &str), Vec<(usize, &EdgeCandidate)>> = HashMap::new();
    for &(page, c, _) in &listed {
        seen.entry((c.edge, &c.signature))
            .or_default()
            .push((page, c));
    }
    let running: Vec<bool> = listed
        .iter()
        .map(|&(page, c, heading)| {
            let mut repeats = seen[&(c.edge, c.signature.as_str())]
                .iter()
                .filter(|&&(other, o)| other != page && c.repeats(o));
            if !heading {
                return repeats.next().is_some();
            }
            let same_words = |o: &EdgeCandidate| {
                o.fragment
                    .text
                    .split_whitespace()
                    .eq(c.fragment.text.split_whitespace())
            };
            let pages: HashSet<usize> = repeats
                .filter(|(_, o)| same_words(o))
                .map(|&(other, _)| other)
                .collect();
            pages.len() >= 2
        })
        .collect();
    let slots = drafts
        .iter_mut()
        .flat_map(|d| &mut d.groups)
        .flat_map(|g| &mut g.candidates);
    for (c, running) in slots.zip(running) {
        c.running = running;
    }
}

impl EdgeCandidate {
    fn new(edge: Edge, fragment: Fragment, frame_height: f32) -> Self {
        let r = &fragment.rect;
        let offset = match edge {
            Edge::Top => r.y0,
            Edge::Bottom => frame_height - r.y1,
        } / frame_height;
        Self {
            edge,
            signature: signature(&fragment.text),
            fragment,
            offset,
            running: false,
        }
    }

    /// Whether `other` (same edge and signature) is this line again: at about the same height and
    /// size.
    fn repeats(&self, other: &EdgeCandidate) -> bool {
        let (a, b) = (self.fragment.size, other.fragment.size);
        (self.offset - other.offset).abs() <= RUNNING_OFFSET_TOLERANCE
            && (a - b).abs() <= RUNNING_SIZE_TOLERANCE * a.max(b)
    }
}

/// The text with runs of digits folded to `#` and whitespace collapsed.
fn signature(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars() {
            if !c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('#') {
                out.push('#');
            }
        }
    }
    out
}

/// The text-vs-scan decision for one page.
#[derive(Debug, Clone, PartialEq)]
pub struct OcrVerdict {
    pub needs_ocr: bool,
    pub clean_chars: usize,
    /// Why the page needs OCR or has no text, for the page summary.
    pub reason: Option<String>,
}

/// Classifies a page. MinerU's rule (fewer than 50 clean characters) is applied to pages that
/// also carry images or only drawings, because a short text-only page (a title page, a closing
/// line) is fully readable from its text layer; a page whose characters are mostly unmapped
/// glyphs needs OCR whatever its length.
pub fn classify(text: &PageText) -> OcrVerdict {
    let visible: Vec<&TextChar> = text
        .chars
        .iter()
        .filter(|c| !c.generated && !c.ch.is_whitespace())
        .collect();
    let clean_chars = visible.iter().filter(|c| is_clean(c.ch)).count();
    let garbled = visible.len() - clean_chars;
    let g = &text.graphics;
    let coverage = (g.image_coverage * 100.0).round();
    let (needs_ocr, reason) =
        if !visible.is_empty() && garbled as f32 > MAX_GARBLED_SHARE * visible.len() as f32 {
            (
                true,
                Some(format!(
                    "needs OCR: the text layer is unreadable ({garbled} of {} characters have no \
                 Unicode mapping)",
                    visible.len()
                )),
            )
        } else if clean_chars < MIN_CLEAN_CHARS && g.image_coverage >= SCAN_IMAGE_COVERAGE {
            (
                true,
                Some(format!(
                    "needs OCR: {clean_chars} characters in the text layer (fewer than \
                 {MIN_CLEAN_CHARS}) and images cover {coverage}% of the page; use the vlm backend"
                )),
            )
        } else if clean_chars == 0 && g.objects == 0 {
            (false, Some("blank page".to_string()))
        } else if clean_chars == 0 {
            (
                true,
                Some(
                    "needs OCR: no text layer, the page is drawn with vector graphics only (its \
                     text may be outlined); use the vlm backend"
                        .to_string(),
                ),
            )
        } else {
            (false, None)
        };
    OcrVerdict {
        needs_ocr,
        clean_chars,
        reason,
    }
}

fn is_clean(c: char) -> bool {
    !(c.is_control() || c == '\u{FFFD}' || ('\u{E000}'..='\u{F8FF}').contains(&c))
}

/// Characters grouped by reading direction, the largest group first, so rotated text on a page
/// is laid out in its own upright frame.
fn orientation_groups(chars: &[TextChar]) -> Vec<(Orientation, Vec<TextChar>)> {
    let mut groups: Vec<(Orientation, Vec<TextChar>)> = Vec::new();
    for c in chars {
        match groups.iter_mut().find(|(o, _)| *o == c.orientation) {
            Some((_, list)) => list.push(c.clone()),
            None => groups.push((c.orientation, vec![c.clone()])),
        }
    }
    groups.retain(|(_, list)| list.iter().any(|c| !c.ch.is_whitespace()));
    groups.sort_by_key(|(o, list)| (std::cmp::Reverse(list.len()), *o));
    groups
}

/// Maps display space to a frame where text of one orientation reads left to right, top down.
struct Frame {
    orientation: Orientation,
    /// Display page size.
    width: f32,
    height: f32,
}

impl Frame {
    fn new(orientation: Orientation, width: f32, height: f32) -> Self {
        Self {
            orientation,
            width: width.max(1.0),
            height: height.max(1.0),
        }
    }

    /// The frame's own width and height.
    fn size(&self) -> (f32, f32) {
        match self.orientation {
            Orientation::Up | Orientation::Down => (self.width, self.height),
            Orientation::Right | Orientation::Left => (self.height, self.width),
        }
    }

    fn to_upright(&self, r: &Rect) -> Rect {
        let (w, h) = (self.width, self.height);
        let map = |x: f32, y: f32| match self.orientation {
            Orientation::Up => (x, y),
            Orientation::Right => (y, w - x),
            Orientation::Down => (w - x, h - y),
            Orientation::Left => (h - y, x),
        };
        corners(map(r.x0, r.y0), map(r.x1, r.y1))
    }

    fn to_display(&self, r: &Rect) -> Rect {
        let (w, h) = (self.width, self.height);
        let map = |x: f32, y: f32| match self.orientation {
            Orientation::Up => (x, y),
            Orientation::Right => (w - y, x),
            Orientation::Down => (w - x, h - y),
            Orientation::Left => (y, h - x),
        };
        corners(map(r.x0, r.y0), map(r.x1, r.y1))
    }

    /// The block's bbox in MinerU's 0..=1000 page frame, never empty.
    fn bbox(&self, r: &Rect) -> BBox {
        let d = self.to_display(r);
        let scale = f32::from(BBOX_SCALE);
        let lo = |v: f32, size: f32| (v / size * scale).floor().clamp(0.0, scale - 1.0) as u32;
        let hi = |v: f32, size: f32, low: u32| {
            ((v / size * scale).ceil().clamp(0.0, scale) as u32).max(low + 1)
        };
        let x0 = lo(d.x0, self.width);
        let y0 = lo(d.y0, self.height);
        let x1 = hi(d.x1, self.width, x0);
        let y1 = hi(d.y1, self.height, y0);
        BBox::new(x0, y0, x1, y1).unwrap_or(BBox::FULL_PAGE)
    }

    fn angle(&self) -> Angle {
        match self.orientation {
            Orientation::Up => Angle::Up,
            Orientation::Right => Angle::Right,
            Orientation::Down => Angle::Down,
            Orientation::Left => Angle::Left,
        }
    }
}

fn corners(a: (f32, f32), b: (f32, f32)) -> Rect {
    Rect {
        x0: a.0.min(b.0),
        y0: a.1.min(b.1),
        x1: a.0.max(b.0),
        y1: a.1.max(b.1),
    }
}

/// A run of characters on one baseline without a wide gap.
#[derive(Debug, Clone)]
struct Fragment {
    text: String,
    rect: Rect,
    size: f32,
    bold: bool,
}

/// One visual line of a column (or one row of a table drawn as text).
#[derive(Debug, Clone)]
struct Line {
    text: String,
    rect: Rect,
    size: f32,
    bold: bool,
    /// Cells separated by wide gaps: a table row, kept out of paragraphs.
    tabular: bool,
}

impl GroupDraft {
    fn new(frame: Frame, chars: &[TextChar]) -> Self {
        let upright: Vec<TextChar> = chars
            .iter()
            .map(|c| {
                let rect = frame.to_upright(&c.rect);
                TextChar {
                    font_size: effective_size(c.font_size, &rect),
                    rect,
                    ..c.clone()
                }
            })
            .collect();
        let height = frame.size().1;
        let fragments = fragments(&upright);
        let edges = edge_clusters(&fragments, height);
        let mut group = Self {
            frame,
            body: Vec::new(),
            page_numbers: Vec::new(),
            candidates: Vec::new(),
        };
        for (f, edge) in fragments.into_iter().zip(edges) {
            match edge {
                None => group.body.push(f),
                Some(_) if is_page_number(&f.text) => group.page_numbers.push(f),
                Some(edge) => group.candidates.push(EdgeCandidate::new(edge, f, height)),
            }
        }
        group
    }

    /// Blocks in reading order, furniture last. Edge lines that are not running furniture are
    /// content: those at the top read before the body, those at the bottom after it.
    fn layout(self) -> Vec<Block> {
        let frame = self.frame;
        let (width, _) = frame.size();
        let mut furniture: Vec<(Fragment, BlockType)> = self
            .page_numbers
            .into_iter()
            .map(|f| (f, BlockType::PageNumber))
            .collect();
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        for c in self.candidates {
            match (c.running, c.edge) {
                (true, Edge::Top) => furniture.push((c.fragment, BlockType::Header)),
                (true, Edge::Bottom) => furniture.push((c.fragment, BlockType::Footer)),
                (false, Edge::Top) => top.push(c.fragment),
                (false, Edge::Bottom) => bottom.push(c.fragment),
            }
        }
        furniture.sort_by(|a, b| a.0.rect.y0.total_cmp(&b.0.rect.y0));

        let mut regions = vec![top];
        regions.extend(reading_regions(self.body, width));
        regions.push(bottom);
        let lines: Vec<Vec<Line>> = regions
            .into_iter()
            .filter(|r| !r.is_empty())
            .map(rows_to_lines)
            .collect();
        let body_size = body_font_size(lines.iter().flatten().map(|l| (l.text.as_str(), l.size)));
        let body_bold = mostly_bold(lines.iter().flatten());
        let mut paragraphs: Vec<Paragraph> = lines
            .iter()
            .flat_map(|region| paragraphs(region, body_size, body_bold))
            .collect();
        assign_heading_levels(&mut paragraphs);

        let angle = frame.angle();
        let block = |kind, rect: &Rect, text| Block {
            kind,
            bbox: frame.bbox(rect),
            angle: Some(angle),
            content: Some(text),
            continues_previous: false,
            sub_type: None,
        };
        paragraphs
            .into_iter()
            .map(|p| block(p.kind, &p.rect, p.text))
            .chain(
                furniture
                    .into_iter()
                    .map(|(f, kind)| block(kind, &f.rect, f.text)),
            )
            .collect()
    }
}

/// pdfium scales a character's font size by its text matrix's vertical factor, which is 0 for text
/// drawn at 90° (landscape pages drawn sideways and turned back by /Rotate, sideways notes) and
/// negative at 180°. A size of 0 made every word its own fragment and every line a table row, so
/// lines never joined into paragraphs; the glyph box gives the size instead.
fn effective_size(font_size: f32, upright: &Rect) -> f32 {
    let from_box = upright.height() / LOOSE_BOX_EM;
    if font_size.abs() >= 0.5 * from_box {
        font_size.abs()
    } else {
        from_box
    }
}

/// Splits the character stream (in content order) into fragments: a new fragment starts when a
/// character leaves the baseline, moves backwards, or jumps a wide gap.
fn fragments(chars: &[TextChar]) -> Vec<Fragment> {
    struct Builder {
        text: String,
        rect: Rect,
        last: Rect,
        last_size: f32,
        sizes: Vec<(f32, usize)>,
        bold: usize,
        count: usize,
    }
    impl Builder {
        fn new(c: &TextChar) -> Self {
            Self {
                text: c.ch.to_string(),
                rect: c.rect,
                last: c.rect,
                last_size: c.font_size,
                sizes: vec![(c.font_size, 1)],
                bold: usize::from(c.bold),
                count: 1,
            }
        }
        fn gap(&self, c: &TextChar) -> Option<f32> {
            let em = self.last_size.max(c.font_size).max(1.0);
            let overlap = self.last.y1.min(c.rect.y1) - self.last.y0.max(c.rect.y0);
            let min_h = self.last.height().min(c.rect.height()).max(0.1);
            let dx = c.rect.x0 - self.last.x1;
            // pdfium gives each letter of a ligature (fi, ffl) the whole glyph's box, so a
            // character may start where the previous one did, but not before it.
            let forward = c.rect.x0 >= self.last.x0 - 0.1 * em || dx >= -0.5 * em;
            (overlap >= 0.5 * min_h && forward && dx <= FRAGMENT_GAP_EM * em).then_some(dx / em)
        }
        fn push(&mut self, c: &TextChar, space: bool) {
            if space {
                self.text.push(' ');
            }
            self.text.push(c.ch);
            self.rect = self.rect.union(&c.rect);
            self.last = c.rect;
            self.last_size = c.font_size;
            match self
                .sizes
                .iter_mut()
                .find(|s| (s.0 - c.font_size).abs() < 0.25)
            {
                Some(s) => s.1 += 1,
                None => self.sizes.push((c.font_size, 1)),
            }
            self.bold += usize::from(c.bold);
            self.count += 1;
        }
        fn finish(self) -> Fragment {
            let size = self.sizes.iter().max_by_key(|s| s.1).map_or(1.0, |s| s.0);
            Fragment {
                text: self.text,
                rect: self.rect,
                size,
                bold: self.bold * 10 >= self.count * 7,
            }
        }
    }

    let mut out = Vec::new();
    let mut current: Option<Builder> = None;
    let mut pending_space = false;
    for c in chars {
        if c.ch.is_whitespace() || c.ch.is_control() {
            pending_space = current.is_some();
            continue;
        }
        if let Some(b) = current.as_mut()
            && let Some(gap) = b.gap(c)
        {
            let space = pending_space || (gap > WORD_GAP_EM && !is_cjk_pair(&b.text, c.ch));
            b.push(c, space);
            pending_space = false;
            continue;
        }
        if let Some(b) = current.take() {
            out.push(b.finish());
        }
        current = Some(Builder::new(c));
        pending_space = false;
    }
    out.extend(current.map(Builder::finish));
    out
}

fn is_cjk_pair(before: &str, next: char) -> bool {
    before.chars().last().is_some_and(is_cjk) && is_cjk(next)
}

fn is_cjk(c: char) -> bool {
    matches!(u32::from(c),
        0x3000..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF | 0xFF00..=0xFFEF)
}

/// Candidates for headers, footers and page numbers: the topmost and bottommost clusters of
/// fragments, when they lie in the page's top or bottom band and a blank line or more separates
/// them from the body (so a body that starts high is not taken for a header).
fn edge_clusters(fragments: &[Fragment], page_height: f32) -> Vec<Option<Edge>> {
    let mut edges = vec![None; fragments.len()];
    let mut by_top: Vec<usize> = (0..fragments.len()).collect();
    by_top.sort_by(|&a, &b| fragments[a].rect.y0.total_cmp(&fragments[b].rect.y0));
    let band = FURNITURE_BAND * page_height;
    let orders = [
        (Edge::Top, by_top.clone()),
        (Edge::Bottom, by_top.into_iter().rev().collect()),
    ];
    for (edge, order) in orders {
        let Some(cluster) = edge_cluster(fragments, &order, edge) else {
            continue;
        };
        let in_band = cluster.iter().all(|&i| {
            let r = &fragments[i].rect;
            match edge {
                Edge::Top => r.y1 <= band,
                Edge::Bottom => r.y0 >= page_height - band,
            }
        });
        if !in_band || cluster.len() > MAX_FURNITURE_FRAGMENTS {
            continue;
        }
        for i in cluster {
            if fragments[i].text.chars().count() <= 100 {
                edges[i] = Some(edge);
            }
        }
    }
    edges
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Edge {
    Top,
    Bottom,
}

/// The fragments (indices, in `order` from the page edge inwards) before the first blank line,
/// or `None` when no body follows them.
fn edge_cluster(fragments: &[Fragment], order: &[usize], edge: Edge) -> Option<Vec<usize>> {
    let mut cluster: Vec<usize> = Vec::new();
    let mut reach = 0.0f32;
    let mut line_height = 0.0f32;
    for &i in order {
        let r = &fragments[i].rect;
        if !cluster.is_empty() {
            let gap = match edge {
                Edge::Top => r.y0 - reach,
                Edge::Bottom => reach - r.y1,
            };
            if gap >= FURNITURE_GAP_LINES * line_height {
                return Some(cluster);
            }
        }
        reach = match (edge, cluster.is_empty()) {
            (Edge::Top, true) => r.y1,
            (Edge::Top, false) => reach.max(r.y1),
            (Edge::Bottom, true) => r.y0,
            (Edge::Bottom, false) => reach.min(r.y0),
        };
        line_height = line_height.max(r.height());
        cluster.push(i);
    }
    None
}

fn is_page_number(text: &str) -> bool {
    let t = text
        .trim()
        .trim_matches(|c: char| c == '-' || c == '–' || c == '—' || c.is_whitespace())
        .to_lowercase();
    let t = t.strip_prefix("page").map_or(t.as_str(), str::trim);
    let words: Vec<&str> = t
        .split(|c: char| c.is_whitespace() || c == '/')
        .filter(|w| !w.is_empty() && *w != "of")
        .collect();
    !words.is_empty()
        && words.len() <= 2
        && words.iter().all(|w| {
            w.chars().all(|c| c.is_ascii_digit())
                || (w.len() <= 6 && w.chars().all(|c| matches!(c, 'i' | 'v' | 'x')))
        })
}

/// Fragments in reading order, grouped into regions that are laid out top to bottom. With a
/// column gutter, each band between full-width fragments reads left column, then right column.
fn reading_regions(body: Vec<Fragment>, width: f32) -> Vec<Vec<Fragment>> {
    let Some(gutter) = find_gutter(&body, width) else {
        return vec![body];
    };
    let (mut spanning, rest): (Vec<Fragment>, Vec<Fragment>) = body
        .into_iter()
        .partition(|f| f.rect.x0 < gutter && f.rect.x1 > gutter);
    let (left, mut right): (Vec<Fragment>, Vec<Fragment>) =
        rest.into_iter().partition(|f| f.rect.x1 <= gutter);
    // Short lines above where the right column starts (the last line of a full-width abstract, a
    // left-aligned title) belong to the page above the columns, not to the left column.
    let right_top = right.iter().map(|f| f.rect.y0).fold(f32::MAX, f32::min);
    let (above, mut left): (Vec<Fragment>, Vec<Fragment>) =
        left.into_iter().partition(|f| f.rect.y1 <= right_top);
    spanning.extend(above);
    spanning.sort_by(|a, b| a.rect.y0.total_cmp(&b.rect.y0));

    let mut regions: Vec<Vec<Fragment>> = Vec::new();
    let take_above = |column: &mut Vec<Fragment>, y: f32| {
        let (above, below): (Vec<Fragment>, Vec<Fragment>) = std::mem::take(column)
            .into_iter()
            .partition(|f| center_y(&f.rect) < y);
        *column = below;
        above
    };
    // Consecutive full-width lines (an abstract, a wide paragraph) share one region.
    let mut spanning_open = false;
    for s in spanning {
        let y = center_y(&s.rect);
        let l = take_above(&mut left, y);
        let r = take_above(&mut right, y);
        if spanning_open
            && l.is_empty()
            && r.is_empty()
            && let Some(region) = regions.last_mut()
        {
            region.push(s);
            continue;
        }
        regions.extend([l, r, vec![s]]);
        spanning_open = true;
    }
    regions.extend([left, right]);
    regions.retain(|r| !r.is_empty());
    regions
}

fn center_y(r: &Rect) -> f32 {
    (r.y0 + r.y1) / 2.0
}

/// A vertical gutter between two text columns: a strip in the middle of the page that few
/// fragments cross, with column-wide text on both sides beside each other. Table cells also leave
/// gutters, but their fragments are narrow compared with the span of their side, so they are not
/// taken for columns.
fn find_gutter(body: &[Fragment], width: f32) -> Option<f32> {
    if body.len() < 6 {
        return None;
    }
    let crossing = |x: f32| {
        body.iter()
            .filter(|f| f.rect.x0 < x && f.rect.x1 > x)
            .count()
    };
    let (lo, hi) = (0.3 * width, 0.7 * width);
    let xs: Vec<f32> = (0..=((hi - lo) as usize)).map(|i| lo + i as f32).collect();
    let counts: Vec<usize> = xs.iter().map(|&x| crossing(x)).collect();
    // Full-width titles and abstracts cross the gutter, so allow a few crossings, fewest first;
    // at each level the widest gap that separates two text columns wins.
    let limit = (0.3 * body.len() as f32) as usize;
    let mut levels: Vec<usize> = counts.iter().copied().filter(|&c| c <= limit).collect();
    levels.sort_unstable();
    levels.dedup();
    // Each candidate costs a pass over the fragments; dense pages must stay linear-ish.
    let mut tried: Vec<(usize, usize)> = Vec::new();
    for level in levels {
        let mut runs = runs_at_most(&counts, level);
        runs.sort_by_key(|(a, b)| std::cmp::Reverse(b - a));
        for (a, b) in runs.into_iter().filter(|(a, b)| b - a >= MIN_GUTTER_PT) {
            if tried.contains(&(a, b)) {
                continue;
            }
            if tried.len() == MAX_GUTTER_CANDIDATES {
                return None;
            }
            tried.push((a, b));
            let gutter = (xs[a] + xs[b - 1]) / 2.0;
            let left: Vec<&Fragment> = body.iter().filter(|f| f.rect.x1 <= gutter).collect();
            let right: Vec<&Fragment> = body.iter().filter(|f| f.rect.x0 >= gutter).collect();
            if is_text_column(&left) && is_text_column(&right) && overlap_vertically(&left, &right)
            {
                return Some(gutter);
            }
        }
    }
    None
}

/// Half-open index ranges where `counts` stays at or below `level`.
fn runs_at_most(counts: &[usize], level: usize) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &c) in counts.iter().enumerate() {
        match (c <= level, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, counts.len()));
    }
    runs
}

fn is_text_column(side: &[&Fragment]) -> bool {
    if side.len() < 3 {
        return false;
    }
    let x0 = side.iter().map(|f| f.rect.x0).fold(f32::MAX, f32::min);
    let x1 = side.iter().map(|f| f.rect.x1).fold(f32::MIN, f32::max);
    let mut widths: Vec<f32> = side.iter().map(|f| f.rect.width()).collect();
    widths.sort_by(f32::total_cmp);
    widths[widths.len() / 2] >= 0.6 * (x1 - x0)
}

fn overlap_vertically(left: &[&Fragment], right: &[&Fragment]) -> bool {
    let span = |side: &[&Fragment]| {
        (
            side.iter().map(|f| f.rect.y0).fold(f32::MAX, f32::min),
            side.iter().map(|f| f.rect.y1).fold(f32::MIN, f32::max),
        )
    };
    let (l, r) = (span(left), span(right));
    let shared = l.1.min(r.1) - l.0.max(r.0);
    shared >= 0.5 * (l.1 - l.0).min(r.1 - r.0)
}

/// Fragments of one region become lines: fragments sharing a baseline form a row; a row whose
/// pieces stay apart by wide gaps is a table row.
fn rows_to_lines(mut region: Vec<Fragment>) -> Vec<Line> {
    region.sort_by(|a, b| a.rect.y0.total_cmp(&b.rect.y0));
    let mut rows: Vec<Vec<Fragment>> = Vec::new();
    for f in region {
        let joins = rows.last().is_some_and(|row| {
            let r = row_rect(row);
            let overlap = r.y1.min(f.rect.y1) - r.y0.max(f.rect.y0);
            overlap >= 0.5 * r.height().min(f.rect.height())
        });
        if joins {
            if let Some(row) = rows.last_mut() {
                row.push(f);
            }
        } else {
            rows.push(vec![f]);
        }
    }
    rows.into_iter().map(row_to_line).collect()
}

fn row_rect(row: &[Fragment]) -> Rect {
    row.iter()
        .skip(1)
        .fold(row[0].rect, |acc, f| acc.union(&f.rect))
}

fn row_to_line(mut row: Vec<Fragment>) -> Line {
    row.sort_by(|a, b| a.rect.x0.total_cmp(&b.rect.x0));
    let mut cells: Vec<Fragment> = Vec::new();
    for f in row {
        match cells.last_mut() {
            Some(prev) if f.rect.x0 - prev.rect.x1 <= FRAGMENT_GAP_EM * prev.size.max(f.size) => {
                if !is_cjk_pair(&prev.text, f.text.chars().next().unwrap_or(' ')) {
                    prev.text.push(' ');
                }
                prev.text.push_str(&f.text);
                prev.rect = prev.rect.union(&f.rect);
                prev.bold &= f.bold;
                prev.size = prev.size.max(f.size);
            }
            _ => cells.push(f),
        }
    }
    let tabular = cells.len() > 1;
    let rect = row_rect(&cells);
    let size = cells.iter().map(|c| c.size).fold(0.0, f32::max);
    let bold = cells.iter().all(|c| c.bold);
    let text = cells
        .into_iter()
        .map(|c| c.text)
        .collect::<Vec<_>>()
        .join(" ");
    Line {
        text,
        rect,
        size,
        bold,
        tabular,
    }
}

/// The most common font size on the page, weighted by characters.
/// The size most of the text (`(text, size)` pieces) is set in.
fn body_font_size<'a>(pieces: impl Iterator<Item = (&'a str, f32)>) -> f32 {
    let mut sizes: Vec<(f32, usize)> = Vec::new();
    for (text, size) in pieces {
        let n = text.chars().filter(|c| !c.is_whitespace()).count();
        let key = (size * 2.0).round() / 2.0;
        match sizes.iter_mut().find(|s| s.0 == key) {
            Some(s) => s.1 += n,
            None => sizes.push((key, n)),
        }
    }
    sizes
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.total_cmp(&a.0)))
        .map_or(0.0, |s| s.0)
}

fn mostly_bold<'a>(lines: impl Iterator<Item = &'a Line>) -> bool {
    let (mut bold, mut all) = (0usize, 0usize);
    for l in lines {
        let n = l.text.chars().count();
        all += n;
        if l.bold {
            bold += n;
        }
    }
    all > 0 && bold * 2 > all
}

#[derive(Debug, Clone)]
struct Paragraph {
    kind: BlockType,
    text: String,
    rect: Rect,
    size: f32,
}

/// Groups consecutive lines of one region into paragraphs and marks headings.
fn paragraphs(lines: &[Line], body_size: f32, body_bold: bool) -> Vec<Paragraph> {
    let is_heading_line = |l: &Line| {
        !l.tabular && (l.size >= HEADING_SIZE_RATIO * body_size || (l.bold && !body_bold))
    };
    // The region's right edge: a line ending well short of it closes its paragraph.
    let right = lines.iter().map(|l| l.rect.x1).fold(f32::MIN, f32::max);
    let left = lines.iter().map(|l| l.rect.x0).fold(f32::MAX, f32::min);
    let short_of_edge = 0.25 * (right - left);
    let mut groups: Vec<Vec<&Line>> = Vec::new();
    for line in lines {
        let joins = groups.last().and_then(|g| g.last()).is_some_and(|prev| {
            let em = prev.size.max(line.size).max(1.0);
            let gap = line.rect.y0 - prev.rect.y1;
            let same_style = (prev.size - line.size).abs() <= 0.1 * em
                && is_heading_line(prev) == is_heading_line(line)
                && prev.bold == line.bold;
            let prev_closes = prev.rect.x1 < right - short_of_edge && ends_sentence(&prev.text);
            !prev.tabular
                && !line.tabular
                && same_style
                && !prev_closes
                && !starts_list_item(&line.text)
                && gap >= -0.5 * em
                && gap <= 0.7 * prev.rect.height().max(line.rect.height())
                && line.rect.x0 <= prev.rect.x0 + em
        });
        match groups.last_mut() {
            Some(g) if joins => g.push(line),
            _ => groups.push(vec![line]),
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let rect = g
                .iter()
                .skip(1)
                .fold(g[0].rect, |acc, l| acc.union(&l.rect));
            let mut text = String::new();
            for l in &g {
                join_text(&mut text, &l.text);
            }
            let chars = text.chars().count();
            let heading = is_heading_line(g[0])
                && g.len() <= 3
                && chars <= 200
                && (g[0].size >= HEADING_SIZE_RATIO * body_size || (g.len() <= 2 && chars <= 100));
            Paragraph {
                kind: if heading {
                    BlockType::Title
                } else {
                    BlockType::Text
                },
                text,
                rect,
                size: g[0].size,
            }
        })
        .collect()
}

/// A bullet or an enumeration label (`•`, `-`, `1.`, `(a)`, `iv)`) opens a list item.
fn starts_list_item(text: &str) -> bool {
    let text = text.trim_start();
    let Some((label, rest)) = text.split_once(' ') else {
        return false;
    };
    if rest.trim().is_empty() {
        return false;
    }
    let mut chars = label.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return "•◦▪▫‣⁃●○■□–-*".contains(c);
    }
    let inner = label
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .or_else(|| label.strip_suffix('.'))
        .or_else(|| label.strip_suffix(')'));
    inner.is_some_and(|i| {
        !i.is_empty()
            && (i.len() <= 3 && i.chars().all(|c| c.is_ascii_digit())
                || i.len() == 1 && i.chars().all(|c| c.is_ascii_lowercase())
                || i.len() <= 4 && i.chars().all(|c| matches!(c, 'i' | 'v' | 'x')))
    })
}

fn ends_sentence(text: &str) -> bool {
    text.trim_end()
        .trim_end_matches(['"', '\'', ')', ']', '”', '’'])
        .chars()
        .last()
        .is_some_and(|c| ".!?:;。！？…".contains(c))
}

/// Appends a line (or the next paragraph of a continued one) to text, undoing end-of-line
/// hyphenation and leaving CJK text unspaced.
pub fn join_text(text: &mut String, next: &str) {
    let next = next.trim();
    if next.is_empty() {
        return;
    }
    if text.is_empty() {
        text.push_str(next);
        return;
    }
    let first = next.chars().next().unwrap_or(' ');
    let mut tail = text.chars().rev();
    let (last, before) = (tail.next(), tail.next());
    if last == Some('-') && before.is_some_and(char::is_alphabetic) && first.is_lowercase() {
        text.pop();
    } else if !(last.is_some_and(is_cjk) && is_cjk(first)) {
        text.push(' ');
    }
    text.push_str(next);
}

/// The largest heading size on the page is level 1 (`title`); smaller or bold-only headings are
/// level 2 (`paragraph_title`).
fn assign_heading_levels(paragraphs: &mut [Paragraph]) {
    let top = paragraphs
        .iter()
        .filter(|p| p.kind == BlockType::Title)
        .map(|p| p.size)
        .fold(0.0, f32::max);
    for p in paragraphs.iter_mut().filter(|p| p.kind == BlockType::Title) {
        if p.size < top - 0.25 {
            p.kind = BlockType::ParagraphTitle;
        }
    }
}

/// Marks a text block as continuing the previous one when the reading order jumps (to the next
/// column) in the middle of a sentence.
fn link_within_page(blocks: &mut [Block]) {
    for i in 1..blocks.len() {
        let (before, after) = blocks.split_at_mut(i);
        let (prev, next) = (&before[i - 1], &mut after[0]);
        if next.bbox.y0() < prev.bbox.y1() && continues(prev, next) {
            next.continues_previous = true;
        }
    }
}

/// The same rule across a page break: the last block of a page and the first of the next.
fn link_across_pages(pages: &mut [PageResult]) {
    for i in 1..pages.len() {
        let (before, after) = pages.split_at_mut(i);
        let (Some(prev), Some(next)) = (
            before[i - 1].page.blocks.last(),
            after[0].page.blocks.first_mut(),
        ) else {
            continue;
        };
        if continues(prev, next) {
            next.continues_previous = true;
        }
    }
}

fn continues(prev: &Block, next: &Block) -> bool {
    if prev.kind != BlockType::Text || next.kind != BlockType::Text {
        return false;
    }
    let (Some(a), Some(b)) = (&prev.content, &next.content) else {
        return false;
    };
    !a.trim().is_empty()
        && !ends_sentence(a)
        && b.trim_start()
            .chars()
            .next()
            .is_some_and(char::is_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdf::Graphics;

    /// Lays out `text` as one line of characters 0.5 em wide starting at (x, y) in display space.
    fn line(x: f32, y: f32, size: f32, bold: bool, text: &str) -> Vec<TextChar> {
        let w = size * 0.5;
        text.chars()
            .enumerate()
            .map(|(i, ch)| {
                let x0 = x + i as f32 * w;
                TextChar {
                    ch,
                    rect: Rect {
                        x0,
                        y0: y,
                        x1: x0 + w,
                        y1: y + size * 1.2,
                    },
                    font_size: size,
                    bold,
                    orientation: Orientation::Up,
                    generated: false,
                }
            })
            .collect()
    }

    fn page(chars: Vec<TextChar>) -> PageText {
        PageText {
            width: 612.0,
            height: 792.0,
            rotation: 0,
            chars,
            graphics: Graphics {
                objects: 1,
                ..Graphics::default()
            },
        }
    }

    fn texts(result: &PageResult) -> Vec<(BlockType, String)> {
        result
            .page
            .blocks
            .iter()
            .map(|b| (b.kind, b.content.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn large_line_is_a_title_and_following_lines_form_one_paragraph() {
        let mut chars = line(72.0, 100.0, 20.0, false, "Introduction");
        chars.extend(line(72.0, 140.0, 10.0, false, "The first line of the body"));
        chars.extend(line(
            72.0,
            153.0,
            10.0,
            false,
            "continues on the second line.",
        ));
        let got = texts(&analyze_page(&page(chars), 0));
        assert_eq!(
            got,
            vec![
                (BlockType::Title, "Introduction".into()),
                (
                    BlockType::Text,
                    "The first line of the body continues on the second line.".into()
                ),
            ]
        );
    }

    #[test]
    fn a_wide_vertical_gap_starts_a_new_paragraph() {
        let mut chars = line(72.0, 100.0, 10.0, false, "First paragraph.");
        chars.extend(line(72.0, 140.0, 10.0, false, "Second paragraph."));
        let got = texts(&analyze_page(&page(chars), 0));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn letters_of_a_ligature_sharing_one_box_stay_in_one_word() {
        let mut chars = line(72.0, 100.0, 10.0, false, "speci");
        let mut fi = line(97.0, 100.0, 10.0, false, "fi");
        fi[1].rect = fi[0].rect;
        chars.extend(fi);
        chars.extend(line(102.0, 100.0, 10.0, false, "c"));
        assert_eq!(
            texts(&analyze_page(&page(chars), 0)),
            vec![(BlockType::Text, "specific".into())]
        );
    }

    fn analyze(pages: Vec<Vec<TextChar>>) -> Vec<PageResult> {
        let drafts = pages
            .into_iter()
            .enumerate()
            .map(|(i, chars)| PageDraft::new(&page(chars), i))
            .collect();
        finish(drafts)
    }

    fn discarded(result: &PageResult) -> Vec<(BlockType, String)> {
        result
            .page
            .discarded
            .iter()
            .map(|b| (b.kind, b.content.clone().unwrap_or_default()))
            .collect()
    }

    /// A page of body text under `top` (baseline 30 pt, in the top band) and above `bottom`
    /// (baseline 770 pt); `None` leaves the edge empty.
    fn edged(top: Option<(f32, &str)>, bottom: Option<&str>) -> Vec<TextChar> {
        let mut chars = Vec::new();
        if let Some((size, text)) = top {
            chars.extend(line(72.0, 30.0, size, false, text));
        }
        chars.extend(line(
            72.0,
            200.0,
            10.0,
            false,
            "Body text long enough to set the body size.",
        ));
        if let Some(text) = bottom {
            chars.extend(line(72.0, 770.0, 10.0, false, text));
        }
        chars
    }

    #[test]
    fn edge_lines_are_furniture_only_when_another_page_repeats_them() {
        use BlockType::{Footer, Header, PageNumber, Text, Title};
        let body = (
            Text,
            "Body text long enough to set the body size.".to_string(),
        );
        type Expected = Vec<(
            Vec<(BlockType, &'static str)>,
            Vec<(BlockType, &'static str)>,
        )>;
        let cases: Vec<(&str, Vec<Vec<TextChar>>, Expected)> = vec![
            (
                "one page: a top-band line is content",
                vec![edged(Some((10.0, "Running header")), None)],
                vec![(vec![(Text, "Running header")], vec![])],
            ),
            (
                "one page: a page number is furniture",
                vec![edged(None, Some("- 3 -"))],
                vec![(vec![], vec![(PageNumber, "- 3 -")])],
            ),
            (
                "repeated header and footer",
                vec![
                    edged(Some((10.0, "Running header")), Some("Confidential")),
                    edged(Some((10.0, "Running header")), Some("Confidential")),
                ],
                vec![
                    (
                        vec![],
                        vec![(Header, "Running header"), (Footer, "Confidential")],
                    ),
                    (
                        vec![],
                        vec![(Header, "Running header"), (Footer, "Confidential")],
                    ),
                ],
            ),
            (
                "variants that differ in their numbers",
                vec![
                    edged(Some((10.0, "Chapter 2 - 14")), None),
                    edged(Some((10.0, "Chapter 2 - 15")), None),
                ],
                vec![
                    (vec![], vec![(Header, "Chapter 2 - 14")]),
                    (vec![], vec![(Header, "Chapter 2 - 15")]),
                ],
            ),
            (
                "a title on one page, the same words as a small header on the others",
                vec![
                    edged(Some((20.0, "Layout Notes")), None),
                    edged(Some((9.0, "Layout Notes")), None),
                    edged(Some((9.0, "Layout Notes")), None),
                ],
                vec![
                    (vec![(Title, "Layout Notes")], vec![]),
                    (vec![], vec![(Header, "Layout Notes")]),
                    (vec![], vec![(Header, "Layout Notes")]),
                ],
            ),
            (
                "numbered titles at the top of each page stay titles",
                vec![
                    edged(Some((16.0, "Question 1")), None),
                    edged(Some((16.0, "Question 2")), None),
                    edged(Some((16.0, "Question 3")), None),
                ],
                vec![
                    (vec![(Title, "Question 1")], vec![]),
                    (vec![(Title, "Question 2")], vec![]),
                    (vec![(Title, "Question 3")], vec![]),
                ],
            ),
            (
                "a title two pages share stays a title",
                vec![
                    edged(Some((16.0, "Results")), None),
                    edged(Some((16.0, "Results")), None),
                ],
                vec![
                    (vec![(Title, "Results")], vec![]),
                    (vec![(Title, "Results")], vec![]),
                ],
            ),
            (
                "a large running header on three pages is furniture",
                vec![
                    edged(Some((16.0, "Annual Report")), None),
                    edged(Some((16.0, "Annual Report")), None),
                    edged(Some((16.0, "Annual Report")), None),
                ],
                vec![
                    (vec![], vec![(Header, "Annual Report")]),
                    (vec![], vec![(Header, "Annual Report")]),
                    (vec![], vec![(Header, "Annual Report")]),
                ],
            ),
            (
                "different words on each page",
                vec![
                    edged(Some((10.0, "Introduction")), None),
                    edged(Some((10.0, "Methods")), None),
                ],
                vec![
                    (vec![(Text, "Introduction")], vec![]),
                    (vec![(Text, "Methods")], vec![]),
                ],
            ),
        ];
        for (name, pages, expected) in cases {
            let got = analyze(pages);
            for (result, (content, furniture)) in got.iter().zip(expected) {
                let mut want: Vec<(BlockType, String)> =
                    content.into_iter().map(|(k, t)| (k, t.into())).collect();
                want.push(body.clone());
                assert_eq!(texts(result), want, "{name}");
                let furniture: Vec<(BlockType, String)> =
                    furniture.into_iter().map(|(k, t)| (k, t.into())).collect();
                assert_eq!(discarded(result), furniture, "{name}");
            }
        }
    }

    #[test]
    fn a_repeated_edge_line_must_keep_its_height_and_size() {
        let header_at = |y: f32, size: f32| {
            let mut chars = line(72.0, y, size, false, "Running header");
            chars.extend(line(
                72.0,
                200.0,
                10.0,
                false,
                "Body text long enough to set the body size.",
            ));
            chars
        };
        for (name, other, running) in [
            ("same place", header_at(30.0, 10.0), true),
            ("a little lower", header_at(40.0, 10.0), true),
            ("far lower", header_at(60.0, 10.0), false),
            ("much larger", header_at(30.0, 14.0), false),
        ] {
            let got = analyze(vec![header_at(30.0, 10.0), other]);
            assert_eq!(got[0].page.discarded.len(), usize::from(running), "{name}");
        }
    }

    #[test]
    fn a_body_that_starts_high_is_not_an_edge_line() {
        let high = || {
            let mut chars = line(72.0, 30.0, 10.0, false, "A body that starts high");
            chars.extend(line(72.0, 43.0, 10.0, false, "and continues below."));
            chars
        };
        for result in analyze(vec![high(), high()]) {
            assert!(result.page.discarded.is_empty());
            assert_eq!(
                texts(&result),
                [(
                    BlockType::Text,
                    "A body that starts high and continues below.".into()
                )]
            );
        }
    }

    #[test]
    fn signatures_fold_digit_runs_and_spacing() {
        for (text, want) in [
            ("Page 3 of 10", "Page # of #"),
            ("Chapter 2 —  14", "Chapter # — #"),
            ("Vol. 12, No. 3", "Vol. #, No. #"),
            ("Annual Report", "Annual Report"),
        ] {
            assert_eq!(signature(text), want, "{text}");
        }
    }

    #[test]
    fn sizes_pdfium_zeroes_or_negates_come_from_the_glyph_box() {
        let rect = |height: f32| Rect {
            x0: 0.0,
            y0: 0.0,
            x1: 5.0,
            y1: height,
        };
        for (font_size, height, want) in [
            (11.0, 12.9, 11.0),
            (-11.0, 12.9, 11.0),
            (0.0, 12.0, 10.0),
            (-0.0000005, 12.0, 10.0),
            (2.0, 12.0, 10.0),
        ] {
            let got = effective_size(font_size, &rect(height));
            assert!((got - want).abs() < 1e-3, "{font_size} {height}: {got}");
        }
    }

    #[test]
    fn sideways_lines_with_a_zero_font_size_join_into_a_paragraph() {
        // Text drawn at 90°: pdfium reports a font size of 0 for every character.
        let sideways = |x: f32, text: &str| -> Vec<TextChar> {
            line(0.0, 0.0, 10.0, false, text)
                .into_iter()
                .map(|c| TextChar {
                    rect: Rect {
                        x0: x,
                        y0: 700.0 - c.rect.x1,
                        x1: x + 12.0,
                        y1: 700.0 - c.rect.x0,
                    },
                    font_size: 0.0,
                    orientation: Orientation::Left,
                    ..c
                })
                .collect()
        };
        let mut chars = sideways(300.0, "A sideways line of words that");
        chars.extend(sideways(313.0, "goes on to a second line."));
        assert_eq!(
            texts(&analyze_page(&page(chars), 0)),
            [(
                BlockType::Text,
                "A sideways line of words that goes on to a second line.".into()
            )]
        );
    }

    #[test]
    fn list_items_and_short_closing_lines_start_new_paragraphs() {
        let mut chars = line(
            72.0,
            100.0,
            10.0,
            false,
            "A paragraph line that runs across the column",
        );
        chars.extend(line(72.0, 113.0, 10.0, false, "and ends early."));
        chars.extend(line(
            72.0,
            126.0,
            10.0,
            false,
            "The next paragraph has no gap or indent",
        ));
        chars.extend(line(72.0, 139.0, 10.0, false, "• first item of a list"));
        chars.extend(line(72.0, 152.0, 10.0, false, "• second item of a list"));
        chars.extend(line(72.0, 165.0, 10.0, false, "2. a numbered item"));
        let got: Vec<String> = texts(&analyze_page(&page(chars), 0))
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert_eq!(
            got,
            [
                "A paragraph line that runs across the column and ends early.",
                "The next paragraph has no gap or indent",
                "• first item of a list",
                "• second item of a list",
                "2. a numbered item",
            ]
        );
    }

    #[test]
    fn list_labels_are_recognised() {
        for t in [
            "• item", "- item", "1. item", "12) item", "(a) item", "iv. item",
        ] {
            assert!(starts_list_item(t), "{t}");
        }
        for t in [
            "1999 was a year",
            "A sentence.",
            "-",
            "e.g. this",
            "Mr. Smith",
        ] {
            assert!(!starts_list_item(t), "{t}");
        }
    }

    #[test]
    fn hyphenated_line_ends_are_joined() {
        let mut s = String::from("a hyphen-");
        join_text(&mut s, "ated word");
        assert_eq!(s, "a hyphenated word");
        let mut cjk = String::from("中文");
        join_text(&mut cjk, "文本");
        assert_eq!(cjk, "中文文本");
    }

    #[test]
    fn page_numbers_are_recognised() {
        for t in ["3", "- 12 -", "Page 4", "page 2 of 9", "iv", "7 / 20"] {
            assert!(is_page_number(t), "{t}");
        }
        for t in ["Chapter 3", "Results", "3.2 Methods", "civil", "xi xi xi"] {
            assert!(!is_page_number(t), "{t}");
        }
    }

    #[test]
    fn short_text_only_page_does_not_need_ocr_but_a_scan_does() {
        let short = page(line(72.0, 100.0, 10.0, false, "The end."));
        assert!(!classify(&short).needs_ocr);
        let mut scan = page(Vec::new());
        scan.graphics = Graphics {
            objects: 1,
            images: 1,
            paths: 0,
            image_coverage: 0.9,
            image_pixels: 1700 * 2200,
        };
        let verdict = classify(&scan);
        assert!(verdict.needs_ocr);
        assert!(verdict.reason.unwrap_or_default().contains("needs OCR"));
    }

    #[test]
    fn unmapped_glyphs_need_ocr() {
        let garbled = page(line(72.0, 100.0, 10.0, false, &"\u{FFFD}".repeat(80)));
        assert!(classify(&garbled).needs_ocr);
    }

    #[test]
    fn bbox_maps_back_from_a_rotated_frame() {
        let frame = Frame::new(Orientation::Right, 600.0, 800.0);
        let display = Rect {
            x0: 300.0,
            y0: 100.0,
            x1: 320.0,
            y1: 500.0,
        };
        let upright = frame.to_upright(&display);
        assert!((upright.width() - 400.0).abs() < 1e-3);
        assert_eq!(frame.to_display(&upright), display);
        assert_eq!(<[u16; 4]>::from(frame.bbox(&upright)), [500, 125, 534, 625]);
    }
}
