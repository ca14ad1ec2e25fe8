//! The output-quality gate: golden documents parsed by the stable and the canary workers, their
//! answers compared. Rollout controllers judge latency and errors; a model that answers fast
//! and wrong passes those. This compares what users actually get.
//!
//! Similarity combines structure (the sequence of block types — headings, paragraphs, tables,
//! equations, figures — by count and order) and text (a diff ratio over the normalised words),
//! weighted 1 : 3: a reordered or lost table matters, but most of a document is its text.

use std::{collections::BTreeMap, time::Duration};

use mineru_crds::{BlockDifference, QualityResult, Verdict};
use serde_json::Value;
use sha2::{Digest, Sha256};
use similar::TextDiff;
use thiserror::Error;

/// Largest answer read from a worker for one golden document: a thousand-page document's
/// Markdown and content list fit many times over; rounds run a few documents at once.
const MAX_ANSWER_BYTES: usize = 32 << 20;
const STRUCTURE_WEIGHT: f64 = 0.25;
/// Differing blocks kept per regressed document, and characters kept of each block's text.
const DIFFERENCES_KEPT: usize = 3;
const TEXT_KEPT: usize = 120;
/// Regressed documents whose differences status keeps (the worst ones): a round of thousands
/// of documents must still fit in an object.
const DOCUMENTS_WITH_DIFFERENCES: usize = 20;

/// What one worker answered for one document, in MinerU's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// `md_content`.
    pub markdown: String,
    /// `content_list`: one item per block, in reading order.
    pub content_list: Vec<Value>,
}

/// Similarity of two parses, from 0 (nothing alike) to 1 (identical).
pub fn similarity(stable: &Parsed, canary: &Parsed) -> f64 {
    let structure = ratio(
        &block_types(&stable.content_list),
        &block_types(&canary.content_list),
    );
    let text = ratio(&normalised_words(stable), &normalised_words(canary));
    STRUCTURE_WEIGHT * structure + (1.0 - STRUCTURE_WEIGHT) * text
}

/// A document's result from its similarity: Pass at or above `min_similarity`.
pub fn scored(document: &str, similarity: f64, min_similarity: f64) -> QualityResult {
    let pass = similarity >= min_similarity;
    QualityResult {
        document: document.to_owned(),
        // Rounded down, so a failing score never displays as the threshold it missed.
        similarity: (similarity * 10_000.0).floor() / 10_000.0,
        verdict: if pass { Verdict::Pass } else { Verdict::Fail },
        message: (!pass).then(|| format!("similarity below {min_similarity}")),
        differences: Vec::new(),
    }
}

/// A round's results as status keeps them: every verdict, and the differences of the
/// [`DOCUMENTS_WITH_DIFFERENCES`] least similar documents only.
pub fn kept_in_status(mut results: Vec<QualityResult>) -> Vec<QualityResult> {
    let mut worst: Vec<usize> = (0..results.len())
        .filter(|&i| !results[i].differences.is_empty())
        .collect();
    worst.sort_by(|&a, &b| results[a].similarity.total_cmp(&results[b].similarity));
    for &index in worst.iter().skip(DOCUMENTS_WITH_DIFFERENCES) {
        results[index].differences.clear();
    }
    results
}

/// A block's type and text as the comparison sees it.
struct BlockText {
    kind: String,
    page: Option<i64>,
    text: String,
}

impl BlockText {
    fn of(item: &Value) -> BlockText {
        let field = |name: &str| item.get(name).and_then(Value::as_str);
        let text = field("text")
            .or_else(|| field("table_body"))
            .or_else(|| field("img_path"))
            .unwrap_or_default();
        BlockText {
            kind: field("type").unwrap_or("unknown").to_owned(),
            page: item.get("page_idx").and_then(Value::as_i64).map(|p| p + 1),
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }

    /// What the alignment compares: the type and the words, case aside.
    fn key(&self) -> String {
        format!("{}\u{1f}{}", self.kind, self.text.to_lowercase())
    }
}

fn shortened(text: &str) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    let mut kept: String = text.chars().take(TEXT_KEPT).collect();
    if kept.len() < text.len() {
        kept.push('…');
    }
    Some(kept)
}

