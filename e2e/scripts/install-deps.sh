#!/usr/bin/env bash
# Installs everything the demo and the test suite need, idempotently:
#   - Debian packages: Prometheus + promtool (gate tests, e2e), Lua 5.1 (Argo CD health scripts)
#   - libpdfium.so from the pypdfium2 wheel (worker)
#   - the Kubernetes control plane, kwok and helm, built from the Go module proxy (e2e)
# Caches live outside the repository, keyed by version; a warm machine does nothing here.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
log() { echo "install-deps: $*" >&2; }

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v lua5.1 >/dev/null 2>&1 || missing+=(lua5.1)
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  # The prometheus package would start a system service; tests start their own instances.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  if command -v service >/dev/null 2>&1; then
    "${sudo_cmd[@]}" service prometheus stop >/dev/null 2>&1 || true
  fi
fi

bash "$repo/worker/scripts/install-pdfium.sh" >/dev/null
bash "$repo/e2e/controlplane/build.sh" >/dev/null
log "ready"
