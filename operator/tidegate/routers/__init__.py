"""Traffic routers behind one small Protocol, with an explicit registry."""

from tidegate.routers._base import TrafficRouter, router_for

__all__ = ["TrafficRouter", "router_for"]
