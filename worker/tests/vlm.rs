//! Backend `vlm` end to end against the strict simulator, and its image preparation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt as _;
use image::{Rgb, RgbImage};
use mineru_protocol::client::{ClientConfig, VlmClient};
use mineru_protocol::model::{Angle, BBox, Block, BlockType};
use mineru_worker::simulator::{self, LayoutAnswer, Scenario, SimConfig, SimHandle};
use mineru_worker::vlm::{
    PageRenderer, VlmError, VlmOptions, block_png, extract_page, extract_pages, layout_png,
    post_process,
};

const MODEL: &str = "mineru2.5";

/// Renders every page as a blank sheet of the given size and counts pages in progress.
struct BlankPages {
    width: u32,
    height: u32,
    started: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error("page {0} does not exist")]
struct NoSuchPage(usize);

impl PageRenderer for BlankPages {
    type Error = NoSuchPage;

    fn render(&self, index: usize) -> Result<RgbImage, NoSuchPage> {
        if index >= 1000 {
            return Err(NoSuchPage(index));
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(RgbImage::from_pixel(
            self.width,
            self.height,
            Rgb([255, 255, 255]),
        ))
    }
}

fn pages() -> Arc<BlankPages> {
    Arc::new(BlankPages {
        width: 1700,
        height: 2200,
        started: AtomicUsize::new(0),
    })
}

async fn setup(scenario: Scenario) -> (SimHandle, VlmClient) {
    let sim = simulator::start_local(SimConfig {
        scenario,
        ..SimConfig::new(MODEL)
    })
    .await
    .expect("start simulator");
    let client = VlmClient::connect(ClientConfig::new(sim.url()))
        .await
        .expect("connect");
    (sim, client)
}

fn dims(png: &[u8]) -> (u32, u32) {
    let image =
        image::load_from_memory_with_format(png, image::ImageFormat::Png).expect("valid PNG");
    (image.width(), image.height())
}

fn block(kind: BlockType, [x0, y0, x1, y1]: [u32; 4]) -> Block {
    Block::new(kind, BBox::new(x0, y0, x1, y1).expect("valid box"))
}

#[tokio::test]
async fn extracts_a_page_with_zero_deviations() {
    let (sim, client) = setup(Scenario::default()).await;
    let page = extract_page(client, pages(), 3, VlmOptions::default())
        .await
        .expect("page")
        .page;
    assert_eq!(page.page_idx, 3);
    let kinds: Vec<BlockType> = page.blocks.iter().map(|b| b.kind).collect();
    assert_eq!(
        kinds,
        [
            BlockType::Title,
            BlockType::Text,
            BlockType::Text,
            BlockType::Table,
            BlockType::Equation
        ]
    );
    // The model marks it as continued, but after a sentence end and below the paragraph before,
    // MinerU keeps it apart.
    assert!(!page.blocks[2].continues_previous);
    let table = page.blocks[3].content.as_deref().unwrap_or_default();
    assert!(table.starts_with("<table><tr><td>Name</td>"), "{table}");
    assert_eq!(page.blocks[4].content.as_deref(), Some("E = m c^{2}"));
    let discarded: Vec<BlockType> = page.discarded.iter().map(|b| b.kind).collect();
    assert_eq!(discarded, [BlockType::Header, BlockType::PageNumber]);
    assert_eq!(sim.deviations(), 0, "{:?}", sim.deviation_log());
    // One layout call and one call per recognised block.
    assert_eq!(sim.stats().answered.values().sum::<u64>(), 1 + 7);
}

#[tokio::test]
async fn pages_run_in_a_bounded_window_and_arrive_in_order() {
    let (sim, client) = setup(Scenario::default()).await;
    let renderer = pages();
    let window = 3;
    let options = VlmOptions {
        page_window: window,
        ..VlmOptions::default()
    };
    let mut stream = std::pin::pin!(extract_pages(
        client,
        renderer.clone(),
        (0..12).collect(),
        options
    ));
    let mut seen = Vec::new();
    while let Some(page) = stream.next().await {
        let page = page.expect("page").page;
        // Pages started but not yet handed out never exceed the window.
        let in_progress = renderer.started.load(Ordering::SeqCst) - seen.len();
        assert!(in_progress <= window, "{in_progress} pages in progress");
        seen.push(page.page_idx);
    }
    assert_eq!(seen, (0..12).collect::<Vec<_>>());
    assert_eq!(sim.deviations(), 0);
}

#[tokio::test]
async fn a_garbage_layout_answer_is_a_typed_error() {
    let (_sim, client) = setup(Scenario {
        layout: LayoutAnswer::Raw("Sorry, I can't read this page.".into()),
        ..Scenario::default()
    })
    .await;
    let err = extract_page(client, pages(), 0, VlmOptions::default())
        .await
        .expect_err("garbage");
    assert!(matches!(err, VlmError::Layout { page: 0, .. }), "{err}");
}

#[tokio::test]
async fn a_render_failure_names_the_page() {
    let (_sim, client) = setup(Scenario::default()).await;
    let err = extract_page(client, pages(), 1000, VlmOptions::default())
        .await
        .expect_err("render");
    assert!(matches!(err, VlmError::Render { page: 1000, .. }), "{err}");
    assert!(err.to_string().contains("page 1000 does not exist"));
}

#[tokio::test]
async fn image_analysis_off_sends_no_image_calls() {
    let (sim, client) = setup(Scenario {
        layout: LayoutAnswer::Blocks(vec![
            block(BlockType::Image, [100, 100, 900, 600]),
            block(BlockType::ImageCaption, [100, 620, 900, 660]),
        ]),
        ..Scenario::default()
    })
    .await;
    let options = VlmOptions {
        image_analysis: false,
        ..VlmOptions::default()
    };
    let page = extract_page(client, pages(), 0, options)
        .await
        .expect("page")
        .page;
    assert_eq!(page.blocks[0].content, None);
    assert_eq!(sim.stats().answered.get("image"), None);
}

#[tokio::test]
async fn crops_and_model_output_come_only_when_asked_for() {
    let (_sim, client) = setup(Scenario {
        layout: LayoutAnswer::Blocks(vec![
            block(BlockType::Header, [100, 20, 900, 40]),
            block(BlockType::Image, [100, 100, 600, 600]),
            block(BlockType::Text, [100, 620, 900, 700]),
            block(BlockType::Table, [100, 720, 900, 900]),
        ]),
        ..Scenario::default()
    })
    .await;
    let plain = extract_page(client.clone(), pages(), 0, VlmOptions::default())
        .await
        .expect("page");
    assert!(plain.crops.is_empty() && plain.model_output.is_none());

    let options = VlmOptions {
        crops: true,
        model_output: true,
        ..VlmOptions::default()
    };
    let page = extract_page(client, pages(), 0, options)
        .await
        .expect("page");
    // Indexed in the page's blocks (the header is furniture, kept apart): the image and the
    // table, cut from the 1700×2200 render as JPEG.
    let cut: Vec<(usize, (u32, u32))> = page
        .crops
        .iter()
        .map(|(index, jpeg)| {
            let image = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
                .expect("valid JPEG");
            (*index, (image.width(), image.height()))
        })
        .collect();
    assert_eq!(cut, [(0, (850, 1100)), (2, (1360, 396))]);
    // The model output keeps the blocks in the model's order, furniture included.
    let kinds: Vec<BlockType> = page
        .model_output
        .expect("model output")
        .iter()
        .map(|b| b.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            BlockType::Header,
            BlockType::Image,
            BlockType::Text,
            BlockType::Table
        ]
    );
}

