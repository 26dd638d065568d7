"""Admitting an IndexChange: the target must exist (same namespace), be the database the change was written for,
allow the operation in its policy, and have room in its storage budget; the index must be one we can render.

``gather`` collects the facts (API server and a read-only connection); ``admit`` decides on them without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from optischema.analysis.errors import AnalysisError
from optischema.api import describe
from optischema.api.conditions import ConditionType, Reason, set_condition
from optischema.api.indexchange import IndexChangeSpec
from optischema.api.quantity import quantity_bytes
from optischema.api.target import PostgresTargetSpec
from optischema.changes.ddl import UnsafeDefinition, statements_for, undo_for
from optischema.flows import target as target_flow
from optischema.postgres import catalog
from optischema.postgres.connect import DATABASE_ERRORS, connect

KIND_OF = {
    "create": "createIndex",
    "drop": "dropIndex",
    "reindex": "createIndex",
    "analyze": "analyze",
    "setting": "setting",
}
#: Phases in which a create change holds part of the storage budget.
HOLDS_BUDGET = {"WaitingForWindow", "Applying", "Verifying", "Applied"}


@dataclass(slots=True)
class Facts:
    """What admission looks at besides the change itself."""

    target: dict[str, Any] | None
    committed_bytes: int = 0
    """Estimated size of the target's other admitted create changes."""
    estimated_bytes: int | None = None
    """This change's index, estimated on the database (create only)."""
    table_error: str | None = None
    """Why the index cannot be built there (missing table or column), from the database itself."""
    unreachable: str | None = None
    """Set when the database could not be asked: admission waits and retries rather than deciding blind."""


@dataclass(slots=True)
class Verdict:
    accepted: bool
    reason: str
    message: str
    status: dict[str, Any]


async def gather(kube: Any, namespace: str, name: str, spec: dict[str, Any]) -> Facts:
    try:
        target = await kube.get("postgrestargets", namespace, spec["targetRef"]["name"])
    except LookupError:
        return Facts(None)
    facts = Facts(target)
    if spec.get("operation") != "create":
        return facts
    for other in await kube.list("indexchanges", namespace):
        status, other_spec = other.get("status") or {}, other.get("spec") or {}
        if (
            other["metadata"]["name"] != name
            and other_spec.get("targetRef", {}).get("name") == spec["targetRef"]["name"]
            and other_spec.get("operation") == "create"
            and status.get("phase") in HOLDS_BUDGET
        ):
            facts.committed_bytes += int(status.get("estimatedBytes") or 0)
    check = await target_flow.check_target(namespace, dict(target["spec"]), kube.read_secret)
    if check.dsn is None or check.database is None:
        facts.unreachable = check.message
        return facts
    try:
        change = IndexChangeSpec.model_validate(spec)
        statements_for(change)
    except (ValidationError, UnsafeDefinition):
        return facts  # admit() reports it, and nothing is sent to the database
    index = change.index
    if index is None:
        return facts
    hypopg = any(e.name == "hypopg" for e in check.database.extensions)
    try:
        conn = await connect(check.dsn, timeout=check.spec.connection.connect_timeout_seconds if check.spec else 10)
    except AnalysisError as error:
        facts.unreachable = error.message
        return facts
    try:
        facts.estimated_bytes = await catalog.estimate_index_bytes(conn, index, hypopg)
    except DATABASE_ERRORS as error:
        facts.table_error = str(error).splitlines()[0]
    finally:
        await conn.close()
    return facts


def admit(spec: dict[str, Any], facts: Facts, *, now: datetime, generation: int | None) -> Verdict:
    def refuse(reason: str, message: str) -> Verdict:
        conditions = set_condition([], ConditionType.READY, "False", reason, message, now=now, generation=generation)
        conditions = set_condition(
            conditions, ConditionType.STALLED, "True", reason, message, now=now, generation=generation
        )
        return Verdict(
            False,
            reason,
            message,
            {"phase": "Failed", "observedGeneration": generation, "conditions": [c.to_wire() for c in conditions]},
        )

    try:
        change = IndexChangeSpec.model_validate(spec)
    except ValidationError as error:
        return refuse(Reason.INVALID_SPEC, "; ".join(describe(error, "spec")))
    try:
        sql = ";\n".join(statements_for(change))
        undo = undo_for(change, change.index.name if change.index else None)
        rollback = ";\n".join(undo) if undo else None
    except UnsafeDefinition as error:
        return refuse(Reason.INVALID_SPEC, str(error))
    if facts.target is None:
        return refuse(
            Reason.TARGET_MISMATCH,
            f"spec.targetRef.name: PostgresTarget {change.target_ref.name} does not exist in this namespace "
            "(an IndexChange can only change a target of its own namespace)",
        )
    target_spec = PostgresTargetSpec.model_validate(facts.target["spec"])
    policy = target_spec.policy
    kind = KIND_OF[change.operation]
    if kind not in policy.allowed_kinds:
        return refuse(
            Reason.POLICY_VIOLATION,
            f"spec.operation: the target's policy does not allow {kind} (allowedKinds: "
            f"{', '.join(policy.allowed_kinds)})",
        )
    if change.schedule == "immediate" and not policy.allow_immediate:
        return refuse(
            Reason.POLICY_VIOLATION, "spec.schedule: immediate is not allowed by the target's policy (allowImmediate)"
        )
    identity = ((facts.target.get("status") or {}).get("database") or {}).get("systemIdentifier")
    if change.system_identifier and identity and change.system_identifier != identity:
        return refuse(
            Reason.DATABASE_MISMATCH,
            f"spec.systemIdentifier: the change was written for database {change.system_identifier}, but target "
            f"{change.target_ref.name} now points at database {identity}",
        )
    if facts.table_error:
        return refuse(Reason.TABLE_NOT_FOUND, f"spec.index: {facts.table_error}")
    budget = quantity_bytes(policy.index_storage_budget)
    if facts.estimated_bytes is not None and facts.committed_bytes + facts.estimated_bytes > budget:
        return refuse(
            Reason.OVER_BUDGET,
            f"spec.index: the new index needs about {_size(facts.estimated_bytes)}, and {_size(facts.committed_bytes)}"
            f" of the target's indexStorageBudget ({policy.index_storage_budget}) is already committed",
        )
    message = "accepted; waiting for the target's next maintenance window"
    conditions = set_condition(
        [], ConditionType.READY, "False", Reason.WAITING_FOR_WINDOW, message, now=now, generation=generation
    )
    status: dict[str, Any] = {
        "phase": "WaitingForWindow",
        "sql": sql,
        "observedGeneration": generation,
        "conditions": [c.to_wire() for c in conditions],
    }
    if rollback:
        status["rollbackSql"] = rollback
    if facts.estimated_bytes is not None:
        status["estimatedBytes"] = facts.estimated_bytes
    return Verdict(True, Reason.WAITING_FOR_WINDOW, message, status)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
