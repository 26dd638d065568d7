"""Admitting an IndexChange: the target must exist (same namespace) and its policy must allow the operation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from optischema.api import describe
from optischema.api.conditions import ConditionType, Reason, set_condition
from optischema.api.indexchange import IndexChangeSpec
from optischema.api.target import PostgresTargetSpec
from optischema.changes.ddl import UnsafeDefinition, render_create, render_drop, render_reindex

KIND_OF = {"create": "createIndex", "drop": "dropIndex", "reindex": "createIndex"}


@dataclass(slots=True)
class Verdict:
    accepted: bool
    reason: str
    message: str
    status: dict[str, Any]


def admit(spec: dict[str, Any], target: dict[str, Any] | None, *, now: datetime, generation: int | None) -> Verdict:
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
    if target is None:
        return refuse(
            Reason.TARGET_MISMATCH, f"PostgresTarget {change.target_ref.name} does not exist in this namespace"
        )
    policy = PostgresTargetSpec.model_validate(target["spec"]).policy
    kind = KIND_OF[change.operation]
    if kind not in policy.allowed_kinds:
        return refuse(
            Reason.POLICY_VIOLATION,
            f"the target's policy does not allow {kind} (allowedKinds: {', '.join(policy.allowed_kinds)})",
        )
    if change.schedule == "immediate" and not policy.allow_immediate:
        return refuse(Reason.POLICY_VIOLATION, "schedule immediate is not allowed by the target's policy")
    try:
        sql = {"create": render_create, "drop": render_drop, "reindex": render_reindex}[change.operation](change.index)
        rollback = render_drop(change.index) if change.operation == "create" else None
    except UnsafeDefinition as error:
        return refuse(Reason.INVALID_SPEC, str(error))
    message = "accepted; waiting for the target's next maintenance window"
    conditions = set_condition(
        [], ConditionType.READY, "False", Reason.WAITING_FOR_WINDOW, message, now=now, generation=generation
    )
    status = {
        "phase": "WaitingForWindow",
        "sql": sql,
        "observedGeneration": generation,
        "conditions": [c.to_wire() for c in conditions],
    }
    if rollback:
        status["rollbackSql"] = rollback
    return Verdict(True, Reason.WAITING_FOR_WINDOW, message, status)
