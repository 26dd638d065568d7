"""The report as data: what the JSON format is, and what the Markdown and HTML formats render.

Field names are camelCase on the wire (``report.json``), like the custom resources; ``version`` changes when a
field changes meaning.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

VERSION = 1


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SeriesPoint(Model):
    at: datetime
    value: float


class StatementLine(Model):
    """A top statement of the period, by total time."""

    label: str
    """``Q1``…: how the charts name it."""
    query_id: str
    query: str
    calls: int
    total_ms: float
    first_mean_ms: float | None = None
    """Mean time in the period's first interval."""
    last_mean_ms: float | None = None
    """Mean time in the period's last interval."""
    trend_percent: float | None = None
    """``100 * (last - first) / first``: negative is faster."""
    means_ms: list[float | None] = Field(default_factory=list)
    """Mean per interval, oldest first (the sparkline)."""


class ChangeLine(Model):
    """An IndexChange of the period with what it bought, or why it was undone."""

    name: str
    operation: str
    subject: str
    """The index (or table, or setting) it changed."""
    phase: str
    sql: str
    applied_at: datetime | None = None
    completed_at: datetime | None = None
    recommendation: str | None = None
    sandbox_speedup: float | None = None
    sandbox_improvement_percent: float | None = None
    sandbox_data_mode: str | None = None
    sandbox_sample_percent: float | None = None
    sandbox_lower_bound: bool = False
    """The sandbox measured on a sample: production's speed-up is at least the sandbox's (analysis/scaling.py)."""
    sandbox_scan_estimate: float | None = None
    """The sample's speed-up at the table's real size if the statements scanned the table before."""
    production_before_ms: float | None = None
    production_after_ms: float | None = None
    production_change_percent: float | None = None
    production_speedup: float | None = None
    """Production's mean before over its mean after, from verification."""
    production_over_sandbox: float | None = None
    """How many times production's speed-up was the sandbox's: how far the sandbox is to be trusted."""
    verdict: str | None = None
    storage_bytes: int | None = None
    """Estimated size of the index created (positive) or dropped (negative)."""
    calls_per_day: float | None = None
    saved_seconds_per_day: float | None = None
    reason: str | None = None
    """Why it was rolled back or failed."""


class PendingLine(Model):
    name: str
    kind: str
    sql: str
    estimated_improvement_percent: float | None = None
    measured_speedup: float | None = None


class Report(Model):
    version: int = VERSION
    generated_at: datetime
    namespace: str
    target: str
    database: str
    since: datetime
    until: datetime
    snapshots: int
    """History points in the period."""
    top_statements: list[StatementLine] = Field(default_factory=list)
    recommendations_by_phase: dict[str, int] = Field(default_factory=dict)
    pending: list[PendingLine] = Field(default_factory=list)
    applied: list[ChangeLine] = Field(default_factory=list)
    rolled_back: list[ChangeLine] = Field(default_factory=list)
    failed: list[ChangeLine] = Field(default_factory=list)
    in_progress: int = 0
    storage_added_bytes: int = 0
    storage_removed_bytes: int = 0
    index_bytes_first: int | None = None
    index_bytes_last: int | None = None
    storage_series: list[SeriesPoint] = Field(default_factory=list)
    """Index storage of the database at each point (bytes)."""
    time_saved_per_day_seconds: float | None = None
    time_saved_series: list[SeriesPoint] = Field(default_factory=list)
    """Cumulative time saved (seconds), measured from the statement history after each change."""
    sandbox_trust_changes: int = 0
    """Applied changes with both a sandbox and a production speed-up."""
    sandbox_trust_min: float | None = None
    sandbox_trust_median: float | None = None
    sandbox_trust_max: float | None = None
    """Production's speed-up over the sandbox's across those changes: smallest, median, largest."""
    notes: list[str] = Field(default_factory=list)
