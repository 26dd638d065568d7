"""The IndexChange lifecycle: which phase may follow which, and the status patch that records each move.

Pure: the current status comes in as the typed ``IndexChangeStatus``, a JSON merge patch (wire form, camelCase)
comes out; ``flows.changes`` (admission) and ``flows.apply`` (window → execute → verify) write only what these
functions return, so a phase cannot be set from anywhere else, nor skip a step::

    (new) ─→ Pending ─→ WaitingForWindow ─→ Applying ─→ Verifying ─→ Applied | RolledBack
      │         │            │    ↑            │ │           │
      └─────────┴──→ Failed ←┘    └────────────┘ └→ Failed   └→ Failed
                                 window closed        WaitingForWindow ─→ Superseded
                                 or connection lost

``Pending`` is set while admission cannot reach the database yet (it retries); ``Applying`` goes back to
``WaitingForWindow`` when the window closed before a statement, or the connection was lost in the middle of one
(a failover, ``pg_terminate_backend``): neither needs a person, so neither is ``Failed``. Final phases are never
left. ``Ready``/``Reconciling``/``Stalled`` are written with every move, the way kstatus reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, get_args

from optischema.api.conditions import Condition, ConditionType, Reason, remove_condition, set_condition
from optischema.api.indexchange import Baseline, Execution, IndexChangePhase, IndexChangeStatus, TimeWindow

PHASES: tuple[str, ...] = get_args(IndexChangePhase)
FINAL: frozenset[str] = frozenset({"Applied", "RolledBack", "Failed", "Superseded"})
#: Legal moves; ``None`` is a change admission has not looked at yet. Staying in a phase is always legal.
TRANSITIONS: Mapping[str | None, frozenset[str]] = {
    None: frozenset({"Pending", "WaitingForWindow", "Failed"}),
    "Pending": frozenset({"WaitingForWindow", "Failed"}),
    "WaitingForWindow": frozenset({"Applying", "Failed", "Superseded"}),
    "Applying": frozenset({"Verifying", "WaitingForWindow", "Failed"}),
    "Verifying": frozenset({"Applied", "RolledBack", "Failed"}),
    **{phase: frozenset() for phase in FINAL},
}


class IllegalTransition(ValueError):
    """A move the lifecycle does not allow (a bug in the caller, or a status edited by hand)."""


def legal(current: str | None, to: str) -> bool:
    return to == current or to in TRANSITIONS.get(current, frozenset())


def _check(current: str | None, to: str) -> None:
    if not legal(current, to):
        raise IllegalTransition(f"status.phase: an IndexChange cannot go from {current or '(none)'} to {to}")


def parse(status: Mapping[str, Any] | None) -> IndexChangeStatus:
    """The typed status of a live object (``{}`` when it has none yet)."""
    return IndexChangeStatus.model_validate(dict(status or {}))


def conditions(
    status: IndexChangeStatus,
    ready: Literal["True", "False"],
    reason: str,
    message: str,
    *,
    reconciling: bool,
    stalled: bool,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """``Ready`` (with ``ready``), ``Reconciling`` and ``Stalled`` (present only while true)."""
    found = set_condition(
        list(status.conditions), ConditionType.READY, ready, reason, message, now=now, generation=generation
    )
    for kind, wanted in ((ConditionType.RECONCILING, reconciling), (ConditionType.STALLED, stalled)):
        if wanted:
            found = set_condition(found, kind, "True", reason, message, now=now, generation=generation)
        else:
            found = remove_condition(found, kind)
    return found


def _patch(**fields: Any) -> dict[str, Any]:
    """A merge patch of the given status fields only (explicit ``None`` clears a field)."""
    return IndexChangeStatus(**fields).model_dump(mode="json", by_alias=True, exclude_unset=True)


def note(
    status: IndexChangeStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
    reconciling: bool = False,
    stalled: bool = False,
) -> dict[str, Any]:
    """No move: the conditions say what the change is doing or waiting for."""
    found = conditions(
        status, "False", reason, message, reconciling=reconciling, stalled=stalled, now=now, generation=generation
    )
    return _patch(conditions=found, observed_generation=generation)


def pending(status: IndexChangeStatus, message: str, *, now: datetime, generation: int | None) -> dict[str, Any]:
    """Admission could not ask the database yet (it retries): the change says so instead of showing nothing."""
    _check(status.phase, "Pending")
    found = conditions(
        status, "False", Reason.CONNECTION_FAILED, message, reconciling=True, stalled=False, now=now,
        generation=generation,
    )  # fmt: skip
    return _patch(phase="Pending", conditions=found, observed_generation=generation)


def admitted(
    status: IndexChangeStatus,
    *,
    sql: str,
    rollback_sql: str | None,
    estimated_bytes: int | None,
    message: str,
    now: datetime,
    generation: int | None,
    system_identifier: str | None = None,
) -> dict[str, Any]:
    """Accepted: the rendered SQL, its undo and the database it was admitted for (every later statement must reach
    that one)."""
    _check(status.phase, "WaitingForWindow")
    found = conditions(
        status, "False", Reason.WAITING_FOR_WINDOW, message, reconciling=False, stalled=False, now=now,
        generation=generation,
    )  # fmt: skip
    fields: dict[str, Any] = {"phase": "WaitingForWindow", "sql": sql, "conditions": found}
    if rollback_sql:
        fields["rollback_sql"] = rollback_sql
    if estimated_bytes is not None:
        fields["estimated_bytes"] = estimated_bytes
    if system_identifier is not None:
        fields["system_identifier"] = system_identifier
    return _patch(**fields, observed_generation=generation)


def refused(
    status: IndexChangeStatus, reason: str, message: str, *, now: datetime, generation: int | None
) -> dict[str, Any]:
    """Admission said no: ``Failed`` with ``Stalled`` (a person must write a new change)."""
    return failed(status, reason, message, now=now, generation=generation, completed=False)


def waiting(
    status: IndexChangeStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
    window: TimeWindow | Literal["keep"] | None = "keep",
    stalled: bool = False,
) -> dict[str, Any]:
    """(Back) to ``WaitingForWindow``: from ``Applying`` when the window closed before a statement or the
    connection was lost mid-statement; ``Stalled`` when a person must act (e.g. the target now reaches another
    database)."""
    _check(status.phase, "WaitingForWindow")
    found = conditions(
        status, "False", reason, message, reconciling=False, stalled=stalled, now=now, generation=generation
    )
    fields: dict[str, Any] = {"phase": "WaitingForWindow", "conditions": found}
    if window != "keep":
        fields["window"] = window
    return _patch(**fields, observed_generation=generation)


def applying(
    status: IndexChangeStatus,
    message: str,
    *,
    baseline: Baseline,
    system_identifier: str,
    now: datetime,
    generation: int | None,
) -> dict[str, Any]:
    """The pre-checks passed in an open window: the baseline and the database's identity are recorded first."""
    _check(status.phase, "Applying")
    found = conditions(
        status, "False", Reason.APPLYING, message, reconciling=True, stalled=False, now=now, generation=generation
    )
    return _patch(
        phase="Applying",
        started_at=now,
        baseline=baseline,
        system_identifier=system_identifier,
        conditions=found,
        observed_generation=generation,
    )


