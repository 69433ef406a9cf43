"""Pod-template hash: a short, stable name for a pod template.

Kubernetes hashes a template with FNV-1a (32 bit) over a deterministic dump of the
object, adds the collision count, and encodes the number with an alphabet that
cannot spell words (`rand.SafeEncodeString`). The dump here is canonical JSON
(sorted keys, no spaces), so the hash is stable across runs, processes and key
orders. It differs from a Deployment's hash for the same template, which is fine:
it only has to be stable for Tidegate itself.
"""

from __future__ import annotations

import json
from typing import Any

HASH_LABEL = "rollouts-pod-template-hash"

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
# k8s.io/apimachinery/pkg/util/rand: no vowels, no 0/1/3 (look like letters)
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _fnv1a_32(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h ^= byte
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def _safe_encode(text: str) -> str:
    return "".join(_ALPHABET[ord(c) % len(_ALPHABET)] for c in text)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def pod_template_hash(template: dict[str, Any], collision_count: int = 0) -> str:
    """Hash of a pod template, ignoring the hash label Tidegate itself adds.

    >>> pod_template_hash({"spec": {"containers": [{"name": "a", "image": "x"}]}})
    '8677cc87fc'
    """
    clean = strip_hash_label(template)
    digest = _fnv1a_32(canonical(clean).encode())
    if collision_count:
        digest = _fnv1a_32(canonical(clean).encode() + collision_count.to_bytes(4, "little"))
    return _safe_encode(str(digest))


def strip_hash_label(template: dict[str, Any]) -> dict[str, Any]:
    """The template without the hash label (it is added per ReplicaSet, not by the user)."""
    labels = (template.get("metadata") or {}).get("labels") or {}
    if HASH_LABEL not in labels:
        return template
    metadata = dict(template.get("metadata") or {})
    metadata["labels"] = {k: v for k, v in labels.items() if k != HASH_LABEL}
    return {**template, "metadata": metadata}


def short_hash(text: str) -> str:
    """A short stable hash of any text (e.g. the canary steps)."""
    return _safe_encode(str(_fnv1a_32(text.encode())))
