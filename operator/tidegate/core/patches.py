"""JSON merge patches (RFC 7386): write only what changed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) turning `old` into `new`; empty when they are equal.

    Lists are replaced whole, as merge patches do; keys gone from `new` become null.
    """
    patch: dict[str, Any] = {}
    for key in {*old, *new}:
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            nested = merge_patch(before, after)
            if nested:
                patch[key] = nested
        else:
            patch[key] = after
    return patch