def executing(status: IndexChangeStatus, execution: Execution) -> dict[str, Any]:
    """The marker written before the first statement is sent (kept across retries of the same change); for a
    partitioned index's rollout, written again around every step (``Execution.steps``)."""
    if status.phase != "Applying":
        raise IllegalTransition(f"status.execution: only written while Applying (phase is {status.phase})")
    return _patch(execution=execution)


def verifying(
    status: IndexChangeStatus, message: str, *, now: datetime, generation: int | None, duration: float | None
) -> dict[str, Any]:
    _check(status.phase, "Verifying")
    found = conditions(
        status, "False", Reason.VERIFYING, message, reconciling=True, stalled=False, now=now, generation=generation
    )
    fields: dict[str, Any] = {"phase": "Verifying", "applied_at": now, "conditions": found}
    if duration is not None:
        fields["duration_seconds"] = round(duration, 3)
    return _patch(**fields, observed_generation=generation)


def finished(
    status: IndexChangeStatus,
    phase: Literal["Applied", "RolledBack", "Superseded"],
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
) -> dict[str, Any]:
    _check(status.phase, phase)
    found = conditions(
        status, "True" if phase == "Applied" else "False", reason, message, reconciling=False, stalled=False,
        now=now, generation=generation,
    )  # fmt: skip
    return _patch(phase=phase, completed_at=now, conditions=found, observed_generation=generation)


def failed(
    status: IndexChangeStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
    completed: bool = True,
) -> dict[str, Any]:
    """Final: ``Failed`` with ``Stalled``; never retried without a person."""
    _check(status.phase, "Failed")
    found = conditions(
        status, "False", reason, message, reconciling=False, stalled=True, now=now, generation=generation
    )
    fields: dict[str, Any] = {"phase": "Failed", "conditions": found}
    if completed:
        fields["completed_at"] = now
    return _patch(**fields, observed_generation=generation)
