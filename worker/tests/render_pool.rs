//! The render pool with real pdfium in real subprocesses: it answers exactly what pdfium in this
//! process answers, and a child that crashes, spends its CPU budget or exhausts its memory costs
//! the one call it was making — the pool starts a fresh child and every other document carries on.

mod serve_common;

use std::sync::Arc;
use std::time::Duration;

use mineru_worker::pdf::{Document, Pages, PdfError};
use mineru_worker::render_pool::{PoolConfig, RenderPool};
use serve_common::{Content, pdf, raw_pdf, repeated_deflated};

fn pool(processes: usize, memory_limit: u64, cpu_limit: Duration) -> Arc<RenderPool> {
    RenderPool::new(PoolConfig {
        program: env!("CARGO_BIN_EXE_mineru-worker").into(),
        processes,
        memory_limit,
        cpu_limit,
    })
}

fn default_pool(processes: usize) -> Arc<RenderPool> {
    pool(processes, 1 << 30, Duration::from_secs(60))
}

/// The error of a call whose child stopped on page 1, and the reason it gives.
fn stopped_on_the_first_page<T>(result: Result<T, PdfError>) -> (PdfError, String) {
    let Err(err) = result else {
        panic!("the call succeeded")
    };
    match &err {
        PdfError::Stopped {
            page: Some(0),
            reason,
        } => {
            let reason = reason.clone();
            (err, reason)
        }
        _ => panic!("{err}"),
    }
}

#[test]
fn pages_from_the_pool_are_exactly_what_pdfium_in_process_gives() {
    let pool = default_pool(2);
    let sample = std::fs::read(mineru_sample()).expect("sample.pdf");
    for bytes in [pdf(&["alpha", "beta", "gamma"]), sample] {
        let local = Document::open(bytes.clone()).expect("open in process");
        let pooled = pool.open_bytes(&bytes).expect("open in the pool");
        assert_eq!(pooled.page_count(), local.page_count());
        for page in 0..local.page_count() {
            assert_eq!(
                pooled.page_text(page).expect("text"),
                local.page_text(page).expect("text")
            );
            assert_eq!(
                pooled.image_pixels(page).expect("pixels"),
                local.image_pixels(page).expect("pixels")
            );
            let (a, b) = (
                pooled.render_page(page).unwrap(),
                local.render_page(page).unwrap(),
            );
            assert_eq!(a.dimensions(), b.dimensions());
            assert!(a.as_raw() == b.as_raw(), "page {page} renders differently");
        }
    }
}

#[test]
fn the_documents_errors_come_back_as_pdfium_gives_them() {
    let pool = default_pool(1);
    let encrypted = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encrypted.pdf"),
    )
    .expect("fixture");
    assert!(matches!(
        pool.open_bytes(&encrypted),
        Err(PdfError::Encrypted)
    ));
    assert!(matches!(
        pool.open_bytes(b"not a pdf"),
        Err(PdfError::NotPdf)
    ));
    let doc = pool.open_bytes(&pdf(&["one"])).expect("open");
    assert!(matches!(
        doc.render_page(1),
        Err(PdfError::PageOutOfRange { page: 1, count: 1 })
    ));
    assert_eq!(pool.children_started(), 1, "refusals cost no child");
}

/// Sends `signal` to a child of the pool.
fn signal(child: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child).expect("pid");
    // SAFETY: kill(2) with plain integers, on our own child.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

