#!/usr/bin/env bash
# Build Argo Rollouts' controller from its Go module, and extract its CRDs, into a
# cache outside the repository keyed by version, for bench/steps.py's side-by-side
# comparison. A second run is a no-op.
#
#   ARGO_ROLLOUTS_VERSION   default 1.10.2
#   TIDEGATE_CACHE          cache root (default: ${XDG_CACHE_HOME:-~/.cache}/tidegate)
#
# Output: $TIDEGATE_CACHE/argo-rollouts-v$VERSION/{rollouts-controller,crds.yaml}
set -euo pipefail

version="${ARGO_ROLLOUTS_VERSION:-1.10.2}"
module=github.com/argoproj/argo-rollouts
root="${TIDEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate}"
dir="$root/argo-rollouts-v$version"
src_mod="$root/src/argo-rollouts-v$version"
export PATH="$PATH:/usr/local/go/bin"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -mod=mod"
# Argo's go.mod may ask for a newer patch release of Go than the one installed; let
# the go command fetch that toolchain (it comes from the module proxy like any module).
export GOTOOLCHAIN="${ARGO_GOTOOLCHAIN:-auto}"

log() { printf 'argo: %s\n' "$*" >&2; }

if [[ -x "$dir/rollouts-controller" && -s "$dir/crds.yaml" ]]; then
  log "argo-rollouts v$version cached in $dir"
  exit 0
fi
mkdir -p "$dir" "$src_mod"

json="$(go mod download -json "$module@v$version")"
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$json" "$1"; }
upstream_dir="$(field Dir)"
upstream_gomod="$(field GoMod)"

# The CRDs ship in the module source; one multi-document file is what the bench applies.
if [[ ! -s "$dir/crds.yaml" ]]; then
  : > "$dir/crds.yaml.tmp"
  for f in "$upstream_dir"/manifests/crds/*-crd.yaml; do
    { echo "---"; cat "$f"; } >> "$dir/crds.yaml.tmp"
  done
  mv "$dir/crds.yaml.tmp" "$dir/crds.yaml"
fi

if [[ ! -x "$dir/rollouts-controller" ]]; then
  # As for Kubernetes in hack/testenv: replace directives of a dependency are ignored,
  # so the module that builds it repeats Argo's own pins (k8s.io/* at the versions it
  # was released with) and its go line.
  python3 - "$version" "$upstream_gomod" "$src_mod/go.mod" <<'PY'
import re, sys
version, upstream, out = sys.argv[1:4]
text = open(upstream).read()
go = re.search(r"^go\s+(\S+)", text, re.M).group(1)
pins = re.findall(r"^\s*(\S+)\s+=>\s+(\S+\s+v\S+)\s*$", text, re.M)
lines = [
    "// Written by hack/argo/build.sh; DO NOT EDIT.",
    "module tidegate.io/hack/argo",
    "",
    f"go {go}",
    "",
    f"require github.com/argoproj/argo-rollouts v{version}",
    "",
    "replace (",
    *[f"\t{old} => {new}" for old, new in pins],
    ")",
]
open(out, "w").write("\n".join(lines) + "\n")
PY
  cat > "$src_mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
GO
  (cd "$src_mod" && go mod tidy)
  # Argo prints gitTag as its version when gitCommit, gitTag and a clean tree are set.
  commit="$(python3 -c 'import json,sys; print((json.loads(sys.argv[1]).get("Origin") or {}).get("Hash") or "go-module")' "$json")"
  pkg="$module/utils/version"
  ldflags="-s -w -X $pkg.version=$version -X $pkg.buildDate=1970-01-01T00:00:00Z"
  ldflags+=" -X $pkg.gitCommit=$commit -X $pkg.gitTag=v$version -X $pkg.gitTreeState=clean"
  log "building rollouts-controller v$version (a cold build takes 10+ minutes on two cores)"
  start=$(date +%s)
  (cd "$src_mod" && go build -ldflags "$ldflags" -o "$dir/rollouts-controller.tmp" "$module/cmd/rollouts-controller")
  mv "$dir/rollouts-controller.tmp" "$dir/rollouts-controller"
  log "built in $(( $(date +%s) - start ))s: $dir/rollouts-controller"
fi
