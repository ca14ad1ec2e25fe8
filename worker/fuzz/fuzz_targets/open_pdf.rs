//! Fuzzes the PDF entry point: any bytes must open or fail with a typed error, and an opened
//! document's text layer, text-backend analysis and first-page render must never panic.
//! libpdfium is found as at run time (run worker/scripts/install-pdfium.sh first).
//!
//! Run from `worker/`: `cargo +nightly fuzz run open_pdf` (seed the corpus with any PDFs, e.g.
//! `cargo +nightly fuzz run open_pdf fuzz/corpus/open_pdf /usr/share/doc`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mineru_worker::pdf::Document;
use mineru_worker::text::analyze_page;

/// Pages examined per input, so one huge document cannot stall the fuzzer.
const MAX_PAGES: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = Document::open(data.to_vec()) else {
        return;
    };
    for page in 0..doc.page_count().min(MAX_PAGES) {
        if let Ok(text) = doc.page_text(page) {
            let _ = analyze_page(&text, page);
        }
    }
    let _ = doc.render_page(0);
});
