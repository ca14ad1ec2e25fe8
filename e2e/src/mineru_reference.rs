//! MinerU itself as the reference for the worker's output. MinerU 3.4.5's own pipeline
//! (`mineru -b vlm-http-client`, which needs no local models) and `mineru-worker parse --backend
//! vlm` run against the same vLLM simulator and scenario on the same PDFs, so both get the same
//! model answers; their content lists and Markdown are then compared block by block.
//!
//! MinerU's outputs are kept under [`GOLDEN_DIR`]: the PDFs, one directory per scenario (its
//! `scenario.yaml` and MinerU's outputs for each PDF) and the report of the last comparison. `make compare-mineru` regenerates them (it installs MinerU 3.4.5, about
//! 850 MB); `e2e/tests/mineru_reference.rs` holds the worker to them without MinerU installed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::stack::Simulator;
use crate::{files_under, repo_path, workspace_binary};

/// Where MinerU's outputs, the PDFs and the scenario live, from the repository root.
pub const GOLDEN_DIR: &str = "e2e/golden/mineru-3.4.5";

/// How far (0..=1000 page units) a bbox may move and still be the same: MinerU maps the model's
/// boxes to page pixels and back, truncating twice.
const BBOX_TOLERANCE: i64 = 3;

pub fn golden_dir() -> PathBuf {
    repo_path(GOLDEN_DIR)
}

/// The PDFs both pipelines parse, sorted.
pub fn documents() -> Vec<PathBuf> {
    files_under(&golden_dir().join("pdfs"), &|p| {
        p.extension().is_some_and(|e| e == "pdf")
    })
}

/// The scenario directories (each holding a `scenario.yaml`), sorted.
pub fn scenarios() -> Vec<PathBuf> {
    files_under(&golden_dir(), &|p| p.ends_with("scenario.yaml"))
        .into_iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect()
}

/// The simulator both pipelines call, answering from the scenario in `dir`.
pub fn simulator(dir: &Path, logs: &Path) -> Result<Simulator> {
    let scenario = dir.join("scenario.yaml");
    Simulator::start(
        "reference",
        "mineru2.5",
        &["--scenario", &scenario.to_string_lossy()],
        logs,
    )
}

/// What a pipeline produced for one document.
#[derive(Debug, Clone)]
pub struct Output {
    pub markdown: String,
    pub content_list: Vec<Value>,
}

impl Output {
    /// Reads `<dir>/<stem>.md` and `<dir>/<stem>_content_list.json`.
    pub fn read(dir: &Path, stem: &str) -> Result<Self> {
        let markdown_path = dir.join(format!("{stem}.md"));
        let list_path = dir.join(format!("{stem}_content_list.json"));
        let markdown = std::fs::read_to_string(&markdown_path)
            .with_context(|| format!("reading {}", markdown_path.display()))?;
        let list = std::fs::read_to_string(&list_path)
            .with_context(|| format!("reading {}", list_path.display()))?;
        Ok(Output {
            markdown,
            content_list: serde_json::from_str(&list)
                .with_context(|| format!("parsing {}", list_path.display()))?,
        })
    }
}

/// A file's name without its extension.
pub fn stem(pdf: &Path) -> Result<String> {
    Ok(pdf
        .file_stem()
        .context("a PDF without a file name")?
        .to_string_lossy()
        .into_owned())
}

fn run(mut command: Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            crate::process::tail_text(&String::from_utf8_lossy(&output.stderr), 30)
        );
    }
    Ok(())
}

/// `mineru-worker parse --backend vlm` on `pdf`, writing under `out`.
pub fn run_worker(server_url: &str, pdf: &Path, out: &Path) -> Result<Output> {
    let mut command = Command::new(workspace_binary("mineru-worker")?);
    command
        .args([
            "parse",
            "--backend",
            "vlm",
            "--server-url",
            server_url,
            "-o",
        ])
        .arg(out)
        .arg(pdf);
    run(command, "mineru-worker parse")?;
    let stem = stem(pdf)?;
    Output::read(&out.join(&stem), &stem)
}

