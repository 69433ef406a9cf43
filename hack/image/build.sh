#!/usr/bin/env bash
# `make image`: the operator's OCI image from the project's Dockerfile, with no Docker engine.
#
#   1. a Debian base (mmdebstrap, from Debian's own packages: python3, venv, CA certificates),
#      committed into buildah's local storage; it stands in for the Dockerfile's
#      python:*-slim base (passed as the PYTHON_IMAGE build argument);
#   2. `buildah bud` of the Dockerfile as it is (vfs storage, chroot isolation: no daemon,
#      no overlay mounts, no user namespaces);
#   3. `buildah push` to an OCI archive, which `podman load`, `docker load` and
#      `skopeo copy oci-archive:...` accept.
#
# Everything lives in a cache outside the repository, keyed by the inputs (Debian suite and
# packages for the base; Dockerfile, lock, sources and this script for the image); a second
# run with nothing changed is a no-op. Prints the archive's path on stdout.
#
#   TIDEGATE_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/tidegate)
#   IMAGE_TAG        image tag (default: the package version)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
root="${TIDEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate}/image"
suite=bookworm
packages=python3,python3-venv,python-is-python3,ca-certificates
version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$repo/operator/tidegate/__init__.py")"
tag="${IMAGE_TAG:-$version}"

log() { printf 'image: %s\n' "$*" >&2; }
need() {
  local missing=()
  for tool in mmdebstrap buildah; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (Debian packages)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      mmdebstrap buildah uidmap) >/dev/null
  fi
}

# The base is keyed by what mmdebstrap is asked for (the same suite and packages give the same
# base, whatever else this script changes).
debstrap=(--quiet --variant=apt --include="$packages"
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*')
base_key="$(printf '%s\n' "$suite" "${debstrap[@]}" | sha256sum | cut -c1-16)"
# The build context as .dockerignore lets it through, the Dockerfile and this script.
image_key="$( (cd "$repo" && find Dockerfile .dockerignore requirements.lock pyproject.toml README.md operator hack/image \
  -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' ! -path '*.egg-info/*' -print0 | sort -z \
  | xargs -0 sha256sum; echo "$base_key") | sha256sum | cut -c1-16)"
archive="$root/tidegate-$tag-$image_key.oci.tar"
if [[ -s "$archive" ]]; then
  log "cached: $archive"
  printf '%s\n' "$archive"
  exit 0
fi
need
mkdir -p "$root"
storage=(--root "$root/storage" --runroot "$root/run" --storage-driver vfs)
base="localhost/tidegate-base:$suite-$base_key"

start=$SECONDS
if ! buildah "${storage[@]}" inspect --type image "$base" >/dev/null 2>&1; then
  log "base: mmdebstrap $suite with $packages"
  tarball="$root/base-$base_key.tar"
  # apt lists and caches are not kept; the docs are (licences). No host apt configuration is
  # copied into the base.
  mmdebstrap "${debstrap[@]}" "$suite" "$tarball"
  ctr="$(buildah "${storage[@]}" from scratch)"
  buildah "${storage[@]}" add "$ctr" "$tarball" / >/dev/null
  buildah "${storage[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd python3 "$ctr"
  buildah "${storage[@]}" commit --quiet --rm "$ctr" "$base" >/dev/null
  rm -f "$tarball"
  log "base built in $((SECONDS - start)) s"
fi

step=$SECONDS
log "buildah bud of the Dockerfile on $base"
# The host's CA bundle and pip configuration are mounted for the RUN steps only (pip reaches
# the package index as the host does); bind mounts are never committed into a layer.
mounts=()
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
[[ -f /etc/pip.conf ]] && mounts+=(-v /etc/pip.conf:/etc/pip.conf:ro)
buildah "${storage[@]}" bud --quiet --isolation chroot --pull-never --layers=false \
  --build-arg "PYTHON_IMAGE=$base" "${mounts[@]}" \
  -t "localhost/tidegate:$tag" -f "$repo/Dockerfile" "$repo" >/dev/null
log "image built in $((SECONDS - step)) s"

rm -f "$archive.tmp"
buildah "${storage[@]}" push --quiet "localhost/tidegate:$tag" "oci-archive:$archive.tmp:tidegate:$tag"
mv "$archive.tmp" "$archive"
# Only the newest archive and image are kept: earlier inputs' copies go.
find "$root" -maxdepth 1 -name "tidegate-$tag-*.oci.tar" ! -path "$archive" -delete
buildah "${storage[@]}" rmi --prune >/dev/null 2>&1 || true
log "archive: $archive ($(du -m "$archive" | cut -f1) MB) in $((SECONDS - start)) s"
printf '%s\n' "$archive"
