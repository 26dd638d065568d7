"""Two kinds the operator writes and never watches: a target's statement history, one ``StatementHistory`` per UTC
day, and its scheduled report, one ``TuningReport`` (as trivy-operator and Kyverno keep their reports).

Why custom resources rather than ConfigMaps: RBAC grants by resource, not by label, and these names are per target
and per day, so a role that may read the reports could only be written as "every ConfigMap of the namespace"
(application configuration included). With kinds of their own, ``optischema-viewer`` reads
``statementhistories`` and ``tuningreports`` and no ConfigMap at all.

Both are records, not requests: no ``spec`` to reconcile, no status subresource, no kopf handler and no admission
webhook (``RECORDS`` is kept apart from ``resources.RESOURCES``, which handlers and the webhook serve). Each is
owned by its PostgresTarget (deleted with it) and labelled with the target's uid. The API server stores custom
resources as JSON with a limit of about 1.5 MiB per object (etcd's request size), which the limits below keep
well clear of.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Literal

from pydantic import Field

from .base import ApiModel, LocalObjectReference
from .resources import _AGE, PrinterColumn, ResourceInfo, _Resource

#: What the API server accepts in one custom object (etcd's default ``--max-request-bytes``), metadata included.
OBJECT_LIMIT_BYTES = 1536 * 1024
#: A history day's gzip-compressed bytes at most; base64 adds a third, so the object stays near 800 kB.
HISTORY_MAX_BYTES = 600 * 1024
#: A report's formats at most as the API server stores them (JSON-escaped, see ``stored_size``): room is left for
#: the metadata (owner reference, managed fields) under ``OBJECT_LIMIT_BYTES``.
REPORT_MAX_BYTES = 1200 * 1024


class HistoryDay(ApiModel):
    """One UTC day of a target's statement counters."""

    target_ref: LocalObjectReference
    """The PostgresTarget these statements were collected from."""
    day: date
    """The UTC day (``YYYY-MM-DD``) of every point; the object's name ends with it as ``YYYYMMDD``."""
    points: int = Field(ge=0)
    """How many analyses left a point this day (halved when the day outgrows ``data``'s limit)."""
    size_bytes: int = Field(ge=0, le=HISTORY_MAX_BYTES)
    """Size of ``data`` once decoded (gzip-compressed JSON), at most 600 KiB."""
    data: str = Field(max_length=(HISTORY_MAX_BYTES + 2) // 3 * 4, json_schema_extra={"format": "byte"})
    """The day as gzip-compressed JSON (``reports/history.py``: statement texts once, then each point's counters),
    base64-encoded; a day that would exceed 600 KiB keeps every other point, so the object stays far below the API
    server's ~1.5 MiB limit."""


class StatementHistory(_Resource):
    """One UTC day of a target's statement history, from which reports measure what tuning bought: the operator or
    an analysis Job adds a point after each analysis; days older than ``spec.reports.historyRetention`` are
    deleted."""

    kind: Literal["StatementHistory"] = "StatementHistory"
    history: HistoryDay


class ReportFiles(ApiModel):
    """A target's scheduled report in its three formats."""

    target_ref: LocalObjectReference
    """The PostgresTarget reported on."""
    generated_at: datetime
    """When the report was written (it covers ``spec.reports.period`` up to this time)."""
    since: datetime
    """The start of the period covered."""
    size_bytes: int = Field(ge=0)
    """Size of ``html`` in bytes (UTF-8)."""
    time_saved_per_day_seconds: float | None = None
    """The estimated time saved per day the report shows; unset while nothing was measured."""
    html: str = Field(max_length=REPORT_MAX_BYTES)
    """The report as one self-contained HTML page (inline SVG charts): always kept."""
    md: str | None = Field(default=None, max_length=REPORT_MAX_BYTES)
    """The report in Markdown; left out when the three formats together would exceed about 1.2 MiB as stored."""
    json_: str | None = Field(default=None, alias="json", max_length=REPORT_MAX_BYTES)
    """The report as JSON text (the ``--format json`` document); left out first when the formats would exceed about
    1.2 MiB as stored, the API server's object limit being ~1.5 MiB."""


class TuningReport(_Resource):
    """A target's latest scheduled report (``<target>-report``), replaced at each time of ``spec.reports.schedule``;
    read it with ``kubectl get tuningreport <target>-report -o jsonpath='{.report.html}'``."""

    kind: Literal["TuningReport"] = "TuningReport"
    report: ReportFiles


def stored_size(texts: dict[str, str]) -> int:
    """Bytes ``texts`` take in the object as the API server stores it: JSON, where Go escapes ``<``, ``>`` and ``&``
    as six bytes each (an HTML report is full of them), besides quotes, backslashes and control characters."""
    return sum(
        len(json.dumps(key)) + 1 + len(json.dumps(text, ensure_ascii=False).encode())
        + 5 * (text.count("<") + text.count(">") + text.count("&"))
        for key, text in texts.items()
    )  # fmt: skip


#: The kinds the operator writes as records: CRDs generated and installed with the others, but no kopf handler
#: and no webhook serve them.
RECORDS: tuple[ResourceInfo, ...] = (
    ResourceInfo(
        StatementHistory,
        "StatementHistory",
        "statementhistories",
        "statementhistory",
        ("pgsh",),
        (
            PrinterColumn("Target", "string", ".history.targetRef.name", "The PostgresTarget."),
            PrinterColumn("Day", "string", ".history.day", "The UTC day of the points."),
            PrinterColumn("Points", "integer", ".history.points", "Analyses recorded that day."),
            PrinterColumn("Size", "integer", ".history.sizeBytes", "Compressed bytes stored."),
            _AGE,
        ),
        status=False,
    ),
    ResourceInfo(
        TuningReport,
        "TuningReport",
        "tuningreports",
        "tuningreport",
        ("trep",),
        (
            PrinterColumn("Target", "string", ".report.targetRef.name", "The PostgresTarget."),
            PrinterColumn("Generated", "date", ".report.generatedAt", "When the report was written."),
            PrinterColumn("Size", "integer", ".report.sizeBytes", "Bytes of the HTML report."),
            PrinterColumn(
                "Saved-Per-Day", "number", ".report.timeSavedPerDaySeconds", "Estimated seconds saved per day."
            ),
            _AGE,
        ),
        status=False,
    ),
)
