#!/usr/bin/env python3
"""The text backend's peers on one PDF:

- `pdfium`: raw text extraction, pypdfium2's `get_text_range()` over every page (what any
  layout-aware extraction costs at least; no layout, no output files);
- `flash`: MinerU 4's model-free `flash` tier, `MinerUParser(tier="flash").parse(pdf)` and its
  Markdown, as `mineru-api --tier flash` runs it for a request.

    python bench/python/text_peer.py pdfium|flash PDF

Run with MinerU 4.0.12's Python (`e2e/scripts/install-deps.sh mineru4`). Prints
`{"pages": N, "seconds": S}`, S the wall time of the work alone (imports left out).
"""

import json
import sys
import time

import pypdfium2


def main() -> None:
    mode, pdf = sys.argv[1], sys.argv[2]
    if mode == "flash":
        from mineru.parser.mineru_parser import MinerUParser
    started = time.perf_counter()
    document = pypdfium2.PdfDocument(pdf)
    pages = len(document)
    if mode == "pdfium":
        characters = 0
        for index in range(pages):
            page = document[index]
            text_page = page.get_textpage()
            characters += len(text_page.get_text_range())
            text_page.close()
            page.close()
        if characters == 0:
            raise SystemExit(f"{pdf}: no text extracted")
    elif mode == "flash":
        result = MinerUParser(tier="flash").parse(pdf)
        if not result.markdown().strip():
            raise SystemExit(f"{pdf}: flash tier wrote no Markdown")
    else:
        raise SystemExit(f"unknown mode {mode!r} (expected pdfium or flash)")
    print(json.dumps({"pages": pages, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
