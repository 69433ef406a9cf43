#!/usr/bin/env bash
# Build the local control plane (and the tools the tests use) from Go modules into
# a cache outside the repository, keyed by version. A tool already in the cache is
# not rebuilt, so a second run is a no-op.
#
#   TIDEGATE_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/tidegate)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${TIDEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate}/testenv"
mkdir -p "$cache"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath"
timings="$cache/build-times.txt"

log() { printf 'testenv: %s\n' "$*" >&2; }

timed() { # name cmd...
  local name="$1" start end; shift
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  printf '%s %ss\n' "$name" "$((end - start))" | tee -a "$timings" >&2
}

build_kubernetes() {
  local dir="$cache/k8s-v$K8S_VERSION"
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local missing=()
  for b in "${bins[@]}"; do [[ -x "$dir/$b" ]] || missing+=("$b"); done
  [[ ${#missing[@]} -eq 0 ]] && { log "kubernetes v$K8S_VERSION cached"; return; }
  local mod="$cache/src/kubernetes-v$K8S_VERSION"
  mkdir -p "$mod" "$dir"
  local upstream
  upstream="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  python3 "$here/gen_k8s_gomod.py" "$K8S_VERSION" "$upstream" "$mod/go.mod"
  cat > "$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$mod" && go mod tidy)
  local minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for b in "${missing[@]}"; do
    log "building $b v$K8S_VERSION (cold builds take minutes on two cores)"
    (cd "$mod" && timed "$b" go build -ldflags "$ldflags" -o "$dir/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$dir/$b.tmp" "$dir/$b"
  done
}

build_etcd() {
  local dir="$cache/etcd-v$ETCD_VERSION"
  [[ -x "$dir/etcd" ]] && { log "etcd v$ETCD_VERSION cached"; return; }
  local mod="$cache/src/etcd-v$ETCD_VERSION"
  mkdir -p "$mod" "$dir"
  cat > "$mod/go.mod" <<GOMOD
module tidegate.io/hack/testenv/etcd

go 1.24

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
GOMOD
  cat > "$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$mod" && go mod tidy)
  (cd "$mod" && timed etcd go build -ldflags "-s -w" -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$dir/etcd.tmp" "$dir/etcd"
}

go_install() { # name version package
  local name="$1" version="$2" pkg="$3"
  local dir="$cache/$name-v$version"
  [[ -x "$dir/$name" ]] && { log "$name v$version cached"; return; }
  mkdir -p "$dir"
  GOBIN="$dir" timed "$name" go install -ldflags "-s -w" "$pkg@v$version"
}

fetch_istio_crds() {
  local dir="$cache/istio-api-v$ISTIO_API_VERSION"
  [[ -s "$dir/crds.yaml" ]] && { log "istio CRDs v$ISTIO_API_VERSION cached"; return; }
  mkdir -p "$dir"
  local src
  src="$(go mod download -json "istio.io/api@v$ISTIO_API_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  install -m 0644 "$src/kubernetes/customresourcedefinitions.gen.yaml" "$dir/crds.yaml.tmp"
  mv "$dir/crds.yaml.tmp" "$dir/crds.yaml"
}

# The Gateway API's standard channel (HTTPRoute, GRPCRoute, Gateway, GatewayClass,
# ReferenceGrant, BackendTLSPolicy, ListenerSet) from its module's config/crd/standard, in one
# file; its ValidatingAdmissionPolicy against mixing channels is left out: not a CRD.
fetch_gateway_api_crds() {
  local dir="$cache/gateway-api-v$GATEWAY_API_VERSION"
  [[ -s "$dir/crds.yaml" ]] && { log "gateway-api CRDs v$GATEWAY_API_VERSION cached"; return; }
  mkdir -p "$dir"
  local src f first=1
  src="$(go mod download -json "sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  : > "$dir/crds.yaml.tmp"
  for f in "$src"/config/crd/standard/gateway.networking.k8s.io_*.yaml; do
    [[ "$f" == *_vap_* ]] && continue
    [[ $first -eq 1 ]] || echo "---" >> "$dir/crds.yaml.tmp"
    first=0
    cat "$f" >> "$dir/crds.yaml.tmp"
  done
  mv "$dir/crds.yaml.tmp" "$dir/crds.yaml"
}

# kwok acts on nodes and pods through "stages"; the fast ones (nodes Ready at once,
# pods Running and Ready as soon as they are scheduled) ship in its module's source.
fetch_kwok_stages() {
  local out="$cache/kwok-v$KWOK_VERSION/stages.yaml"
  [[ -s "$out" ]] && return
  local src
  src="$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  local f first=1
  : > "$out.tmp"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [[ $first -eq 1 ]] || echo "---" >> "$out.tmp"
    first=0
    cat "$src/kustomize/stage/$f" >> "$out.tmp"
  done
  mv "$out.tmp" "$out"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(kubernetes etcd kwok istio gateway-api helm kustomize)
for t in "${targets[@]}"; do
  case "$t" in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    kwok) go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok; fetch_kwok_stages ;;
    helm) go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm ;;
    kustomize) go_install kustomize "$KUSTOMIZE_VERSION" sigs.k8s.io/kustomize/kustomize/v5 ;;
    istio) fetch_istio_crds ;;
    gateway-api) fetch_gateway_api_crds ;;
    *) log "unknown target $t"; exit 2 ;;
  esac
done