/// MinerU 3.4.5's `mineru -b vlm-http-client` on `pdf`, writing under `out`.
pub fn run_mineru(venv: &Path, server_url: &str, pdf: &Path, out: &Path) -> Result<Output> {
    let mut command = Command::new(venv.join("bin/mineru"));
    command
        .args(["-b", "vlm-http-client", "-u", server_url, "-p"])
        .arg(pdf)
        .arg("-o")
        .arg(out);
    run(command, "mineru")?;
    let stem = stem(pdf)?;
    Output::read(&out.join(&stem).join("vlm"), &stem)
}

/// The MinerU 3.4.5 virtualenv, installed when missing.
pub fn mineru_venv() -> Result<PathBuf> {
    crate::mineru_api::install_venv("mineru3")
}

/// Runs the worker on every golden PDF under every scenario and compares it with MinerU's
/// outputs, returning the report. With MinerU's virtualenv, MinerU runs first and its golden
/// outputs are rewritten.
pub fn run_comparison(mineru: Option<&Path>) -> Result<String> {
    let mut reports = Vec::new();
    for scenario in scenarios() {
        let work = tempfile::tempdir()?;
        let sim = simulator(&scenario, work.path())?;
        for pdf in documents() {
            let stem = stem(&pdf)?;
            let kept = scenario.join(&stem);
            if let Some(venv) = mineru {
                let theirs = run_mineru(venv, &sim.url(), &pdf, &work.path().join("mineru"))?;
                std::fs::create_dir_all(&kept)?;
                std::fs::write(kept.join(format!("{stem}.md")), &theirs.markdown)?;
                std::fs::write(
                    kept.join(format!("{stem}_content_list.json")),
                    serde_json::to_string_pretty(&theirs.content_list)? + "\n",
                )?;
            }
            let theirs = Output::read(&kept, &stem)?;
            let ours = run_worker(&sim.url(), &pdf, &work.path().join("worker"))?;
            let name = scenario.file_name().unwrap_or_default().to_string_lossy();
            reports.push(compare(&format!("{name}/{stem}"), &ours, &theirs));
        }
        let deviations = sim.stats()?["deviations"].as_u64().unwrap_or(u64::MAX);
        if deviations != 0 {
            bail!(
                "the simulator of {} saw {deviations} protocol deviations",
                scenario.display()
            );
        }
    }
    Ok(render(&reports))
}

/// How far two outputs of one document agree.
#[derive(Debug, Default)]
pub struct Agreement {
    /// Blocks present in both and equal.
    pub agreeing: usize,
    pub ours: usize,
    pub theirs: usize,
    pub differences: Vec<String>,
}

/// One document's comparison.
#[derive(Debug)]
pub struct DocumentReport {
    pub name: String,
    pub content_list: Agreement,
    pub markdown: Agreement,
}

/// Compares our output of document `name` (`<scenario>/<stem>`) with MinerU's.
pub fn compare(name: &str, ours: &Output, theirs: &Output) -> DocumentReport {
    DocumentReport {
        name: name.to_owned(),
        content_list: compare_content_lists(&ours.content_list, &theirs.content_list),
        markdown: compare_markdown(&ours.markdown, &theirs.markdown),
    }
}

/// The report as committed beside the golden outputs: a table, then every difference.
pub fn render(reports: &[DocumentReport]) -> String {
    let mut out = String::from(
        "# Worker vs MinerU 3.4.5 (vlm-http-client), same simulator and scenario\n\
         # document: content-list items agreeing / ours / MinerU's; Markdown blocks likewise\n",
    );
    for r in reports {
        let (c, m) = (&r.content_list, &r.markdown);
        let _ = writeln!(
            out,
            "{}: content list {}/{}/{}, markdown {}/{}/{}",
            r.name, c.agreeing, c.ours, c.theirs, m.agreeing, m.ours, m.theirs
        );
    }
    for r in reports {
        for (what, agreement) in [("content list", &r.content_list), ("markdown", &r.markdown)] {
            for difference in &agreement.differences {
                let _ = writeln!(out, "\n## {} {what}\n{difference}", r.name);
            }
        }
    }
    out
}

