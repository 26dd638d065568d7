"""The three custom resources as whole objects, and what the CRDs say about them besides their schema.

``RESOURCES`` is the single list the CRD generator, the tests and (later) the handlers read: kind, plural, short
names and the printer columns that make ``kubectl get`` useful.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import ApiModel
from .indexchange import IndexChangeSpec, IndexChangeStatus
from .recommendation import TuningRecommendationSpec, TuningRecommendationStatus
from .target import PostgresTargetSpec, PostgresTargetStatus

GROUP = "optischema.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "optischema"


class ObjectMeta(BaseModel):
    """The parts of ``metadata`` the operator reads; everything else the API server sets is kept as it is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str | None = Field(default=None, max_length=253)
    namespace: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class _Resource(ApiModel):
    api_version: Literal["optischema.io/v1alpha1"] = Field(default="optischema.io/v1alpha1", alias="apiVersion")
    """``optischema.io/v1alpha1``."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""


class PostgresTarget(_Resource):
    """A PostgreSQL database the operator analyses and tunes within the policy and windows given here."""

    kind: Literal["PostgresTarget"] = "PostgresTarget"
    spec: PostgresTargetSpec
    status: PostgresTargetStatus | None = None


class TuningRecommendation(_Resource):
    """One proposed change with its evidence, awaiting (or carrying) a decision."""

    kind: Literal["TuningRecommendation"] = "TuningRecommendation"
    spec: TuningRecommendationSpec
    status: TuningRecommendationStatus | None = None


class IndexChange(_Resource):
    """An index change to apply in a maintenance window, from an approval or reviewed in Git."""

    kind: Literal["IndexChange"] = "IndexChange"
    spec: IndexChangeSpec
    status: IndexChangeStatus | None = None


@dataclass(frozen=True)
class PrinterColumn:
    """One ``kubectl get`` column."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


def _ready(what: str) -> PrinterColumn:
    return PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', what)


_AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation.")
_TARGET = PrinterColumn("Target", "string", ".spec.targetRef.name", "The PostgresTarget.")


@dataclass(frozen=True)
class ResourceInfo:
    """A custom resource kind: its model and what its CRD declares besides the schema."""

    model: type[_Resource]
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    columns: tuple[PrinterColumn, ...] = field(default=())
    status: bool = True
    """Whether the kind has a status subresource (records such as ``TuningReport`` have none)."""

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


RESOURCES: tuple[ResourceInfo, ...] = (
    ResourceInfo(
        PostgresTarget,
        "PostgresTarget",
        "postgrestargets",
        "postgrestarget",
        ("pgt", "pgtarget"),
        (
            PrinterColumn("Database", "string", ".spec.connection.database", "Database analysed."),
            PrinterColumn("Host", "string", ".spec.connection.host", "Server host.", priority=1),
            _ready("Reachable and reconciled."),
            PrinterColumn(
                "Pending", "integer", ".status.recommendations.pending", "Recommendations awaiting a decision."
            ),
            PrinterColumn("Next-Window", "string", ".status.nextWindowStart", "Start of the next maintenance window."),
            PrinterColumn("Last-Analysis", "date", ".status.lastAnalysis.completionTime", "Last analysis.", priority=1),
            PrinterColumn("Suspended", "boolean", ".spec.suspend", "Whether all work is stopped.", priority=1),
            _AGE,
        ),
    ),
    ResourceInfo(
        TuningRecommendation,
        "TuningRecommendation",
        "tuningrecommendations",
        "tuningrecommendation",
        ("trec", "tunerec"),
        (
            _TARGET,
            PrinterColumn("Kind", "string", ".spec.kind", "What the change does."),
            PrinterColumn("Table", "string", ".spec.change.index.table", "Table of an index change."),
            PrinterColumn(
                "Estimated",
                "number",
                ".spec.evidence.estimatedImprovementPercent",
                "Estimated improvement (percent) of the affected statements.",
            ),
            PrinterColumn(
                "Measured",
                "number",
                ".status.benchmark.improvementPercent",
                "Improvement (percent) measured in the sandbox.",
            ),
            PrinterColumn("Source", "string", ".spec.source", "whatif, heuristic or llm."),
            PrinterColumn("Risk", "string", ".spec.risk", "Operational risk.", priority=1),
            PrinterColumn("Approval", "string", ".spec.approval.state", "Pending, Approved or Rejected."),
            PrinterColumn("Phase", "string", ".status.phase", "Life-cycle phase."),
            PrinterColumn("SQL", "string", ".spec.sql", "The SQL that would run.", priority=1),
            _AGE,
        ),
    ),
    ResourceInfo(
        IndexChange,
        "IndexChange",
        "indexchanges",
        "indexchange",
        ("ixc", "idxchange"),
        (
            _TARGET,
            PrinterColumn("Operation", "string", ".spec.operation", "create, drop or reindex."),
            PrinterColumn("Table", "string", ".spec.index.table", "Table of the index."),
            PrinterColumn("Index", "string", ".spec.index.name", "Index name.", priority=1),
            PrinterColumn("Phase", "string", ".status.phase", "Life-cycle phase."),
            PrinterColumn("Window", "string", ".status.window.start", "Maintenance window used or awaited."),
            PrinterColumn("SQL", "string", ".status.sql", "The SQL rendered by the operator.", priority=1),
            _AGE,
        ),
    ),
)

BY_KIND: dict[str, ResourceInfo] = {info.kind: info for info in RESOURCES}


def owner_reference(owner: Any) -> dict[str, Any]:
    """A controller owner reference to ``owner`` (a resource body): deleting it deletes what it owns."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
