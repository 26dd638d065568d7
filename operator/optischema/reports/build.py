"""From the custom resources and the statement history to a :class:`Report`: pure, the clock passed in.

What each figure means (and why it is honest):

- *Top statements*: by total time summed over the history's intervals ending in the period; "before" is the mean
  of the period's first interval, "after" the mean of its last one.
- *Sandbox* figures come from the recommendation's benchmark; *production* before/after from the change's own
  verification (the affected statements' mean just before the change and while it was observed). A sandbox
  speed-up measured on a sample is shown as a lower bound (``analysis/scaling.py`` says why), and beside it
  production's own speed-up and their ratio, per change and across the period's changes: how far the sandbox was
  to be trusted, learned from this database's own changes.
- *Saved per day* of a change: (production before − after) × the affected statements' calls per day, measured by the
  history over the period (no figure when the history has fewer than two points).
- *Cumulative time saved*: for every interval that ends after a change was applied, each affected statement's
  (mean before the change − mean in the interval) × calls in the interval; an interval that straddles the change
  counts whole, which understates the saving rather than inflating it.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from optischema.analysis import scaling
from optischema.analysis.redact import redact, redact_error

from .history import Day, Interval, intervals, is_workload, points
from .model import ChangeLine, PendingLine, Report, SeriesPoint, StatementLine

TOP_STATEMENTS = 10
#: A statement run once in the period (a data load, a one-off fix) is not the workload.
MIN_CALLS = 2
PENDING_SHOWN = 10


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def build(
    target: dict[str, Any],
    recommendations: Sequence[dict[str, Any]],
    changes: Sequence[dict[str, Any]],
    days: Sequence[Day],
    *,
    since: datetime,
    now: datetime,
    pii_safe: bool = True,
) -> Report:
    meta, status = target["metadata"], target.get("status") or {}
    name = meta["name"]
    show = redact if pii_safe else (lambda sql: sql)
    spans = [i for i in intervals(points(days)) if since <= i.end <= now]
    texts = {q: t for d in days for q, t in d.queries.items()}
    found = [p for p in points(days) if since <= p.at <= now]
    mine = [r for r in recommendations if (r.get("spec") or {}).get("targetRef", {}).get("name") == name]
    by_name = {r["metadata"]["name"]: r for r in mine}
    report = Report(
        generated_at=now,
        namespace=meta["namespace"],
        target=name,
        database=_database(target),
        since=since,
        until=now,
        snapshots=len(found),
        top_statements=_top(spans, texts, show),
        recommendations_by_phase=dict(
            sorted(Tally((r.get("status") or {}).get("phase") or "New" for r in mine).items())
        ),
        pending=_pending(mine, show),
    )
    rates = _rates(spans)
    for change in changes:
        spec, cstatus = change.get("spec") or {}, change.get("status") or {}
        if (spec.get("targetRef") or {}).get("name") != name:
            continue
        phase = cstatus.get("phase") or "Pending"
        when = _time(cstatus.get("completedAt")) or _time(cstatus.get("appliedAt"))
        if phase not in ("Applied", "RolledBack", "Failed"):
            report.in_progress += phase not in ("Superseded",)
            continue
        if when is None or not since <= when <= now:
            continue
        recommendation = by_name.get((spec.get("recommendationRef") or {}).get("name") or "")
        line = _change(change, recommendation, rates, show, pii_safe=pii_safe)
        {"Applied": report.applied, "RolledBack": report.rolled_back, "Failed": report.failed}[phase].append(line)
        if phase == "Applied" and line.storage_bytes:
            if line.storage_bytes > 0:
                report.storage_added_bytes += line.storage_bytes
            else:
                report.storage_removed_bytes -= line.storage_bytes
    saved = [c.saved_seconds_per_day for c in report.applied if c.saved_seconds_per_day is not None]
    report.time_saved_per_day_seconds = round(sum(saved), 3) if saved else None
    report.time_saved_series = _cumulative(spans, report.applied, changes)
    report.storage_series = [SeriesPoint(at=p.at, value=p.index_bytes) for p in found]
    trust = scaling.trust((c.sandbox_speedup, c.production_speedup) for c in report.applied)
    report.sandbox_trust_changes, report.sandbox_trust_min, report.sandbox_trust_median, report.sandbox_trust_max = (
        trust
    )
    if found:
        report.index_bytes_first, report.index_bytes_last = found[0].index_bytes, found[-1].index_bytes
    report.notes = _notes(report, status)
    return report


def _database(target: dict[str, Any]) -> str:
    connection = (target.get("spec") or {}).get("connection") or {}
    version = ((target.get("status") or {}).get("database") or {}).get("serverVersion")
    where = f"{connection.get('database', '?')} on {connection.get('host', '?')}:{connection.get('port', 5432)}"
    return f"{where} (PostgreSQL {version})" if version else where


def _top(spans: Sequence[Interval], texts: dict[str, str], show: Any) -> list[StatementLine]:
    totals: dict[str, list[float]] = {}
    for span in spans:
        for qid, usage in span.usage.items():
            calls_total = totals.setdefault(qid, [0, 0.0])
            calls_total[0] += usage.calls
            calls_total[1] += usage.total_ms
    repeated = {q: t for q, t in totals.items() if t[0] >= MIN_CALLS and is_workload(texts.get(q, "SELECT"))}
    ranked = sorted(repeated.items(), key=lambda item: -item[1][1])[:TOP_STATEMENTS]
    lines = []
    for number, (qid, (calls, total)) in enumerate(ranked, 1):
        means = [round(m, 4) if (m := _mean(span, qid)) is not None else None for span in spans]
        known = [m for m in means if m is not None]
        first, last = (known[0], known[-1]) if known else (None, None)
        trend = round(100 * (last - first) / first, 1) if first and last is not None and len(known) > 1 else None
        lines.append(
            StatementLine(
                label=f"Q{number}",
                query_id=qid,
                query=show(texts.get(qid, f"queryid {qid}")),  # stored before piiSafe was turned on, perhaps
                calls=int(calls),
                total_ms=round(total, 3),
                first_mean_ms=first,
                last_mean_ms=last if len(known) > 1 else None,
                trend_percent=trend,
                means_ms=means,
            )
        )
    return lines


def _mean(span: Interval, qid: str) -> float | None:
    usage = span.usage.get(qid)
    return usage.mean_ms if usage is not None else None


def _rates(spans: Sequence[Interval]) -> dict[str, float]:
    """Calls per day of each statement over the intervals of known length."""
    seconds = sum((s.end - s.start).total_seconds() for s in spans if s.start is not None)
    if seconds <= 0:
        return {}
    calls: Tally[str] = Tally()
    for span in spans:
        if span.start is not None:
            for qid, usage in span.usage.items():
                calls[qid] += usage.calls
    return {qid: n * 86400 / seconds for qid, n in calls.items()}


def _reads(change: dict[str, Any], recommendation: dict[str, Any] | None) -> list[str]:
    baseline = ((change.get("status") or {}).get("baseline") or {}).get("reads") or []
    if baseline:
        return [str(r["queryId"]) for r in baseline]
    evidence = ((recommendation or {}).get("spec") or {}).get("evidence") or {}
    return [str(s["queryId"]) for s in evidence.get("statements") or []]


def _change(
    change: dict[str, Any],
    recommendation: dict[str, Any] | None,
    rates: dict[str, float],
    show: Any,
    *,
    pii_safe: bool = True,
) -> ChangeLine:
    spec, status = change.get("spec") or {}, change.get("status") or {}
    verification = status.get("verification") or {}
    benchmark = ((recommendation or {}).get("status") or {}).get("benchmark") or {}
    before, after = verification.get("baselineMeanMs"), verification.get("afterMeanMs")
    operation = spec.get("operation", "?")
    storage = status.get("estimatedBytes")
    if operation == "drop":
        size = (((recommendation or {}).get("spec") or {}).get("evidence") or {}).get("estimatedSizeBytes")
        storage = -int(size) if size else None
    reads = _reads(change, recommendation)
    per_day = sum(rates.get(q, 0.0) for q in reads) if rates else None
    saved = None
    if per_day is not None and before is not None and after is not None and status.get("phase") == "Applied":
        saved = round((before - after) / 1000 * per_day, 3)
    reason = None
    if status.get("phase") in ("RolledBack", "Failed"):
        # what went wrong (a failed verification or statement) says more than the rollback that followed it
        entries = status.get("history") or []
        failed = [e for e in entries if e.get("outcome") == "Failed" and e.get("message")]
        undone = [e for e in entries if e.get("action") == "Rollback" and e.get("message")]
        last = (failed or undone or [{}])[-1]
        reason = _reason(last, pii_safe) or verification.get("verdict")
    index = spec.get("index") or {}
    table = spec.get("table") or {}
    sandbox, sample_percent = benchmark.get("speedup"), benchmark.get("samplePercent")
    production = scaling.production_speedup(before, after) if operation != "drop" else None
    subject = (
        index.get("name")
        or (f"index on {index.get('schema') or 'public'}.{index.get('table')}" if index else None)
        or (spec.get("setting") or {}).get("name")
        or (f"{table.get('schema') or 'public'}.{table.get('name')}" if table else "?")
    )
    return ChangeLine(
        name=change["metadata"]["name"],
        operation=operation,
        subject=str(subject),
        phase=status.get("phase") or "?",
        sql=show(status.get("sql") or ""),
        applied_at=_time(status.get("appliedAt")),
        completed_at=_time(status.get("completedAt")),
        recommendation=(spec.get("recommendationRef") or {}).get("name"),
        sandbox_speedup=benchmark.get("speedup"),
        sandbox_improvement_percent=benchmark.get("improvementPercent"),
        sandbox_data_mode=benchmark.get("dataMode"),
        sandbox_sample_percent=sample_percent,
        sandbox_lower_bound=scaling.is_lower_bound(benchmark.get("dataMode"), sandbox),
        sandbox_scan_estimate=scaling.scan_bound_estimate(
            sandbox, scaling.sample_fraction(benchmark.get("dataMode"), sample_percent)
        ),
        production_before_ms=before,
        production_after_ms=after,
        production_change_percent=verification.get("regressionPercent"),
        production_speedup=production,
        production_over_sandbox=scaling.production_over_sandbox(production, sandbox),
        verdict=verification.get("verdict"),
        storage_bytes=int(storage) if storage is not None else None,
        calls_per_day=round(per_day, 1) if per_day is not None else None,
        saved_seconds_per_day=saved,
        reason=reason,
    )


def _cumulative(
    spans: Sequence[Interval], applied: Sequence[ChangeLine], changes: Sequence[dict[str, Any]]
) -> list[SeriesPoint]:
    """Time saved, summed interval by interval after each change (see the module's docstring)."""
    by_name = {c["metadata"]["name"]: c for c in changes}
    since: dict[str, datetime] = {}  # statement -> when the first change affecting it was applied
    for line in applied:
        if line.applied_at is None:
            continue
        for qid in _reads(by_name[line.name], None):
            since[qid] = min(since.get(qid, line.applied_at), line.applied_at)
    if not since:
        return []
    first = min(since.values())
    series, total = [SeriesPoint(at=first, value=0.0)], 0.0
    for index, span in enumerate(spans):
        if span.end <= first:
            continue
        for qid, applied_at in since.items():
            usage = span.usage.get(qid)
            before = next(
                (m for s in reversed(spans[:index]) if s.end <= applied_at and (m := _mean(s, qid)) is not None), None
            )
            if usage is None or usage.mean_ms is None or before is None or span.end <= applied_at:
                continue
            total += (before - usage.mean_ms) * usage.calls / 1000
        series.append(SeriesPoint(at=span.end, value=round(total, 3)))
    return series if len(series) > 1 else []


def _reason(entry: dict[str, Any], pii_safe: bool) -> str | None:
    """A history entry's message for the report. A failed statement's is ``"<sql> failed: <the server's words>"``
    (a partial index's predicate literal, a value the server refused, quoted): with PII-safe on, it is redacted as
    a database's error message; a verification's is the operator's own measurement and stays as written."""
    message = entry.get("message")
    if not message or not pii_safe or entry.get("action") == "Verify":
        return message
    return redact_error(str(message))


def _pending(recommendations: Sequence[dict[str, Any]], show: Any) -> list[PendingLine]:
    waiting = [r for r in recommendations if (r.get("status") or {}).get("phase") == "Pending"]
    lines = [
        PendingLine(
            name=r["metadata"]["name"],
            kind=r["spec"].get("kind", "?"),
            sql=show(r["spec"].get("sql", "")),
            estimated_improvement_percent=(r["spec"].get("evidence") or {}).get("estimatedImprovementPercent"),
            measured_speedup=((r.get("status") or {}).get("benchmark") or {}).get("speedup"),
        )
        for r in waiting
    ]
    return sorted(lines, key=lambda p: -(p.estimated_improvement_percent or 0))[:PENDING_SHOWN]


def _notes(report: Report, status: dict[str, Any]) -> list[str]:
    notes = []
    if report.snapshots < 2:
        notes.append(
            f"{report.snapshots} statement snapshot(s) in the period: trends, calls per day and time saved need at "
            "least two (one is taken at every analysis)."
        )
    if report.in_progress:
        notes.append(f"{report.in_progress} change(s) still in progress are not counted.")
    if any(c.sandbox_lower_bound for c in report.applied):
        notes.append(
            "Sandbox speed-ups marked ≥ were measured on a sample of each table: a scan's time grows with the table "
            "and an index lookup's barely, so production's speed-up is at least that (about the sample's speed-up "
            "divided by its share of rows for a statement that scanned the table before)."
        )
    if any(c.saved_seconds_per_day is None for c in report.applied):
        notes.append("Changes without a verification measurement or a known call rate have no time-saved figure.")
    return notes
