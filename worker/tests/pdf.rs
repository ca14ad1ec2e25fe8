//! The PDF entry point against a real libpdfium (run worker/scripts/install-pdfium.sh first):
//! every kind of bad input is a typed error, rendering follows MinerU's sizes, and the text layer
//! comes out in display coordinates.

mod common;

use common::{Font, PageSpec, build_pdf, empty_pdf, fixture};
use mineru_worker::pdf::{Document, Orientation, PdfError};

fn open(bytes: Vec<u8>) -> Result<Document, PdfError> {
    Document::open(bytes)
}

fn one_page() -> Vec<u8> {
    build_pdf(&[PageSpec::letter().text(72.0, 100.0, 12.0, Font::Helvetica, "Hello")])
}

#[test]
fn garbage_is_not_a_pdf() {
    let err = open(b"\x89PNG\r\n\x1a\nnot a pdf at all".to_vec()).unwrap_err();
    assert!(matches!(err, PdfError::NotPdf), "{err}");
}

#[test]
fn an_empty_file_is_not_a_pdf() {
    assert!(matches!(open(Vec::new()), Err(PdfError::NotPdf)));
}

#[test]
fn a_truncated_pdf_is_reported_as_truncated() {
    let mut bytes = one_page();
    bytes.truncate(bytes.len() * 2 / 3);
    let err = open(bytes).unwrap_err();
    assert!(matches!(err, PdfError::Truncated), "{err}");
}

#[test]
fn a_pdf_with_mangled_body_is_corrupt() {
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'#', 4096));
    bytes.extend_from_slice(b"\nstartxref\n999999\n%%EOF\n");
    let err = open(bytes).unwrap_err();
    assert!(matches!(err, PdfError::Corrupt(_)), "{err}");
}

#[test]
fn a_pdf_without_pages_is_rejected() {
    let err = open(empty_pdf()).unwrap_err();
    assert!(matches!(err, PdfError::NoPages), "{err}");
}

#[test]
fn an_encrypted_pdf_needs_a_password() {
    let bytes = std::fs::read(fixture("encrypted.pdf")).expect("fixture");
    let err = open(bytes).unwrap_err();
    assert!(matches!(err, PdfError::Encrypted), "{err}");
    assert_eq!(
        err.to_string(),
        "encrypted PDF: a password is required to open it"
    );
}

#[test]
fn an_absurd_page_size_is_rejected() {
    let mut page = PageSpec::letter().text(10.0, 10.0, 12.0, Font::Helvetica, "wide");
    page.size = (20_000.0, 100.0);
    let err = open(build_pdf(&[page])).unwrap_err();
    assert!(
        matches!(err, PdfError::AbsurdPageSize { page: 0, .. }),
        "{err}"
    );
}

#[test]
fn pages_out_of_range_are_errors_not_panics() {
    let doc = open(one_page()).expect("open");
    assert!(matches!(
        doc.render_page(1),
        Err(PdfError::PageOutOfRange { page: 1, count: 1 })
    ));
    assert!(matches!(
        doc.page_text(usize::MAX),
        Err(PdfError::PageOutOfRange { .. })
    ));
}

#[test]
fn every_prefix_of_a_pdf_is_handled_without_panicking() {
    let bytes = one_page();
    for len in (0..bytes.len()).step_by(97) {
        let _ = open(bytes[..len].to_vec()).map(|d| d.render_page(0));
    }
}

#[test]
fn damaged_bytes_inside_a_pdf_never_panic() {
    let bytes = build_pdf(&[PageSpec::letter()
        .text(72.0, 100.0, 18.0, Font::HelveticaBold, "Heading")
        .lines(
            72.0,
            140.0,
            11.0,
            14.0,
            &["Body text line one", "and line two."],
        )
        .image(72.0, 200.0, 100.0, 100.0)]);
    let body = 16..bytes.len().saturating_sub(16);
    for (n, at) in body.step_by(31).enumerate() {
        let mut damaged = bytes.clone();
        damaged[at] = [b'0', 0xFF, b' ', b'/', b'('][n % 5];
        if let Ok(doc) = open(damaged) {
            if let Ok(text) = doc.page_text(0) {
                let _ = mineru_worker::text::analyze_page(&text, 0);
            }
            let _ = doc.render_page(0);
        }
    }
}

#[test]
fn letter_pages_render_at_200_dpi_as_rgb() {
    let bytes = build_pdf(&[PageSpec::letter().red_box(0.0, 0.0, 72.0, 72.0)]);
    let image = open(bytes).expect("open").render_page(0).expect("render");
    assert_eq!(image.dimensions(), (1700, 2200));
    // The red box fills the top-left inch (200 px): red stays red, so channels are RGB.
    assert_eq!(image.get_pixel(100, 100).0, [255, 0, 0]);
    assert_eq!(image.get_pixel(400, 400).0, [255, 255, 255]);
}

