#!/usr/bin/env bash
# Build tidegate-lua (hack/lua/main.go: Argo CD's way of running a resource customization, on
# gopher-lua) into a cache outside the repository keyed by its sources; print its path.
# A second run is a no-op.
#
#   TIDEGATE_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/tidegate)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${TIDEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate}"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)"
dir="$root/lua-$key"
export PATH="$PATH:/usr/local/go/bin"
if [[ ! -x "$dir/tidegate-lua" ]]; then
  mkdir -p "$dir"
  (cd "$here" && CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath" go build -o "$dir/tidegate-lua.tmp" .)
  mv "$dir/tidegate-lua.tmp" "$dir/tidegate-lua"
  printf 'lua: built %s\n' "$dir/tidegate-lua" >&2
fi
printf '%s\n' "$dir/tidegate-lua"
