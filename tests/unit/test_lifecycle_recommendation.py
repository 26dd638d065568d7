"""A TuningRecommendation's lifecycle: every legal and illegal move, and the patch each writes, table-driven."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from optischema.api.recommendation import TuningRecommendationStatus
from optischema.lifecycle.recommendation import (
    PHASES,
    TRANSITIONS,
    IllegalTransition,
    allowed,
    outcome,
    phase_of,
    seen,
    transition,
)

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)

LEGAL = [
    (None, "AwaitingApproval"),
    (None, "Approved"),  # auto-approved by the policy at creation
    (None, "Benchmarking"),
    ("AwaitingApproval", "Benchmarking"),
    ("Benchmarking", "AwaitingApproval"),
    ("Benchmarking", "Benchmarking"),  # measured again after the operator died
    ("Benchmarking", "Approved"),
    ("Benchmarking", "Rejected"),
    ("AwaitingApproval", "Approved"),
    ("AwaitingApproval", "Rejected"),
    ("AwaitingApproval", "Superseded"),
    ("Superseded", "Rejected"),
    ("Approved", "Applied"),
    ("Approved", "RolledBack"),
    ("Approved", "Failed"),
    ("Approved", "Approved"),  # the approval handler runs again after a restart
]

ILLEGAL = [
    ("Superseded", "Approved"),  # analysis no longer finds it: approving it applies nothing
    ("Rejected", "Approved"),
    ("Approved", "Rejected"),
    ("Approved", "Superseded"),
    ("Applied", "RolledBack"),
    ("Failed", "Applied"),
    ("RolledBack", "AwaitingApproval"),
    ("AwaitingApproval", "Applied"),  # an outcome needs an approval first
    (None, "Applied"),
]


@pytest.mark.parametrize(("current", "to"), LEGAL, ids=lambda v: str(v))
def test_legal_moves_write_their_phase(current: Any, to: Any) -> None:
    assert allowed(current, to)
    patch = transition(current, to)
    assert patch == {"phase": to}
    TuningRecommendationStatus.model_validate(patch)


@pytest.mark.parametrize(("current", "to"), ILLEGAL, ids=lambda v: str(v))
def test_illegal_moves_are_refused_naming_the_field(current: Any, to: Any) -> None:
    assert not allowed(current, to)
    start = re.escape(current or "(new)")
    with pytest.raises(IllegalTransition, match=rf"^status\.phase: a recommendation cannot go from {start} to {to}"):
        transition(current, to)


def test_every_phase_has_its_transitions_and_none_is_declared_unused() -> None:
    assert set(TRANSITIONS) == {None, *PHASES}
    reached = {to for targets in TRANSITIONS.values() for to in targets}
    assert reached == set(PHASES)  # every declared phase is reachable (no Proposed, no Applying)


def test_an_approval_records_its_index_change_and_a_creation_when_it_was_seen() -> None:
    assert transition("AwaitingApproval", "Approved", index_change="shop-1") == {
        "phase": "Approved",
        "indexChangeRef": {"name": "shop-1"},
    }
    assert transition(None, "AwaitingApproval", last_seen_at=NOW) == {
        "phase": "AwaitingApproval",
        "lastSeenAt": "2026-12-01T02:00:00Z",
    }
    assert seen(NOW) == {"lastSeenAt": "2026-12-01T02:00:00Z"}
    with pytest.raises(IllegalTransition, match=r"^status\.indexChangeRef: "):
        transition("AwaitingApproval", "Rejected", index_change="shop-1")


@pytest.mark.parametrize("phase", ["Applied", "RolledBack", "Failed"])
def test_an_index_change_outcome_follows_the_approval(phase: str) -> None:
    assert outcome(phase) == {"phase": phase}


def test_an_outcome_that_is_not_one_is_refused() -> None:
    with pytest.raises(IllegalTransition, match=r"^status\.phase: Superseded is not an outcome"):
        outcome("Superseded")


@pytest.mark.parametrize(
    ("body", "phase"),
    [({}, None), ({"status": {}}, None), ({"status": {"phase": "Benchmarking"}}, "Benchmarking"),
     ({"status": {"phase": "Proposed"}}, None)],
)  # fmt: skip
def test_phase_of(body: dict[str, Any], phase: Any) -> None:
    assert phase_of(body) == phase
