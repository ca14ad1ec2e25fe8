#!/usr/bin/env python3
"""Writes the documents `bench-clients` measures on, deterministically (fixed seeds):

- `long.pdf`: 24 US Letter pages of a report (and `long-120.pdf`, 120 such pages, for runs
  long enough to reach a steady state; `long-4.pdf`, its first 4 pages, for servers under
  load): a title and headings, two-column text, a table
  drawn with rules, a raster figure (a 600x400 photo-like image), a sideways note in the margin
  and, every fourth page, a landscape page turned with /Rotate 90.
- `scan.pdf`: 8 pages that are only an image each (grey text-like noise at 200 DPI), as a
  scanner writes them.
- `text-50.pdf`, `text-500.pdf`: 50 and 500 pages of text, for the text backend's cost and
  memory as pages grow.

    python bench/python/make_bench_pdfs.py OUT_DIR

Needs reportlab and Pillow (MinerU's virtualenvs have both).
"""

from __future__ import annotations

import random
import sys
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter
from reportlab.lib.pagesizes import landscape, letter
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

WIDTH, HEIGHT = letter
WORDS = (
    "the worker renders every page and sends the layout step and one call per block while "
    "documents arrive at an uneven rate from clients that wait for minutes on long reports"
).split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def figure(rng: random.Random) -> ImageReader:
    """A photo-like image: smooth colour fields with noise, JPEG as cameras write them."""
    image = Image.new("RGB", (600, 400))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.randrange(600), rng.randrange(400)
        r = rng.randrange(20, 120)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(6))
    data = BytesIO()
    image.save(data, format="JPEG", quality=85)
    data.seek(0)
    return ImageReader(data)


def report_page(c: canvas.Canvas, rng: random.Random, number: int) -> None:
    c.setFont("Helvetica-Bold", 18)
    c.drawString(72, HEIGHT - 72, f"Section {number}: Throughput under uneven load")
    c.setFont("Helvetica", 9)
    c.drawString(72, HEIGHT - 40, "Quarterly report on document processing")
    column_width = (WIDTH - 144 - 18) / 2
    for column in range(2):
        x = 72 + column * (column_width + 18)
        y = HEIGHT - 110
        text = c.beginText(x, y)
        text.setFont("Helvetica", 10)
        for _ in range(22):
            line = sentence(rng, 9)
            while c.stringWidth(line, "Helvetica", 10) > column_width:
                line = line.rsplit(" ", 1)[0]
            text.textLine(line)
        c.drawText(text)
    # A table drawn with rules.
    top = HEIGHT - 430
    rows, cols = 6, 4
    cell_w, cell_h = (WIDTH - 144) / cols, 16
    c.setFont("Helvetica", 9)
    for r in range(rows + 1):
        c.line(72, top - r * cell_h, 72 + cols * cell_w, top - r * cell_h)
    for k in range(cols + 1):
        c.line(72 + k * cell_w, top, 72 + k * cell_w, top - rows * cell_h)
    for r in range(rows):
        for k in range(cols):
            value = "Metric" if r == 0 else f"{rng.uniform(0, 100):.1f}"
            c.drawString(76 + k * cell_w, top - r * cell_h - 12, value)
    c.drawImage(figure(rng), 72, 90, width=300, height=200)
    c.setFont("Helvetica-Oblique", 9)
    c.drawString(72, 78, f"Figure {number}: simulated field measurements")
    # A note in the margin, drawn sideways.
    c.saveState()
    c.translate(WIDTH - 30, 200)
    c.rotate(90)
    c.setFont("Helvetica", 8)
    c.drawString(0, 0, "Draft for internal review only")
    c.restoreState()
    c.setFont("Helvetica", 9)
    c.drawString(WIDTH / 2, 40, str(number))


def landscape_page(c: canvas.Canvas, rng: random.Random, number: int) -> None:
    """A landscape table page stored portrait and turned by /Rotate 90, as scanners and
    spreadsheets often write them."""
    c.setPageSize(letter)
    c.setPageRotation(90)
    c.saveState()
    c.translate(WIDTH, 0)
    c.rotate(90)
    w, h = landscape(letter)
    c.setFont("Helvetica-Bold", 14)
    c.drawString(72, h - 60, f"Table {number}: per-tier costs")
    c.setFont("Helvetica", 9)
    for r in range(20):
        for k in range(8):
            value = "Tier" if r == 0 else f"{rng.uniform(0, 1000):.0f}"
            c.drawString(72 + k * 80, h - 90 - r * 18, value)
    c.restoreState()


def long_report(path: Path, pages: int) -> None:
    rng = random.Random(1)
    c = canvas.Canvas(str(path), pagesize=letter)
    for number in range(1, pages + 1):
        if number % 4 == 0:
            landscape_page(c, rng, number)
        else:
            report_page(c, rng, number)
        c.showPage()
        c.setPageRotation(0)
    c.save()


def scan(path: Path) -> None:
    rng = random.Random(2)
    c = canvas.Canvas(str(path), pagesize=letter)
    for _ in range(8):
        # A page scanned at 200 DPI: lines of dark strokes on off-white paper.
        image = Image.new("L", (1700, 2200), 235)
        draw = ImageDraw.Draw(image)
        for row in range(150, 2050, 44):
            x = 150
            while x < 1550:
                word = rng.randrange(30, 140)
                draw.rectangle((x, row, x + word, row + 22), fill=rng.randrange(30, 90))
                x += word + rng.randrange(15, 30)
        data = BytesIO()
        image.save(data, format="JPEG", quality=75)
        data.seek(0)
        c.drawImage(ImageReader(data), 0, 0, width=WIDTH, height=HEIGHT)
        c.showPage()
    c.save()


def text_document(path: Path, pages: int) -> None:
    rng = random.Random(pages)
    c = canvas.Canvas(str(path), pagesize=letter)
    for number in range(1, pages + 1):
        c.setFont("Helvetica-Bold", 14)
        c.drawString(72, HEIGHT - 72, f"Chapter {number}")
        text = c.beginText(72, HEIGHT - 100)
        text.setFont("Helvetica", 10)
        for _ in range(48):
            text.textLine(sentence(rng, 14))
        c.drawText(text)
        c.setFont("Helvetica", 9)
        c.drawString(WIDTH / 2, 40, str(number))
        c.showPage()
    c.save()


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    long_report(out / "long.pdf", 24)
    long_report(out / "long-120.pdf", 120)
    long_report(out / "long-4.pdf", 4)
    scan(out / "scan.pdf")
    text_document(out / "text-50.pdf", 50)
    text_document(out / "text-500.pdf", 500)
    for pdf in sorted(out.glob("*.pdf")):
        print(pdf)


if __name__ == "__main__":
    main()
