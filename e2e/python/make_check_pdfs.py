#!/usr/bin/env python3
"""Writes PDFs that exercise what the text backend recognises, for `middle_json_check.py`.

    ~/.cache/mineru-operator/mineru4-venv/bin/python e2e/python/make_check_pdfs.py /tmp/pdfs

Needs reportlab (MinerU 4's venv has it). The documents (US letter, Helvetica):

- `journal.pdf`: running header and page number (page furniture), a title, bold section
  headings, two columns, a word hyphenated at a line end, and a sentence that runs on to the
  next page.
- `scan.pdf`: a text page, then a page that is only an image (needs OCR), then a text page.
- `table-as-text.pdf`: a price table drawn as positioned text.
- `markdown-chars.pdf`: text with characters Markdown gives a meaning to (`*`, `_`, `$`, `<b>`,
  a line starting with `- `), where MinerU's renderer escapes what ours writes as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path

from reportlab.lib.pagesizes import letter
from reportlab.pdfgen import canvas

WIDTH, HEIGHT = letter


def text(c: canvas.Canvas, x: float, y: float, size: float, s: str, bold: bool = False) -> None:
    """Draws `s` with its baseline `y` points from the top of the page."""
    c.setFont("Helvetica-Bold" if bold else "Helvetica", size)
    c.drawString(x, HEIGHT - y, s)


def lines(c: canvas.Canvas, x: float, y: float, size: float, leading: float, rows: list[str]) -> None:
    for i, row in enumerate(rows):
        text(c, x, y + i * leading, size, row)


def journal(path: Path) -> None:
    c = canvas.Canvas(str(path), pagesize=letter)
    c.setTitle("Reading Order in Two Columns")
    text(c, 72, 40, 8, "Journal of Layout Studies, Vol. 3")
    text(c, 72, 90, 18, "Reading Order in Two Columns")
    text(c, 72, 130, 12, "1 Introduction", bold=True)
    lines(
        c,
        72,
        150,
        10,
        13,
        [
            "A reader follows the left column",
            "from top to bottom before it",
            "moves to the right column; a",
            "parser has to do the same, or",
            "the text it produces is hard to",
            "under-",
            "stand.",
        ],
    )
    text(c, 72, 260, 12, "2 Method", bold=True)
    lines(c, 72, 280, 10, 13, ["The method is short and", "fits in two lines here."])
    lines(
        c,
        320,
        130,
        10,
        13,
        [
            "The right column starts at the",
            "top of the page again and goes",
            "on below the left one.",
        ],
    )
    lines(c, 320, 200, 10, 13, ["This last paragraph of the page", "is cut by the page break and"])
    text(c, 300, 770, 9, "12")
    c.showPage()
    text(c, 72, 40, 8, "Journal of Layout Studies, Vol. 3")
    lines(c, 72, 90, 10, 13, ["continues at the top of the next page.", "It ends here."])
    text(c, 72, 140, 12, "3 Results", bold=True)
    lines(c, 72, 160, 10, 13, ["Results are in the text only."])
    text(c, 300, 770, 9, "13")
    c.showPage()
    c.save()


def scan(path: Path) -> None:
    from reportlab.lib.utils import ImageReader
    from PIL import Image, ImageDraw

    c = canvas.Canvas(str(path), pagesize=letter)
    text(c, 72, 90, 18, "Scanned Appendix")
    lines(c, 72, 130, 11, 14, ["The next page is a scan without a text layer."])
    c.showPage()
    image = Image.new("RGB", (850, 1100), "white")
    draw = ImageDraw.Draw(image)
    for i in range(30):
        draw.rectangle((80, 80 + i * 32, 770, 96 + i * 32), fill=(40, 40, 40))
    c.drawImage(ImageReader(image), 0, 0, WIDTH, HEIGHT)
    c.showPage()
    lines(c, 72, 90, 11, 14, ["The last page has text again."])
    c.showPage()
    c.save()


def table_as_text(path: Path) -> None:
    c = canvas.Canvas(str(path), pagesize=letter)
    lines(c, 72, 100, 11, 14, ["Prices this week:"])
    rows = [["Fruit", "Count", "Price"], ["Apple", "3", "1.20"], ["Banana", "12", "0.25"], ["Cherry", "40", "9.00"]]
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            text(c, 72 + j * 150, 140 + i * 16, 11, cell)
    c.showPage()
    c.save()


def markdown_chars(path: Path) -> None:
    c = canvas.Canvas(str(path), pagesize=letter)
    text(c, 72, 90, 18, "Special Characters")
    lines(c, 72, 130, 11, 14, ["A price of $5 and a snake_case name with *stars*."])
    lines(c, 72, 180, 11, 14, ["Angle brackets: <b>not bold</b> and AT&T."])
    lines(c, 72, 230, 11, 14, ["- a line that starts like a list item"])
    c.showPage()
    c.save()


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} OUTPUT_DIR", file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, make in [
        ("journal.pdf", journal),
        ("scan.pdf", scan),
        ("table-as-text.pdf", table_as_text),
        ("markdown-chars.pdf", markdown_chars),
    ]:
        make(out / name)
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
