"""A TuningRecommendation's phases: which transitions are legal, and the status patch that records one.

    (new) ──► AwaitingApproval ◄──► Benchmarking
      │            │    │               │
      │            │    └──► Superseded ◄┘   (analysis no longer finds it; a person may still reject it)
      ▼            ▼                    │
    Approved ◄─────┴─── (decision) ─────┴──► Rejected
      │
      └──► Applied | RolledBack | Failed     (the outcome of the IndexChange made on approval)

A recommendation auto-approved by the target's policy at creation starts ``Approved``; one measured again after
the operator died is ``Benchmarking`` again. ``Approved`` is never reached from ``Superseded``: a finding analysis
no longer makes is not applied, whoever approves it. Every writer of ``status.phase`` (the approval handler, the
benchmark queue, the analysis sync, the apply engine) asks :func:`transition` for its patch, so an illegal move is
refused in one place instead of silently written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, get_args

from optischema.api.base import LocalObjectReference
from optischema.api.recommendation import RecommendationPhase, TuningRecommendationStatus

PHASES: tuple[RecommendationPhase, ...] = get_args(RecommendationPhase)

#: Phase → the phases it may move to. ``None`` is a recommendation whose status has not been written yet.
TRANSITIONS: dict[RecommendationPhase | None, frozenset[RecommendationPhase]] = {
    None: frozenset({"AwaitingApproval", "Approved", "Benchmarking", "Rejected", "Superseded"}),
    "AwaitingApproval": frozenset({"Benchmarking", "Approved", "Rejected", "Superseded"}),
    "Benchmarking": frozenset({"AwaitingApproval", "Benchmarking", "Approved", "Rejected", "Superseded"}),
    "Superseded": frozenset({"Rejected"}),
    "Approved": frozenset({"Applied", "RolledBack", "Failed"}),
    "Rejected": frozenset(),
    "Applied": frozenset(),
    "RolledBack": frozenset(),
    "Failed": frozenset(),
}
#: The outcomes of the IndexChange an approval created, as the recommendation records them.
OUTCOMES: frozenset[RecommendationPhase] = frozenset({"Applied", "RolledBack", "Failed"})
#: Phases a new analysis leaves alone: decided, or in a person's hands.
SETTLED: frozenset[RecommendationPhase] = frozenset({"Approved", "Rejected", *OUTCOMES, "Superseded"})
#: Phases in which a recommendation waits for a decision (and a benchmark may run).
WAITING: frozenset[RecommendationPhase | None] = frozenset({None, "AwaitingApproval", "Benchmarking"})


class IllegalTransition(ValueError):
    """A phase change the lifecycle does not allow; the message names ``status.phase``, from and to."""


def phase_of(body: Mapping[str, Any]) -> RecommendationPhase | None:
    """The recorded phase of a recommendation object (``None`` when not written yet or not one we know)."""
    phase = (body.get("status") or {}).get("phase")
    return phase if phase in PHASES else None


def allowed(current: RecommendationPhase | None, to: RecommendationPhase) -> bool:
    """Whether ``current → to`` is legal. Staying in a phase is always legal (handlers run again after a restart)."""
    return current == to or to in TRANSITIONS.get(current, frozenset())


def transition(
    current: RecommendationPhase | None,
    to: RecommendationPhase,
    *,
    index_change: str | None = None,
    last_seen_at: datetime | None = None,
) -> dict[str, Any]:
    """The status patch recording ``current → to`` (with what the move carries), or :class:`IllegalTransition`."""
    if not allowed(current, to):
        raise IllegalTransition(
            f"status.phase: a recommendation cannot go from {current or '(new)'} to {to} "
            f"(from {current or '(new)'}: {', '.join(sorted(TRANSITIONS.get(current, ()))) or 'nothing, it is final'})"
        )
    if index_change is not None and to != "Approved":
        raise IllegalTransition(f"status.indexChangeRef: is recorded on approval only, not on {to}")
    status = TuningRecommendationStatus(
        phase=to,
        index_change_ref=LocalObjectReference(name=index_change) if index_change is not None else None,
        last_seen_at=last_seen_at,
    )
    return status.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude_none=True)


def seen(last_seen_at: datetime) -> dict[str, Any]:
    """The patch of a recommendation found again by analysis: its phase untouched."""
    return TuningRecommendationStatus(last_seen_at=last_seen_at).model_dump(
        mode="json", by_alias=True, exclude_defaults=True, exclude_none=True
    )


def outcome(phase: RecommendationPhase | str) -> dict[str, Any]:
    """The patch recording the outcome of the IndexChange an approval created (from ``Approved``)."""
    if phase not in OUTCOMES:
        raise IllegalTransition(f"status.phase: {phase} is not an outcome of an IndexChange ({', '.join(OUTCOMES)})")
    return transition("Approved", phase)
