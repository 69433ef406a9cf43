from __future__ import annotations

import pytest

from tidegate.core.hashing import HASH_LABEL, pod_template_hash

T1 = {
    "metadata": {"labels": {"app": "a", "tier": "web"}},
    "spec": {"containers": [{"name": "c", "image": "x:1"}]},
}
T1_REORDERED = {
    "spec": {"containers": [{"image": "x:1", "name": "c"}]},
    "metadata": {"labels": {"tier": "web", "app": "a"}},
}


def test_hash_is_stable_across_key_orders() -> None:
    assert pod_template_hash(T1) == pod_template_hash(T1_REORDERED)


def test_hash_ignores_the_hash_label_itself() -> None:
    labelled = {**T1, "metadata": {"labels": {**T1["metadata"]["labels"], HASH_LABEL: "zzz"}}}
    assert pod_template_hash(labelled) == pod_template_hash(T1)


@pytest.mark.parametrize(
    "change",
    [
        {"spec": {"containers": [{"name": "c", "image": "x:2"}]}},
        {"metadata": {"labels": {"app": "b"}}},
    ],
)
def test_hash_changes_with_the_template(change: dict[str, object]) -> None:
    assert pod_template_hash({**T1, **change}) != pod_template_hash(T1)


def test_hash_is_a_known_value_and_safe_alphabet() -> None:
    h = pod_template_hash({"spec": {"containers": [{"name": "a", "image": "x"}]}})
    assert h == "8677cc87fc"
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert pod_template_hash(T1, collision_count=1) != pod_template_hash(T1)
