//! The layout token parser and MinerU's block filtering, by table.

use mineru_protocol::model::{Angle, BBox, Block, BlockType};
use mineru_worker::tokens::{parse_layout, render_layout, select_for_recognition};

fn record(coords: &str, kind: &str, rest: &str) -> String {
    format!("<|box_start|>{coords}<|box_end|><|ref_start|>{kind}<|ref_end|>{rest}")
}

fn bbox(x0: u32, y0: u32, x1: u32, y1: u32) -> BBox {
    BBox::new(x0, y0, x1, y1).expect("valid test box")
}

fn block(kind: BlockType, b: BBox) -> Block {
    Block::new(kind, b)
}

#[test]
fn parses_single_records() {
    // (case, stream, expected (type, box, angle, continues_previous) or None when dropped)
    type Expected = Option<(BlockType, [u16; 4], Option<Angle>, bool)>;
    let cases: Vec<(&str, String, Expected)> = vec![
        (
            "plain text block",
            record("10 20 300 400", "text", ""),
            Some((BlockType::Text, [10, 20, 300, 400], None, false)),
        ),
        (
            "rotate_up",
            record("10 20 300 400", "title", "<|rotate_up|>"),
            Some((BlockType::Title, [10, 20, 300, 400], Some(Angle::Up), false)),
        ),
        (
            "rotate_right",
            record("10 20 300 400", "table", "<|rotate_right|>"),
            Some((
                BlockType::Table,
                [10, 20, 300, 400],
                Some(Angle::Right),
                false,
            )),
        ),
        (
            "rotate_down",
            record("10 20 300 400", "text", "<|rotate_down|>"),
            Some((
                BlockType::Text,
                [10, 20, 300, 400],
                Some(Angle::Down),
                false,
            )),
        ),
        (
            "rotate_left",
            record("10 20 300 400", "text", "<|rotate_left|>"),
            Some((
                BlockType::Text,
                [10, 20, 300, 400],
                Some(Angle::Left),
                false,
            )),
        ),
        (
            "txt_contd_tgt marks a continued text block",
            record("10 20 300 400", "text", "<|rotate_up|><|txt_contd_tgt|>"),
            Some((BlockType::Text, [10, 20, 300, 400], Some(Angle::Up), true)),
        ),
        (
            "txt_contd_tgt only applies to text",
            record("10 20 300 400", "title", "<|rotate_up|>txt_contd_tgt"),
            Some((BlockType::Title, [10, 20, 300, 400], Some(Angle::Up), false)),
        ),
        (
            "reversed corners are reordered",
            record("300 400 10 20", "text", ""),
            Some((BlockType::Text, [10, 20, 300, 400], None, false)),
        ),
        (
            "any whitespace separates coordinates",
            record("10\t20\n 300  400", "text", ""),
            Some((BlockType::Text, [10, 20, 300, 400], None, false)),
        ),
        (
            "type names are case-insensitive",
            record("0 0 1000 1000", "Page_Number", ""),
            Some((BlockType::PageNumber, [0, 0, 1000, 1000], None, false)),
        ),
        (
            "unknown becomes image",
            record("0 0 500 500", "unknown", ""),
            Some((BlockType::Image, [0, 0, 500, 500], None, false)),
        ),
        (
            "inline_formula is skipped",
            record("0 0 500 500", "inline_formula", ""),
            None,
        ),
        (
            "types the model does not define are dropped",
            record("0 0 500 500", "sidebar", ""),
            None,
        ),
        (
            "coordinates above 1000 are dropped",
            record("0 0 1001 500", "text", ""),
            None,
        ),
        (
            "huge coordinates are dropped",
            record("0 0 99999999999999999999 5", "text", ""),
            None,
        ),
        (
            "boxes without width are dropped",
            record("10 0 10 500", "text", ""),
            None,
        ),
        (
            "boxes without height are dropped",
            record("0 7 500 7", "text", ""),
            None,
        ),
    ];
    for (name, stream, expected) in cases {
        let blocks = parse_layout(&stream).unwrap_or_else(|e| panic!("case {name}: {e}"));
        let got = blocks.first().map(|b| {
            (
                b.kind,
                <[u16; 4]>::from(b.bbox),
                b.angle,
                b.continues_previous,
            )
        });
        assert_eq!(got, expected, "case: {name}");
        assert!(blocks.len() <= 1, "case {name}: {blocks:?}");
    }
}

