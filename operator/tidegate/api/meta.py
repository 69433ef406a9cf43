"""Kubernetes meta types the API uses, kept as small as the CRDs need."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tidegate.api._base import ApiModel


class ObjectMeta(ApiModel):
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: str | None = None
    resource_version: str | None = None


class LabelSelectorRequirement(ApiModel):
    key: str
    """Label key."""
    operator: str
    """In, NotIn, Exists or DoesNotExist."""
    values: list[str] = Field(default_factory=list)
    """Values for In and NotIn."""


class LabelSelector(ApiModel):
    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels the pods must carry."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)
    """Set-based requirements."""


class PodTemplateSpec(ApiModel):
    """A Kubernetes PodTemplateSpec (metadata and spec), kept as the user wrote it."""

    model_config = {
        "extra": "allow",
        "json_schema_extra": {"x-kubernetes-preserve-unknown-fields": True},
    }

    metadata: dict[str, Any] = Field(default_factory=dict)
    """Labels and annotations of the pods."""
    spec: dict[str, Any] = Field(default_factory=dict)
    """The pod spec."""


class Condition(ApiModel):
    type: str
    """Condition type, e.g. Ready, Progressing, InvalidSpec."""
    status: str
    """True, False or Unknown."""
    reason: str | None = None
    """One CamelCase word."""
    message: str | None = None
    """Human-readable detail."""
    last_transition_time: str | None = None
    """When status last changed."""
    last_update_time: str | None = None
    """When reason or message last changed."""
    observed_generation: int | None = None
    """metadata.generation this condition describes."""
