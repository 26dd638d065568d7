"""A person's retry of a ``Failed`` IndexChange: the one way out of ``Failed``, and only on request.

``lifecycle/indexchange.py`` keeps final phases final: nothing the operator does by itself leaves them. A person
who fixed what refused a change (the target's policy, a missing table, the budget) used to rename it in Git to have
it admitted again. Instead they set ``optischema.io/retry: <token>`` (``kubectl optischema retry``); the operator
records the token in an audit entry, which makes the request idempotent (the same token is honoured once), moves
the change back to ``Pending`` with what the failed attempt computed cleared, and admission judges it again as if
it were new. A change that was applied before it failed (``appliedAt``) is not retried: its outcome stands.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from optischema.api.indexchange import AuditEntry, IndexChangeStatus

from . import indexchange as lifecycle

#: The words an honoured request leaves in its audit entry; the token follows.
MARK = "retry requested with optischema.io/retry="
#: Fields of the failed attempt cleared by a retry (the audit trail and the conditions stay).
CLEARED = (
    "sql",
    "rollback_sql",
    "estimated_bytes",
    "window",
    "started_at",
    "applied_at",
    "baseline",
    "execution",
    "dropped_definition",
    "replaced_setting",
    "completed_at",
    "duration_seconds",
    "verification",
)


def honoured(status: IndexChangeStatus, token: str) -> bool:
    """Whether this token's request was already answered (retried, or declined with its reason)."""
    return any(
        entry.action == "Retry" and (entry.message == MARK + token or entry.message.startswith(f"{MARK}{token}: "))
        for entry in status.history
    )


def refusal(status: IndexChangeStatus) -> str | None:
    """Why the change is not retried, or None."""
    if status.phase != "Failed":
        return f"status.phase: only a Failed change is retried (it is {status.phase or 'not admitted yet'})"
    if status.applied_at is not None:
        return "status.appliedAt: the change was applied before it failed; its outcome stands"
    return None


def retried(
    status: IndexChangeStatus, token: str, *, actor: str, now: datetime, generation: int | None
) -> dict[str, Any]:
    """``Failed`` → ``Pending``: the merge patch that clears the failed attempt and records the request."""
    problem = refusal(status)
    if problem is not None:
        raise lifecycle.IllegalTransition(problem)
    entry = AuditEntry(time=now, actor=actor, action="Retry", outcome="Succeeded", message=MARK + token)
    found = lifecycle.conditions(
        status, "False", "RetryRequested", "admitted again on request", reconciling=True, stalled=False, now=now,
        generation=generation,
    )  # fmt: skip
    fields: dict[str, Any] = dict.fromkeys(CLEARED)
    return IndexChangeStatus(
        phase="Pending",
        conditions=found,
        history=[*status.history, entry],
        observed_generation=generation,
        **fields,
    ).model_dump(mode="json", by_alias=True, exclude_unset=True)


def declined(status: IndexChangeStatus, token: str, reason: str, *, actor: str, now: datetime) -> dict[str, Any]:
    """A request that is not honoured (:func:`refusal`), answered once in the audit trail with its reason; the
    phase stays."""
    entry = AuditEntry(
        time=now, actor=actor, action="Retry", outcome="Skipped", message=f"{MARK}{token}: not retried: {reason}"
    )
    return IndexChangeStatus(history=[*status.history, entry]).model_dump(
        mode="json", by_alias=True, exclude_unset=True
    )
