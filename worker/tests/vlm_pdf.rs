//! Backend `vlm` on real PDFs (generated with pdfium, rendered by pdf.rs) against the strict
//! simulator: every request the worker sends must be one a vLLM server with MinerU2.5 accepts.

mod common;

use std::sync::Arc;

use common::{Font, PageSpec, build_pdf};
use futures::StreamExt as _;
use mineru_protocol::client::{ClientConfig, VlmClient};
use mineru_protocol::model::BlockType;
use mineru_worker::pdf::Document;
use mineru_worker::simulator::{self, SimConfig};
use mineru_worker::vlm::{VlmOptions, extract_pages};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_pdf_pages_of_every_shape_cause_zero_deviations() {
    let body = [
        "The quick brown fox jumps over the lazy dog.",
        "Pack my box with five dozen liquor jugs.",
    ];
    let pdf = build_pdf(&[
        PageSpec::letter()
            .text(72.0, 72.0, 24.0, Font::HelveticaBold, "A title")
            .lines(72.0, 120.0, 11.0, 14.0, &body),
        PageSpec::letter()
            .rotate(90)
            .lines(72.0, 72.0, 11.0, 14.0, &body),
        PageSpec {
            size: (842.0, 595.0),
            ..PageSpec::default()
        }
        .lines(72.0, 72.0, 11.0, 14.0, &body),
        // Long and thin: the render is capped at 3500 px, block crops get extreme aspect ratios.
        PageSpec {
            size: (120.0, 4000.0),
            ..PageSpec::default()
        }
        .text(10.0, 40.0, 9.0, Font::DejaVu, "Привет, κόσμε"),
        PageSpec::letter().image(72.0, 72.0, 300.0, 200.0),
    ]);
    let document = Arc::new(Document::open(pdf).expect("open generated PDF"));
    let sim = simulator::start_local(SimConfig::new("mineru2.5"))
        .await
        .expect("start simulator");
    let client = VlmClient::connect(ClientConfig::new(sim.url()))
        .await
        .expect("connect");

    let pages: Vec<_> = extract_pages(client, document, (0..5).collect(), VlmOptions::default())
        .collect()
        .await;

    assert_eq!(sim.deviations(), 0, "{:?}", sim.deviation_log());
    for (index, page) in pages.into_iter().enumerate() {
        let page = page.unwrap_or_else(|e| panic!("page {index}: {e}")).page;
        assert_eq!(page.page_idx, index);
        let kinds: Vec<BlockType> = page.blocks.iter().map(|b| b.kind).collect();
        assert!(kinds.contains(&BlockType::Table), "page {index}: {kinds:?}");
        assert_eq!(page.discarded.len(), 2, "page {index}");
    }
    assert_eq!(sim.stats().answered.get("layout"), Some(&5));
}
