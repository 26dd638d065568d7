"""Whether an index idle on the primary may be dropped: every instance read, none used it, statistics old enough."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from optischema.analysis.usage import InstanceUsage, UsageEvidence, collecting_since, judge, kept_notes

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
IDX = ("public", "orders_status")
OLD = NOW - timedelta(days=21)
FOURTEEN = timedelta(days=14)


def primary(scans: int | None = 0, since: datetime | None = OLD) -> InstanceUsage:
    return InstanceUsage("db:5432", {} if scans is None else {IDX: scans}, since, primary=True)


def replica(name: str, scans: int | None = 0, since: datetime | None = OLD) -> InstanceUsage:
    return InstanceUsage(name, {} if scans is None else {IDX: scans}, since)


CASES = [
    # title, instances, unused, cause, words in the reason
    ("primary alone, idle 21 days", [primary()], True, "unused", ["none on the primary in 21 days of statistics"]),
    (
        "primary and two idle replicas",
        [primary(), replica("r1:5432"), replica("r2:5432")],
        True,
        "unused",
        ["none on the primary and 2 replicas (r1:5432, r2:5432) in 21 days of statistics"],
    ),
    (
        "a replica used it",
        [primary(), replica("r1:5432", scans=7), replica("r2:5432")],
        False,
        "used",
        ["7 scans on replica r1:5432"],
    ),
    ("the primary used it", [primary(scans=3)], False, "used", ["3 scans on the primary db:5432"]),
    (
        "a replica could not be read",
        [primary(), InstanceUsage.unreachable("r1:5432", "connection refused")],
        False,
        "unreachable",
        ["replica r1:5432 could not be read (connection refused)"],
    ),
    (
        "unreachable wins over used elsewhere (fix it first)",
        [primary(), replica("r1:5432", scans=2), InstanceUsage.unreachable("r2:5432", "timeout")],
        False,
        "unreachable",
        ["replica r2:5432"],
    ),
    (
        "statistics reset yesterday on the primary",
        [primary(since=NOW - timedelta(days=1))],
        False,
        "young",
        ["statistics on the primary db:5432 cover only 1.0 days", "less than the 14 days required"],
    ),
    (
        "the youngest instance decides: a replica restarted 3 hours ago",
        [primary(), replica("r1:5432", since=NOW - timedelta(hours=3))],
        False,
        "young",
        ["replica r1:5432 cover only 3.0 hours"],
    ),
    (
        "a replica that does not have the index yet",
        [primary(), replica("r1:5432", scans=None)],
        False,
        "unknown",
        ["replica r1:5432 does not have it"],
    ),
    ("an instance with no start time", [primary(since=None)], False, "unknown", ["is unknown"]),
    ("no instance at all", [], False, "unknown", ["no instance was read"]),
    (
        "exactly the minimum age is enough",
        [primary(since=NOW - FOURTEEN)],
        True,
        "unused",
        ["in 14 days of statistics"],
    ),
]


@pytest.mark.parametrize(("title", "instances", "unused", "cause", "words"), CASES, ids=[c[0] for c in CASES])
def test_judge(title: str, instances: list[InstanceUsage], unused: bool, cause: str, words: list[str]) -> None:
    verdict = judge(IDX, instances, now=NOW, min_age=FOURTEEN)
    assert (verdict.unused, verdict.cause) == (unused, cause), verdict.reason
    for word in words:
        assert word in verdict.reason


@pytest.mark.parametrize(
    ("reset", "started", "expected"),
    [
        (None, OLD, OLD),
        (NOW - timedelta(days=2), OLD, NOW - timedelta(days=2)),
        (OLD, NOW - timedelta(hours=1), NOW - timedelta(hours=1)),
        (None, None, None),
    ],
)
def test_collecting_since_is_the_later_of_reset_and_start(
    reset: datetime | None, started: datetime | None, expected: datetime | None
) -> None:
    assert collecting_since(reset, started) == expected


def test_kept_notes_group_by_reason_and_name_the_indexes() -> None:
    other = ("public", "orders_customer")
    evidence = UsageEvidence(
        (
            InstanceUsage("db:5432", {IDX: 0, other: 0}, OLD, primary=True),
            InstanceUsage("r1:5432", {IDX: 4, other: 0}, NOW - timedelta(days=2)),
        ),
        now=NOW,
        min_age=FOURTEEN,
    )
    notes = kept_notes(evidence, [IDX, other])
    assert notes == [
        "1 index(es) with no scan on the primary kept (no drop proposed): another instance used them: "
        "public.orders_status (4 scans on replica r1:5432)",
        "1 index(es) with no scan on the primary kept (no drop proposed): statistics on replica r1:5432 cover only "
        "2 days (since 2026-11-29 12:00 UTC), less than the 14 days required: public.orders_customer",
    ]
    assert kept_notes(UsageEvidence((primary(),), now=NOW, min_age=FOURTEEN), [IDX]) == []


def test_kept_notes_name_a_few_and_count_the_rest() -> None:
    keys = [("public", f"i{n}") for n in range(8)]
    evidence = UsageEvidence(
        (InstanceUsage.unreachable("r1:5432", "refused"), InstanceUsage("db", dict.fromkeys(keys, 0), OLD, True)),
        now=NOW,
    )
    (note,) = kept_notes(evidence, keys)
    assert note.startswith("8 index(es)")
    assert "replica r1:5432 could not be read (refused)" in note
    assert note.endswith("public.i4 and 3 more")
