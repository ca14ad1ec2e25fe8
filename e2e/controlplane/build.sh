#!/usr/bin/env bash
# Builds a real Kubernetes control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd) and kwok from the Go module proxy, plus helm, into a cache directory keyed by
# the pinned versions. A warm cache rebuilds nothing; prints the bin directory on stdout.
# For the real node (e2e/src/node.rs) it also builds the kubelet and kube-proxy of the same
# Kubernetes version, CoreDNS (the cluster DNS, run on the host), the CNI plugins (into
# cni-bin/ beside bin/) and the pod sandbox's pause process (e2e/controlplane/pause).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.4.1}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.10.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"

cache_root="${MINERU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mineru-operator}"
# Bump LAYOUT when the cache's contents change shape.
LAYOUT=3
key="layout${LAYOUT}_k8s-${K8S_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}_gwapi-${GATEWAY_API_VERSION}_cni-${CNI_PLUGINS_VERSION}_coredns-${COREDNS_VERSION}"
out="$cache_root/controlplane/$key"
bin="$out/bin"

log() { echo "controlplane: $*" >&2; }

# pause and CoreDNS are built from this repository's main.go files (CoreDNS with only the
# plugins the real node's Corefile uses, in its own module: its client-go differs from the
# control plane's). Each has its own stamp, keyed by its source's hash (and CoreDNS's version),
# so that a change rebuilds just that binary.
pause_stamp="$out/.pause-$(sha256sum "$here/pause/main.go" | cut -c1-16)"
coredns_stamp="$out/.coredns-$COREDNS_VERSION-$(sha256sum "$here/coredns/main.go" | cut -c1-16)"
# build_stamped NAME STAMP [MODULE@VERSION]: builds $here/NAME/main.go into $bin/NAME.
build_stamped() {
  local name="$1" stamp="$2" requires="${3:-}"
  log "building $name (${stamp##*/.})"
  local mod="$out/$name-module"
  rm -rf "$mod"
  mkdir -p "$mod" "$bin"
  cp "$here/$name/main.go" "$mod/"
  (
    cd "$mod"
    go mod init "mineru.dev/e2e/$name" >&2
    if [ -n "$requires" ]; then
      GOFLAGS=-buildvcs=false go get "$requires" >&2
      GOFLAGS=-buildvcs=false go mod tidy >&2
    fi
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags='-s -w' -o "$bin/$name.partial" . >&2
  )
  mv "$bin/$name.partial" "$bin/$name"
  rm -f "$out/.$name"-*
  touch "$stamp"
}
build_pause() { build_stamped pause "$pause_stamp"; }
build_coredns() { build_stamped coredns "$coredns_stamp" "github.com/coredns/coredns@$COREDNS_VERSION"; }

if [ -f "$out/.complete" ] && [ -f "$pause_stamp" ] && [ -f "$coredns_stamp" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
if [ -f "$out/.complete" ]; then
  [ -f "$pause_stamp" ] || build_pause
  [ -f "$coredns_stamp" ] || build_coredns
  echo "$bin"
  exit 0
fi

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
mkdir -p "$bin"
mod="$out/module"
rm -rf "$mod"
mkdir -p "$mod"

# k8s.io/kubernetes points its staging modules at ./staging; a dependent module has to repeat that
# replace block with each staging module at its published tag (v1.Y.Z -> v0.Y.Z).
log "resolving k8s.io/kubernetes $K8S_VERSION"
k8s_gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
staging_version="v0.${K8S_VERSION#v1.}"
go_directive=$(awk '$1 == "go" { print $2; exit }' "$k8s_gomod")
{
  echo "module mineru.dev/e2e/controlplane"
  echo
  echo "go $go_directive"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$k8s_gomod" |
    while read -r staging; do
      # Example modules in staging are not published; nothing we build needs them.
      if go list -m -versions "$staging" 2>/dev/null | tr ' ' '\n' | grep -qx "$staging_version"; then
        echo "	$staging => $staging v0.${K8S_VERSION#v1.}"
      fi
    done
  echo ")"
} >"$mod/go.mod"

cd "$mod"
# etcd at the version Kubernetes itself was tested with; an unpinned `go get` would upgrade
# shared dependencies under Kubernetes' feet.
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$k8s_gomod")
packages=(
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler
  k8s.io/kubernetes/cmd/kubectl
)
log "downloading modules"
go get "${packages[@]/%/@$K8S_VERSION}" "go.etcd.io/etcd/server/v3@$etcd_version" >&2
log "building ${packages[*]} and etcd (many minutes on a cold machine)"
go build -trimpath -ldflags='-s -w' -o "$bin/" "${packages[@]}" >&2
go build -trimpath -ldflags='-s -w' -o "$bin/etcd" go.etcd.io/etcd/server/v3 >&2

# The node's components come from the same module (their requirements only add to the control
# plane's). Without the version stamps the kubelet registers its node as v0.0.0-master.
node_packages=(k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
minor="${K8S_VERSION#v1.}"
minor="${minor%%.*}"
version_ldflags="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
log "building ${node_packages[*]}"
go get "${node_packages[@]/%/@$K8S_VERSION}" >&2
go build -trimpath -ldflags="-s -w $version_ldflags" -o "$bin/" "${node_packages[@]}" >&2

# The plugins' packages, not the module root: `go get` of the module alone leaves their own
# dependencies out of go.sum. containerd's CRI always runs loopback for the pods' lo.
log "building the CNI plugins $CNI_PLUGINS_VERSION"
cni_mod="$out/cni-module"
rm -rf "$cni_mod"
mkdir -p "$cni_mod" "$out/cni-bin"
cni_packages=()
for plugin in main/bridge ipam/host-local main/loopback meta/portmap; do
  cni_packages+=("github.com/containernetworking/plugins/plugins/$plugin")
done
(
  cd "$cni_mod"
  go mod init mineru.dev/e2e/cni >&2
  go get "${cni_packages[@]/%/@$CNI_PLUGINS_VERSION}" >&2
  go build -trimpath -ldflags='-s -w' -o "$out/cni-bin/" "${cni_packages[@]}" >&2
)

build_coredns

build_pause

log "building kwok $KWOK_VERSION and helm $HELM_VERSION"
GOBIN="$bin" go install -trimpath -ldflags='-s -w' "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
GOBIN="$bin" go install -trimpath -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2

log "collecting Gateway API CRDs $GATEWAY_API_VERSION"
gw_dir=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
mkdir -p "$out/gateway-api-crds"
cp "$gw_dir"/config/crd/standard/*.yaml "$out/gateway-api-crds/"
chmod -R u+w "$out/gateway-api-crds"

log "collecting kwok stages (node initialize + heartbeat, pod ready/complete/delete)"
kwok_dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
for stage in node/fast/node-initialize node/heartbeat/node-heartbeat pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  echo "---"
  cat "$kwok_dir/kustomize/stage/$stage.yaml"
done >"$out/kwok-stages.yaml"

touch "$out/.complete"
log "ready in $bin"
echo "$bin"
