"""``status.lastAnalysis`` transitions, table-driven: each from a previous value to the next, and the patch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from optischema.api.target import LastAnalysis
from optischema.lifecycle import target as lifecycle

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
SUCCEEDED = LastAnalysis(
    start_time=T0 - timedelta(hours=6), completion_time=T0 - timedelta(hours=6), outcome="Succeeded"
)
FAILING = LastAnalysis(
    start_time=T0 - timedelta(hours=1),
    completion_time=T0 - timedelta(hours=1),
    outcome="Failed",
    message="ConnectionFailed: refused",
    consecutive_failures=2,
    failing_since=T0 - timedelta(hours=2),
)
IN_JOB = LastAnalysis(start_time=T0, job="shop-analysis-1", requested="r1", consecutive_failures=2,
                      failing_since=T0 - timedelta(hours=2))  # fmt: skip


def _fail(previous: LastAnalysis) -> LastAnalysis:
    return lifecycle.failed(lifecycle.started(previous, T0, job=None, requested=None), T1, "unexpected error: boom")


def _succeed(previous: LastAnalysis) -> LastAnalysis:
    run = lifecycle.started(previous, T0, job=None, requested="r2")
    return lifecycle.succeeded(
        run, T1, duration_seconds=300.0, statements_seen=12, statements_analysed=9, statements_skipped=3,
        unreadable=[(str(n), "nested too deeply to parse (RecursionError)") for n in range(12)], notes=["a", "", "b"],
    )  # fmt: skip


def _unready(previous: LastAnalysis) -> LastAnalysis:
    return lifecycle.not_ready(previous, T1, reason="ConnectionFailed", message="refused", requested="r3")


CASES: list[tuple[str, Any, LastAnalysis, dict[str, Any]]] = [
    ("first failure starts a run", _fail, SUCCEEDED,
     {"outcome": "Failed", "consecutive_failures": 1, "failing_since": T1, "completion_time": T1,
      "start_time": T0, "message": "unexpected error: boom"}),
    ("another failure extends the run", _fail, FAILING,
     {"outcome": "Failed", "consecutive_failures": 3, "failing_since": FAILING.failing_since}),
    ("a failure of a Job keeps the Job and request", lambda p: lifecycle.failed(p, T1, "Job failed"), IN_JOB,
     {"job": "shop-analysis-1", "requested": "r1", "consecutive_failures": 3, "start_time": T0,
      "failing_since": IN_JOB.failing_since}),
    ("success ends the run", _succeed, FAILING,
     {"outcome": "Succeeded", "consecutive_failures": 0, "failing_since": None, "message": "a; b",
      "statements_skipped": 3, "unreadable_count": 12, "requested": "r2", "job": None}),
    ("not ready counts as a failure and answers the request", _unready, FAILING,
     {"outcome": "Failed", "consecutive_failures": 3, "requested": "r3", "duration_seconds": 0.0,
      "message": "not analysed: the target is not ready (ConnectionFailed: refused)"}),
    ("starting a Job clears the last result but keeps the run of failures",
     lambda p: lifecycle.started(p, T1, job="j2", requested=None), FAILING,
     {"job": "j2", "completion_time": None, "outcome": None, "message": None, "consecutive_failures": 2,
      "failing_since": FAILING.failing_since}),
    ("starting after a success has no run to keep", lambda p: lifecycle.started(p, T1, job="j2", requested=None),
     SUCCEEDED, {"consecutive_failures": 0, "failing_since": None}),
]  # fmt: skip


@pytest.mark.parametrize(("title", "transition", "previous", "expected"), CASES, ids=[c[0] for c in CASES])
def test_transition(title: str, transition: Any, previous: LastAnalysis, expected: dict[str, Any]) -> None:
    after = transition(previous)
    assert isinstance(after, LastAnalysis)
    for field, value in expected.items():
        assert getattr(after, field) == value, field


def test_only_the_first_unreadable_statements_are_listed_but_all_counted() -> None:
    after = _succeed(FAILING)
    assert len(after.unreadable) == lifecycle.MAX_UNREADABLE
    assert after.unreadable[0].query_id == "0"
    assert after.unreadable_count == 12


def test_the_patch_writes_every_field_so_nothing_of_a_former_analysis_lingers() -> None:
    patch = lifecycle.status_patch(lifecycle.started(FAILING, T1, job="j2", requested=None))
    last = patch["lastAnalysis"]
    assert (last["completionTime"], last["outcome"], last["message"]) == (None, None, None)  # cleared
    assert (last["job"], last["consecutiveFailures"]) == ("j2", 2)
    assert set(last) == {f.alias for f in LastAnalysis.model_fields.values()}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, LastAnalysis()),
        ({"lastAnalysis": {"consecutiveFailures": 2, "job": "j"}}, LastAnalysis(consecutive_failures=2, job="j")),
        ({"lastAnalysis": {"consecutiveFailures": 2, "fieldOfALaterVersion": 1}}, LastAnalysis(consecutive_failures=2)),
        ({"lastAnalysis": {"consecutiveFailures": -1}}, LastAnalysis()),  # unreadable: as if none
    ],
)
def test_read_is_tolerant(status: dict[str, Any] | None, expected: LastAnalysis) -> None:
    assert lifecycle.read(status) == expected


def test_an_in_flight_job_is_one_started_and_not_completed() -> None:
    assert lifecycle.in_flight(IN_JOB)
    assert not lifecycle.in_flight(lifecycle.failed(IN_JOB, T1, "x"))
    assert not lifecycle.in_flight(SUCCEEDED)
