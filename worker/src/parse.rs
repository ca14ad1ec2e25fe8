//! One document through either backend: open, pick pages, extract, and report progress. Shared by
//! the `parse` CLI and any other front end, so both backends stay interchangeable behind it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use futures::StreamExt as _;

use crate::client::VlmClient;
use crate::output::PageResult;
use crate::pdf::{Document, PdfError};
use crate::text;
use crate::vlm::{self, VlmError, VlmOptions};

/// Which backend extracts the pages, with what it needs.
#[derive(Debug, Clone)]
pub enum Extractor {
    Text,
    Vlm {
        client: VlmClient,
        options: VlmOptions,
    },
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

    /// The range from MinerU's 0-based, inclusive `start_page_id`/`end_page_id`.
    pub fn from_zero_based(start: usize, end: Option<usize>) -> Result<Self, String> {
        if let Some(end) = end.filter(|&e| e < start) {
            return Err(format!("end page {end} is before start page {start}"));
        }
        Ok(Self {
            first: start + 1,
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
    progress: ProgressFn,
) -> Result<(Document, Vec<PageResult>), ParseError> {
    let doc = open_document(bytes).await?;
    let results = parse_pages(&doc, range, extractor, progress).await?;
    Ok((doc, results))
}

/// Opens `bytes` with pdfium, so a caller can look at the document (its page count) before
/// extracting it.
pub async fn open_document(bytes: Vec<u8>) -> Result<Document, ParseError> {
    // pdfium calls block (and serialise on one lock): keep them off the async threads.
    blocking(move || Document::open(bytes).map_err(ParseError::from)).await
}

/// Extracts the selected pages of an open document, in page order.
pub async fn parse_pages(
    doc: &Document,
    range: PageRange,
    extractor: &Extractor,
    progress: ProgressFn,
) -> Result<Vec<PageResult>, ParseError> {
    let pages = range.resolve(doc.page_count())?;
    progress(Progress::Started { pages: pages.len() });
    let results = match extractor {
        Extractor::Text => {
            let doc = doc.clone();
            let progress = progress.clone();
            blocking(move || {
                text::parse(&doc, pages, |_| progress(Progress::PageDone)).map_err(ParseError::from)
            })
            .await?
        }
        Extractor::Vlm { client, options } => {
            let mut stream = std::pin::pin!(vlm::extract_pages(
                client.clone(),
                Arc::new(doc.clone()),
                pages.collect(),
                options.clone(),
            ));
            let mut results = Vec::new();
            while let Some(page) = stream.next().await {
                results.push(PageResult::from_vlm(page?));
                progress(Progress::PageDone);
            }
            results
        }
    };
    Ok(results)
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
    fn a_range_past_the_end_is_an_error() {
        let err = "7-9".parse::<PageRange>().map(|p| p.resolve(3));
        assert!(matches!(
            err,
            Ok(Err(ParseError::PagesOutOfRange { count: 3, .. }))
        ));
    }
}
