//! Document-level quality signals: what an extraction says about how well a model read a
//! document, beyond whether it answered. The worker exports them per revision
//! (docs/worker-metrics.md) so the operator can compare a canary's reading with the baseline's
//! on real traffic, not only on golden documents.
//!
//! - truncated answers: the server stopped at its length limit (`finish_reason: length`);
//! - degenerate repetition: an answer that loops on the same words;
//! - empty pages: the model found no block on a page that has ink;
//! - blocks per page and the mix of block types, as distributions.

use std::collections::BTreeMap;

use image::RgbImage;

use crate::output::PageResult;

/// What one document's extraction shows, for the worker's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentSignals {
    /// Kept blocks (page furniture aside) on each page.
    pub blocks_per_page: Vec<usize>,
    /// Kept blocks by MinerU block type.
    pub blocks_by_type: BTreeMap<&'static str, u64>,
    /// Answers cut at the server's length limit (layout or recognition).
    pub truncated_blocks: usize,
    /// Blocks whose content repeats itself past [`MIN_REPEATS`].
    pub repetitive_blocks: usize,
    /// Pages with ink on which the model found no block at all.
    pub empty_pages: usize,
}

impl DocumentSignals {
    pub fn of(pages: &[PageResult]) -> Self {
        let mut signals = DocumentSignals::default();
        for result in pages {
            let page = &result.page;
            signals.blocks_per_page.push(page.blocks.len());
            for block in &page.blocks {
                *signals
                    .blocks_by_type
                    .entry(block.kind.as_str())
                    .or_default() += 1;
            }
            signals.truncated_blocks += page.signals.truncated_answers;
            signals.repetitive_blocks += page
                .blocks
                .iter()
                .chain(&page.discarded)
                .filter_map(|b| b.content.as_deref())
                .filter(|content| is_repetitive(content))
                .count();
            if page.signals.inked == Some(true) {
                signals.empty_pages += 1;
            }
        }
        signals
    }
}

/// The longest repeating unit looked for, in tokens.
const MAX_NGRAM: usize = 8;
/// Consecutive occurrences of one n-gram that make an answer degenerate...
pub const MIN_REPEATS: usize = 8;
/// ... provided they span at least this many tokens, so that a short list ("1 1 1 1 1 1 1 1")
/// or a row of empty table cells is not mistaken for a model looping.
const MIN_SPAN: usize = 16;

/// Whether `text` has degenerate repetition: some n-gram of up to [`MAX_NGRAM`] tokens repeated
/// back to back at least [`MIN_REPEATS`] times over at least [`MIN_SPAN`] tokens. Markup is not
/// text: HTML tags are ignored. Words are tokens, and so is each CJK character (those scripts
/// have no spaces).
pub fn is_repetitive(text: &str) -> bool {
    let tokens = tokens(text);
    (1..=MAX_NGRAM).any(|n| {
        // `run` counts the tokens in a row that equal the one n before: a run of r such tokens
        // is an n-gram repeated (r + n) / n times.
        let mut run = 0;
        for i in n..tokens.len() {
            if tokens[i] == tokens[i - n] {
                run += 1;
                let span = run + n;
                if span / n >= MIN_REPEATS && span >= MIN_SPAN {
                    return true;
                }
            } else {
                run = 0;
            }
        }
        false
    })
}

fn tokens(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut in_tag = false;
    let mut word: Option<usize> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        // `<` opens a tag only before a letter or `/`: in `x < y` it is text.
        let opens_tag = c == '<'
            && !in_tag
            && chars
                .peek()
                .is_some_and(|&(_, next)| next.is_ascii_alphabetic() || next == '/');
        let separates = in_tag || opens_tag || c.is_whitespace() || is_cjk(c);
        if separates && let Some(start) = word.take() {
            tokens.push(&text[start..at]);
        }
        if in_tag {
            in_tag = c != '>';
        } else if opens_tag {
            in_tag = true;
        } else if is_cjk(c) {
            tokens.push(&text[at..at + c.len_utf8()]);
        } else if !c.is_whitespace() && word.is_none() {
            word = Some(at);
        }
    }
    if let Some(start) = word {
        tokens.push(&text[start..]);
    }
    tokens
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF // kana
        | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF // ideographs
        | 0xAC00..=0xD7AF) // hangul
}

/// A channel darker than this is ink (paper, even scanned, is lighter).
const INK_LEVEL: u8 = 160;
/// Share of sampled pixels that must be ink: scanner specks stay below it, one line of text
/// does not.
const INK_SHARE: f64 = 1.0 / 4000.0;
/// Every `INK_STRIDE`-th pixel of every `INK_STRIDE`-th row is looked at: ink comes in glyphs
/// and lines, several pixels wide.
const INK_STRIDE: usize = 3;

/// Whether a rendered page has anything on it.
pub fn has_ink(page: &RgbImage) -> bool {
    let (width, height) = (page.width() as usize, page.height() as usize);
    let mut sampled = 0usize;
    let mut inked = 0usize;
    for y in (0..height).step_by(INK_STRIDE) {
        for x in (0..width).step_by(INK_STRIDE) {
            sampled += 1;
            let pixel = page.get_pixel(x as u32, y as u32);
            if pixel.0.iter().any(|&channel| channel < INK_LEVEL) {
                inked += 1;
            }
        }
    }
    sampled > 0 && inked as f64 >= (sampled as f64 * INK_SHARE).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn a_looping_answer_is_repetitive_and_ordinary_text_is_not() {
        assert!(is_repetitive(&"the model repeats ".repeat(10)));
        assert!(is_repetitive(&format!(
            "Revenue grew. {}",
            "and then ".repeat(9)
        )));
        assert!(
            is_repetitive(&"重复".repeat(12)),
            "CJK characters are tokens"
        );
        assert!(!is_repetitive(
            "Revenue grew in every region, and margins held steady through the year."
        ));
        assert!(
            !is_repetitive("1 1 1 1 1 1 1 1"),
            "short lists are not loops"
        );
        assert!(
            !is_repetitive(&format!(
                "<table>{}</table>",
                "<tr><td></td></tr>".repeat(40)
            )),
            "markup is not text"
        );
        assert!(!is_repetitive(&"the model repeats ".repeat(7)));
        assert!(
            is_repetitive(&format!("x < y and {}", "then again ".repeat(9))),
            "a `<` in text hides nothing"
        );
    }

    #[test]
    fn a_blank_page_has_no_ink_and_a_line_of_text_does() {
        let mut page = RgbImage::from_pixel(600, 800, Rgb([255, 255, 255]));
        assert!(!has_ink(&page));
        page.put_pixel(10, 10, Rgb([0, 0, 0]));
        assert!(!has_ink(&page), "a speck is not ink");
        for x in 100..400 {
            for y in 300..306 {
                page.put_pixel(x, y, Rgb([20, 20, 20]));
            }
        }
        assert!(has_ink(&page));
    }
}
