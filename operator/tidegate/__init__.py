"""Tidegate: progressive delivery (canary, blue-green) for Kubernetes, on kopf."""

__version__ = "0.1.0"
