"""The Python peer of worker/benches/pages.rs.

Times the same pages through the per-page CPU path of MinerU's own Python client: pypdfium2
renders the page (`page.render(scale=200/72)`, long side capped at 3500 px, `.to_pil()`), then
for each request to vLLM Pillow resizes or crops the image, saves it as PNG and the client puts
it base64-encoded in the JSON body. Each step is timed with time.perf_counter, call by call.

With --criterion it also reads the Rust benchmark's results and prints both side by side.
"""

import argparse
import base64
import json
import math
import platform
import statistics
import time
from io import BytesIO
from pathlib import Path

import PIL
import pypdfium2 as pdfium
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "bench" / "sample-layout.json"
MODEL = "opendatalab/MinerU2.5-2509-1.2B"

DPI = 200
MAX_RENDER_SIDE = 3500
LAYOUT_IMAGE_SIZE = (1036, 1036)
MIN_IMAGE_EDGE = 28
MAX_IMAGE_EDGE_RATIO = 50
# Block types MinerU's client does not send for recognition.
NOT_RECOGNISED = {"image", "list", "equation_block"}

PROMPTS = {
    "layout": "\nLayout Detection:",
    "table": "\nTable Recognition:",
    "equation": "\nFormula Recognition:",
    "text": "\nText Recognition:",
}
# (presence_penalty, frequency_penalty) per prompt; the other sampling values are shared.
PENALTIES = {"layout": (0.0, 0.0), "table": (1.0, 0.005), "equation": (1.0, 0.05), "text": (1.0, 0.05)}


def render_bitmap(page):
    """pdfium's part of a render: 200 DPI, long side at most 3500 px, a BGR bitmap."""
    scale = DPI / 72
    long_side = max(page.get_size())
    if long_side * scale > MAX_RENDER_SIDE:
        scale = MAX_RENDER_SIDE / long_side
    return page.render(scale=scale)


def render(pdf, index):
    """A page as MinerU renders it: the bitmap as an RGB PIL image."""
    page = pdf[index]
    bitmap = render_bitmap(page)
    image = bitmap.to_pil()
    bitmap.close()
    page.close()
    return image


def png(image):
    with BytesIO() as buffer:
        image.save(buffer, format="PNG")
        return buffer.getvalue()


def request_body(png_bytes, step):
    """The chat-completions body MinerU's HTTP client posts, serialised as httpx does."""
    presence, frequency = PENALTIES[step]
    url = "data:image/png;base64," + base64.b64encode(png_bytes).decode("utf-8")
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": PROMPTS[step]},
                ],
            },
        ],
        "temperature": 0.0,
        "top_p": 0.01,
        "top_k": 1,
        "presence_penalty": presence,
        "frequency_penalty": frequency,
        "repetition_penalty": 1.0,
        "vllm_xargs": {"no_repeat_ngram_size": 100, "debug": False},
        "skip_special_tokens": False,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def stretch(image):
    return image.resize(LAYOUT_IMAGE_SIZE, Image.Resampling.BICUBIC)


def layout_request(image):
    return request_body(png(stretch(image)), "layout")


