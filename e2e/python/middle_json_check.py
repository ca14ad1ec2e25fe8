#!/usr/bin/env python3
"""Checks `mineru-worker parse` output against MinerU 4's own client-side rendering.

MinerU 4's API client (`mineru.parser.api_client.MinerUApiParser`) asks for `middle_json`, rebuilds
the document with `ParseResult.from_dict` and renders `.markdown()` and `.structured_content()`
itself. For every `<stem>_middle.json` under the given directories this does the same and compares
MinerU's Markdown with our `<stem>.md` (exact, after removing trailing whitespace at line ends and
at the end of the file). When a `<stem>_structured_content.json` lies beside it (the worker's unit tests
write one with `MINERU_MIDDLE_DUMP=<dir>`), MinerU's structured content is compared with it too.

PDFs to check: `examples/documents/sample.pdf`, the parseable ones of `worker/fuzz/corpus/open_pdf/`
and those `make_check_pdfs.py` writes; the vlm mapping is covered by the cases of
`worker/src/middle.rs`:

    MINERU_MIDDLE_DUMP=/tmp/cases cargo test -p mineru-worker --lib middle
    python e2e/python/middle_json_check.py /tmp/cases --allow-mismatch 'known-*'


Run it with MinerU 4's Python, e.g.

    ~/.cache/mineru-operator/mineru4-venv/bin/python e2e/python/middle_json_check.py /tmp/out

Exit status: 0 when every document validates and agrees, 1 on a mismatch or a validation error,
2 on bad usage (no middle JSON found, MinerU not importable). `--allow-mismatch PATTERN` (a glob on
the stem, repeatable) reports a Markdown or structured-content mismatch of the matching documents
as KNOWN instead of failing; they must still validate and render.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import sys
from pathlib import Path


def normalise(markdown: str) -> str:
    """Trailing whitespace removed from every line and from the end of the text."""
    return "\n".join(line.rstrip() for line in markdown.splitlines()).rstrip() + "\n"


def compare_json(ours, theirs, path: str = "$") -> list[str]:
    """Differences between two JSON values, numbers compared to 1e-9."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in sorted(set(ours) | set(theirs)):
            if key not in ours:
                out.append(f"{path}.{key}: missing in ours (theirs {json.dumps(theirs[key])[:120]})")
            elif key not in theirs:
                out.append(f"{path}.{key}: only in ours ({json.dumps(ours[key])[:120]})")
            else:
                out.extend(compare_json(ours[key], theirs[key], f"{path}.{key}"))
        return out
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{path}: {len(ours)} items in ours, {len(theirs)} in theirs"]
        return [d for i, (a, b) in enumerate(zip(ours, theirs)) for d in compare_json(a, b, f"{path}[{i}]")]
    numbers = (int, float)
    if isinstance(ours, numbers) and isinstance(theirs, numbers) and not isinstance(ours, bool):
        return [] if abs(ours - theirs) < 1e-9 else [f"{path}: ours {ours}, theirs {theirs}"]
    return [] if ours == theirs else [f"{path}: ours {json.dumps(ours)[:120]}, theirs {json.dumps(theirs)[:120]}"]