/// The fields of a content-list item that must agree, and its page and bbox. Image paths differ
/// by design (MinerU names crops by hash), so only whether there is one counts.
fn item_fields(item: &Value) -> (Value, Option<Vec<i64>>) {
    let mut fields = item.as_object().cloned().unwrap_or_default();
    let bbox = fields.remove("bbox").and_then(|b| {
        b.as_array()
            .map(|v| v.iter().filter_map(Value::as_i64).collect::<Vec<_>>())
    });
    if let Some(path) = fields.get_mut("img_path") {
        *path = Value::Bool(path.as_str().is_some_and(|p| !p.is_empty()));
    }
    (Value::Object(fields), bbox)
}

fn item_key(item: &Value) -> (Option<u64>, Option<String>) {
    (
        item.get("page_idx").and_then(Value::as_u64),
        item.get("type").and_then(Value::as_str).map(str::to_owned),
    )
}

fn compare_content_lists(ours: &[Value], theirs: &[Value]) -> Agreement {
    let ours_keys: Vec<_> = ours.iter().map(item_key).collect();
    let theirs_keys: Vec<_> = theirs.iter().map(item_key).collect();
    let mut agreement = Agreement {
        ours: ours.len(),
        theirs: theirs.len(),
        ..Agreement::default()
    };
    for step in align(&ours_keys, &theirs_keys) {
        match step {
            Step::Both(i, j) => {
                let (our_fields, our_bbox) = item_fields(&ours[i]);
                let (their_fields, their_bbox) = item_fields(&theirs[j]);
                let mut problems = Vec::new();
                if our_fields != their_fields {
                    problems.push(format!(
                        "  ours:   {}\n  MinerU: {}",
                        compact(&our_fields),
                        compact(&their_fields)
                    ));
                }
                if !bbox_close(our_bbox.as_deref(), their_bbox.as_deref()) {
                    problems.push(format!("  bbox ours {our_bbox:?}, MinerU {their_bbox:?}"));
                }
                if problems.is_empty() {
                    agreement.agreeing += 1;
                } else {
                    agreement.differences.push(format!(
                        "item {} vs {} differs:\n{}",
                        i + 1,
                        j + 1,
                        problems.join("\n")
                    ));
                }
            }
            Step::OnlyOurs(i) => agreement.differences.push(format!(
                "item {} only in ours: {}",
                i + 1,
                compact(&item_fields(&ours[i]).0)
            )),
            Step::OnlyTheirs(j) => agreement.differences.push(format!(
                "item {} only in MinerU's: {}",
                j + 1,
                compact(&item_fields(&theirs[j]).0)
            )),
        }
    }
    agreement
}