#[test]
fn keeps_reading_order_and_skips_malformed_records() {
    let stream = [
        record("0 0 1000 100", "header", "<|rotate_up|>\n"),
        "<|box_start|>1 2 3<|box_end|><|ref_start|>text<|ref_end|>\n".to_owned(),
        record("0 200 1000 400", "text", "<|rotate_up|>\n"),
        "<|box_start|>0 0 10 10<|box_end|><|ref_start|><|ref_end|>".to_owned(),
        record("0 500 1000 600", "title", "<|rotate_up|>"),
    ]
    .concat();
    let kinds: Vec<BlockType> = parse_layout(&stream)
        .expect("parses")
        .iter()
        .map(|b| b.kind)
        .collect();
    assert_eq!(
        kinds,
        [BlockType::Header, BlockType::Text, BlockType::Title]
    );
}

#[test]
fn empty_answer_is_an_empty_page() {
    assert_eq!(parse_layout(""), Ok(vec![]));
    assert_eq!(parse_layout("  \n"), Ok(vec![]));
}

#[test]
fn answer_without_any_record_is_an_error() {
    for garbage in [
        "I cannot help with that.",
        "<|box_start|>not numbers<|box_end|>",
        "<|box_start|>1 2 3 4<|box_end|>",
        "<fcel>a<fcel>b<nl>",
    ] {
        let err = parse_layout(garbage).expect_err(garbage);
        assert_eq!(err.len, garbage.len());
    }
}

#[test]
fn a_stream_of_only_invalid_boxes_is_not_garbage() {
    assert_eq!(parse_layout(&record("0 0 2000 10", "text", "")), Ok(vec![]));
}

#[test]
fn never_panics_on_hostile_streams() {
    for stream in [
        "<|box_start|>",
        "<|box_start|><|box_start|><|box_start|>",
        "<|box_start|>١ ٢ ٣ ٤<|box_end|><|ref_start|>text<|ref_end|>",
        "<|box_start|>1 2 3 4<|box_end|><|ref_start|>tëxt<|ref_end|>",
        "<|box_start|>1 2 3 4<|box_end|><|ref_start|>text",
        "\u{0}<|box_start|>0 0 1 1<|box_end|><|ref_start|>text<|ref_end|><|rotate_",
    ] {
        let _ = parse_layout(stream);
    }
}

#[test]
fn near_duplicate_boxes_of_one_type_are_merged() {
    let stream = [
        record("100 100 500 500", "text", "<|rotate_up|>"),
        record("101 101 500 500", "text", "<|rotate_up|>"),
        record("101 101 500 500", "title", "<|rotate_up|>"),
        record("101 101 500 500", "text", "<|rotate_left|>"),
    ]
    .concat();
    let kinds: Vec<(BlockType, Option<Angle>)> = parse_layout(&stream)
        .expect("parses")
        .iter()
        .map(|b| (b.kind, b.angle))
        .collect();
    assert_eq!(
        kinds,
        [
            (BlockType::Text, Some(Angle::Up)),
            (BlockType::Title, Some(Angle::Up)),
            (BlockType::Text, Some(Angle::Left)),
        ]
    );
}

#[test]
fn text_and_equations_inside_tables_are_dropped() {
    let stream = [
        record("100 100 900 500", "table", ""),
        record("150 150 400 200", "text", ""),
        record("150 250 400 300", "equation", ""),
        record("150 350 400 400", "title", ""),
        // Only half inside: kept.
        record("800 150 1000 200", "text", ""),
    ]
    .concat();
    let kinds: Vec<BlockType> = parse_layout(&stream)
        .expect("parses")
        .iter()
        .map(|b| b.kind)
        .collect();
    assert_eq!(kinds, [BlockType::Table, BlockType::Title, BlockType::Text]);
}

