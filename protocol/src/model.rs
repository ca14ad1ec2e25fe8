//! The block model shared by both backends (`vlm` and `text`) and by the output writers.
//!
//! Names follow MinerU (`mineru_vl_utils.structs`) so a block type serialises exactly as MinerU
//! spells it, and coordinates use the layout model's own frame: integers 0..=1000 relative to the
//! page, origin top-left.

use serde::{Deserialize, Serialize};

/// Upper bound of the page-relative coordinate frame.
pub const BBOX_SCALE: u16 = 1000;

/// A layout block type, spelled as MinerU spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockType {
    Text,
    Title,
    DocTitle,
    ParagraphTitle,
    Table,
    Equation,
    FormulaNumber,
    Code,
    Algorithm,
    AsideText,
    RefText,
    Index,
    Phonetic,
    ListItem,
    Caption,
    TableCaption,
    ImageCaption,
    CodeCaption,
    Footnote,
    TableFootnote,
    ImageFootnote,
    Header,
    Footer,
    PageNumber,
    PageFootnote,
    Image,
    Chart,
    List,
    ImageBlock,
    EquationBlock,
    Unknown,
}

impl BlockType {
    /// Every type, in MinerU's declaration order.
    pub const ALL: [BlockType; 31] = [
        Self::Text,
        Self::Title,
        Self::DocTitle,
        Self::ParagraphTitle,
        Self::Table,
        Self::Equation,
        Self::FormulaNumber,
        Self::Code,
        Self::Algorithm,
        Self::AsideText,
        Self::RefText,
        Self::Index,
        Self::Phonetic,
        Self::ListItem,
        Self::Caption,
        Self::TableCaption,
        Self::ImageCaption,
        Self::CodeCaption,
        Self::Footnote,
        Self::TableFootnote,
        Self::ImageFootnote,
        Self::Header,
        Self::Footer,
        Self::PageNumber,
        Self::PageFootnote,
        Self::Image,
        Self::Chart,
        Self::List,
        Self::ImageBlock,
        Self::EquationBlock,
        Self::Unknown,
    ];

    /// MinerU's name for the type (the same string serde uses).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Title => "title",
            Self::DocTitle => "doc_title",
            Self::ParagraphTitle => "paragraph_title",
            Self::Table => "table",
            Self::Equation => "equation",
            Self::FormulaNumber => "formula_number",
            Self::Code => "code",
            Self::Algorithm => "algorithm",
            Self::AsideText => "aside_text",
            Self::RefText => "ref_text",
            Self::Index => "index",
            Self::Phonetic => "phonetic",
            Self::ListItem => "list_item",
            Self::Caption => "caption",
            Self::TableCaption => "table_caption",
            Self::ImageCaption => "image_caption",
            Self::CodeCaption => "code_caption",
            Self::Footnote => "footnote",
            Self::TableFootnote => "table_footnote",
            Self::ImageFootnote => "image_footnote",
            Self::Header => "header",
            Self::Footer => "footer",
            Self::PageNumber => "page_number",
            Self::PageFootnote => "page_footnote",
            Self::Image => "image",
            Self::Chart => "chart",
            Self::List => "list",
            Self::ImageBlock => "image_block",
            Self::EquationBlock => "equation_block",
            Self::Unknown => "unknown",
        }
    }

    /// Parses MinerU's name; `None` for names the model does not define.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Page furniture: kept out of the reading flow and reported as discarded blocks, as MinerU
    /// does with headers, footers, page numbers, asides and page footnotes.
    pub fn is_discarded(self) -> bool {
        matches!(
            self,
            Self::Header | Self::Footer | Self::PageNumber | Self::AsideText | Self::PageFootnote
        )
    }

    /// Headings (rendered as `#` lines and given a `text_level`).
    pub fn is_title(self) -> bool {
        matches!(self, Self::Title | Self::DocTitle | Self::ParagraphTitle)
    }
}

impl std::fmt::Display for BlockType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A box in page-relative integer coordinates (0..=1000 on both axes, origin top-left).
///
/// Invariant: `x0 < x1 <= 1000` and `y0 < y1 <= 1000`, so a box is never empty.
/// Serialised as MinerU's `[x0, y0, x1, y1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "[u16; 4]", into = "[u16; 4]")]
pub struct BBox {
    x0: u16,
    y0: u16,
    x1: u16,
    y1: u16,
}

