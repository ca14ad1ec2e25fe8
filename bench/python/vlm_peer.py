#!/usr/bin/env python3
"""MinerU's own vlm path on one PDF, as `mineru -b vlm-http-client` runs it once its local API
has the document: MinerU 3.4.5's `do_parse` renders the pages with pypdfium2, calls the vLLM
server through `mineru_vl_utils`' http-client with MinerU's options, and writes the Markdown,
content list, middle JSON and model output. The layout and span PDFs MinerU draws by default
are left out: the worker writes no such files.

    python bench/python/vlm_peer.py PDF OUT_DIR SERVER_URL MAX_CONCURRENCY

Run with MinerU 3.4.5's Python (`e2e/scripts/install-deps.sh mineru3`). Prints
`{"pages": N, "seconds": S}`, S the wall time of the work alone (imports left out).
"""

import json
import sys
import time
from pathlib import Path

import pypdfium2
from mineru.cli.common import do_parse


def main() -> None:
    pdf, out, server_url, concurrency = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    started = time.perf_counter()
    do_parse(
        out,
        [pdf.stem],
        [pdf.read_bytes()],
        ["en"],
        backend="vlm-http-client",
        server_url=server_url,
        f_draw_layout_bbox=False,
        f_draw_span_bbox=False,
        f_dump_orig_pdf=False,
        max_concurrency=concurrency,
    )
    seconds = time.perf_counter() - started
    print(json.dumps({"pages": len(pypdfium2.PdfDocument(str(pdf))), "seconds": seconds}))


if __name__ == "__main__":
    main()
