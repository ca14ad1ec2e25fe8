//! The `parse` command as a user runs it: files in, MinerU-shaped files out, and for bad input a
//! non-zero exit with one line saying which file and why.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Font, PageSpec, build_pdf, empty_pdf, fixture};

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mineru-worker"))
        .args(args)
        .output()
        .expect("run mineru-worker")
}

fn parse(files: &[&Path], out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec!["parse".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    args.extend(["-o".as_ref(), out.as_os_str()]);
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    run(&args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sample() -> Vec<u8> {
    build_pdf(&[
        PageSpec::letter()
            .text(72.0, 90.0, 20.0, Font::Helvetica, "Quarterly Notes")
            .lines(72.0, 130.0, 11.0, 14.0, &["Revenue grew in every region."]),
        PageSpec::letter().lines(72.0, 100.0, 11.0, 14.0, &["Second page text."]),
        PageSpec::letter().lines(72.0, 100.0, 11.0, 14.0, &["Third page text."]),
    ])
}

#[test]
fn parse_writes_markdown_content_list_and_page_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pdf = dir.path().join("notes.pdf");
    std::fs::write(&pdf, sample()).expect("write pdf");
    let out_dir = dir.path().join("out");
    let out = parse(&[&pdf], &out_dir, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stderr.is_empty(),
        "quiet when stderr is not a terminal: {}",
        stderr(&out)
    );

    let doc = out_dir.join("notes");
    let md = std::fs::read_to_string(doc.join("notes.md")).expect("markdown");
    assert_eq!(
        md,
        "# Quarterly Notes\n\nRevenue grew in every region.\n\nSecond page text.\n\nThird page text.\n"
    );
    let list: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(doc.join("notes_content_list.json")).expect("content list"),
    )
    .expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(4));
    assert_eq!(list[3]["page_idx"], 2);
    let pages: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(doc.join("notes_pages.json")).expect("pages"),
    )
    .expect("json");
    assert_eq!(pages.as_array().map(Vec::len), Some(3));
}

#[test]
fn pages_option_selects_a_one_based_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pdf = dir.path().join("notes.pdf");
    std::fs::write(&pdf, sample()).expect("write pdf");
    let out = parse(&[&pdf], dir.path(), &["--pages", "2-3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(dir.path().join("notes/notes.md")).expect("markdown");
    assert_eq!(md, "Second page text.\n\nThird page text.\n");

    let out = parse(&[&pdf], dir.path(), &["--pages", "7-"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: {}: pages 7- selected but the document has 3 page(s)",
            pdf.display()
        )
    );
}

/// Each bad input, the file name it is written under, and the reason the CLI must give.
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut truncated = sample();
    truncated.truncate(truncated.len() / 2);
    let mut huge = PageSpec::letter().text(10.0, 20.0, 12.0, Font::Helvetica, "x");
    huge.size = (100.0, 50_000.0);
    vec![
        (
            "notpdf.pdf",
            b"PK\x03\x04 a zip file".to_vec(),
            "not a PDF (no %PDF- header in the first 1024 bytes)",
        ),
        (
            "truncated.pdf",
            truncated,
            "truncated PDF (no %%EOF marker at the end of the file)",
        ),
        (
            "garbage.pdf",
            [b"%PDF-1.4\n".as_slice(), &[0xAB; 3000], b"\n%%EOF\n"].concat(),
            "corrupt PDF: pdfium cannot parse it (format error)",
        ),
        ("empty.pdf", empty_pdf(), "PDF has no pages"),
        (
            "encrypted.pdf",
            std::fs::read(fixture("encrypted.pdf")).expect("fixture"),
            "encrypted PDF: a password is required to open it",
        ),
        (
            "huge.pdf",
            build_pdf(&[huge]),
            "page 1: size 100x50000 pt is outside 1..=14400 pt",
        ),
    ]
}

#[test]
fn every_bad_input_exits_non_zero_with_a_one_line_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes, reason) in bad_inputs() {
        let pdf = dir.path().join(name);
        std::fs::write(&pdf, bytes).expect("write input");
        let out = parse(&[&pdf], &dir.path().join("out"), &[]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert_eq!(
            stderr(&out),
            format!("error: {}: {reason}\n", pdf.display()),
            "{name}"
        );
    }
}

#[test]
fn good_files_are_still_written_when_another_file_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.pdf");
    let missing = dir.path().join("missing.pdf");
    std::fs::write(&good, sample()).expect("write pdf");
    let out = parse(&[&missing, &good], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: {}: cannot read:", missing.display())),
        "{err}"
    );
    assert!(dir.path().join("good/good.md").is_file());
}

#[test]
fn vlm_backend_without_a_server_url_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pdf = dir.path().join("notes.pdf");
    std::fs::write(&pdf, sample()).expect("write pdf");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mineru-worker"));
    cmd.env_remove("MINERU_SERVER_URL")
        .args(["parse", "--backend", "vlm", "-o"])
        .arg(dir.path())
        .arg(&pdf);
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: --server-url (or MINERU_SERVER_URL) is required with --backend vlm\n"
    );
}

mod vlm {
    use super::*;
    use mineru_protocol::model::{Angle, BBox, Block, BlockType};
    use mineru_worker::simulator::{self, LayoutAnswer, Scenario, SimConfig};

