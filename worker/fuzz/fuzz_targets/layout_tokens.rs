//! Fuzzes the layout token parser: any answer a server sends must parse or fail with a typed
//! error, never panic; parsed blocks must render back to a stream that parses to the same blocks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mineru_worker::tokens::{parse_layout, render_layout, select_for_recognition};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(mut blocks) = parse_layout(&text) else {
        return;
    };
    assert_eq!(parse_layout(&render_layout(&blocks)).as_ref(), Ok(&blocks));
    for image_analysis in [false, true] {
        let chosen = select_for_recognition(&mut blocks, image_analysis);
        assert!(chosen.iter().all(|&i| i < blocks.len()));
    }
});