fn bbox_close(ours: Option<&[i64]>, theirs: Option<&[i64]>) -> bool {
    match (ours, theirs) {
        (Some(a), Some(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| (x - y).abs() <= BBOX_TOLERANCE)
        }
        (a, b) => a == b,
    }
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Markdown blocks: runs of text between blank lines, with image file names (hashes in MinerU,
/// page and block numbers in ours) left out. A `<details>` element is one block, as MinerU
/// writes a blank line inside it.
fn markdown_blocks(markdown: &str) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    let mut open_details = false;
    for part in markdown.split("\n\n") {
        let part = part.trim_matches('\n');
        if part.is_empty() {
            continue;
        }
        let part = without_image_names(part);
        match blocks.last_mut() {
            Some(last) if open_details => {
                last.push_str("\n\n");
                last.push_str(&part);
            }
            _ => blocks.push(part.clone()),
        }
        let last = blocks.last().map(String::as_str).unwrap_or_default();
        open_details = last.matches("<details>").count() > last.matches("</details>").count();
    }
    blocks
}

fn without_image_names(text: &str) -> String {
    const LINK: &str = "](images/";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(LINK) {
        out.push_str(&rest[..at + LINK.len()]);
        rest = &rest[at + LINK.len()..];
        match rest.find(')') {
            Some(end) => {
                out.push('…');
                rest = &rest[end..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

fn compare_markdown(ours: &str, theirs: &str) -> Agreement {
    let ours = markdown_blocks(ours);
    let theirs = markdown_blocks(theirs);
    let mut agreement = Agreement {
        ours: ours.len(),
        theirs: theirs.len(),
        ..Agreement::default()
    };
    for step in align(&ours, &theirs) {
        match step {
            Step::Both(..) => agreement.agreeing += 1,
            Step::OnlyOurs(i) => agreement.differences.push(format!(
                "block {} only in ours:\n{}",
                i + 1,
                indent(&ours[i])
            )),
            Step::OnlyTheirs(j) => agreement.differences.push(format!(
                "block {} only in MinerU's:\n{}",
                j + 1,
                indent(&theirs[j])
            )),
        }
    }
    agreement
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, PartialEq)]
enum Step {
    Both(usize, usize),
    OnlyOurs(usize),
    OnlyTheirs(usize),
}

/// A longest-common-subsequence alignment of two sequences, in order.
fn align<T: PartialEq>(ours: &[T], theirs: &[T]) -> Vec<Step> {
    let (n, m) = (ours.len(), theirs.len());
    // lcs[i][j]: the longest common subsequence of ours[i..] and theirs[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if ours[i] == theirs[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut steps = Vec::with_capacity(n.max(m));
    while i < n || j < m {
        if i < n && j < m && ours[i] == theirs[j] {
            steps.push(Step::Both(i, j));
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            steps.push(Step::OnlyOurs(i));
            i += 1;
        } else {
            steps.push(Step::OnlyTheirs(j));
            j += 1;
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn alignment_pairs_the_common_blocks_and_lists_the_rest() {
        let steps = align(&["a", "b", "c", "d"], &["a", "c", "x", "d"]);
        assert_eq!(
            steps,
            vec![
                Step::Both(0, 0),
                Step::OnlyOurs(1),
                Step::Both(2, 1),
                Step::OnlyTheirs(2),
                Step::Both(3, 3),
            ]
        );
    }

    #[test]
    fn items_agree_within_the_bbox_tolerance_whatever_the_image_names() {
        let ours = [
            json!({"type": "image", "img_path": "images/p1_b3.png", "bbox": [100, 210, 500, 400], "page_idx": 0}),
        ];
        let theirs = [
            json!({"type": "image", "img_path": "images/01b9.jpg", "bbox": [99, 209, 498, 398], "page_idx": 0}),
        ];
        let agreement = compare_content_lists(&ours, &theirs);
        assert_eq!(agreement.agreeing, 1, "{:?}", agreement.differences);

        let moved = [
            json!({"type": "image", "img_path": "images/01b9.jpg", "bbox": [90, 209, 498, 398], "page_idx": 0}),
        ];
        let agreement = compare_content_lists(&ours, &moved);
        assert_eq!(agreement.agreeing, 0);
        assert!(agreement.differences[0].contains("bbox"));

        let no_image =
            [json!({"type": "image", "img_path": "", "bbox": [100, 210, 500, 400], "page_idx": 0})];
        assert_eq!(compare_content_lists(&ours, &no_image).agreeing, 0);
    }

    #[test]
    fn markdown_blocks_keep_details_whole_and_drop_image_names() {
        let blocks = markdown_blocks(
            "# T\n\n![](images/abc.jpg)\n\n<details>\n<summary>natural_image</summary>\n\nA cat.\n</details>\n\ntext",
        );
        assert_eq!(
            blocks,
            vec![
                "# T",
                "![](images/…)",
                "<details>\n<summary>natural_image</summary>\n\nA cat.\n</details>",
                "text"
            ]
        );
    }
}