    fn block(kind: BlockType, [x0, y0, x1, y1]: [u32; 4]) -> Block {
        Block {
            angle: Some(Angle::Up),
            ..Block::new(kind, BBox::new(x0, y0, x1, y1).expect("valid box"))
        }
    }

    /// The CLI against the strict simulator with an API key: both pages come back in MinerU's
    /// shapes, images are cropped to files, and the server saw no request it would refuse.
    #[tokio::test(flavor = "multi_thread")]
    async fn parse_with_the_vlm_backend_writes_the_same_structure() {
        let scenario = Scenario {
            layout: LayoutAnswer::Blocks(vec![
                block(BlockType::Header, [100, 20, 900, 40]),
                block(BlockType::Title, [100, 60, 900, 100]),
                block(BlockType::Text, [100, 120, 900, 250]),
                block(BlockType::Image, [100, 270, 600, 520]),
                block(BlockType::ImageCaption, [100, 530, 600, 560]),
                block(BlockType::Table, [100, 580, 900, 760]),
                block(BlockType::Equation, [200, 780, 800, 840]),
                block(BlockType::PageNumber, [480, 950, 520, 970]),
            ]),
            ..Scenario::default()
        };
        let sim = simulator::start_local(SimConfig {
            scenario,
            api_key: Some("s3cret".into()),
            ..SimConfig::new("mineru2.5")
        })
        .await
        .expect("start simulator");

        let dir = tempfile::tempdir().expect("tempdir");
        let pdf = dir.path().join("paper.pdf");
        std::fs::write(&pdf, sample()).expect("write pdf");
        let key = dir.path().join("key");
        std::fs::write(&key, "s3cret\n").expect("write key");
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mineru-worker"))
            .args([
                "parse",
                "--backend",
                "vlm",
                "--pages",
                "1-2",
                "--server-url",
            ])
            .arg(sim.url())
            .arg("--api-key-file")
            .arg(&key)
            .arg("-o")
            .arg(dir.path())
            .arg(&pdf)
            .output()
            .await
            .expect("run");
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(sim.deviations(), 0, "{:?}", sim.deviation_log());

        let doc = dir.path().join("paper");
        let md = std::fs::read_to_string(doc.join("paper.md")).expect("markdown");
        // The image's analysis follows it, as MinerU writes it.
        let page = "# Simulated text.\n\nSimulated text.\n\n![](images/p1_b2.jpg)\n\n<details>\n\
                    <summary>natural_image</summary>\n\nA simulated figure.\n</details>\n\n\
                    Simulated text.\n\n<table>";
        assert!(md.starts_with(page), "{md}");
        assert!(md.contains("$$\nE = m c^{2}\n$$"), "{md}");
        assert!(md.contains("![](images/p2_b2.jpg)"), "{md}");
        assert!(
            !md.contains("Simulated text.\n\n7"),
            "furniture stays out: {md}"
        );
        let crop = image::open(doc.join("images/p1_b2.jpg")).expect("image crop");
        assert_eq!((crop.width(), crop.height()), (850, 550));

        let list: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(doc.join("paper_content_list.json")).expect("list"),
        )
        .expect("json");
        let types: Vec<&str> = list
            .as_array()
            .expect("list")
            .iter()
            .filter(|i| i["page_idx"] == 0)
            .map(|i| i["type"].as_str().expect("type"))
            .collect();
        assert_eq!(
            types,
            [
                "text",
                "text",
                "image",
                "table",
                "equation",
                "header",
                "page_number"
            ]
        );
        assert_eq!(list[2]["img_path"], "images/p1_b2.jpg");
        assert_eq!(list[2]["image_caption"][0], "Simulated text.");
        assert!(
            list[3]["table_body"]
                .as_str()
                .expect("html")
                .starts_with("<table>")
        );
        assert_eq!(list[4]["text_format"], "latex");
        let pages: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(doc.join("paper_pages.json")).expect("pages"),
        )
        .expect("json");
        assert_eq!(pages[1]["backend"], "vlm");
        assert_eq!(pages[1]["needs_ocr"], false);
        sim.shutdown().await;
    }
}

fn parse_without_pdfium(lib_path: &Path) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let pdf = dir.path().join("notes.pdf");
    std::fs::write(&pdf, b"%PDF-1.7\n%%EOF\n").expect("write pdf");
    Command::new(env!("CARGO_BIN_EXE_mineru-worker"))
        .env("PDFIUM_DYNAMIC_LIB_PATH", lib_path)
        .env("MINERU_CACHE", dir.path().join("no-cache"))
        .args(["parse", "-o"])
        .arg(dir.path())
        .arg(&pdf)
        .output()
        .expect("run")
}

#[test]
fn without_libpdfium_the_error_says_how_to_get_it() {
    let out = parse_without_pdfium(Path::new("/nonexistent/libpdfium.so"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("libpdfium.so not found (searched: /nonexistent/libpdfium.so, "),
        "{err}"
    );
    assert!(
        err.contains("run worker/scripts/install-pdfium.sh"),
        "{err}"
    );
    assert!(err.contains("set PDFIUM_DYNAMIC_LIB_PATH"), "{err}");
}

#[test]
fn a_broken_libpdfium_is_named_in_the_error() {
    let out = parse_without_pdfium(&fixture("encrypted.pdf"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot load pdfium from {0}: dlopen failed: {0}: invalid ELF header",
            fixture("encrypted.pdf").display()
        )),
        "{err}"
    );
}