/// The first `limit` blocks that differ, aligning the two content lists in reading order:
/// a block replaced by another is `changed`, one only the baseline has `missing`, one only the
/// canary has `added`.
pub fn differences(stable: &Parsed, canary: &Parsed, limit: usize) -> Vec<BlockDifference> {
    let old: Vec<BlockText> = stable.content_list.iter().map(BlockText::of).collect();
    let new: Vec<BlockText> = canary.content_list.iter().map(BlockText::of).collect();
    let (old_keys, new_keys): (Vec<String>, Vec<String>) = (
        old.iter().map(BlockText::key).collect(),
        new.iter().map(BlockText::key).collect(),
    );
    let difference = |change: &str, baseline: Option<&BlockText>, canary: Option<&BlockText>| {
        let block = baseline.or(canary).expect("one side has the block");
        BlockDifference {
            page: block.page,
            block: block.kind.clone(),
            change: change.to_owned(),
            baseline: baseline.and_then(|b| shortened(&b.text)),
            canary: canary.and_then(|c| shortened(&c.text)),
        }
    };
    let mut found = Vec::new();
    for op in similar::capture_diff_slices(similar::Algorithm::Myers, &old_keys, &new_keys) {
        let (_, old_range, new_range) = op.as_tag_tuple();
        let (olds, news) = (&old[old_range], &new[new_range]);
        for index in 0..olds.len().max(news.len()) {
            let change = match (olds.get(index), news.get(index)) {
                (Some(_), Some(_)) if op.tag() == similar::DiffTag::Equal => continue,
                (Some(_), Some(_)) => "changed",
                (Some(_), None) => "missing",
                (None, Some(_)) => "added",
                (None, None) => continue,
            };
            found.push(difference(change, olds.get(index), news.get(index)));
            if found.len() == limit {
                return found;
            }
        }
    }
    found
}

fn block_types(items: &[Value]) -> String {
    items
        .iter()
        .map(|item| {
            let kind = item
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            let level = item.get("text_level").and_then(Value::as_i64).unwrap_or(0);
            format!("{kind}{level}\n")
        })
        .collect()
}

fn normalised_words(parsed: &Parsed) -> String {
    parsed
        .markdown
        .split_whitespace()
        .map(|word| format!("{}\n", word.to_lowercase()))
        .collect()
}

/// Line-diff ratio; lines here are block types or words, so it is an order-aware token ratio.
fn ratio(a: &str, b: &str) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    f64::from(TextDiff::from_lines(a, b).ratio())
}

/// Why a golden document could not be compared.
#[derive(Debug, Error)]
pub enum QualityError {
    #[error("{worker} worker at {url} failed on {document}: {reason}")]
    Parse {
        worker: &'static str,
        url: String,
        document: String,
        reason: String,
    },
}

/// The request header that marks a document as the operator's — `golden` for a round's,
/// `probe` for probe traffic — so the workers count it apart from clients' documents (label
/// `source`) and hold probes to their share of the slots.
pub const SOURCE_HEADER: &str = "x-mineru-source";

/// The `/file_parse` form of one golden document, asking for Markdown and the content list.
pub fn parse_form(document: &str, pdf: &[u8]) -> reqwest::Result<reqwest::multipart::Form> {
    let part = reqwest::multipart::Part::bytes(pdf.to_vec())
        .file_name(document.to_owned())
        .mime_str("application/pdf")?;
    Ok(reqwest::multipart::Form::new()
        .part("files", part)
        .text("return_md", "true")
        .text("return_content_list", "true"))
}

