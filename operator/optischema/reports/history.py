"""Statement history for reports: what the custom resources alone do not keep.

Each analysis adds a *point*: the cumulative ``pg_stat_statements`` counters of the top statements (by total time)
and the database's index storage. Points are kept per target and UTC day (one StatementHistory each, see
``kube/history.py``), gzip-compressed JSON whose statement texts are stored once per day::

    {"v": 1, "day": "2026-11-29", "q": {"<queryid>": "<normalised text>"},
     "p": [{"t": "2026-11-29T10:00:00Z", "s": [["<queryid>", calls, total_ms, rows], ...], "ix": bytes, "n": count}]}

Counters are cumulative, so what a report shows comes from the *intervals* between consecutive points; a counter
that went down means the statistics were reset (or the server restarted), and the interval then counts from zero.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from optischema.analysis.redact import redact

VERSION = 1
#: What the application runs, as opposed to set-up and maintenance (CREATE, VACUUM, SET…) that a report's "top
#: statements" would only be cluttered by.
_WORKLOAD = re.compile(r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*(?:SELECT|INSERT|UPDATE|DELETE|WITH|MERGE|VALUES|TABLE)\b",
                       re.IGNORECASE | re.DOTALL)  # fmt: skip


def is_workload(text: str) -> bool:
    return bool(_WORKLOAD.match(text))


@dataclass(frozen=True, slots=True)
class Counter:
    """One statement's cumulative counters at a point."""

    query_id: str
    calls: int
    total_ms: float
    rows: int = 0


@dataclass(frozen=True, slots=True)
class Point:
    at: datetime
    counters: tuple[Counter, ...]
    index_bytes: int = 0
    index_count: int = 0


@dataclass(slots=True)
class Day:
    day: date
    queries: dict[str, str] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one statement did during an interval."""

    calls: int
    total_ms: float

    @property
    def mean_ms(self) -> float | None:
        return self.total_ms / self.calls if self.calls else None


@dataclass(frozen=True, slots=True)
class Interval:
    """From one point to the next (``start`` None: since the statistics were last reset)."""

    start: datetime | None
    end: datetime
    usage: dict[str, Usage]


def point_of(
    at: datetime,
    statements: Iterable[tuple[str, str, int, float, int]],
    *,
    keep: int,
    always: Iterable[str] = (),
    index_bytes: int = 0,
    index_count: int = 0,
    pii_safe: bool = True,
) -> tuple[Point, dict[str, str]]:
    """A point of the top ``keep`` workload statements by total time, plus those in ``always`` (named by changes and
    recommendations, so their before/after stays visible however they rank); returns the point and the texts."""
    wanted = set(always)
    rows = sorted((s for s in statements if is_workload(s[1]) or s[0] in wanted), key=lambda s: -s[3])
    chosen = [s for i, s in enumerate(rows) if i < keep or s[0] in wanted]
    counters = tuple(Counter(qid, calls, round(total, 3), nrows) for qid, _, calls, total, nrows in chosen)
    texts = {qid: (redact(text) if pii_safe else text)[:2000] for qid, text, *_ in chosen}
    return Point(at.astimezone(UTC), counters, index_bytes, index_count), texts


def add(day: Day | None, point: Point, texts: dict[str, str]) -> Day:
    """``day`` with ``point`` added in time order (a new day when None)."""
    day = day or Day(point.at.date())
    day.queries.update(texts)
    day.points = sorted([*(p for p in day.points if p.at != point.at), point], key=lambda p: p.at)
    return day


def thin(day: Day) -> Day:
    """Every other point of the day, the last one kept: what keeps a day within its object when analyses run very
    often (intervals stay correct, only coarser)."""
    kept = day.points[::-1][::2][::-1]
    used = {c.query_id for p in kept for c in p.counters}
    return Day(day.day, {q: t for q, t in day.queries.items() if q in used}, kept)


def encode(day: Day) -> bytes:
    body = {
        "v": VERSION,
        "day": day.day.isoformat(),
        "q": day.queries,
        "p": [
            {
                "t": p.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "s": [[c.query_id, c.calls, c.total_ms, c.rows] for c in p.counters],
                "ix": p.index_bytes,
                "n": p.index_count,
            }
            for p in day.points
        ],
    }
    return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), mtime=0)


def decode(data: bytes) -> Day:
    """A day from its stored bytes; ``ValueError`` when they are not one (a hand-edited StatementHistory)."""
    try:
        body = json.loads(gzip.decompress(data))
        if body.get("v") != VERSION:
            raise ValueError(f"history version {body.get('v')!r} is not {VERSION}")
        return Day(
            date.fromisoformat(body["day"]),
            {str(k): str(v) for k, v in body["q"].items()},
            [
                Point(
                    datetime.fromisoformat(p["t"].replace("Z", "+00:00")),
                    tuple(Counter(str(q), int(c), float(t), int(r)) for q, c, t, r in p["s"]),
                    int(p.get("ix", 0)),
                    int(p.get("n", 0)),
                )
                for p in body["p"]
            ],
        )
    except (OSError, EOFError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"not a history day: {error}") from error


def expired(days: Iterable[date], retention: timedelta, today: date) -> list[date]:
    """Days older than the retention, to delete."""
    oldest = today - timedelta(days=max(retention.days, 1))
    return sorted(d for d in days if d < oldest)


def points(days: Sequence[Day], since: datetime | None = None) -> list[Point]:
    found = sorted((p for d in days for p in d.points), key=lambda p: p.at)
    return [p for p in found if since is None or p.at >= since]


def intervals(found: Sequence[Point]) -> list[Interval]:
    """Usage between consecutive points; the first point's counters count from the last reset."""
    result: list[Interval] = []
    previous: dict[str, Counter] = {}
    start: datetime | None = None
    for point in found:
        usage: dict[str, Usage] = {}
        for counter in point.counters:
            before = previous.get(counter.query_id)
            if before is None and start is not None:
                continue  # not among the kept statements last time: its share of this interval is unknown
            if before is None or counter.calls < before.calls:  # first point, or the statistics were reset
                usage[counter.query_id] = Usage(counter.calls, counter.total_ms)
            else:
                usage[counter.query_id] = Usage(
                    counter.calls - before.calls, max(counter.total_ms - before.total_ms, 0)
                )
        result.append(Interval(start, point.at, usage))
        previous = {c.query_id: c for c in point.counters}
        start = point.at
    return result