#[test]
fn layout_image_is_stretched_to_1036_square() {
    let page = RgbImage::from_pixel(1700, 2200, Rgb([255, 255, 255]));
    assert_eq!(dims(&layout_png(&page).expect("png")), (1036, 1036));
}

#[test]
fn block_images_are_cropped_rotated_padded_and_upscaled() {
    let page = RgbImage::from_pixel(1000, 2000, Rgb([255, 255, 255]));
    let rotated = |angle| Block {
        angle: Some(angle),
        ..block(BlockType::Text, [100, 100, 400, 200])
    };
    let cases = [
        (
            "upright crop keeps its size",
            rotated(Angle::Up),
            (300, 200),
        ),
        (
            "a quarter turn swaps the sides",
            rotated(Angle::Right),
            (200, 300),
        ),
        (
            "a half turn keeps the sides",
            rotated(Angle::Down),
            (300, 200),
        ),
        (
            "three quarters swap the sides",
            rotated(Angle::Left),
            (200, 300),
        ),
        // 1000×20 px → aspect 50 is allowed, short edge 20 < 28 → upscaled by 1.4.
        (
            "a short edge is upscaled to 28",
            block(BlockType::Text, [0, 0, 1000, 10]),
            (1400, 28),
        ),
        // 1000×2 px → padded to 1000×20, then upscaled to 1400×28.
        (
            "a thin strip is padded to ratio 50",
            block(BlockType::Text, [0, 0, 1000, 1]),
            (1400, 28),
        ),
        // 2000 px tall, 2 px wide → padded to 40×2000.
        (
            "a tall strip is padded sideways",
            block(BlockType::Text, [0, 0, 2, 1000]),
            (40, 2000),
        ),
    ];
    for (name, block, expected) in cases {
        assert_eq!(
            dims(&block_png(&page, &block).expect("png")),
            expected,
            "case: {name}"
        );
    }
}

