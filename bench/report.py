"""Reports at the scale of a busy month: the statement history's size per target (what a StatementHistory holds), and
the time and size of a 30-day report built from it — pure code, so no cluster is needed to measure it."""

from __future__ import annotations

import random
import resource
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from optischema.reports import history
from optischema.reports.build import build
from optischema.reports.render import FORMATS, render

STATEMENTS = 100  # spec.reports.historyStatements' default
POINTS_PER_DAY = 4  # one per analysis, spec.analysis.interval's default of 6h
DAYS = 30
CHANGES = 40
RECOMMENDATIONS = 200


def say(text: str) -> None:
    print(text, flush=True)


def month(rng: random.Random, start: datetime) -> list[history.Day]:
    texts = {
        str(
            -(10**18) + i * 7919
        ): f"SELECT c{i % 7}, c{i % 5} FROM table_{i % 40} t JOIN other_{i % 9} o ON o.id = t.o_id "
        f"WHERE t.k{i % 3} = $1 AND t.created_at > $2 ORDER BY t.created_at DESC LIMIT $3"
        for i in range(STATEMENTS + 20)
    }
    calls = dict.fromkeys(texts, 0)
    total = dict.fromkeys(texts, 0.0)
    days: list[history.Day] = []
    for day in range(DAYS):
        current = None
        for slot in range(POINTS_PER_DAY):
            at = start + timedelta(days=day, hours=6 * slot)
            for q in calls:
                n = rng.randint(1_000, 200_000)
                calls[q] += n
                total[q] += n * rng.uniform(0.05, 40.0) * (0.2 if day > 10 else 1.0)
            rows = [(q, texts[q], calls[q], total[q], calls[q]) for q in texts]
            point, kept = history.point_of(at, rows, keep=STATEMENTS, index_bytes=10**9 + day * 10**7, index_count=80)
            current = history.add(current, point, kept)
        assert current is not None
        days.append(current)
    return days


def resources(rng: random.Random, start: datetime, days: list[history.Day]) -> tuple[Any, list[Any], list[Any]]:
    target = {
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {"connection": {"host": "db", "database": "orders"}},
        "status": {"database": {"serverVersion": "15.14"}},
    }
    queries = [c.query_id for c in days[0].points[0].counters]
    recommendations, changes = [], []
    for i in range(RECOMMENDATIONS):
        phase = "Applied" if i < CHANGES else rng.choice(["Pending", "Rejected", "Superseded"])
        recommendations.append({
            "metadata": {"name": f"orders-createindex-{i:04d}"},
            "spec": {"targetRef": {"name": "orders"}, "kind": "createIndex", "sql": f"CREATE INDEX i{i} ON t (a)",
                     "evidence": {"statements": [{"queryId": queries[i % len(queries)]}],
                                  "estimatedImprovementPercent": rng.uniform(5, 99)}},
            "status": {"phase": phase, "benchmark": {"speedup": rng.uniform(1, 50), "dataMode": "sample"}},
        })  # fmt: skip
        if i < CHANGES:
            applied = start + timedelta(days=1 + i * DAYS // (CHANGES + 1), hours=3)
            changes.append({
                "metadata": {"name": f"orders-createindex-{i:04d}"},
                "spec": {"targetRef": {"name": "orders"}, "operation": "create",
                         "recommendationRef": {"name": f"orders-createindex-{i:04d}"},
                         "index": {"table": f"table_{i}", "name": f"table_{i}_idx"}},
                "status": {"phase": "Applied", "sql": f"CREATE INDEX CONCURRENTLY table_{i}_idx ON table_{i} (k)",
                           "appliedAt": applied.isoformat(), "completedAt": applied.isoformat(),
                           "estimatedBytes": rng.randint(10**6, 10**9),
                           "baseline": {"reads": [{"queryId": queries[i % len(queries)], "calls": 1, "totalMs": 1}]},
                           "verification": {"baselineMeanMs": 20.0, "afterMeanMs": 1.0, "verdict": "Improved"}},
            })  # fmt: skip
    return target, recommendations, changes


def bench() -> dict[str, float]:
    say(f"\n## report: {DAYS} days, {STATEMENTS} statements per point, {POINTS_PER_DAY} points a day, {CHANGES} "
        f"changes, {RECOMMENDATIONS} recommendations")  # fmt: skip
    rng = random.Random(7)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    days = month(rng, start)
    sizes = [len(history.encode(d)) for d in days]
    say(f"  history: {sum(sizes) / len(sizes) / 1024:.1f} KiB per target per day (gzip JSON, one StatementHistory), "
        f"{sum(sizes) / 1024:.0f} KiB per target per month")  # fmt: skip
    target, recommendations, changes = resources(rng, start, days)
    figures: dict[str, float] = {"history_kib_per_month": sum(sizes) / 1024}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    report = build(target, recommendations, changes, days, since=start, now=start + timedelta(days=DAYS))
    figures["build_seconds"] = time.perf_counter() - started
    for fmt in FORMATS:
        started = time.perf_counter()
        text = render(report, fmt)
        figures[f"{fmt}_seconds"] = time.perf_counter() - started
        figures[f"{fmt}_kib"] = len(text.encode()) / 1024
    say(f"  build {figures['build_seconds'] * 1000:.0f} ms; " + "; ".join(
        f"{fmt} {figures[f'{fmt}_kib']:.0f} KiB in {figures[f'{fmt}_seconds'] * 1000:.0f} ms" for fmt in FORMATS
    ) + f"; peak RSS +{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024:.0f} MiB")  # fmt: skip
    say(f"  time saved per day {report.time_saved_per_day_seconds / 3600:.1f} h, "
        f"{len(report.time_saved_series)} points on the cumulative chart")  # fmt: skip
    return figures


if __name__ == "__main__":
    bench()