/// The API a worker or legacy Service parses golden documents through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Api {
    /// `POST /file_parse` (MinerU 2 and 3, and our workers).
    FileParse,
    /// `POST /v1/file_parse` (MinerU 4's `mineru-api`), on `tier` or the server's default.
    V1 { tier: Option<String> },
}

/// Where one side of a comparison parses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub api: Api,
}

impl Endpoint {
    /// One of our workers.
    pub fn worker(url: String) -> Self {
        Self {
            url,
            api: Api::FileParse,
        }
    }

    /// The request that parses `pdf` here.
    pub fn request(
        &self,
        http: &reqwest::Client,
        document: &str,
        pdf: &[u8],
    ) -> reqwest::Result<reqwest::RequestBuilder> {
        let base = self.url.trim_end_matches('/');
        Ok(match &self.api {
            Api::FileParse => http
                .post(format!("{base}/file_parse"))
                .multipart(parse_form(document, pdf)?),
            Api::V1 { tier } => {
                let part = reqwest::multipart::Part::bytes(pdf.to_vec())
                    .file_name(document.to_owned())
                    .mime_str("application/pdf")?;
                let mut query = vec![
                    ("output_formats", "markdown"),
                    ("output_formats", "structured_content"),
                ];
                if let Some(tier) = tier {
                    query.push(("tier", tier.as_str()));
                }
                http.post(format!("{base}/v1/file_parse"))
                    .query(&query)
                    .multipart(reqwest::multipart::Form::new().part("files", part))
            }
        })
    }
}

/// Sends a document to a worker (or a legacy MinerU) and reads its answer.
pub async fn parse_with(
    http: &reqwest::Client,
    worker: &'static str,
    endpoint: &Endpoint,
    document: &str,
    pdf: &[u8],
    timeout: Duration,
) -> Result<Parsed, QualityError> {
    let failed = |reason: String| QualityError::Parse {
        worker,
        url: endpoint.url.clone(),
        document: document.to_owned(),
        reason,
    };
    // A golden document is extra load: a worker at capacity (429) or shedding (503) is asked
    // again after the wait it names, within the document's budget, rather than failing it.
    let deadline = tokio::time::Instant::now() + timeout;
    let response = loop {
        let request = endpoint
            .request(http, document, pdf)
            .map_err(|error| failed(error.to_string()))?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let response = request
            .header(SOURCE_HEADER, "golden")
            .timeout(left)
            .send()
            .await
            .map_err(|error| failed(error.to_string()))?;
        // MinerU 4 answers 503 for what waiting does not mend (no tier to parse on, a dead
        // engine), without Retry-After: only one that names a wait is asked again.
        let names_wait = response
            .headers()
            .contains_key(reqwest::header::RETRY_AFTER);
        let busy = match response.status() {
            reqwest::StatusCode::TOO_MANY_REQUESTS => true,
            reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                endpoint.api == Api::FileParse || names_wait
            }
            _ => false,
        };
        let wait = retry_after(&response);
        if !busy || tokio::time::Instant::now() + wait >= deadline {
            break response;
        }
        tokio::time::sleep(wait).await;
    };
    let status = response.status();
    // The worker's image is the CR author's: its answer is read only up to a bound.
    let bytes = crate::outbound::read_capped(response, MAX_ANSWER_BYTES)
        .await
        .map_err(|error| failed(format!("HTTP {status}, unreadable answer: {error}")))?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|error| failed(format!("HTTP {status}, unreadable answer: {error}")))?;
    // MinerU 4 answers 202 when its wait ran out and 409 for a failed job, with the job.
    if status != reqwest::StatusCode::OK {
        return Err(failed(format!("HTTP {status}: {body}")));
    }
    match endpoint.api {
        Api::FileParse => file_parse_answer(&body),
        Api::V1 { .. } => v1_answer(&body),
    }
    .map_err(failed)
}

