"""``kubectl optischema top TARGET``: the target's top statements in the terminal, refreshed.

It reads only what the operator already writes, with the viewer's rights and no database credential: the
target (its status), its ``StatementHistory`` days (``kube/history.py``: cumulative ``pg_stat_statements``
counters per analysis), its recommendations (their evidence names the statements each one helps, and — for index
recommendations — the statement's plan before, whose ``Index Scan using …`` lines name the indexes it uses), and
its IndexChanges. Beside them, the operator's live endpoint (``cli/top_live.py``, ``flows/live.py``): the target's
``pg_stat_statements`` now, read by the operator over the target's read-only connection, added as one more point —
so calls/s, mean and share come from the interval between the last analysis (or the previous refresh) and now, the
trend from the mean of every interval kept. When the endpoint cannot be read, one line says why and the frame is
as fresh as the last analysis.

:func:`frame` is pure (the rendering, unit-tested from fixture data); :func:`run` reads and repeats it, clearing
the screen with ANSI codes only when standard output is a terminal.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from optischema.cli.top_live import LiveSource, LiveUnavailable
from optischema.kube import history as stored_history
from optischema.kube.client import Kube
from optischema.reports import history
from optischema.reports import live as live_answer
from optischema.reports.charts import sparkline

#: How far back the trend looks.
TREND = timedelta(days=1)
#: Clears the screen and homes the cursor (a terminal only).
CLEAR = "\x1b[H\x1b[2J"
_USING = re.compile(r"\busing\s+(\"(?:[^\"]|\"\")+\"|[\w$.]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Row:
    query_id: str
    text: str
    calls_per_second: float | None
    mean_ms: float | None
    share: float | None
    trend: str
    uses: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()


@dataclass
class Frame:
    title: str
    lines: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)


def indexes_in(plan: str | None) -> list[str]:
    """The index names a compact plan's ``… using NAME`` nodes mention, in order, once each."""
    found: list[str] = []
    for match in _USING.finditer(plan or ""):
        name = match.group(1)
        if name not in found:
            found.append(name)
    return found


