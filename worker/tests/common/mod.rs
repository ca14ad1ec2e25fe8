//! Builders for the generated test corpus: PDFs written by pdfium itself, from page specs in
//! top-down page coordinates (points from the top-left corner, as a reader sees the page).
#![allow(dead_code)] // Each test binary uses its own subset of the builders.

use std::path::PathBuf;

use image::{DynamicImage, Rgb, RgbImage};
use mineru_worker::pdf;
use pdfium_render::prelude::*;

pub const LETTER: (f32, f32) = (612.0, 792.0);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Font {
    Helvetica,
    HelveticaBold,
    /// DejaVu Sans from Debian's fonts-dejavu-core, embedded: Cyrillic, Greek and more.
    DejaVu,
}

#[derive(Debug, Clone)]
pub struct Text {
    /// Left edge of the baseline, points from the left.
    pub x: f32,
    /// Baseline, points from the top.
    pub y: f32,
    pub size: f32,
    pub font: Font,
    pub text: String,
    /// Counter-clockwise rotation of the baseline in degrees.
    pub angle: f32,
}

#[derive(Debug, Clone, Default)]
pub struct PageSpec {
    pub size: (f32, f32),
    /// The page's /Rotate (0, 90, 180, 270).
    pub rotation: u16,
    pub texts: Vec<Text>,
    /// Image rectangles (x, y from the top, width, height).
    pub images: Vec<(f32, f32, f32, f32)>,
    /// Filled red rectangles (x, y from the top, width, height).
    pub red_boxes: Vec<(f32, f32, f32, f32)>,
    /// Images wrapped in a form XObject, as many scanners write pages.
    pub form_images: Vec<(f32, f32, f32, f32)>,
}

impl PageSpec {
    pub fn letter() -> Self {
        Self {
            size: LETTER,
            ..Self::default()
        }
    }

    pub fn text(mut self, x: f32, y: f32, size: f32, font: Font, text: &str) -> Self {
        self.texts.push(Text {
            x,
            y,
            size,
            font,
            text: text.to_string(),
            angle: 0.0,
        });
        self
    }

    /// Lines of body text, `leading` points apart, starting at baseline `y`.
    pub fn lines(mut self, x: f32, y: f32, size: f32, leading: f32, lines: &[&str]) -> Self {
        for (i, l) in lines.iter().enumerate() {
            self = self.text(x, y + i as f32 * leading, size, Font::Helvetica, l);
        }
        self
    }

    pub fn rotated_text(mut self, x: f32, y: f32, size: f32, angle: f32, text: &str) -> Self {
        self.texts.push(Text {
            x,
            y,
            size,
            font: Font::Helvetica,
            text: text.to_string(),
            angle,
        });
        self
    }

    pub fn image(mut self, x: f32, y: f32, w: f32, h: f32) -> Self {
        self.images.push((x, y, w, h));
        self
    }

    pub fn image_in_form(mut self, x: f32, y: f32, w: f32, h: f32) -> Self {
        self.form_images.push((x, y, w, h));
        self
    }

    pub fn red_box(mut self, x: f32, y: f32, w: f32, h: f32) -> Self {
        self.red_boxes.push((x, y, w, h));
        self
    }

    pub fn rotate(mut self, degrees: u16) -> Self {
        self.rotation = degrees;
        self
    }
}

/// The DejaVu Sans font file, from Debian's fonts-dejavu-core.
pub fn dejavu_path() -> PathBuf {
    let path = PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
    assert!(
        path.is_file(),
        "{} is missing: apt-get install fonts-dejavu-core",
        path.display()
    );
    path
}

/// Writes the pages as a PDF with pdfium and returns its bytes.
pub fn build_pdf(pages: &[PageSpec]) -> Vec<u8> {
    let pdfium = pdf::library().expect("pdfium: run worker/scripts/install-pdfium.sh");
    let mut doc = pdfium.create_new_pdf().expect("new document");
    let helvetica = doc.fonts_mut().helvetica();
    let bold = doc.fonts_mut().helvetica_bold();
    let needs_dejavu = pages
        .iter()
        .flat_map(|p| &p.texts)
        .any(|t| t.font == Font::DejaVu);
    let dejavu = needs_dejavu.then(|| {
        doc.fonts_mut()
            .load_true_type_from_file(&dejavu_path(), true)
            .expect("load DejaVu Sans")
    });
    for spec in pages {
        let (w, h) = spec.size;
        let form = (!spec.form_images.is_empty()).then(|| {
            let mut source = pdfium.create_new_pdf().expect("form source document");
            let mut page = source
                .pages_mut()
                .create_page_at_end(PdfPagePaperSize::Custom(
                    PdfPoints::new(w),
                    PdfPoints::new(h),
                ))
                .expect("form source page");
            for &rect in &spec.form_images {
                add_image(&mut page, h, rect);
            }
            // objects_mut() carries the page's own lifetime, which the form outlives.
            page.objects_mut()
                .copy_into_x_object_form_object(&mut doc)
                .expect("form XObject")
        });
        let mut page = doc
            .pages_mut()
            .create_page_at_end(PdfPagePaperSize::Custom(
                PdfPoints::new(w),
                PdfPoints::new(h),
            ))
            .expect("new page");
        for t in &spec.texts {
            let font = match t.font {
                Font::Helvetica => helvetica,
                Font::HelveticaBold => bold,
                Font::DejaVu => dejavu.expect("DejaVu loaded"),
            };
            let mut object =
                PdfPageTextObject::new(&doc, &t.text, font, PdfPoints::new(t.size)).expect("text");
            let (s, c) = t.angle.to_radians().sin_cos();
            object
                .transform(c, s, -s, c, t.x, h - t.y)
                .expect("place text");
            page.objects_mut()
                .add_text_object(object)
                .expect("add text");
        }
        for &rect in &spec.images {
            add_image(&mut page, h, rect);
        }
        if let Some(form) = form {
            page.objects_mut().add_object(form).expect("add form");
        }
        for &(x, y, bw, bh) in &spec.red_boxes {
            page.objects_mut()
                .create_path_object_rect(
                    PdfRect::new_from_values(h - y - bh, x, h - y, x + bw),
                    None,
                    None,
                    Some(PdfColor::new(255, 0, 0, 255)),
                )
                .expect("add rectangle");
        }
        page.set_rotation(match spec.rotation {
            90 => PdfPageRenderRotation::Degrees90,
            180 => PdfPageRenderRotation::Degrees180,
            270 => PdfPageRenderRotation::Degrees270,
            _ => PdfPageRenderRotation::None,
        });
    }
    doc.save_to_bytes().expect("save")
}

fn add_image(page: &mut PdfPage, page_height: f32, (x, y, w, h): (f32, f32, f32, f32)) {
    let pixels = RgbImage::from_fn(64, 64, |px, py| Rgb([(px * 4) as u8, (py * 4) as u8, 128]));
    page.objects_mut()
        .create_image_object(
            PdfPoints::new(x),
            PdfPoints::new(page_height - y - h),
            &DynamicImage::ImageRgb8(pixels),
            Some(PdfPoints::new(w)),
            Some(PdfPoints::new(h)),
        )
        .expect("add image");
}

/// A document with no pages, as pdfium writes it.
pub fn empty_pdf() -> Vec<u8> {
    let pdfium = pdf::library().expect("pdfium: run worker/scripts/install-pdfium.sh");
    pdfium
        .create_new_pdf()
        .expect("new document")
        .save_to_bytes()
        .expect("save")
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}