def recognisable(image):
    """Pads to an edge ratio of at most 50, then upscales so the short edge is at least 28 px."""
    width, height = image.size
    if max(width, height) / min(width, height) > MAX_IMAGE_EDGE_RATIO:
        if width > height:
            size = (width, math.ceil(width / MAX_IMAGE_EDGE_RATIO))
        else:
            size = (math.ceil(height / MAX_IMAGE_EDGE_RATIO), height)
        canvas = Image.new(image.mode, size, (255, 255, 255))
        canvas.paste(image, ((size[0] - width) // 2, (size[1] - height) // 2))
        image = canvas
    short = min(image.size)
    if short < MIN_IMAGE_EDGE:
        scale = MIN_IMAGE_EDGE / short
        size = (math.ceil(image.width * scale), math.ceil(image.height * scale))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def block_requests(image, blocks):
    width, height = image.size
    bodies = []
    for block in blocks:
        x0, y0, x1, y1 = (c / 1000 for c in block["bbox"])
        crop = image.crop((x0 * width, y0 * height, x1 * width, y1 * height))
        if block.get("angle") in (90, 180, 270):
            crop = crop.rotate(block["angle"], expand=True)
        step = block["type"] if block["type"] in ("table", "equation") else "text"
        bodies.append(request_body(png(recognisable(crop)), step))
    return bodies


def parts(pdf, index, image):
    """The render and the layout request split into their steps, to see where the time goes."""
    page = pdf[index]
    bitmap = render_bitmap(page)
    stretched = stretch(image)
    layout_png = png(stretched)
    return page, bitmap, {
        "render: pdfium": lambda: render_bitmap(page).close(),
        "render: to_pil (BGR to RGB copy)": bitmap.to_pil,
        "layout: bicubic resize to 1036x1036": lambda: stretch(image),
        "layout: PNG (Pillow defaults, zlib level 6)": lambda: png(stretched),
        "layout: base64 and JSON body": lambda: request_body(layout_png, "layout"),
    }


def median_ms(call, iterations, warmup):
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def criterion_ms(directory, stage, name, page):
    """The Rust benchmark's median for a page, when it has run."""
    if directory is None:
        return None
    estimates = directory / stage / name / str(page) / "new" / "estimates.json"
    if not estimates.is_file():
        return None
    return json.loads(estimates.read_text())["median"]["point_estimate"] / 1e6


def fmt(ms):
    return "—" if ms is None else f"{ms:.2f}"


def ratio(python, rust):
    return "—" if rust is None else f"{python / rust:.1f}×"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100, help="timed calls per page and step")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before them")
    parser.add_argument("--criterion", type=Path, help="the Rust benchmark's criterion directory")
    args = parser.parse_args()

    layout = json.loads(LAYOUT.read_text())
    name = Path(layout["document"]).stem
    pdf = pdfium.PdfDocument((ROOT / layout["document"]).read_bytes())
    if len(pdf) != len(layout["pages"]):
        raise SystemExit(f"{LAYOUT} has {len(layout['pages'])} pages, the document {len(pdf)}")

    print(
        f"python {platform.python_version()}, pypdfium2 {pdfium.version.PYPDFIUM_INFO}, "
        f"pdfium {pdfium.version.PDFIUM_INFO}, Pillow {PIL.__version__}"
    )
    stages, steps = {}, {}
    for index, page_blocks in enumerate(layout["pages"]):
        page = index + 1
        blocks = [b for b in page_blocks if b["type"] not in NOT_RECOGNISED]
        image = render(pdf, index)
        sizes = sum(len(body) for body in block_requests(image, blocks))
        print(
            f"{name} p{page}: render {image.width}x{image.height}, layout request "
            f"{len(layout_request(image))} B, {len(blocks)} block requests {sizes} B"
        )
        calls = {
            "render": lambda: render(pdf, index),
            "layout_request": lambda: layout_request(image),
            "block_requests": lambda: block_requests(image, blocks),
        }
        stages[page] = {s: median_ms(c, args.iterations, args.warmup) for s, c in calls.items()}
        pdf_page, bitmap, calls = parts(pdf, index, image)
        steps[page] = {s: median_ms(c, args.iterations, args.warmup) for s, c in calls.items()}
        bitmap.close()
        pdf_page.close()

    print("\n| page | Python step | median (ms) |\n|---|---|---:|")
    for page, times in steps.items():
        for step, ms in times.items():
            print(f"| {page} | {step} | {fmt(ms)} |")

    print("\n| page | step | Rust median (ms) | Python median (ms) | Python / Rust |")
    print("|---|---|---:|---:|---:|")
    for page, times in stages.items():
        rust = {s: criterion_ms(args.criterion, s, name, page) for s in times}
        for stage, ms in times.items():
            print(f"| {page} | {stage} | {fmt(rust[stage])} | {fmt(ms)} | {ratio(ms, rust[stage])} |")
        python_sum = sum(times.values())
        rust_sum = None if None in rust.values() else sum(rust.values())
        print(
            f"| {page} | **vlm path, sum** | {fmt(rust_sum)} | {fmt(python_sum)} "
            f"| {ratio(python_sum, rust_sum)} |"
        )
        text = criterion_ms(args.criterion, "text_backend", name, page)
        print(f"| {page} | text_backend | {fmt(text)} | — | — |")


if __name__ == "__main__":
    main()