impl BBox {
    /// A box from two corners in any order; `None` when a coordinate is outside 0..=1000 or the
    /// box has no area.
    pub fn new(x0: u32, y0: u32, x1: u32, y1: u32) -> Option<Self> {
        let limit = u32::from(BBOX_SCALE);
        if [x0, y0, x1, y1].iter().any(|&c| c > limit) {
            return None;
        }
        let (x0, x1) = (x0.min(x1), x0.max(x1));
        let (y0, y1) = (y0.min(y1), y0.max(y1));
        if x0 == x1 || y0 == y1 {
            return None;
        }
        // The range check above makes every coordinate fit in u16.
        let c = |v: u32| v as u16;
        Some(Self {
            x0: c(x0),
            y0: c(y0),
            x1: c(x1),
            y1: c(y1),
        })
    }

    /// The whole page.
    pub const FULL_PAGE: BBox = BBox {
        x0: 0,
        y0: 0,
        x1: BBOX_SCALE,
        y1: BBOX_SCALE,
    };

    pub fn x0(self) -> u16 {
        self.x0
    }
    pub fn y0(self) -> u16 {
        self.y0
    }
    pub fn x1(self) -> u16 {
        self.x1
    }
    pub fn y1(self) -> u16 {
        self.y1
    }
    pub fn width(self) -> u32 {
        u32::from(self.x1 - self.x0)
    }
    pub fn height(self) -> u32 {
        u32::from(self.y1 - self.y0)
    }
    pub fn area(self) -> u32 {
        self.width() * self.height()
    }

    /// Area shared with `other` (0 when disjoint).
    pub fn intersection_area(self, other: BBox) -> u32 {
        let w = self.x1.min(other.x1).saturating_sub(self.x0.max(other.x0));
        let h = self.y1.min(other.y1).saturating_sub(self.y0.max(other.y0));
        u32::from(w) * u32::from(h)
    }

    /// Share of this box's area that lies inside `outer`, in 0.0..=1.0.
    pub fn fraction_inside(self, outer: BBox) -> f64 {
        f64::from(self.intersection_area(outer)) / f64::from(self.area())
    }

    /// The box in pixels of a `width`×`height` image, rounded outwards so a crop never loses an
    /// edge, and never empty.
    pub fn to_pixels(self, width: u32, height: u32) -> PixelRect {
        let scale = u64::from(BBOX_SCALE);
        let lo = |c: u16, size: u32| (u64::from(c) * u64::from(size) / scale) as u32;
        let hi = |c: u16, size: u32| (u64::from(c) * u64::from(size)).div_ceil(scale) as u32;
        let x0 = lo(self.x0, width).min(width.saturating_sub(1));
        let y0 = lo(self.y0, height).min(height.saturating_sub(1));
        let x1 = hi(self.x1, width).clamp(x0 + 1, width.max(x0 + 1));
        let y1 = hi(self.y1, height).clamp(y0 + 1, height.max(y0 + 1));
        PixelRect {
            x: x0,
            y: y0,
            width: x1 - x0,
            height: y1 - y0,
        }
    }
}

impl TryFrom<[u16; 4]> for BBox {
    type Error = String;

    fn try_from([x0, y0, x1, y1]: [u16; 4]) -> Result<Self, Self::Error> {
        BBox::new(x0.into(), y0.into(), x1.into(), y1.into())
            .ok_or_else(|| format!("bbox [{x0}, {y0}, {x1}, {y1}] is empty or outside 0..=1000"))
    }
}

impl From<BBox> for [u16; 4] {
    fn from(b: BBox) -> Self {
        [b.x0, b.y0, b.x1, b.y1]
    }
}

/// A rectangle in image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Rotation of a block's content, as signalled by the layout model's rotate tokens
/// (`rotate_up/right/down/left` = 0/90/180/270); before recognition the crop is turned
/// counter-clockwise by this angle, as MinerU does with Pillow's `rotate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub enum Angle {
    #[default]
    Up,
    Right,
    Down,
    Left,
}

impl Angle {
    pub fn degrees(self) -> u16 {
        match self {
            Self::Up => 0,
            Self::Right => 90,
            Self::Down => 180,
            Self::Left => 270,
        }
    }
}

impl TryFrom<u16> for Angle {
    type Error = String;

