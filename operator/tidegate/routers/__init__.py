"""Traffic routers behind one small Protocol (core.model.TrafficRouter), with an explicit registry."""

from tidegate.core.model import TrafficRouter
from tidegate.routers._base import router_for

__all__ = ["TrafficRouter", "router_for"]
