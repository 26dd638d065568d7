"""Who decided: the rule the admission webhook enforces on a recommendation's ``spec.approval``.

The decider is whoever the API server authenticated, never what a client writes: ``decidedBy`` and ``decidedAt``
are stamped when the state leaves ``Pending``, and a client that sends its own value is refused. The operator's
own identity may set them (auto-approval records ``policy:<target>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Stamp:
    patch: dict[str, Any] | None = None
    refusal: str | None = None


def stamp_decision(
    operation: str,
    old_spec: dict[str, Any] | None,
    new_spec: dict[str, Any],
    username: str,
    *,
    operator: str,
    now: datetime,
) -> Stamp:
    new = new_spec.get("approval") or {}
    old = (old_spec or {}).get("approval") or {}
    trusted = username == operator
    if not trusted and new.get("decidedBy") != old.get("decidedBy"):
        return Stamp(
            refusal="spec.approval.decidedBy is filled in by the operator from the authenticated user; do not send it"
        )
    if not trusted and new.get("decidedAt") != old.get("decidedAt"):
        return Stamp(refusal="spec.approval.decidedAt is filled in by the operator; do not send it")
    if operation == "UPDATE" and old.get("state", "Pending") == "Pending" and new.get("state", "Pending") != "Pending":
        if trusted and new.get("decidedBy"):
            return Stamp()
        return Stamp(patch={"decidedBy": username, "decidedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ")})
    return Stamp()
