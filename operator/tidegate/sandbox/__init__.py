"""The local control plane: real etcd, kube-apiserver, controller-manager, scheduler, kwok, Prometheus."""

from tidegate.sandbox.cluster import Sandbox, SandboxError

__all__ = ["Sandbox", "SandboxError"]