def _by_statement(
    recommendations: Sequence[dict[str, Any]], changes: Sequence[dict[str, Any]]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per query id: the indexes it uses (its plan before any pending change, plus indexes applied for it) and the
    pending recommendations that would help it."""
    uses: dict[str, list[str]] = {}
    pending: dict[str, list[str]] = {}
    applied = {
        ((c.get("spec") or {}).get("recommendationRef") or {}).get("name"): (c.get("status") or {})
        for c in changes
        if (c.get("status") or {}).get("phase") == "Applied"
    }
    for item in recommendations:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        name = item["metadata"]["name"]
        state = (spec.get("approval") or {}).get("state", "Pending")
        index = ((spec.get("change") or {}).get("index") or {}).get("name")
        for statement in (spec.get("evidence") or {}).get("statements") or []:
            qid = str(statement.get("queryId", ""))
            if not qid:
                continue
            for used in indexes_in(statement.get("planBefore")):
                if used not in uses.setdefault(qid, []):
                    uses[qid].append(used)
            change = applied.get(name)
            if change is not None:
                built = (change.get("execution") or {}).get("indexName") or index
                if built and built not in uses.setdefault(qid, []):
                    uses[qid].append(built)
            if state == "Pending" and status.get("phase") != "Superseded":
                gain = (spec.get("evidence") or {}).get("estimatedImprovementPercent")
                label = name if gain is None else f"{name} (+{gain:.0f}%)"
                pending.setdefault(qid, []).append(label)
    return uses, pending


def rows(
    days: Sequence[history.Day],
    recommendations: Sequence[dict[str, Any]],
    changes: Sequence[dict[str, Any]],
    *,
    limit: int,
) -> tuple[list[Row], history.Interval | None]:
    """The top ``limit`` statements of the last interval by total time, and that interval."""
    points = history.points(days)
    intervals = history.intervals(points)
    if not intervals:
        return [], None
    texts: dict[str, str] = {}
    for day in days:
        texts.update(day.queries)
    last = intervals[-1]
    seconds = (last.end - last.start).total_seconds() if last.start is not None else None
    total = sum(u.total_ms for u in last.usage.values())
    uses, pending = _by_statement(recommendations, changes)
    trend_from = [i for i in intervals[1:] if i.end >= last.end - TREND]
    ran = [(qid, usage) for qid, usage in last.usage.items() if usage.calls > 0]  # not run in the interval: not top
    ranked = sorted(ran, key=lambda kv: (-kv[1].total_ms, kv[0]))[:limit]
    found = []
    for qid, usage in ranked:
        found.append(
            Row(
                query_id=qid,
                text=" ".join(texts.get(qid, f"(query {qid})").split()),
                calls_per_second=usage.calls / seconds if seconds else None,
                mean_ms=usage.mean_ms,
                share=usage.total_ms / total if total else None,
                trend=sparkline([i.usage[qid].mean_ms if qid in i.usage else None for i in trend_from]),
                uses=tuple(uses.get(qid, ())),
                pending=tuple(pending.get(qid, ())),
            )
        )
    return found, last


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def frame(
    target: dict[str, Any],
    days: Sequence[history.Day],
    recommendations: Sequence[dict[str, Any]],
    changes: Sequence[dict[str, Any]],
    *,
    now: datetime,
    limit: int = 15,
    width: int = 160,
    source: str | None = None,
) -> str:
    """One screen: a header on the target and the interval shown, then one line per statement with the indexes
    it uses and the pending recommendations that would help it beneath."""
    meta, status = target["metadata"], target.get("status") or {}
    ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    database = status.get("database") or {}
    last_analysis = status.get("lastAnalysis") or {}
    found, interval = rows(days, recommendations, changes, limit=limit)
    lines = [
        f"optischema top {meta['name']} -n {meta['namespace']}   {now:%Y-%m-%d %H:%M:%S} UTC   "
        f"Ready: {ready.get('status', 'Unknown')}" + (f" ({ready['reason']})" if ready.get("reason") else ""),
        f"PostgreSQL {database.get('serverVersion', '?')}; last analysis {last_analysis.get('completionTime', '–')} "
        f"({last_analysis.get('outcome', 'none yet')}); "
        + (
            "no statement history yet: it starts with the target's first analysis"
            if interval is None
            else (
                f"interval {interval.start:%H:%M:%S} → {interval.end:%H:%M:%S} UTC"
                if interval.start is not None
                else f"since the statistics were reset, up to {interval.end:%H:%M:%S} UTC (one point so far)"
            )
        ),
    ]
    if interval is None:
        return "\n".join([*lines, source] if source else lines)
    lines.append("")
    header = f"{'CALLS/S':>9}  {'MEAN MS':>9}  {'SHARE':>6}  {'TREND':<12}  STATEMENT"
    lines.append(header)
    text_width = max(width - len(header) + len("STATEMENT"), 30)
    for row in found:
        share = "–" if row.share is None else f"{row.share * 100:.1f}%"
        lines.append(
            f"{_number(row.calls_per_second, 2):>9}  {_number(row.mean_ms, 2):>9}  {share:>6}  {row.trend:<12}  "
            f"{row.text[:text_width]}"
        )
        pad = " " * 45
        if row.uses:
            lines.append(f"{pad}uses: {', '.join(row.uses)}")
        if row.pending:
            lines.append(f"{pad}pending: {', '.join(row.pending)}")
    waiting = sum(
        1
        for r in recommendations
        if (r.get("spec", {}).get("approval") or {}).get("state", "Pending") == "Pending"
        and (r.get("status") or {}).get("phase") != "Superseded"
    )
    lines += [
        "",
        f"{waiting} recommendation(s) waiting for a decision: kubectl optischema list --target {meta['name']}",
    ]
    if source:  # last: where the figures came from (the header's lines stay where scripts read them)
        lines.append(source)
    return "\n".join(lines)


async def read(kube: Kube, namespace: str, name: str) -> tuple[dict[str, Any], list[history.Day], list[Any], list[Any]]:
    """The target, its history days of the trend's span, its recommendations and changes."""
    target = await kube.get("postgrestargets", namespace, name)
    days = await stored_history.days(kube, target, datetime.now(UTC) - TREND - timedelta(days=1))
    selector = f"optischema.io/target={name}"
    recommendations = await kube.list("tuningrecommendations", namespace, selector)
    changes = [
        c
        for c in await kube.list("indexchanges", namespace)
        if ((c.get("spec") or {}).get("targetRef") or {}).get("name") == name
    ]
    return target, days, recommendations, changes


async def run(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    once: bool,
    interval: float,
    limit: int,
    out: TextIO = sys.stdout,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    live: LiveSource | None = None,
) -> str:
    """Print frames every ``interval`` seconds until interrupted (or one with ``once``); returns the last. With
    ``live``, each frame adds the endpoint's sample to the history (the last two samples kept: the newest interval
    is then the one between refreshes)."""
    tty = out.isatty()
    samples: list[tuple[history.Point, dict[str, str]]] = []
    while True:
        target, days, recommendations, changes = await read(kube, namespace, name)
        source = None
        if live is not None:
            try:
                samples = [*samples, await live.fetch(namespace, name)][-2:]
                source = f"live: from the operator at {samples[-1][0].at:%H:%M:%S} UTC"
            except LiveUnavailable as why:
                source = f"live figures unavailable ({why}); showing the history up to the last analysis"
            days = live_answer.with_samples(days, samples)
        width = 160
        if tty:
            import shutil

            width = shutil.get_terminal_size().columns
        text = frame(target, days, recommendations, changes, now=clock(), limit=limit, width=width, source=source)
        if once:
            return text
        out.write((CLEAR if tty else "") + text + ("\n" if tty else "\n\n"))
        out.flush()
        await asyncio.sleep(interval)
