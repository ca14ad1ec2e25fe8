#!/usr/bin/env bash
# `make bench`: the worker's per-page CPU benchmark (criterion, worker/benches/pages.rs) and its
# Python peer (bench/python/render_peer.py, MinerU's own pypdfium2 + Pillow path) on the same
# pages, then both side by side; then whole documents through the worker and through MinerU's
# own code (worker/benches/clients.rs, which installs MinerU's virtualenvs itself). Installs what it needs first, idempotently: libpdfium.so and a
# virtualenv pinned by bench/python/requirements.txt, both under ~/.cache/mineru-operator.
# Extra arguments go to criterion (a filter such as `render`).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
log() { echo "bench: $*" >&2; }

cache_root="${MINERU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mineru-operator}"
venv="$cache_root/bench-venv"
requirements="bench/python/requirements.txt"
target="${CARGO_TARGET_DIR:-$repo/target}"

PDFIUM_DYNAMIC_LIB_PATH="$(bash worker/scripts/install-pdfium.sh)"
export PDFIUM_DYNAMIC_LIB_PATH

# The copy of the requirements inside the venv records what it was built from.
if ! cmp -s "$requirements" "$venv/requirements.txt"; then
    log "building $venv from $requirements"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.txt"
fi

log "Rust: cargo bench -p mineru-worker --bench pages"
"${CARGO:-cargo}" bench -p mineru-worker --bench pages -- "$@"

log "Python: the same pages through pypdfium2 and Pillow"
"$venv/bin/python" bench/python/render_peer.py --criterion "$target/criterion"

log "Whole documents: cargo bench -p mineru-worker --bench clients"
"${CARGO:-cargo}" bench -p mineru-worker --bench clients
"${CARGO:-cargo}" bench -p mineru-worker --bench serve
