//! Per-page CPU cost of the worker on a real document: what a replica spends on each page around
//! the GPU calls (the render, the layout request, the recognition requests of the page's blocks)
//! and, for the `text` backend, the whole page. This cost decides how many worker replicas it
//! takes to keep a GPU busy. `bench/python/render_peer.py` times the same pages the way MinerU's
//! Python client does; `make bench` runs both.
//!
//! Recognition crops come from a fixed layout answer (`bench/sample-layout.json`) shared with the
//! peer, so both cut exactly the same blocks without a model.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main,
};
use image::RgbImage;
use mineru_protocol::chat::{Step, request_body};
use mineru_protocol::model::Block;
use mineru_worker::pdf::{Document, Pages};
use mineru_worker::render_pool::{PoolConfig, RenderPool};
use mineru_worker::text;
use mineru_worker::tokens::select_for_recognition;
use mineru_worker::vlm::{block_png, layout_png};
use serde::Deserialize;

/// Relative to the repository root, as the Python peer reads it.
const LAYOUT: &str = "bench/sample-layout.json";
/// The served model name goes into every request body; its length is all that matters here.
const MODEL: &str = "opendatalab/MinerU2.5-2509-1.2B";

#[derive(Deserialize)]
struct Layout {
    /// The PDF, relative to the repository root.
    document: String,
    /// The layout step's blocks for each page, in page order.
    pages: Vec<Vec<Block>>,
}

struct Page {
    render: RgbImage,
    /// The blocks the worker sends for recognition, in the order it sends them.
    blocks: Vec<Block>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the worker crate lives in the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One layout request: the stretched page as PNG, in the JSON body sent to vLLM.
fn layout_request(render: &RgbImage) -> Vec<u8> {
    let png = layout_png(render).expect("layout image");
    request_body(MODEL, Step::Layout, &png).expect("request body")
}

/// Every recognition request of a page, as the worker builds them from its render.
fn block_requests(page: &Page) -> Vec<Vec<u8>> {
    page.blocks
        .iter()
        .map(|block| {
            let png = block_png(&page.render, block).expect("block image");
            request_body(MODEL, Step::for_block(block.kind), &png).expect("request body")
        })
        .collect()
}

/// One step's group. Its calls take up to milliseconds: flat sampling fits the samples into the
/// measurement time, where criterion's default linear sampling would need several times longer.
fn group<'a>(c: &'a mut Criterion, step: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(step);
    group.sampling_mode(SamplingMode::Flat).sample_size(50);
    group
}

fn pages(c: &mut Criterion) {
    let root = repo_root();
    let layout: Layout =
        serde_json::from_slice(&read(&root.join(LAYOUT))).expect("bench/sample-layout.json");
    let name = Path::new(&layout.document)
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("document name")
        .to_owned();
    let bytes = read(&root.join(&layout.document));
    let doc = Document::open(bytes.clone()).unwrap_or_else(|e| panic!("{}: {e}", layout.document));
    assert_eq!(
        doc.page_count(),
        layout.pages.len(),
        "{LAYOUT} must give one block list per page of {}",
        layout.document
    );
    let pages: Vec<Page> = layout
        .pages
        .into_iter()
        .enumerate()
        .map(|(index, mut blocks)| {
            let chosen = select_for_recognition(&mut blocks, true);
            Page {
                render: doc.render_page(index).expect("render"),
                blocks: chosen.into_iter().map(|i| blocks[i].clone()).collect(),
            }
        })
        .collect();
    // What each request carries, so the encoders can be compared on size as well as time.
    for (index, page) in pages.iter().enumerate() {
        let blocks: usize = block_requests(page).iter().map(Vec::len).sum();
        println!(
            "{name} p{}: render {}x{}, layout request {} B, {} block requests {blocks} B",
            index + 1,
            page.render.width(),
            page.render.height(),
            layout_request(&page.render).len(),
            page.blocks.len(),
        );
    }

    let id = |index: usize| BenchmarkId::new(&name, index + 1);

    let mut render = group(c, "render");
    for index in 0..pages.len() {
        render.bench_function(id(index), |b| {
            b.iter(|| doc.render_page(black_box(index)).expect("render"))
        });
    }
    render.finish();

    let mut layout = group(c, "layout_request");
    for (index, page) in pages.iter().enumerate() {
        layout.bench_function(id(index), |b| {
            b.iter(|| layout_request(black_box(&page.render)))
        });
    }
    layout.finish();

    let mut recognition = group(c, "block_requests");
    for (index, page) in pages.iter().enumerate() {
        recognition.bench_function(id(index), |b| b.iter(|| block_requests(black_box(page))));
    }
    recognition.finish();

    let mut text_backend = group(c, "text_backend");
    for index in 0..pages.len() {
        text_backend.bench_function(id(index), |b| {
            b.iter(|| {
                let text = doc.page_text(black_box(index)).expect("text layer");
                text::analyze_page(&text, index)
            })
        });
    }
    text_backend.finish();

    isolation(c, &name, &doc, &bytes);
}

/// Rendering in the render subprocesses against rendering in this process: one render and one
/// text layer alone (what isolation costs a page: the pixels or the characters cross a pipe)
/// and every page of the document four
/// times over from as many threads as the machine has cores (what it gains: pdfium in process
/// serialises on one lock, the pool runs a child per core).
fn isolation(c: &mut Criterion, name: &str, doc: &Document, bytes: &[u8]) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let pool = RenderPool::new(PoolConfig {
        processes: cores,
        ..PoolConfig::new(env!("CARGO_BIN_EXE_mineru-worker").into())
    });
    let pooled: Arc<dyn Pages> = Arc::new(pool.open_bytes(bytes).expect("open in the pool"));
    let local: Arc<dyn Pages> = Arc::new(doc.clone());
    let pages = doc.page_count();
    let mut group = group(c, "isolation");
    for (label, source) in [("in_process", &local), ("pool", &pooled)] {
        group.bench_function(BenchmarkId::new(format!("{label}/one_render"), name), |b| {
            b.iter(|| source.render_page(black_box(0)).expect("render"))
        });
        group.bench_function(
            BenchmarkId::new(format!("{label}/one_text_layer"), name),
            |b| b.iter(|| source.page_text(black_box(0)).expect("text layer")),
        );
        let renders = pages * 4;
        group.bench_function(
            BenchmarkId::new(
                format!("{label}/{renders}_renders_on_{cores}_threads"),
                name,
            ),
            |b| b.iter(|| render_all(source, renders, cores)),
        );
    }
    group.finish();
}

/// `renders` renders of the document's pages, shared out over `threads` threads.
fn render_all(source: &Arc<dyn Pages>, renders: usize, threads: usize) {
    let pages = source.page_count();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            scope.spawn(move || {
                for render in (thread..renders).step_by(threads) {
                    black_box(source.render_page(render % pages).expect("render"));
                }
            });
        }
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = pages
}
criterion_main!(benches);