#[test]
fn post_processing_follows_mineru() {
    let with = |kind, content: &str| Block {
        content: Some(content.to_owned()),
        ..block(kind, [0, 0, 500, 500])
    };
    let out = post_process(
        vec![
            with(BlockType::Equation, "\\[ a+b \\]"),
            with(BlockType::Text, "[Non-Text]"),
            with(BlockType::Header, "[Non-Text]"),
            with(BlockType::ListItem, "- item \\[x\\] and \\[1, 2\\]"),
            with(BlockType::Title, "a \\[x\\] title"),
            with(
                BlockType::Text,
                "a \\(\\timesX \\top\\) b \\(\\frac{a}{b} = ____\\)",
            ),
            with(
                BlockType::Image,
                "<|class_start|>pure_table<|class_end|><|content_start|><fcel>\\(a\\)<nl><|content_end|>",
            ),
            with(
                BlockType::Image,
                "<|class_start|>natural_image<|class_end|><|caption_start|>A cat.<|caption_end|>",
            ),
            with(
                BlockType::Chart,
                "<|class_start|>chart<|class_end|><|sub_class_start|>bar<|sub_class_end|><|content_start|>| a | b |<|content_end|>",
            ),
            with(BlockType::Code, "```python\nx = 1\n```"),
            with(BlockType::Code, "for \\(i < n\\)"),
            block(BlockType::EquationBlock, [0, 0, 500, 500]),
        ],
        &VlmOptions::default(),
    );
    let got: Vec<(BlockType, Option<&str>, Option<&str>)> = out
        .iter()
        .map(|b| (b.kind, b.content.as_deref(), b.sub_type.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (BlockType::Equation, Some("a+b"), None),
            (BlockType::Header, Some(""), None),
            // Display math in a paragraph is inline, but a citation is not math.
            (BlockType::Text, Some("- item \\(x\\) and \\[1, 2\\]"), None),
            // Only paragraphs are converted.
            (BlockType::Title, Some("a \\[x\\] title"), None),
            // A glued macro gets its space; a blank to fill in leaves the math.
            (
                BlockType::Text,
                Some("a \\(\\times X \\top\\) b \\(\\frac{a}{b} = \\) ____"),
                None
            ),
            (
                BlockType::Table,
                Some("<table><tr><td><eq>a</eq></td></tr></table>"),
                None
            ),
            (BlockType::Image, Some("A cat."), Some("natural_image")),
            (BlockType::Chart, Some("| a | b |"), Some("bar")),
            (BlockType::Code, Some("x = 1"), None),
            (BlockType::Algorithm, Some("for \\(i < n\\)"), None),
        ]
    );

    let unwrapped = post_process(
        vec![with(BlockType::Table, "<fcel>\\(a\\)<nl>")],
        &VlmOptions {
            table_formula_wrap: false,
            ..VlmOptions::default()
        },
    );
    assert_eq!(
        unwrapped[0].content.as_deref(),
        Some("<table><tr><td>\\(a\\)</td></tr></table>")
    );
}