    fn try_from(degrees: u16) -> Result<Self, Self::Error> {
        match degrees {
            0 => Ok(Self::Up),
            90 => Ok(Self::Right),
            180 => Ok(Self::Down),
            270 => Ok(Self::Left),
            other => Err(format!("angle {other} is not one of 0, 90, 180, 270")),
        }
    }
}

impl From<Angle> for u16 {
    fn from(a: Angle) -> Self {
        a.degrees()
    }
}

/// One block on a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    #[serde(rename = "type")]
    pub kind: BlockType,
    pub bbox: BBox,
    /// `None` when the layout model gave no rotate token (treated as upright).
    pub angle: Option<Angle>,
    /// Recognised content: plain text (as the model writes it); for equations bare LaTeX without
    /// delimiters (writers wrap it as display math); for tables an HTML `<table>`; for images and
    /// charts a description or caption. `None` for blocks that are not recognised (containers,
    /// small images, the text backend's figures).
    pub content: Option<String>,
    /// The text continues the previous text block (MinerU's `merge_prev`, from `txt_contd_tgt`).
    #[serde(default)]
    pub continues_previous: bool,
    /// MinerU's `sub_type` from image analysis: an image's class (`natural_image`, …) or a
    /// chart's sub-class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<String>,
}

impl Block {
    /// A block as the layout step finds it, before recognition.
    pub fn new(kind: BlockType, bbox: BBox) -> Self {
        Self {
            kind,
            bbox,
            angle: None,
            content: None,
            continues_previous: false,
            sub_type: None,
        }
    }
}

/// The extraction result for one page, identical in shape for both backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// Zero-based page index in the document.
    pub page_idx: usize,
    /// Blocks in reading order.
    pub blocks: Vec<Block>,
    /// Page furniture (headers, footers, page numbers), kept out of the reading flow.
    pub discarded: Vec<Block>,
    /// What the extraction noticed beyond the blocks; not part of MinerU's output.
    #[serde(skip)]
    pub signals: PageSignals,
}

/// What extracting a page showed about the model's answers (see the worker's `signals`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageSignals {
    /// Answers for this page cut at the server's length limit (`finish_reason: length`).
    pub truncated_answers: usize,
    /// Whether the rendered page has ink; looked at only when the model found no block at all
    /// (`None` otherwise, and for the text backend, which does not render).
    pub inked: Option<bool>,
}

impl Page {
    /// Splits `blocks` (in reading order) into kept and discarded blocks.
    pub fn from_blocks(page_idx: usize, blocks: Vec<Block>) -> Self {
        let (discarded, blocks) = blocks.into_iter().partition(|b| b.kind.is_discarded());
        Self {
            page_idx,
            blocks,
            discarded,
            signals: PageSignals::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_type_names_round_trip_through_serde() {
        for t in BlockType::ALL {
            let json = serde_json::to_string(&t).expect("serialise");
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(BlockType::from_name(t.as_str()), Some(t));
        }
        assert_eq!(BlockType::from_name("inline_formula"), None);
    }

    #[test]
    fn bbox_orders_corners_and_rejects_empty_or_out_of_range() {
        let b = BBox::new(500, 600, 100, 200).expect("valid");
        assert_eq!(<[u16; 4]>::from(b), [100, 200, 500, 600]);
        assert_eq!(BBox::new(0, 0, 1001, 10), None);
        assert_eq!(BBox::new(10, 10, 10, 20), None);
        assert!(serde_json::from_str::<BBox>("[0,0,0,5]").is_err());
    }

    #[test]
    fn fraction_inside_measures_containment() {
        let outer = BBox::new(0, 0, 100, 100).expect("valid");
        let half = BBox::new(50, 0, 150, 100).expect("valid");
        assert!((half.fraction_inside(outer) - 0.5).abs() < 1e-9);
        assert!((outer.fraction_inside(outer) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn to_pixels_rounds_outwards_and_is_never_empty() {
        let b = BBox::new(1, 1, 2, 2).expect("valid");
        let r = b.to_pixels(10, 10);
        assert_eq!((r.x, r.y, r.width, r.height), (0, 0, 1, 1));
        let r = BBox::FULL_PAGE.to_pixels(1700, 2200);
        assert_eq!((r.x, r.y, r.width, r.height), (0, 0, 1700, 2200));
    }
}