#[test]
fn rows_of_an_unaligned_width_do_not_shear() {
    // 100 pt renders 278 px wide: 834 bytes a row, which pdfium pads to 836.
    let mut page = PageSpec::letter().red_box(0.0, 0.0, 50.0, 100.0);
    page.size = (100.0, 100.0);
    let image = open(build_pdf(&[page]))
        .expect("open")
        .render_page(0)
        .expect("render");
    assert_eq!(image.dimensions(), (278, 278));
    for y in [0, 100, 200, 277] {
        assert_eq!(image.get_pixel(100, y).0, [255, 0, 0], "row {y}");
        assert_eq!(image.get_pixel(200, y).0, [255, 255, 255], "row {y}");
    }
}

#[test]
fn large_pages_are_capped_at_3500_pixels() {
    let mut page = PageSpec::letter().text(10.0, 20.0, 12.0, Font::Helvetica, "big");
    page.size = (1224.0, 1584.0);
    let image = open(build_pdf(&[page]))
        .expect("open")
        .render_page(0)
        .expect("render");
    assert_eq!(image.height(), 3500);
    assert_eq!(image.width(), (1224.0f32 * 3500.0 / 1584.0).ceil() as u32);
}

#[test]
fn a_rotated_page_renders_and_reads_in_display_orientation() {
    let bytes = build_pdf(&[PageSpec::letter().rotate(90).text(
        72.0,
        100.0,
        12.0,
        Font::Helvetica,
        "Sideways",
    )]);
    let doc = open(bytes).expect("open");
    assert_eq!(
        doc.render_page(0).expect("render").dimensions(),
        (2200, 1700)
    );
    let text = doc.page_text(0).expect("text");
    assert_eq!((text.width, text.height, text.rotation), (792.0, 612.0, 90));
    let first = &text.chars[0];
    assert_eq!(first.ch, 'S');
    // /Rotate 90 turns the page clockwise: text near the top-left of the unrotated page now sits
    // near the top-right, running downwards.
    assert_eq!(first.orientation, Orientation::Right);
    assert!(
        first.rect.x0 > 600.0 && first.rect.y0 > 60.0 && first.rect.y0 < 90.0,
        "{first:?}"
    );
}

#[test]
fn text_layer_reports_positions_sizes_and_weight() {
    let bytes = build_pdf(&[PageSpec::letter()
        .text(72.0, 100.0, 24.0, Font::HelveticaBold, "Title")
        .text(72.0, 140.0, 10.0, Font::Helvetica, "body")]);
    let text = open(bytes).expect("open").page_text(0).expect("text");
    let t = text.chars.iter().find(|c| c.ch == 'T').expect("T");
    let b = text.chars.iter().find(|c| c.ch == 'b').expect("b");
    assert!(t.bold && !b.bold);
    assert!((t.font_size - 24.0).abs() < 0.1 && (b.font_size - 10.0).abs() < 0.1);
    assert!(t.rect.y1 <= 101.0 + 24.0 * 0.3 && t.rect.y0 > 100.0 - 24.0 * 1.2);
    assert!((b.rect.x0 - 72.0).abs() < 2.0);
    assert_eq!(t.orientation, Orientation::Up);
}

#[test]
fn non_latin_text_survives_the_round_trip() {
    let bytes = build_pdf(&[PageSpec::letter().text(
        72.0,
        100.0,
        12.0,
        Font::DejaVu,
        "Привет, мир — Καλημέρα κόσμε",
    )]);
    let text = open(bytes).expect("open").page_text(0).expect("text");
    let s: String = text.chars.iter().map(|c| c.ch).collect();
    assert!(s.contains("Привет"), "{s}");
    assert!(s.contains("Καλημέρα"), "{s}");
}

#[test]
fn page_images_are_the_stored_bitmaps_where_the_page_shows_them() {
    let doc = open(build_pdf(&[PageSpec::letter()
        .image(61.2, 79.2, 306.0, 158.4)
        // A hairline rule drawn as an image is no figure.
        .image(72.0, 400.0, 400.0, 1.0)
        .image_in_form(72.0, 500.0, 100.0, 100.0)]))
    .expect("open");
    let images = doc.page_images(0).expect("images");
    let [image] = images.as_slice() else {
        panic!("one figure, the form's image not taken: {images:?}")
    };
    // A tenth of the page in from the left and the top, half its width and a fifth of its height.
    assert_eq!(<[u16; 4]>::from(image.bbox), [100, 100, 600, 300]);
    let bitmap =
        image::load_from_memory_with_format(&image.jpeg, image::ImageFormat::Jpeg).expect("a JPEG");
    assert_eq!((bitmap.width(), bitmap.height()), (64, 64));
}