#[test]
fn a_continued_paragraph_is_merged_only_where_mineru_merges_it() {
    let text = |[x0, y0, x1, y1]: [u32; 4], content: &str, continues_previous| Block {
        content: Some(content.to_owned()),
        continues_previous,
        ..block(BlockType::Text, [x0, y0, x1, y1])
    };
    let left = [100, 100, 480, 600];
    let right = [520, 100, 900, 300];
    let below = [100, 610, 480, 700];
    let cases: Vec<(&str, Vec<Block>, bool)> = vec![
        (
            "the next column, mid-sentence",
            vec![text(left, "runs on", false), text(right, "and on", true)],
            true,
        ),
        (
            "below the previous block",
            vec![text(left, "runs on", false), text(below, "and on", true)],
            false,
        ),
        (
            "after a sentence end",
            vec![text(left, "ends.", false), text(right, "and on", true)],
            false,
        ),
        (
            "a capital starts the next",
            vec![text(left, "runs on", false), text(right, "And on", true)],
            false,
        ),
        (
            "widths apart",
            vec![
                text([100, 100, 900, 600], "runs on", false),
                text([520, 100, 700, 300], "and on", true),
            ],
            false,
        ),
        (
            "past a table",
            vec![
                text(left, "runs on", false),
                block(BlockType::Table, [520, 50, 900, 90]),
                text(right, "and on", true),
            ],
            true,
        ),
        (
            "not past a title",
            vec![
                text(left, "runs on", false),
                Block {
                    content: Some("Title".into()),
                    ..block(BlockType::Title, [520, 50, 900, 90])
                },
                text(right, "and on", true),
            ],
            false,
        ),
        (
            "nothing before it",
            vec![text(right, "and on", true)],
            false,
        ),
    ];
    for (name, blocks, merges) in cases {
        let out = post_process(blocks, &VlmOptions::default());
        let last = out.last().expect("a block");
        assert_eq!(last.continues_previous, merges, "case: {name}");
    }
}

#[test]
fn an_equation_block_of_several_equations_becomes_one_array() {
    let equation = |y0, content: &str| Block {
        content: Some(content.to_owned()),
        ..block(BlockType::Equation, [100, y0, 900, y0 + 40])
    };
    let out = post_process(
        vec![
            block(BlockType::EquationBlock, [50, 50, 950, 200]),
            equation(60, "a = b \\tag{1}"),
            equation(110, "\\[c = d \\tag {2}\\]"),
            equation(300, "e = f"),
            // A block holding a single equation is just dropped.
            block(BlockType::EquationBlock, [50, 290, 950, 350]),
        ],
        &VlmOptions::default(),
    );
    let got: Vec<(BlockType, Option<&str>)> =
        out.iter().map(|b| (b.kind, b.content.as_deref())).collect();
    assert_eq!(
        got,
        [
            (
                BlockType::Equation,
                Some("\\begin{array}{l} a = b (1) \\\\ c = d (2) \\\\ \\end{array}")
            ),
            (BlockType::Equation, Some("e = f")),
        ]
    );
    assert_eq!(<[u16; 4]>::from(out[0].bbox), [50, 50, 950, 200]);
}
