//! A mutational fuzz loop on stable Rust over the committed corpus (`worker/fuzz/corpus/open_pdf`)
//! and PDFs pdfium writes here: every mutant must open or fail with a typed error, and an opened
//! one's text layer, text-backend analysis and first render must never panic or crash the
//! process. Deterministic for a seed (`FUZZ_SEED`), bounded by `FUZZ_SECONDS` (20 s by default;
//! for the documented 10-minute run:
//! `FUZZ_SECONDS=600 cargo test --release -p mineru-worker --test fuzz_pdf -- --nocapture`).
//! Each input is written to `$TMPDIR/mineru-fuzz-input.pdf` before it runs, so the one a crash
//! of pdfium (which no panic handler sees) leaves there reproduces it. The nightly libFuzzer
//! targets under `worker/fuzz` take the same corpus.

mod serve_common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use mineru_worker::pdf::Document;
use mineru_worker::text::analyze_page;
use serve_common::pdf;

/// Pages examined per input, so one huge mutant cannot stall the loop.
const MAX_PAGES: usize = 4;

/// splitmix64: small, fast and the same everywhere, so a seed names a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that steer a PDF parser into its rarer paths.
const TOKENS: &[&[u8]] = &[
    b"obj",
    b"endobj",
    b"stream\n",
    b"endstream",
    b"<<",
    b">>",
    b"/Length 2147483647",
    b"/Filter /FlateDecode",
    b"/Filter [/FlateDecode /ASCIIHexDecode /LZWDecode]",
    b"/Width 65535 /Height 65535",
    b"/Rotate 270",
    b"/MediaBox [0 0 1e9 1e9]",
    b"/Kids [1 0 R 1 0 R]",
    b"999999 0 R",
    b"xref\n0 1\n",
    b"trailer",
    b"%%EOF",
    b"(\\",
    b"-0.000001",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] = [0, 0xff, b'(', b')', b'<', b'>', b'/', b'9'][rng.below(8)];
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            3 => input.truncate(at),
            4 => {
                // A chunk of this input repeated: duplicated objects, nested dictionaries.
                let len = rng.below(256).min(input.len() - at.min(input.len()));
                let chunk = input[at..at + len].to_vec();
                input.splice(at..at, chunk);
            }
            _ => {
                // The tail of another seed: spliced objects and trailers.
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
        }
    }
    input
}

/// Everything the worker does with untrusted bytes before any model sees them.
fn exercise(input: &[u8]) {
    let Ok(doc) = Document::open(input.to_vec()) else {
        return;
    };
    for page in 0..doc.page_count().min(MAX_PAGES) {
        if let Ok(text) = doc.page_text(page) {
            let _ = analyze_page(&text, page);
        }
    }
    let _ = doc.render_page(0);
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/open_pdf");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("the committed corpus")
        .map(|entry| std::fs::read(entry.expect("entry").path()).expect("seed"))
        .collect();
    seeds.push(pdf(&["one page of text"]));
    seeds.push(pdf(&["first", "second", "third"]));
    seeds
}

#[test]
fn mutated_pdfs_never_panic_or_crash_the_worker() {
    let seconds: u64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let seeds = corpus();
    for original in &seeds {
        exercise(original);
    }
    let last_input = std::env::temp_dir().join("mineru-fuzz-input.pdf");
    eprintln!(
        "fuzzing for {seconds}s from seed {seed}; the input being run is kept at {}",
        last_input.display()
    );
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let input = mutate(&mut rng, &seeds);
        std::fs::write(&last_input, &input).expect("keep the input");
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&input)));
        assert!(
            outcome.is_ok(),
            "a panic on input {runs} of seed {seed}; it is kept at {}",
            last_input.display()
        );
        runs += 1;
    }
    eprintln!("{runs} inputs, no panic, no crash");
    assert!(runs > 0);
    let _ = std::fs::remove_file(&last_input);
}