#[test]
fn a_child_that_crashes_mid_call_costs_that_call_and_one_that_dies_idle_costs_nothing() {
    let pool = default_pool(1);
    // Tens of seconds of rasterising: the call is surely in flight when the child dies.
    let content = b"0 0 612 792 re f\n".repeat(20_000);
    let expensive = Arc::new(
        pool.open_bytes(&raw_pdf(Content::Plain(&content), None))
            .expect("open"),
    );
    let render = {
        let expensive = expensive.clone();
        std::thread::spawn(move || expensive.render_page(0).map(|_| ()))
    };
    let busy = loop {
        if let [child] = pool.busy_children()[..] {
            break child;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // What a failed check inside pdfium looks like from outside: SIGILL (its IMMEDIATE_CRASH
    // is a trap instruction).
    signal(busy, libc::SIGILL);
    let (err, reason) = stopped_on_the_first_page(render.join().expect("thread"));
    assert!(reason.contains("crashed"), "{err}");

    // A child that dies between calls (the OOM killer's first choice) is replaced before the
    // next call, and no document is blamed for it.
    let doc = pool.open_bytes(&pdf(&["survivor"])).expect("open");
    let [idle] = pool.idle_children()[..] else {
        panic!("one idle child")
    };
    signal(idle, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(50));
    assert!(doc.page_text(0).expect("a fresh child").chars.len() >= 8);
    assert_eq!(pool.children_started(), 3);
}

#[test]
fn a_page_past_its_cpu_budget_is_stopped_and_other_documents_carry_on() {
    let pool = pool(1, 1 << 30, Duration::from_secs(1));
    // Twenty thousand full-page fills: tens of seconds of rasterising.
    let content = b"0 0 612 792 re f\n".repeat(20_000);
    let expensive = pool
        .open_bytes(&raw_pdf(Content::Plain(&content), None))
        .expect("open");
    let good = pool.open_bytes(&pdf(&["fine"])).expect("open");
    let (err, reason) = stopped_on_the_first_page(expensive.render_page(0));
    // Its CPU budget, or on a loaded machine the wall-clock deadline (three times that), ends it.
    assert!(
        reason.contains("CPU") || reason.contains("deadline"),
        "{err}"
    );
    assert!(err.to_string().starts_with("page 1: pdfium "), "{err}");
    assert_eq!(
        good.render_page(0).expect("render").dimensions(),
        page_size()
    );
    assert_eq!(pool.children_started(), 2);
}

#[test]
fn a_decompression_bomb_exhausts_its_child_not_the_worker() {
    // A content stream of 120 MB of tiny fills from a few hundred KB of zlib: pdfium holds the
    // whole stream and an object per fill, in a child that may hold 192 MiB.
    let bomb = raw_pdf(
        Content::Deflated(repeated_deflated(b"0 0 1 1 re f\n", 120_000_000)),
        None,
    );
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let pool = pool(1, 192 << 20, Duration::from_secs(60));
    let doc = pool.open_bytes(&bomb).expect("the document itself opens");
    let Err(err) = doc.page_text(0) else {
        panic!("over the memory limit")
    };
    assert!(
        matches!(err, PdfError::Stopped { page: Some(0), .. }),
        "{err}"
    );
    let good = pool.open_bytes(&pdf(&["fine"])).expect("open");
    assert_eq!(
        good.render_page(0).expect("render").dimensions(),
        page_size()
    );
}

/// An image bomb does not exhaust pdfium's memory (it decodes scanline by scanline into the
/// render): it is stopped before it costs anything by the pixel limits (`parse::PixelLimits`),
/// which read the declared size.
#[test]
fn an_image_bomb_declares_its_pixels() {
    let bomb = raw_pdf(
        Content::Plain(b"q 612 0 0 792 0 0 cm /Im1 Do Q"),
        Some((10_000, 10_000, repeated_deflated(&[0], 300_000_000))),
    );
    let doc = default_pool(1).open_bytes(&bomb).expect("open");
    assert_eq!(doc.image_pixels(0).expect("pixels"), 100_000_000);
}

#[test]
fn every_child_renders_at_once() {
    let pool = default_pool(2);
    let doc = Arc::new(pool.open_bytes(&pdf(&["a", "b", "c", "d"])).expect("open"));
    let renders: Vec<_> = (0..4)
        .map(|page| {
            let doc = doc.clone();
            std::thread::spawn(move || doc.render_page(page).map(|image| image.dimensions()))
        })
        .collect();
    for render in renders {
        assert_eq!(render.join().expect("thread").expect("render"), page_size());
    }
    assert_eq!(pool.children_started(), 2, "both children took pages");
}

/// The render size of the pages `serve_common::pdf` writes (200 pt square).
fn page_size() -> (u32, u32) {
    mineru_worker::pdf::render_size(200.0, 200.0)
}

fn mineru_sample() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/documents/sample.pdf")
}
