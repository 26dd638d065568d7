"""Statement history and reports, from hand-made resources: intervals, figures, and the three formats."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta

import pytest

from optischema.reports import history
from optischema.reports.build import build
from optischema.reports.render import render

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
SECRET_SQL = "SELECT * FROM customers WHERE email = 'alice@example.com' AND id = 42"


def _day(*rows: tuple[datetime, list[tuple[str, int, float]], int]) -> history.Day:
    day = None
    for at, counters, index_bytes in rows:
        statements = [(qid, f"SELECT {qid} FROM t WHERE a = $1", calls, total, calls) for qid, calls, total in counters]
        point, texts = history.point_of(at, statements, keep=100, index_bytes=index_bytes, index_count=3)
        day = history.add(day, point, texts)
    assert day is not None
    return day


def test_a_day_survives_encoding_compactly() -> None:
    day = _day(
        (T0, [("1", 100, 500.0), ("2", 10, 5.0)], 1000),
        (T0 + timedelta(hours=6), [("1", 200, 600.0), ("2", 20, 10.0)], 5000),
    )
    data = history.encode(day)
    assert history.decode(data) == day
    assert len(data) < 400


@pytest.mark.parametrize(
    ("title", "points", "expected"),
    [
        ("first counts from the reset", [[("1", 10, 100.0)]], [{"1": (10, 100.0)}]),
        ("deltas after", [[("1", 10, 100.0)], [("1", 30, 120.0)]], [{"1": (10, 100.0)}, {"1": (20, 20.0)}]),
        ("a reset counts from zero", [[("1", 10, 100.0)], [("1", 4, 8.0)]], [{"1": (10, 100.0)}, {"1": (4, 8.0)}]),
        ("a newcomer's share is unknown", [[("1", 10, 100.0)], [("1", 11, 101.0), ("2", 5, 5.0)]],
         [{"1": (10, 100.0)}, {"1": (1, 1.0)}]),
    ],
)  # fmt: skip
def test_intervals(title: str, points: list[list[tuple[str, int, float]]], expected: list[dict[str, tuple]]) -> None:
    found = [
        history.Point(T0 + timedelta(hours=i), tuple(history.Counter(q, c, t) for q, c, t in p))
        for i, p in enumerate(points)
    ]
    spans = history.intervals(found)
    assert [{q: (u.calls, u.total_ms) for q, u in s.usage.items()} for s in spans] == expected, title
    assert spans[0].start is None
    assert all(s.start == p.at for s, p in zip(spans[1:], found, strict=False))


def test_retention_and_top_statements() -> None:
    assert history.expired([date(2026, 10, 1), date(2026, 11, 1), date(2026, 11, 28)], timedelta(days=30),
                           date(2026, 11, 29)) == [date(2026, 10, 1)]  # fmt: skip
    point, texts = history.point_of(
        T0, [(str(i), SECRET_SQL, 1, float(i), 0) for i in range(20)], keep=5, always=["3"], pii_safe=True
    )
    assert [c.query_id for c in point.counters] == ["19", "18", "17", "16", "15", "3"]
    assert all("alice" not in t and "42" not in t for t in texts.values())
    assert history.decode(history.encode(history.add(None, point, texts))).points == [point]
    with pytest.raises(ValueError, match="not a history day"):
        history.decode(b"not gzip")


def _resources() -> tuple[dict, list[dict], list[dict]]:
    target = {
        "metadata": {"name": "shop", "namespace": "demo"},
        "spec": {"connection": {"host": "127.0.0.1", "port": 5432, "database": "shop"}},
        "status": {"database": {"serverVersion": "15.14"}},
    }
    rec = {
        "metadata": {"name": "shop-create-a"},
        "spec": {
            "targetRef": {"name": "shop"}, "kind": "createIndex", "sql": "CREATE INDEX ...",
            "evidence": {"statements": [{"queryId": "1", "fingerprint": "f"}], "estimatedImprovementPercent": 90},
        },
        "status": {"phase": "Applied",
                   "benchmark": {"speedup": 12.5, "improvementPercent": 92.0, "dataMode": "sample"}},
    }  # fmt: skip
    pending = {
        "metadata": {"name": "shop-create-b"},
        "spec": {"targetRef": {"name": "shop"}, "kind": "createIndex", "sql": SECRET_SQL,
                 "evidence": {"estimatedImprovementPercent": 40}},
        "status": {"phase": "Pending", "benchmark": {"speedup": 3.0}},
    }  # fmt: skip
    applied_at = T0 + timedelta(hours=1)
    change = {
        "metadata": {"name": "shop-create-a"},
        "spec": {"targetRef": {"name": "shop"}, "operation": "create", "recommendationRef": {"name": "shop-create-a"},
                 "index": {"schema": "public", "table": "orders", "name": "orders_a_idx"}},
        "status": {
            "phase": "Applied", "sql": "CREATE INDEX CONCURRENTLY orders_a_idx ON orders (a) WHERE b = 'secret'",
            "appliedAt": applied_at.isoformat(), "completedAt": (applied_at + timedelta(minutes=5)).isoformat(),
            "estimatedBytes": 2_000_000, "baseline": {"reads": [{"queryId": "1", "calls": 100, "totalMs": 1000}]},
            "verification": {"baselineMeanMs": 10.0, "afterMeanMs": 0.5, "regressionPercent": -95.0,
                             "verdict": "Improved"},
        },
    }  # fmt: skip
    rolled = {
        "metadata": {"name": "shop-create-c"},
        "spec": {"targetRef": {"name": "shop"}, "operation": "create", "index": {"table": "orders", "name": "c_idx"}},
        "status": {
            "phase": "RolledBack", "completedAt": (applied_at + timedelta(hours=2)).isoformat(),
            "history": [{"action": "Verify", "outcome": "Failed", "message": "writes 40% slower (limit 25%)"},
                        {"action": "Rollback", "outcome": "Succeeded", "message": "dropped c_idx"}],
        },
    }  # fmt: skip
    other = {"metadata": {"name": "x"}, "spec": {"targetRef": {"name": "elsewhere"}, "operation": "create"},
             "status": {"phase": "Applied", "appliedAt": applied_at.isoformat()}}  # fmt: skip
    return target, [rec, pending], [change, rolled, other]


def _history() -> list[history.Day]:
    # 100 calls at 10 ms before the change; then 1,000 calls per 6 hours at 0.5 ms.
    return [
        _day(
            (T0, [("1", 100, 1000.0), ("2", 50, 50.0)], 10_000_000),
            (T0 + timedelta(hours=6), [("1", 1100, 1500.0), ("2", 100, 100.0)], 12_000_000),
            (T0 + timedelta(hours=12), [("1", 2100, 2000.0), ("2", 150, 150.0)], 12_000_000),
        )
    ]


def test_report_figures() -> None:
    target, recs, changes = _resources()
    report = build(target, recs, changes, _history(), since=T0 - timedelta(days=1), now=T0 + timedelta(days=1))
    assert report.snapshots == 3
    first = report.top_statements[0]
    assert (first.label, first.query_id, first.first_mean_ms, first.last_mean_ms) == ("Q1", "1", 10.0, 0.5)
    assert first.trend_percent == -95.0
    assert first.means_ms == [10.0, 0.5, 0.5]
    assert report.recommendations_by_phase == {"Applied": 1, "Pending": 1}
    (line,) = report.applied
    assert (line.sandbox_speedup, line.production_before_ms, line.production_after_ms) == (12.5, 10.0, 0.5)
    # 2,000 calls in 12 hours = 4,000 a day, each 9.5 ms faster: 38 s a day.
    assert line.calls_per_day == 4000
    assert line.saved_seconds_per_day == pytest.approx(38.0)
    assert report.time_saved_per_day_seconds == pytest.approx(38.0)
    # measured: 1,000 calls at 10 → 0.5 ms in each of the two intervals after the change
    assert [p.value for p in report.time_saved_series] == [0.0, 9.5, 19.0]
    assert report.storage_added_bytes == 2_000_000
    assert report.index_bytes_last == 12_000_000
    (undone,) = report.rolled_back
    assert undone.reason == "writes 40% slower (limit 25%)"
    assert "'…'" in line.sql
    assert "secret" not in line.sql
    assert "alice" not in report.pending[0].sql


def test_report_formats_are_self_contained() -> None:
    target, recs, changes = _resources()
    report = build(target, recs, changes, _history(), since=T0 - timedelta(days=1), now=T0 + timedelta(days=1))
    html = render(report, "html")
    assert html.count("<svg") == 4
    assert "<script" not in html
    assert not re.search(r"(src|href)=\"https?:", html)  # nothing fetched from a network
    for chart in ("chart-statements", "chart-saved", "chart-changes", "chart-storage"):
        assert f'id="{chart}"' in html
    assert "alice" not in html
    assert "38.0 s" in html
    markdown = render(report, "md")
    assert "| Q1 |" in markdown
    assert "orders_a_idx" in markdown
    assert "38.0 s" in markdown
    assert "writes 40% slower" in markdown
    assert json.loads(render(report, "json"))["applied"][0]["savedSecondsPerDay"] == pytest.approx(38.0)


def test_an_empty_period_says_so() -> None:
    target, _, _ = _resources()
    report = build(target, [], [], [], since=T0, now=T0 + timedelta(days=1))
    assert report.snapshots == 0
    assert report.time_saved_per_day_seconds is None
    assert any("need at least two" in n for n in report.notes)
    html = render(report, "html")
    assert "needs two snapshots" in html
    assert "No change was applied" in html
    with pytest.raises(ValueError, match="format must be one of"):
        render(report, "pdf")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("title", "schedule", "zone", "last", "now", "expected"),
    [
        ("not yet", "0 8 * * 1", "UTC", "2026-11-23T08:00:00+00:00", "2026-11-29T12:00:00+00:00", False),
        ("Monday came", "0 8 * * 1", "UTC", "2026-11-23T08:00:00+00:00", "2026-11-30T08:00:00+00:00", True),
        ("in the schedule's zone", "0 8 * * *", "Europe/Berlin", "2026-11-29T06:00:00+00:00",
         "2026-11-29T06:59:00+00:00", False),
        ("08:00 Berlin is 07:00 UTC", "0 8 * * *", "Europe/Berlin", "2026-11-29T06:00:00+00:00",
         "2026-11-29T07:00:00+00:00", True),
        ("many missed: due once", "*/5 * * * *", "UTC", "2026-11-01T00:00:00+00:00", "2026-11-29T00:00:00+00:00",
         True),
        ("no last time", "* * * * *", "UTC", None, "2026-11-29T00:00:00+00:00", False),
    ],
)  # fmt: skip
def test_report_schedule(title: str, schedule: str, zone: str, last: str | None, now: str, expected: bool) -> None:
    from optischema.reports.schedule import due

    parsed = datetime.fromisoformat(last) if last else None
    assert due(schedule, zone, parsed, datetime.fromisoformat(now)) is expected, title


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT 1", True),
        ("  with x as (select 1) select * from x", True),
        ("-- a comment\nUPDATE t SET a = $1", True),
        ("/* app=web */ DELETE FROM t WHERE id = $1", True),
        ("INSERT INTO t VALUES ($1)", True),
        ("CREATE EXTENSION IF NOT EXISTS hypopg", False),
        ("VACUUM ANALYZE invoices", False),
        ("SET statement_timeout = $1", False),
        ("-- Register a view\nCREATE VIEW v AS SELECT 1", False),
        ("SELECTED", False),
    ],
)
def test_what_counts_as_workload(text: str, expected: bool) -> None:
    assert history.is_workload(text) is expected


def test_thinning_keeps_the_last_point_and_the_texts_it_needs() -> None:
    day = _day(*((T0 + timedelta(hours=h), [(str(h), 10 * (h + 1), 1.0 * h)], 0) for h in range(5)))
    thinned = history.thin(day)
    assert [p.at.hour for p in thinned.points] == [8, 10, 12]
    assert set(thinned.queries) == {"0", "2", "4"}


def test_the_report_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from optischema.cli.plugin import build_parser

    args = build_parser().parse_args(["-n", "shop", "report", "orders", "--since", "7d", "--format", "html", "-o", "r"])
    assert (args.target, args.since, args.format, args.output) == ("orders", timedelta(days=7), "html", "r")
    defaults = build_parser().parse_args(["report", "orders"])
    assert (defaults.since, defaults.format, defaults.output) == (timedelta(days=30), "md", None)
    for bad, message in ((["--since", "30x"], "'30x' is not a duration"), (["--format", "pdf"], "invalid choice")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["report", "orders", *bad])
        assert message in capsys.readouterr().err


def test_statement_text_cannot_inject_markup() -> None:
    target, _, _ = _resources()
    day = history.Day(date(2026, 11, 2))
    hostile = "SELECT '</code><script>alert(1)</script>' FROM t WHERE a = $1"
    for hours, calls in ((0, 10), (6, 20)):
        point, _ = history.point_of(T0 + timedelta(hours=hours), [("9", hostile, calls, calls * 2.0, 0)], keep=5,
                                    pii_safe=False)  # fmt: skip
        history.add(day, point, {"9": hostile})
    html = render(build(target, [], [], [day], since=T0 - timedelta(days=1), now=T0 + timedelta(days=1),
                        pii_safe=False), "html")  # fmt: skip
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    redacted = build(target, [], [], [day], since=T0 - timedelta(days=1), now=T0 + timedelta(days=1))
    assert "alert" not in redacted.top_statements[0].query, "PII-safe redacts texts stored before it was on"
