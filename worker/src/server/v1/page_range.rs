//! MinerU 4's page selection syntax: 1-based inclusive ranges such as `1-5,8,r3-r1`, where `rN`
//! counts from the last page and `all` (or blank) selects every page. Selections are sorted and
//! merged; pages past the document's end are left out. The grammar, the normal form and the
//! error messages follow MinerU's own (`docvortex.document.page_range`), so a client sees the
//! same answers from both servers.

use std::fmt::Write;

/// One end of a range: a page counted from the start (`5`) or from the end (`r2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    FromStart(usize),
    FromEnd(usize),
}

impl Endpoint {
    fn parse(token: &str) -> Option<Self> {
        let (from_end, digits) = match token.strip_prefix('r') {
            Some(rest) => (true, rest),
            None => (false, token),
        };
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let n = digits.parse().ok()?;
        Some(if from_end {
            Endpoint::FromEnd(n)
        } else {
            Endpoint::FromStart(n)
        })
    }

    /// The 1-based page this end names in a document of `count` pages (0 or less when before
    /// the first page).
    fn resolve(self, count: usize) -> i64 {
        match self {
            Endpoint::FromStart(n) => n as i64,
            Endpoint::FromEnd(n) => count as i64 - n as i64 + 1,
        }
    }

    fn write(self, out: &mut String) {
        let _ = match self {
            Endpoint::FromStart(n) => write!(out, "{n}"),
            Endpoint::FromEnd(n) => write!(out, "r{n}"),
        };
    }
}

/// A page selection as the caller wrote it, before the document's page count is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSelection {
    /// `None`: every page.
    segments: Option<Vec<(Endpoint, Endpoint)>>,
}

/// A selection MinerU would refuse, with MinerU's code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid page range {raw:?}: {reason}")]
pub struct PageRangeError {
    raw: String,
    reason: &'static str,
}

impl PageRangeError {
    pub const CODE: &'static str = "page_range_invalid";

    fn new(raw: &str, reason: &'static str) -> Self {
        Self {
            raw: raw.to_owned(),
            reason,
        }
    }

    /// The message as MinerU writes it (Python's `repr` quotes with single quotes).
    pub fn message(&self) -> String {
        format!("Invalid page range '{}': {}", self.raw, self.reason)
    }
}

impl PageSelection {
    pub const ALL: PageSelection = PageSelection { segments: None };

    pub fn parse(raw: &str) -> Result<Self, PageRangeError> {
        let value = raw.trim();
        if value.is_empty() || value == "all" {
            return Ok(Self::ALL);
        }
        let mut segments = Vec::new();
        for part in value.split(',') {
            let part = part.trim();
            let (start, end) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), Some(b.trim())),
                None => (part, None),
            };
            let invalid =
                || PageRangeError::new(raw, "expected a page, an inclusive range, or 'all'");
            let start = Endpoint::parse(start).ok_or_else(invalid)?;
            let end = match end {
                Some(end) => Endpoint::parse(end).ok_or_else(invalid)?,
                None => start,
            };
            let reversed = match (start, end) {
                (Endpoint::FromStart(a), Endpoint::FromStart(b)) => a > b,
                // r3-r1 counts down from the end: r3 comes first.
                (Endpoint::FromEnd(a), Endpoint::FromEnd(b)) => a < b,
                _ => false,
            };
            if reversed {
                return Err(PageRangeError::new(
                    raw,
                    "reversed ranges are not supported",
                ));
            }
            segments.push((start, end));
        }
        Ok(Self {
            segments: Some(segments),
        })
    }

    /// The normal form MinerU echoes before the document is read: blank for none given, `all`,
    /// or the segments with absolute ones merged.
    pub fn normalized(raw: &str) -> Result<String, PageRangeError> {
        let selection = Self::parse(raw)?;
        let Some(segments) = selection.segments else {
            return Ok(if raw.trim().is_empty() {
                String::new()
            } else {
                "all".to_owned()
            });
        };
        let absolute = segments
            .iter()
            .all(|(a, b)| matches!((a, b), (Endpoint::FromStart(_), Endpoint::FromStart(_))));
        let mut out = String::new();
        if absolute {
            let intervals: Vec<(usize, usize)> =
                merge(segments.iter().map(|&(a, b)| (a.resolve(0), b.resolve(0))))
                    .into_iter()
                    .map(|(a, b)| (a as usize, b as usize))
                    .collect();
            return Ok(format_intervals(&intervals));
        }
        for (i, (start, end)) in segments.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            start.write(&mut out);
            if start != end {
                out.push('-');
                end.write(&mut out);
            }
        }
        Ok(out)
    }

    /// The selected pages of a document of `count` pages as merged, 1-based inclusive intervals.
    pub fn resolve(&self, count: usize, raw: &str) -> Result<Vec<(usize, usize)>, PageRangeError> {
        if count == 0 {
            return Err(PageRangeError::new(raw, "document has no available pages"));
        }
        let Some(segments) = &self.segments else {
            return Ok(vec![(1, count)]);
        };
        let mut intervals = Vec::new();
        for &(start, end) in segments {
            let (start, end) = (start.resolve(count), end.resolve(count));
            if start > end {
                return Err(PageRangeError::new(
                    raw,
                    "reversed ranges are not supported",
                ));
            }
            let (lo, hi) = (start.max(1), end.min(count as i64));
            if lo <= hi {
                intervals.push((lo, hi));
            }
        }
        if intervals.is_empty() {
            return Err(PageRangeError::new(
                raw,
                "selection does not contain any available pages",
            ));
        }
        Ok(merge(intervals)
            .into_iter()
            .map(|(a, b)| (a as usize, b as usize))
            .collect())
    }
}

