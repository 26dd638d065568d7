"""Statement history and reports, between the cluster and the pure ``reports`` package: record a point after each
analysis, gather what a report needs, and write the scheduled report (ConfigMap ``<target>-report``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from optischema.analysis.report import Recommendation
from optischema.api.durations import parse_duration
from optischema.api.resources import owner_reference
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

MAX_CONFIG_MAP_BYTES = 900 * 1024


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


def report_name(target: str) -> str:
    return f"{target[:240]}-report"


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
    files = {f"report.{fmt}": render(report, fmt) for fmt in FORMATS}
    for extra in ("report.json", "report.md"):  # a ConfigMap holds 1 MiB: the HTML is the one to keep
        if sum(len(t.encode()) for t in files.values()) > MAX_CONFIG_MAP_BYTES:
            del files[extra]
    name = report_name(meta["name"])
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/name": "optischema", "app.kubernetes.io/component": "report"},
            "annotations": {"optischema.io/generated-at": now.isoformat()},
            "ownerReferences": [owner_reference(target)],
        },
        "data": files,
    }
    found = await kube.read_config_map(meta["namespace"], name)
    try:
        await kube.write_config_map(meta["namespace"], body, found.metadata.resource_version if found else None)
    except ApiException as error:
        if error.status != 409:
            raise
        return False  # written by another replica in between: the next check sees its lastReport
    size = len(files["report.html"].encode())
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
        f"report.html (or ConfigMap {name})"
    )
    await notifications.announce(
        notifier, kube, target, "reportReady", target, summary, episode=now.strftime("%Y%m%dT%H%M"),
        details={"configMap": name, "timeSavedPerDaySeconds": saved, "applied": len(report.applied),
                 "rolledBack": len(report.rolled_back), "pending": len(report.pending)},
    )  # fmt: skip
    return True


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
