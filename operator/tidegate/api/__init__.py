"""The `tidegate.io/v1alpha1` API: pydantic models of the CRDs, and CRD generation. No I/O."""

from tidegate.api.analysis import (
    AnalysisRun,
    AnalysisRunSpec,
    AnalysisRunStatus,
    AnalysisTemplate,
    AnalysisTemplateSpec,
    Argument,
    Measurement,
    Metric,
    MetricProvider,
    MetricResult,
)
from tidegate.api.rollout import (
    BlueGreenStrategy,
    CanaryStep,
    CanaryStrategy,
    Rollout,
    RolloutAnalysis,
    RolloutSpec,
    RolloutStatus,
)

GROUP = "tidegate.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "AnalysisRun",
    "AnalysisRunSpec",
    "AnalysisRunStatus",
    "AnalysisTemplate",
    "AnalysisTemplateSpec",
    "Argument",
    "BlueGreenStrategy",
    "CanaryStep",
    "CanaryStrategy",
    "Measurement",
    "Metric",
    "MetricProvider",
    "MetricResult",
    "Rollout",
    "RolloutAnalysis",
    "RolloutSpec",
    "RolloutStatus",
]
