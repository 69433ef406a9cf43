"""The local control plane: real etcd, kube-apiserver, controller-manager, scheduler, kwok, Prometheus."""

from tidegate.sandbox._base import SandboxError
from tidegate.sandbox.cluster import OUTBOUND_ENV, Sandbox

__all__ = ["OUTBOUND_ENV", "Sandbox", "SandboxError"]
