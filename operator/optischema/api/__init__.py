"""The API: pydantic models that *are* the CRDs (``optischema.io/v1alpha1``).

Pure: imports pydantic and the standard library only, so that every other layer can depend on it.
"""

from .base import ApiModel, LocalObjectReference, SecretKeySelector
from .conditions import Condition, ConditionType, Reason, set_condition
from .errors import describe
from .index import IndexColumn, IndexDefinition
from .indexchange import IndexChangeSpec, IndexChangeStatus
from .recommendation import Approval, TuningRecommendationSpec, TuningRecommendationStatus
from .reports import RECORDS, StatementHistory, TuningReport
from .resources import API_VERSION, GROUP, RESOURCES, VERSION, IndexChange, PostgresTarget, TuningRecommendation
from .target import MaintenanceWindow, PostgresTargetSpec, PostgresTargetStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "RECORDS",
    "RESOURCES",
    "VERSION",
    "ApiModel",
    "Approval",
    "Condition",
    "ConditionType",
    "IndexChange",
    "IndexChangeSpec",
    "IndexChangeStatus",
    "IndexColumn",
    "IndexDefinition",
    "LocalObjectReference",
    "MaintenanceWindow",
    "PostgresTarget",
    "PostgresTargetSpec",
    "PostgresTargetStatus",
    "Reason",
    "SecretKeySelector",
    "StatementHistory",
    "TuningRecommendation",
    "TuningRecommendationSpec",
    "TuningRecommendationStatus",
    "TuningReport",
    "describe",
    "set_condition",
]