fn merge(intervals: impl IntoIterator<Item = (i64, i64)>) -> Vec<(i64, i64)> {
    let mut sorted: Vec<_> = intervals.into_iter().collect();
    sorted.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (start, end) in sorted {
        match merged.last_mut() {
            Some(last) if start <= last.1 + 1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// `1-3,5` from merged intervals; a single page is written once.
pub fn format_intervals(intervals: &[(usize, usize)]) -> String {
    let mut out = String::new();
    for (i, &(a, b)) in intervals.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = if a == b {
            write!(out, "{a}")
        } else {
            write!(out, "{a}-{b}")
        };
    }
    out
}

/// Pages in a resolved range text such as `1-3,5`.
pub fn count_pages(resolved: &[(usize, usize)]) -> usize {
    resolved.iter().map(|(a, b)| b - a + 1).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms_match_minerus() {
        for (raw, normal) in [
            ("", ""),
            ("  ", ""),
            ("all", "all"),
            ("3", "3"),
            ("1-5,8", "1-5,8"),
            ("8, 1-5", "1-5,8"),
            ("1-3,4-6", "1-6"),
            ("2-4,3-5", "2-5"),
            ("r3-r1", "r3-r1"),
            ("1-2,r1", "1-2,r1"),
        ] {
            assert_eq!(
                PageSelection::normalized(raw).as_deref(),
                Ok(normal),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn refusals_carry_minerus_reasons() {
        for (raw, reason) in [
            ("2-1", "reversed ranges are not supported"),
            ("r1-r3", "reversed ranges are not supported"),
            ("0", "expected a page, an inclusive range, or 'all'"),
            ("-1", "expected a page, an inclusive range, or 'all'"),
            ("1~3", "expected a page, an inclusive range, or 'all'"),
            ("a", "expected a page, an inclusive range, or 'all'"),
            ("01", "expected a page, an inclusive range, or 'all'"),
        ] {
            let err = PageSelection::parse(raw).unwrap_err();
            assert_eq!(
                err.message(),
                format!("Invalid page range '{raw}': {reason}")
            );
        }
    }

    #[test]
    fn resolution_clamps_merges_and_counts_from_the_end() {
        for (raw, count, want) in [
            ("", 4, vec![(1, 4)]),
            ("all", 4, vec![(1, 4)]),
            ("2-9", 4, vec![(2, 4)]),
            ("r2-r1", 10, vec![(9, 10)]),
            ("1,3,2", 5, vec![(1, 3)]),
            ("1-2,r1", 5, vec![(1, 2), (5, 5)]),
            ("r9-2", 5, vec![(1, 2)]),
        ] {
            let selection = PageSelection::parse(raw).unwrap();
            assert_eq!(
                selection.resolve(count, raw),
                Ok(want),
                "{raw:?} of {count}"
            );
        }
        let past = PageSelection::parse("3-4").unwrap();
        assert_eq!(
            past.resolve(2, "3-4").unwrap_err().message(),
            "Invalid page range '3-4': selection does not contain any available pages"
        );
        // r1-3 is valid before the count is known, reversed once it is.
        let late = PageSelection::parse("r1-3").unwrap();
        assert!(late.resolve(10, "r1-3").is_err());
        assert_eq!(format_intervals(&[(1, 3), (5, 5)]), "1-3,5");
        assert_eq!(count_pages(&[(1, 3), (5, 5)]), 4);
    }
}