#[test]
fn selects_blocks_for_recognition_like_mineru() {
    struct Case {
        name: &'static str,
        blocks: Vec<Block>,
        image_analysis: bool,
        kept: Vec<BlockType>,
        recognised: Vec<BlockType>,
    }
    let big = bbox(100, 100, 600, 600);
    let cases = vec![
        Case {
            name: "containers are never recognised",
            blocks: vec![
                block(BlockType::List, bbox(0, 0, 500, 500)),
                block(BlockType::ListItem, bbox(0, 0, 500, 100)),
                block(BlockType::EquationBlock, bbox(0, 600, 500, 800)),
                block(BlockType::ImageBlock, bbox(500, 0, 1000, 500)),
            ],
            image_analysis: true,
            kept: vec![
                BlockType::List,
                BlockType::ListItem,
                BlockType::EquationBlock,
                BlockType::ImageBlock,
            ],
            recognised: vec![BlockType::ListItem],
        },
        Case {
            name: "large images are analysed",
            blocks: vec![
                block(BlockType::Image, big),
                block(BlockType::Chart, bbox(0, 700, 1000, 800)),
            ],
            image_analysis: true,
            kept: vec![BlockType::Image, BlockType::Chart],
            recognised: vec![BlockType::Image, BlockType::Chart],
        },
        Case {
            name: "small images are not analysed",
            blocks: vec![block(BlockType::Image, bbox(0, 0, 90, 100))],
            image_analysis: true,
            kept: vec![BlockType::Image],
            recognised: vec![],
        },
        Case {
            name: "image analysis can be switched off",
            blocks: vec![
                block(BlockType::Image, big),
                block(BlockType::Text, bbox(0, 700, 1000, 800)),
            ],
            image_analysis: false,
            kept: vec![BlockType::Image, BlockType::Text],
            recognised: vec![BlockType::Text],
        },
        Case {
            name: "images inside an image block are not analysed on their own",
            blocks: vec![
                block(BlockType::ImageBlock, bbox(0, 0, 1000, 1000)),
                block(BlockType::Image, big),
            ],
            image_analysis: true,
            kept: vec![BlockType::ImageBlock, BlockType::Image],
            recognised: vec![],
        },
        Case {
            name: "captions inside an image are dropped, captions beside it kept",
            blocks: vec![
                block(BlockType::Image, big),
                block(BlockType::ImageCaption, bbox(150, 500, 500, 550)),
                block(BlockType::ImageCaption, bbox(100, 620, 600, 660)),
            ],
            image_analysis: true,
            kept: vec![BlockType::Image, BlockType::ImageCaption],
            recognised: vec![BlockType::Image, BlockType::ImageCaption],
        },
    ];
    for case in cases {
        let mut blocks = case.blocks;
        let chosen = select_for_recognition(&mut blocks, case.image_analysis);
        let kept: Vec<BlockType> = blocks.iter().map(|b| b.kind).collect();
        let recognised: Vec<BlockType> = chosen.iter().map(|&i| blocks[i].kind).collect();
        assert_eq!(kept, case.kept, "case: {}", case.name);
        assert_eq!(recognised, case.recognised, "case: {}", case.name);
    }
}

#[test]
fn rendered_layout_parses_back_to_the_same_blocks() {
    let blocks = vec![
        Block {
            angle: Some(Angle::Up),
            ..block(BlockType::Title, bbox(10, 10, 990, 60))
        },
        Block {
            angle: Some(Angle::Right),
            continues_previous: true,
            ..block(BlockType::Text, bbox(10, 100, 500, 900))
        },
        block(BlockType::Table, bbox(510, 100, 990, 500)),
    ];
    assert_eq!(parse_layout(&render_layout(&blocks)), Ok(blocks));
}
