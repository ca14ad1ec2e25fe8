"""MinerU 4's own client, unchanged, against a `/v1` server; prints what each form returned.

Usage: v1_client.py API_URL PDF TIER

`parse` is `MinerUApiParser(api_url=…).parse(pdf).markdown()` (uploads, a parse job, polls, and
MinerU's own rendering of the middle JSON); `task` and `file_parse` are the convenience forms as
MinerU documents them, with the Markdown the server rendered.
"""

import json
import pathlib
import sys
import time

import httpx
from mineru.parser.api_client import MinerUApiParser


def task(client: httpx.Client, pdf: pathlib.Path, tier: str) -> str:
    with pdf.open("rb") as f:
        r = client.post("/v1/tasks", params={"tier": tier}, files={"files": (pdf.name, f, "application/pdf")})
    if r.status_code != 202:
        raise SystemExit(f"POST /v1/tasks: HTTP {r.status_code}: {r.text}")
    result_url = r.json()["result_url"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = client.get(result_url)
        if r.status_code == 200:
            return r.json()["files"][0]["content"]["markdown"]
        if r.status_code != 202:
            raise SystemExit(f"GET {result_url}: HTTP {r.status_code}: {r.text}")
        time.sleep(0.2)
    raise SystemExit(f"{result_url} did not finish in 120 s")


def file_parse(client: httpx.Client, pdf: pathlib.Path, tier: str) -> str:
    with pdf.open("rb") as f:
        r = client.post("/v1/file_parse", params={"tier": tier}, files={"files": (pdf.name, f, "application/pdf")})
    if r.status_code != 200:
        raise SystemExit(f"POST /v1/file_parse: HTTP {r.status_code}: {r.text}")
    return r.json()["files"][0]["content"]["markdown"]


def main() -> None:
    api_url, pdf, tier = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    out = {"parse": MinerUApiParser(api_url=api_url, tier=tier).parse(pdf).markdown()}
    with httpx.Client(base_url=api_url, timeout=120, trust_env=False) as client:
        out["task"] = task(client, pdf, tier)
        out["file_parse"] = file_parse(client, pdf, tier)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
