"""Where the sandbox's binaries come from: KUBEBUILDER_ASSETS, else the testenv cache.

The cache is filled by `make testenv` (hack/testenv/build.sh), which builds each
tool from its Go module into `<cache>/<tool>-v<version>/`. The versions are those
of hack/testenv/versions.env, repeated here because an installed package cannot
read the repository; a unit test keeps the two equal.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

K8S_VERSION = "1.35.4"
ETCD_VERSION = "3.6.16"
KWOK_VERSION = "0.8.0"
HELM_VERSION = "3.22.0"
KUSTOMIZE_VERSION = "5.8.2"
ISTIO_API_VERSION = "1.31.4"
GATEWAY_API_VERSION = "1.6.3"

_DIRS = {
    "kube-apiserver": f"k8s-v{K8S_VERSION}",
    "kube-controller-manager": f"k8s-v{K8S_VERSION}",
    "kube-scheduler": f"k8s-v{K8S_VERSION}",
    "kubectl": f"k8s-v{K8S_VERSION}",
    "etcd": f"etcd-v{ETCD_VERSION}",
    "kwok": f"kwok-v{KWOK_VERSION}",
    "helm": f"helm-v{HELM_VERSION}",
    "kustomize": f"kustomize-v{KUSTOMIZE_VERSION}",
}


class MissingAsset(RuntimeError):
    pass


def cache_root() -> Path:
    base = os.environ.get("TIDEGATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tidegate"
    )
    return Path(base) / "testenv"


def binary(name: str) -> Path:
    """Path of a tool: KUBEBUILDER_ASSETS first (the envtest convention), then the cache."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / name).is_file():
        return Path(assets) / name
    cached = cache_root() / _DIRS[name] / name
    if cached.is_file():
        return cached
    if name in ("helm", "kustomize", "kwok"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise MissingAsset(
        f"{name} not found in KUBEBUILDER_ASSETS or {cached.parent}; run `make testenv` to build it"
    )


def kwok_stages() -> Path:
    path = cache_root() / f"kwok-v{KWOK_VERSION}" / "stages.yaml"
    if not path.is_file():
        raise MissingAsset(f"kwok stages not found at {path}; run `make testenv`")
    return path


def istio_crds() -> Path:
    path = cache_root() / f"istio-api-v{ISTIO_API_VERSION}" / "crds.yaml"
    if not path.is_file():
        raise MissingAsset(f"Istio CRDs not found at {path}; run `make testenv`")
    return path


def gateway_api_crds() -> Path:
    path = cache_root() / f"gateway-api-v{GATEWAY_API_VERSION}" / "crds.yaml"
    if not path.is_file():
        raise MissingAsset(f"Gateway API CRDs not found at {path}; run `make testenv`")
    return path


def prometheus() -> Path:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if not found:
        raise MissingAsset("prometheus not found; `make testenv` installs Debian's prometheus package")
    return Path(found)
