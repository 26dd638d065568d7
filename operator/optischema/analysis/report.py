"""The engine's output: one typed :class:`Recommendation` per finding, the same the operator turns into a
``TuningRecommendation``.

Ids are hashes of what the change *is* (kind and structured change), never of when or how it was found, so that a
re-run yields the same ids and the operator updates instead of duplicating.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from optischema.api.index import IndexColumn, IndexDefinition
from optischema.api.recommendation import Evidence, RecommendationKind, RecommendedChange, TuningRecommendationSpec
from optischema.api.resources import ObjectMeta, TuningRecommendation
from optischema.api.target import Risk

from .snapshot import Index

Source = Literal["heuristic", "whatif", "measured", "llm"]


class Recommendation(BaseModel):
    """One finding, ready for a person (table output), a script (JSON) or the operator (a custom resource)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Stable id: a hash of the kind and the structured change.")
    kind: RecommendationKind
    table: str | None = Field(default=None, description="schema.table the change is on, if any.")
    change: RecommendedChange
    sql: str
    rollback_sql: str | None = None
    evidence: Evidence = Field(default_factory=Evidence)
    estimated_improvement_percent: float | None = None
    rationale: str = ""
    source: Source = "whatif"
    model: str | None = Field(default=None, description="The LLM that suggested it, for source llm.")
    risk: Risk = "medium"

    def to_custom_resource(self, target: str, namespace: str | None = None) -> TuningRecommendation:
        """The ``TuningRecommendation`` for ``target``, named by a hash of target and change."""
        spec = TuningRecommendationSpec.model_validate(
            {
                "targetRef": {"name": target},
                "kind": self.kind,
                "change": self.change.to_wire(),
                "sql": self.sql,
                "rollbackSql": self.rollback_sql,
                "evidence": self.evidence.to_wire(),
                "rationale": self.rationale,
                "source": self.source,
                "model": self.model,
                "risk": self.risk,
            }
        )
        labels = {"optischema.io/target": target, "optischema.io/kind": self.kind}
        return TuningRecommendation(
            metadata=ObjectMeta(name=resource_name(target, self), namespace=namespace, labels=labels),
            spec=spec,
        )


def recommendation_id(kind: str, change: RecommendedChange) -> str:
    """Stable for the same change: a partitioned table's partitions (listed for review) are left out, so that a
    month's new partition does not turn the same index into a new recommendation."""
    wire = change.to_wire()
    wire.pop("partitions", None)
    canonical = json.dumps({"kind": kind, "change": wire}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def resource_name(target: str, recommendation: Recommendation) -> str:
    """``<target>-<kind>-<hash>``: a DNS name, stable for the same target and change."""
    digest = hashlib.sha256(f"{target}/{recommendation.id}".encode()).hexdigest()[:10]
    prefix = f"{target}-{recommendation.kind.lower()}"[: 253 - 11]
    return f"{prefix}-{digest}"


def index_definition(index: Index) -> IndexDefinition:
    """An existing index as a structured definition (for a drop and its rollback)."""
    return IndexDefinition(
        schema_=index.schema,
        table=index.table,
        name=index.name,
        method=index.method,
        unique=index.unique,
        columns=[
            IndexColumn(
                name=key.column,
                expression=key.expression,
                opclass=key.opclass,
                order="desc" if key.descending else None,
                nulls=_nulls(key.descending, key.nulls_first),
            )
            for key in index.keys
        ],
        include=list(index.include),
        where=index.predicate,
    )


def _nulls(descending: bool, nulls_first: bool) -> Literal["first", "last"] | None:
    """Only a placement that differs from PostgreSQL's default (LAST ascending, FIRST descending) is written."""
    if nulls_first and not descending:
        return "first"
    if descending and not nulls_first:
        return "last"
    return None


def make(
    kind: RecommendationKind,
    change: RecommendedChange,
    *,
    sql: str,
    rollback_sql: str | None,
    table: str | None,
    evidence: Evidence | None = None,
    improvement: float | None = None,
    rationale: str,
    source: Source,
    risk: Risk,
) -> Recommendation:
    return Recommendation(
        id=recommendation_id(kind, change),
        kind=kind,
        table=table,
        change=change,
        sql=sql,
        rollback_sql=rollback_sql,
        evidence=evidence or Evidence(),
        estimated_improvement_percent=None if improvement is None else round(max(min(improvement, 100.0), -100.0), 2),
        rationale=rationale,
        source=source,
        risk=risk,
    )


def as_json(recommendations: list[Recommendation]) -> list[dict[str, Any]]:
    """The stable JSON form: snake_case keys, the structured change in wire form."""
    return [r.model_dump(mode="json", exclude_none=True) for r in recommendations]


def days_since(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else (now - moment).total_seconds() / 86400
