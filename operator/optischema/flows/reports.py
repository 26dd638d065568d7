"""Statement history and reports, between the cluster and the pure ``reports`` package: record a point after each
analysis, gather what a report needs, and write the scheduled report (the ``TuningReport`` ``<target>-report``).

Earlier versions wrote the scheduled report to a ConfigMap of the same name; that ConfigMap is left as it is (owned
by its target, it is garbage-collected with it) and no longer updated or read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from optischema.analysis.report import Recommendation
from optischema.api.durations import parse_duration
from optischema.api.reports import REPORT_MAX_BYTES, TuningReport, stored_size
from optischema.api.resources import API_VERSION, owner_reference
from optischema.api.target import PostgresTargetSpec, Reports
from optischema.kube import history as stored
from optischema.kube.client import ApiException, Kube
from optischema.notify.deliver import Notifier
from optischema.reports import history
from optischema.reports.build import build
from optischema.reports.model import Report
from optischema.reports.render import FORMATS, render
from optischema.reports.schedule import due
from optischema.telemetry import REPORTS, log_for

from . import notifications


def _reports_of(target: dict[str, Any]) -> Reports:
    try:
        return PostgresTargetSpec.model_validate(target.get("spec") or {}).reports
    except ValidationError:
        return Reports()


async def record(
    kube: Kube,
    target: dict[str, Any],
    statements: list[tuple[str, str, int, float, int]],
    recommendations: list[Recommendation],
    *,
    index_bytes: int,
    index_count: int,
    now: datetime,
) -> int:
    """Add the analysis's statement counters to the history and drop the days past retention; stored bytes."""
    spec = _reports_of(target)
    named = {s.query_id for r in recommendations for s in r.evidence.statements}
    point, texts = history.point_of(
        now, statements, keep=spec.history_statements, always=named, index_bytes=index_bytes,
        index_count=index_count, pii_safe=spec.pii_safe,
    )  # fmt: skip
    size = await stored.add(kube, target, point, texts)
    gone = await stored.prune(kube, target, parse_duration(spec.history_retention), now.date())
    log_for(target["metadata"]["namespace"], target["metadata"]["name"]).info(
        "history point recorded", statements=len(point.counters), bytes_today=size, days_deleted=len(gone)
    )
    return size


async def gather(kube: Kube, target: dict[str, Any], since: datetime, now: datetime) -> Report:
    """The report of ``target`` from ``since`` to ``now``, from the resources and history in the cluster."""
    namespace = target["metadata"]["namespace"]
    recommendations = await kube.list("tuningrecommendations", namespace)
    changes = await kube.list("indexchanges", namespace)
    # every day kept (retention bounds them): the interval ending first in the period starts at the point before it,
    # however long ago that was
    days = await stored.days(kube, target)
    return build(target, recommendations, changes, days, since=since, now=now, pii_safe=_reports_of(target).pii_safe)


REPORTS_PLURAL = "tuningreports"


def report_name(target: str) -> str:
    return f"{target[:240]}-report"


def report_body(target: dict[str, Any], report: Report, files: dict[str, str], now: datetime) -> dict[str, Any]:
    """The ``TuningReport`` of ``target`` holding ``files`` (format → text), the formats that do not fit left out
    (JSON first, then Markdown; the HTML is the one to keep). ``ValueError`` when even the HTML does not fit."""
    kept = dict(files)
    for extra in ("json", "md"):
        if stored_size(kept) > REPORT_MAX_BYTES:
            del kept[extra]
    if stored_size(kept) > REPORT_MAX_BYTES:
        raise ValueError(
            f"report.html: {stored_size(kept)} bytes as stored, more than a TuningReport holds ({REPORT_MAX_BYTES}); "
            "shorten spec.reports.period or lower spec.reports.historyStatements"
        )
    meta = target["metadata"]
    record = TuningReport.model_validate(
        {
            "apiVersion": API_VERSION,
            "metadata": {"name": report_name(meta["name"]), "namespace": meta["namespace"]},
            "report": {
                "targetRef": {"name": meta["name"]},
                "generatedAt": now,
                "since": report.since,
                "sizeBytes": len(kept["html"].encode()),
                "timeSavedPerDaySeconds": report.time_saved_per_day_seconds,
                **kept,
            },
        }
    )
    body = record.to_wire()
    body["metadata"].update(
        {
            "labels": {
                "app.kubernetes.io/name": "optischema",
                "app.kubernetes.io/component": "report",
                "optischema.io/target-uid": meta["uid"],
            },
            "annotations": {"optischema.io/target": meta["name"]},
            "ownerReferences": [owner_reference(target)],
        }
    )
    return body


async def scheduled(kube: Kube, notifier: Notifier, target: dict[str, Any], now: datetime) -> bool:
    """Write the scheduled report when one is due (and tell the sinks); True when one was written."""
    spec = _reports_of(target)
    meta, status = target["metadata"], target.get("status") or {}
    if spec.schedule is None:
        return False
    last = (status.get("lastReport") or {}).get("time") or meta.get("creationTimestamp")
    if not due(spec.schedule, spec.time_zone, _parse(last) if last else None, now):
        return False
    report = await gather(kube, target, now - parse_duration(spec.period), now)
    body = report_body(target, report, {fmt: render(report, fmt) for fmt in FORMATS}, now)
    name = body["metadata"]["name"]
    try:
        found: dict[str, Any] | None = await kube.get(REPORTS_PLURAL, meta["namespace"], name)
    except LookupError:
        found = None
    if found is None:
        if await kube.create(REPORTS_PLURAL, meta["namespace"], body) is None:
            return False  # created by another replica in between: the next check sees its lastReport
    else:
        try:
            await kube.replace(REPORTS_PLURAL, meta["namespace"], body, found["metadata"]["resourceVersion"])
        except ApiException as error:
            if error.status != 409:
                raise
            return False  # written by another replica in between: likewise
    size = body["report"]["sizeBytes"]
    REPORTS.labels(meta["namespace"], meta["name"]).inc()
    await kube.patch_status(
        "postgrestargets",
        meta["namespace"],
        meta["name"],
        {
            "lastReport": {
                "time": now.isoformat(),
                "configMap": name,
                "sizeBytes": size,
                "timeSavedPerDaySeconds": report.time_saved_per_day_seconds,
            }
        },
    )
    saved = report.time_saved_per_day_seconds
    summary = (
        f"{len(report.applied)} change(s) applied, {len(report.rolled_back)} rolled back, {len(report.failed)} failed "
        f"and {len(report.pending)} waiting since {report.since:%Y-%m-%d}; estimated time saved: "
        + (f"{saved:.1f} s/day" if saved is not None else "not measured yet")
        + f". Read it with: kubectl optischema report {meta['name']} -n {meta['namespace']} --format html -o "
        f"report.html (or: kubectl get tuningreport {name} -n {meta['namespace']} -o jsonpath='{{.report.html}}')"
    )
    await notifications.announce(
        notifier, kube, target, "reportReady", target, summary, episode=now.strftime("%Y%m%dT%H%M"),
        details={"tuningReport": name, "timeSavedPerDaySeconds": saved, "applied": len(report.applied),
                 "rolledBack": len(report.rolled_back), "pending": len(report.pending)},
    )  # fmt: skip
    return True


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