/// `{"results": {<file>: {md_content, content_list}}}`.
fn file_parse_answer(body: &Value) -> Result<Parsed, String> {
    let result = body["results"]
        .as_object()
        .and_then(|results| results.values().next())
        .ok_or_else(|| format!("answer has no results: {body}"))?;
    let markdown = result["md_content"].as_str().unwrap_or_default().to_owned();
    // mineru-api returns content_list as a JSON string; accept an array too.
    let content_list = match &result["content_list"] {
        Value::String(text) => serde_json::from_str(text)
            .map_err(|error| format!("content_list is not JSON: {error}"))?,
        Value::Array(items) => items.clone(),
        _ => Vec::new(),
    };
    Ok(Parsed {
        markdown,
        content_list,
    })
}

/// MinerU 4's task: `files[0].content` with the Markdown and the structured content, whose
/// blocks become content-list items in MinerU 2's vocabulary, so both sides compare alike.
fn v1_answer(body: &Value) -> Result<Parsed, String> {
    let content = &body["files"][0]["content"];
    let markdown = content["markdown"]
        .as_str()
        .ok_or_else(|| format!("answer has no Markdown: {body}"))?
        .to_owned();
    let mut content_list = Vec::new();
    let pages = content["structured_content"]["pages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for page in &pages {
        for block in page["blocks"].as_array().into_iter().flatten() {
            let kind = match block["type"].as_str().unwrap_or("unknown") {
                "doc_title" | "paragraph_title" | "title" | "text" | "ref_text" | "phonetic" => {
                    "text"
                }
                "image" | "chart" => "image",
                "interline_equation" | "equation" => "equation",
                "algorithm" | "code" => "code",
                other => other,
            };
            let mut item = serde_json::json!({
                "type": kind,
                "text": block["content"].as_str().unwrap_or_default(),
                "page_idx": page["page_idx"],
            });
            // A title's level is MinerU 2's text_level.
            if let Some(level) = block["level"].as_i64() {
                item["text_level"] = level.into();
            }
            content_list.push(item);
        }
    }
    Ok(Parsed {
        markdown,
        content_list,
    })
}

/// How long a busy worker asks to be left alone: its `Retry-After` seconds, 1 s without one,
/// at most 30 s.
fn retry_after(response: &reqwest::Response) -> Duration {
    let seconds = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds.clamp(1, 30))
}

/// The `count` golden documents a canary is compared on: an order shuffled by the canary's
/// revision, so that each rollout samples a large set differently while a restart, or the next
/// step asking for more, draws the same documents first.
pub fn sample(
    documents: BTreeMap<String, Vec<u8>>,
    revision: &str,
    count: usize,
) -> BTreeMap<String, Vec<u8>> {
    let mut keyed: Vec<_> = documents
        .into_iter()
        .map(|(name, pdf)| {
            let rank = Sha256::digest(format!("{revision}\n{name}").as_bytes());
            (rank, name, pdf)
        })
        .collect();
    keyed.sort_unstable_by_key(|(rank, _, _)| *rank);
    keyed
        .into_iter()
        .take(count)
        .map(|(_, name, pdf)| (name, pdf))
        .collect()
}

