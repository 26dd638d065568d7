"""The IndexChange lifecycle: legal moves, and the typed patches that record them (table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from optischema.api.indexchange import Baseline, Execution, IndexChangeStatus
from optischema.lifecycle import indexchange as lifecycle

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("current", "to", "ok"),
    [
        (None, "Pending", True),
        (None, "WaitingForWindow", True),
        (None, "Failed", True),
        ("Pending", "WaitingForWindow", True),
        ("WaitingForWindow", "Applying", True),
        ("WaitingForWindow", "Superseded", True),
        ("Applying", "Verifying", True),
        ("Applying", "WaitingForWindow", True),  # window closed before a statement; connection lost
        ("Verifying", "RolledBack", True),
        ("Verifying", "Applied", True),
        ("WaitingForWindow", "Verifying", False),  # nothing skips Applying (and its marker)
        ("WaitingForWindow", "Applied", False),
        ("Verifying", "WaitingForWindow", False),  # an applied change is not re-applied
        ("Applied", "WaitingForWindow", False),  # final phases are never left
        ("Failed", "Applying", False),
        ("RolledBack", "Applied", False),
        ("Superseded", "Applying", False),
        ("Applying", "Superseded", False),
    ],
)
def test_transitions(current: str | None, to: str, ok: bool) -> None:
    assert lifecycle.legal(current, to) is ok


def test_every_declared_phase_is_reachable() -> None:
    reachable = {phase for targets in lifecycle.TRANSITIONS.values() for phase in targets}
    assert reachable == set(lifecycle.PHASES)


def test_an_illegal_move_raises_and_names_the_field() -> None:
    with pytest.raises(lifecycle.IllegalTransition, match=r"status\.phase: .* from Applied to WaitingForWindow"):
        lifecycle.waiting(IndexChangeStatus(phase="Applied"), "WindowClosed", "closed", now=NOW, generation=1)
    with pytest.raises(lifecycle.IllegalTransition, match=r"status\.execution"):
        lifecycle.executing(IndexChangeStatus(phase="WaitingForWindow"), Execution(started_at=NOW, sql="x"))


def test_patches_are_wire_form_and_carry_the_conditions() -> None:
    admitted = lifecycle.admitted(
        IndexChangeStatus(), sql="CREATE", rollback_sql="DROP", estimated_bytes=10, message="ok", now=NOW,
        generation=2,
    )  # fmt: skip
    assert admitted["phase"] == "WaitingForWindow"
    assert (admitted["sql"], admitted["rollbackSql"], admitted["estimatedBytes"]) == ("CREATE", "DROP", 10)
    assert [c["type"] for c in admitted["conditions"]] == ["Ready"]

    waiting = IndexChangeStatus.model_validate(admitted)
    started = lifecycle.applying(
        waiting, "applying", baseline=Baseline(taken_at=NOW), system_identifier="42", now=NOW, generation=2
    )
    assert (started["phase"], started["systemIdentifier"]) == ("Applying", "42")
    assert {c["type"] for c in started["conditions"]} == {"Ready", "Reconciling"}

    applying = IndexChangeStatus.model_validate({**admitted, **started})
    back = lifecycle.waiting(applying, "ConnectionLost", "lost", now=NOW, generation=2)
    assert back["phase"] == "WaitingForWindow"
    assert "window" not in back  # kept unless given
    ready = next(c for c in back["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["status"]) == ("ConnectionLost", "False")
    assert not any(c["type"] == "Reconciling" for c in back["conditions"])

    stalled = lifecycle.waiting(applying, "DatabaseMismatch", "repointed", now=NOW, generation=2, stalled=True)
    assert any(c["type"] == "Stalled" and c["reason"] == "DatabaseMismatch" for c in stalled["conditions"])

    failed = lifecycle.failed(applying, "IndexNameTaken", "someone else's", now=NOW, generation=2)
    assert failed["phase"] == "Failed"
    assert "completedAt" in failed
    assert any(c["type"] == "Stalled" for c in failed["conditions"])
