"""Label and annotation names shared by the operator and the CLI.

A module of its own, with no imports, so that the CLI can read them without loading the
pydantic models (`tidegate list` starts in well under half a second).
"""

from __future__ import annotations

REVISION_ANNOTATION = "rollout.tidegate.io/revision"
ROLLOUT_LABEL = "rollout.tidegate.io/name"
