#!/usr/bin/env bash
# Installs libpdfium.so for development and CI by extracting it from the pypdfium2 wheel on PyPI
# (pdfium-binaries is the choice for users; this avoids a GitHub download here).
# Idempotent: prints the directory holding libpdfium.so on stdout, logs go to stderr.
set -euo pipefail

PYPDFIUM2_VERSION="${PYPDFIUM2_VERSION:-5.15.2}"
cache_root="${MINERU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mineru-operator}"
dest="$cache_root/pdfium/$PYPDFIUM2_VERSION"
lib="$dest/libpdfium.so"

log() { echo "install-pdfium: $*" >&2; }

# The worker tests write Cyrillic and Greek with DejaVu Sans (Debian: fonts-dejavu-core).
ensure_test_font() {
    local font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
    [[ -f "$font" ]] && return 0
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing fonts-dejavu-core (test font)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >&2 ||
            log "could not install fonts-dejavu-core; the non-Latin text tests will say so"
    else
        log "missing $font: install fonts-dejavu-core for the non-Latin text tests"
    fi
}
ensure_test_font

if [[ -s "$lib" ]]; then
    log "already present: $lib"
    echo "$dest"
    exit 0
fi

pip_cmd=()
if command -v pip3 >/dev/null 2>&1; then
    pip_cmd=(pip3)
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
    pip_cmd=(python3 -m pip)
else
    log "pip is required (python3 -m pip); alternatively download a pdfium-binaries build and set PDFIUM_DYNAMIC_LIB_PATH"
    exit 1
fi

mkdir -p "$dest"
work="$(mktemp -d "$dest/.download.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log "downloading pypdfium2==$PYPDFIUM2_VERSION (manylinux x86_64 wheel)"
"${pip_cmd[@]}" download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_17_x86_64 --python-version 3.11 --implementation py \
    --dest "$work" "pypdfium2==$PYPDFIUM2_VERSION" >&2

wheel="$(find "$work" -maxdepth 1 -name 'pypdfium2-*.whl' | head -n 1)"
if [[ -z "$wheel" ]]; then
    log "pip did not produce a pypdfium2 wheel in $work"
    exit 1
fi

member="$(python3 - "$wheel" <<'PY'
import sys, zipfile
names = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith("/libpdfium.so")]
print(names[0] if names else "")
PY
)"
if [[ -z "$member" ]]; then
    log "no libpdfium.so inside $(basename "$wheel")"
    exit 1
fi

python3 - "$wheel" "$member" "$work/libpdfium.so" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
# Rename into place last so a concurrent or interrupted run never leaves a partial library.
mv -f "$work/libpdfium.so" "$lib"
log "installed $lib"
echo "$dest"