def check(middle_path: Path, parse_result, show_diff: int) -> tuple[bool, list[str]]:
    """Validates, renders and compares one document; returns (ok, report lines)."""
    stem = middle_path.name.removesuffix("_middle.json")
    markdown_path = middle_path.with_name(f"{stem}.md")
    lines: list[str] = []
    try:
        data = json.loads(middle_path.read_text(encoding="utf-8"))
        result = parse_result.from_dict(data)
    except Exception as exc:  # noqa: BLE001 - any failure here is a validation failure
        first = str(exc).strip().splitlines()
        lines.append(f"  validation: FAILED: {type(exc).__name__}: {first[0] if first else ''}")
        lines.extend(f"    {line}" for line in first[1:12])
        return False, lines
    pages = result.middle_json.pages
    blocks = sum(len(page.blocks) for page in pages)
    kinds: dict[str, int] = {}
    for page in pages:
        for block in page.blocks:
            kinds[str(block.type)] = kinds.get(str(block.type), 0) + 1
    extension = result.middle_json.extensions.get("mineru", {})
    lines.append(
        f"  validation: ok ({len(pages)} pages, {blocks} blocks: "
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        + f"; tier {extension.get('tier')}, parse_mode {extension.get('parse_mode')}, "
        + f"producer {result.middle_json.metadata.producer.name} "
        + f"{result.middle_json.metadata.producer.version})"
    )
    ok = True
    try:
        structured = result.structured_content()
        json.dumps(structured, ensure_ascii=False)
        rendered = sum(len(page["blocks"]) for page in structured["pages"])
        ours_path = middle_path.with_name(f"{stem}_structured_content.json")
        if ours_path.is_file():
            ours_structured = json.loads(ours_path.read_text(encoding="utf-8"))
            differences = compare_json(ours_structured, structured)
            if differences:
                lines.append(f"  structured_content: MISMATCH with {ours_path.name}")
                lines.extend(f"    {d}" for d in differences[:10])
                ok = False
            else:
                lines.append(f"  structured_content: identical to {ours_path.name} ({rendered} blocks)")
        else:
            lines.append(f"  structured_content: ok ({rendered} blocks)")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"  structured_content: FAILED: {type(exc).__name__}: {exc}")
        ok = False
    try:
        theirs = result.markdown()
    except Exception as exc:  # noqa: BLE001
        lines.append(f"  markdown: render FAILED: {type(exc).__name__}: {exc}")
        return False, lines
    if not markdown_path.is_file():
        lines.append(f"  markdown: FAILED: {markdown_path.name} is missing")
        return False, lines
    ours = markdown_path.read_text(encoding="utf-8")
    if normalise(ours) == normalise(theirs):
        lines.append(f"  markdown: identical ({len(normalise(ours).splitlines())} lines)")
        return ok, lines
    diff = list(
        difflib.unified_diff(
            normalise(ours).splitlines(),
            normalise(theirs).splitlines(),
            f"ours/{markdown_path.name}",
            "mineru/ParseResult.markdown()",
            lineterm="",
        )
    )
    changed = sum(1 for line in diff[2:] if line[:1] in "+-")
    lines.append(f"  markdown: MISMATCH ({changed} changed lines)")
    lines.extend(f"    {line}" for line in diff[:show_diff])
    if len(diff) > show_diff:
        lines.append(f"    … {len(diff) - show_diff} more diff lines")
    return False, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="directories written by `mineru-worker parse -o`")
    parser.add_argument("--diff-lines", type=int, default=40, help="diff lines shown per mismatch")
    parser.add_argument(
        "--allow-mismatch",
        action="append",
        default=[],
        metavar="PATTERN",
        help="stem glob whose Markdown may differ (a known renderer difference)",
    )
    args = parser.parse_args()
    try:
        from mineru.parser.base import ParseResult
        from mineru.version import __version__ as mineru_version
    except ImportError as exc:
        print(f"error: cannot import MinerU 4 ({exc}); run with its venv's python", file=sys.stderr)
        return 2
    found = sorted({p for d in args.dirs for p in d.rglob("*_middle.json")})
    if not found:
        print(f"error: no *_middle.json under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    print(f"MinerU {mineru_version}: checking {len(found)} document(s)")
    failed = known = 0
    for path in found:
        ok, lines = check(path, ParseResult, args.diff_lines)
        stem = path.name.removesuffix("_middle.json")
        allowed = any(fnmatch.fnmatchcase(stem, pattern) for pattern in args.allow_mismatch)
        only_markdown = all("FAILED" not in line for line in lines)
        if not ok and allowed and only_markdown:
            status = "KNOWN"
            known += 1
        else:
            status = "PASS" if ok else "FAIL"
            failed += not ok
        print(f"{status} {path}")
        for line in lines:
            print(line)
    passed = len(found) - failed - known
    print(f"{passed} passed, {known} known differences, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