/// Compares one golden document on both workers. Never an error: a document only the canary
/// cannot parse is a regression; one the baseline cannot parse (alone or too) says nothing of
/// the canary and is recorded as an Error.
pub async fn compare_one(
    http: &reqwest::Client,
    baseline: &Endpoint,
    canary: &Endpoint,
    document: &str,
    pdf: &[u8],
    min_similarity: f64,
    timeout: Duration,
) -> QualityResult {
    let (baseline, canary) = futures::join!(
        parse_with(http, "baseline", baseline, document, pdf, timeout),
        parse_with(http, "canary", canary, document, pdf, timeout),
    );
    let unanswered = |verdict, message: String| QualityResult {
        document: document.to_owned(),
        similarity: 0.0,
        verdict,
        message: Some(message),
        differences: Vec::new(),
    };
    match (baseline, canary) {
        (Ok(baseline), Ok(canary)) => {
            let mut result = scored(document, similarity(&baseline, &canary), min_similarity);
            if result.verdict == Verdict::Fail {
                result.differences = differences(&baseline, &canary, DIFFERENCES_KEPT);
            }
            result
        }
        (Ok(_), Err(canary)) => unanswered(Verdict::Fail, canary.to_string()),
        (Err(baseline), Ok(_)) => unanswered(Verdict::Error, baseline.to_string()),
        (Err(baseline), Err(canary)) => {
            unanswered(Verdict::Error, format!("both failed: {baseline}; {canary}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_mineru_4_answer_reads_as_markdown_and_mineru_2_blocks() {
        let body = json!({"status": "completed", "files": [{"content": {
            "markdown": "# T\n\nx",
            "structured_content": {"pages": [{"page_idx": 0, "blocks": [
                {"type": "doc_title", "level": 1, "content": "T"},
                {"type": "paragraph_title", "level": 2, "content": "S"},
                {"type": "text", "content": "x"},
                {"type": "chart", "content": {"image": "a.png"}},
                {"type": "interline_equation", "content": "E"},
                {"type": "page_number", "content": "1"},
            ]}]}
        }}]});
        let parsed = v1_answer(&body).unwrap();
        assert_eq!(parsed.markdown, "# T\n\nx");
        let kinds: Vec<_> = parsed
            .content_list
            .iter()
            .map(|i| (i["type"].as_str().unwrap(), i["text_level"].as_i64()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("text", Some(1)),
                ("text", Some(2)),
                ("text", None),
                ("image", None),
                ("equation", None),
                ("page_number", None)
            ]
        );
        assert!(v1_answer(&json!({"files": []})).is_err());
    }

    fn parsed(markdown: &str, types: &[&str]) -> Parsed {
        Parsed {
            markdown: markdown.to_owned(),
            content_list: types.iter().map(|t| json!({"type": t})).collect(),
        }
    }

    const TEXT: &str = "# Report\n\nRevenue grew in every region this quarter, led by the north.\n\n<table><tr><td>1</td></tr></table>";

    #[test]
    fn a_sample_is_fixed_per_revision_and_grows_by_adding_documents() {
        let documents: BTreeMap<String, Vec<u8>> = (0..40)
            .map(|i| (format!("doc-{i:02}.pdf"), vec![i]))
            .collect();
        let names = |revision: &str, count: usize| -> Vec<String> {
            sample(documents.clone(), revision, count)
                .into_keys()
                .collect()
        };
        let first = names("w-1", 10);
        assert_eq!(first.len(), 10);
        assert_eq!(
            first,
            names("w-1", 10),
            "a restart compares the same documents"
        );
        let larger = names("w-1", 20);
        assert!(first.iter().all(|name| larger.contains(name)));
        assert_ne!(
            first,
            names("w-2", 10),
            "another rollout samples differently"
        );
        assert_eq!(names("w-1", 100).len(), 40, "a small set is compared whole");
    }

    #[test]
    fn identical_output_is_fully_similar() {
        let a = parsed(TEXT, &["text", "text", "table"]);
        assert_eq!(similarity(&a, &a.clone()), 1.0);
    }

    #[test]
    fn whitespace_and_case_do_not_count() {
        let a = parsed(TEXT, &["text", "text", "table"]);
        let b = parsed(
            &TEXT.to_uppercase().replace(' ', "  \n"),
            &["text", "text", "table"],
        );
        assert_eq!(similarity(&a, &b), 1.0);
    }

    #[test]
    fn a_lost_table_costs_structure_and_text() {
        let a = parsed(TEXT, &["text", "text", "table"]);
        let b = parsed(TEXT.split("<table>").next().unwrap(), &["text", "text"]);
        let score = similarity(&a, &b);
        assert!(score < 0.95 && score > 0.5, "{score}");
    }

    #[test]
    fn unrelated_output_is_dissimilar() {
        let a = parsed(TEXT, &["text", "text", "table"]);
        let b = parsed("completely different words here", &["image"]);
        assert!(similarity(&a, &b) < 0.2);
    }

    #[test]
    fn empty_outputs_match_each_other_only() {
        let empty = parsed("", &[]);
        assert_eq!(similarity(&empty, &empty.clone()), 1.0);
        assert!(similarity(&empty, &parsed(TEXT, &["text"])) < 0.01);
    }

    fn blocks(items: &[(&str, &str, i64)]) -> Parsed {
        Parsed {
            markdown: String::new(),
            content_list: items
                .iter()
                .map(|(kind, text, page)| json!({"type": kind, "text": text, "page_idx": page}))
                .collect(),
        }
    }

    #[test]
    fn status_keeps_the_differences_of_the_worst_documents_only() {
        let results: Vec<QualityResult> = (0..30)
            .map(|i| QualityResult {
                document: format!("doc-{i:02}.pdf"),
                similarity: f64::from(i) / 100.0,
                verdict: Verdict::Fail,
                message: None,
                differences: differences(
                    &blocks(&[("text", "a", 0)]),
                    &blocks(&[("text", "b", 0)]),
                    1,
                ),
            })
            .collect();
        let kept = kept_in_status(results);
        assert_eq!(kept.len(), 30, "every verdict stays");
        let with: Vec<_> = kept
            .iter()
            .filter(|r| !r.differences.is_empty())
            .map(|r| r.document.as_str())
            .collect();
        assert_eq!(with.len(), 20);
        assert_eq!((with[0], with[19]), ("doc-00.pdf", "doc-19.pdf"));
    }

    #[test]
    fn differences_name_the_blocks_that_changed_went_missing_or_were_added() {
        let stable = blocks(&[
            ("title", "Annual report", 0),
            ("text", "Revenue grew in every region.", 0),
            ("table", "<table><tr><td>1</td></tr></table>", 1),
            ("text", "Outlook is steady.", 1),
        ]);
        let canary = blocks(&[
            ("title", "ANNUAL  report", 0),
            ("text", "Revenue fell in every region.", 0),
            ("text", "Outlook is steady.", 1),
            ("text", "An extra paragraph.", 1),
        ]);
        let found = differences(&stable, &canary, 10);
        let summary: Vec<_> = found
            .iter()
            .map(|d| (d.change.as_str(), d.block.as_str(), d.page))
            .collect();
        assert_eq!(
            summary,
            [
                ("changed", "text", Some(1)),
                ("missing", "table", Some(2)),
                ("added", "text", Some(2)),
            ],
            "{found:?}"
        );
        assert_eq!(
            found[0].baseline.as_deref(),
            Some("Revenue grew in every region.")
        );
        assert_eq!(
            found[0].canary.as_deref(),
            Some("Revenue fell in every region.")
        );
        assert_eq!(
            differences(&stable, &canary, 1).len(),
            1,
            "at most the limit"
        );
        assert!(differences(&stable, &stable.clone(), 10).is_empty());
        let long = "word ".repeat(100);
        let shortened = differences(&blocks(&[("text", &long, 0)]), &blocks(&[]), 1);
        assert!(shortened[0].baseline.as_deref().unwrap().ends_with('…'));
    }

    #[test]
    fn a_score_passes_at_the_threshold_and_rounds_down_for_status() {
        assert_eq!(scored("a.pdf", 0.95, 0.95).verdict, Verdict::Pass);
        let below = scored("b.pdf", 0.949_99, 0.95);
        assert_eq!(below.verdict, Verdict::Fail);
        assert_eq!(below.similarity, 0.9499);
        assert!(below.message.unwrap().contains("below 0.95"));
    }
}
