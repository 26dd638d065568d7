"""``IndexChange``: one change to apply in a maintenance window, from an approval or from a Git commit.

It carries a structured index definition only; raw SQL is not accepted, which is what makes a Git-reviewed change
safe to apply unattended. Its ``status.history`` is the audit trail: entries are appended, never rewritten.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from .base import ApiModel, LocalObjectReference, cel_rules, immutable
from .conditions import CONDITIONS_LIST, Condition
from .index import IndexDefinition
from .operations import SettingChange, TableRef

IMMUTABLE = immutable("create a new IndexChange (and delete this one) to change it")
IndexChangePhase = Literal[
    "Pending", "WaitingForWindow", "Applying", "Verifying", "Applied", "RolledBack", "Failed", "Superseded"
]


class Verification(ApiModel):
    """How an applied change is judged, and what happens when it makes things worse."""

    max_regression_percent: float = Field(default=50.0, ge=0, le=1000)
    """Largest tolerated increase of the affected statements' mean time, against the baseline taken before. The
    default is set above the noise of that comparison: ``make bench`` (bench/false_reverts.py) builds an index no
    statement uses 30 times under the shop mix and judges each build as verification does; the reads' mean moved by
    up to +54 % (95th percentile +39 %) for no reason, so the former default of 10 % rolled back 13 % of those
    harmless changes and 50 % rolls back 3 % (goal < 5 %) while a real regression (+200 %) is still caught."""
    max_write_regression_percent: float = Field(default=75.0, ge=0, le=1000)
    """Largest tolerated increase of the table's write statements' mean time. Measured like the reads: the writes'
    mean moved by up to +104 % (95th percentile +56 %) with an index no statement uses; below 0.1 ms of difference
    nothing counts as a regression anyway (``changes.verdict.NOISE_MS``)."""
    observe_seconds: int = Field(default=300, ge=0, le=86400)
    """How long to observe the workload after applying before judging it."""
    min_calls: int = Field(default=20, ge=1)
    """Calls needed after the change for a verdict; fewer means the change stays (``Applied``, noted as
    unverified)."""


class Rollback(ApiModel):
    """Undoing the change."""

    automatic: bool = True
    """Undo the change automatically when verification finds a regression beyond the thresholds."""


class IndexChangeSpec(ApiModel):
    """Desired change. The target, operation and definition are immutable: to change them, make a new object."""

    model_config = cel_rules(
        (
            "!(self.operation in ['create', 'drop', 'reindex']) || has(self.index)",
            "index is required to create, drop or reindex",
        ),
        (
            "!(self.operation in ['drop', 'reindex']) || has(self.index.name)",
            "index.name is required to drop or reindex",
        ),
        ("self.operation != 'analyze' || has(self.table)", "table is required to analyze"),
        ("self.operation != 'setting' || has(self.setting)", "setting is required for a setting change"),
    )

    target_ref: LocalObjectReference = Field(json_schema_extra=IMMUTABLE)
    """The ``PostgresTarget`` (same namespace) to change."""
    operation: Literal["create", "drop", "reindex", "analyze", "setting"] = Field(json_schema_extra=IMMUTABLE)
    """``create`` (``CREATE INDEX CONCURRENTLY``), ``drop`` (``DROP INDEX CONCURRENTLY``), ``reindex``
    (``REINDEX INDEX CONCURRENTLY``), ``analyze`` (``ANALYZE`` or ``VACUUM (ANALYZE)``) or ``setting``
    (``ALTER SYSTEM SET`` of an allow-listed setting, then a reload)."""
    index: IndexDefinition | None = Field(default=None, json_schema_extra=IMMUTABLE)
    """The index, as data, for ``create``/``drop``/``reindex``; the operator renders the SQL."""
    table: TableRef | None = Field(default=None, json_schema_extra=IMMUTABLE)
    """The table, for ``analyze``."""
    setting: SettingChange | None = Field(default=None, json_schema_extra=IMMUTABLE)
    """The setting, for ``setting``."""
    schedule: Literal["nextWindow", "immediate"] = "nextWindow"
    """Apply in the next maintenance window, or at once when the target's policy allows ``immediate``."""
    recommendation_ref: LocalObjectReference | None = Field(default=None, json_schema_extra=IMMUTABLE)
    """The recommendation this came from; absent for a change written in Git."""
    system_identifier: str | None = Field(default=None, pattern=r"^[0-9]{1,20}$", json_schema_extra=IMMUTABLE)
    """The database's ``system_identifier`` (``kubectl get pgt -o jsonpath='{.status.database.systemIdentifier}'``):
    when set, the change is refused unless the target still points at that database. Set by the operator from
    approvals; recommended in Git so a change reviewed for one database never runs on another."""
    verification: Verification = Field(default_factory=Verification)
    """How the result is judged."""
    rollback: Rollback = Field(default_factory=Rollback)
    """Whether a regression is undone automatically."""

    @model_validator(mode="after")
    def _member_for_operation(self) -> IndexChangeSpec:
        wanted = {"analyze": "table", "setting": "setting"}.get(self.operation, "index")
        present = [m for m in ("index", "table", "setting") if getattr(self, m) is not None]
        if present != [wanted]:
            raise ValueError(
                f"operation {self.operation} takes {wanted} and nothing else (got: {', '.join(present) or 'none'})"
            )
        if self.operation in ("drop", "reindex") and self.index is not None and not self.index.name:
            raise ValueError(f"index.name is required to {self.operation} an index")
        return self


class TimeWindow(ApiModel):
    """A concrete occurrence of a maintenance window."""

    start: datetime
    """Start (UTC)."""
    end: datetime
    """End (UTC)."""


class AuditEntry(ApiModel):
    """One step taken on the database or the change, appended and never rewritten."""

    time: datetime
    """When the step started."""
    actor: str = Field(max_length=512)
    """Who caused it: the operator's identity, the approver, or ``policy:<target>``."""
    action: Literal[
        "Accepted",
        "Rejected",
        "Scheduled",
        "Precheck",
        "Recheck",
        "Execute",
        "Verify",
        "Rollback",
        "Cleanup",
        "Retry",
        "Fail",
    ]
    """What was done."""
    sql: str | None = Field(default=None, max_length=65536)
    """The statement executed, if any."""
    outcome: Literal["Succeeded", "Failed", "Skipped"]
    """How it ended."""
    message: str = Field(default="", max_length=4096)
    """Details: the error, the measured numbers, the reason."""
    duration_seconds: float | None = Field(default=None, ge=0)
    """How long the step took."""


class VerificationResult(ApiModel):
    """What verification measured."""

    baseline_mean_ms: float | None = Field(default=None, ge=0)
    """Mean time of the affected statements before the change."""
    after_mean_ms: float | None = Field(default=None, ge=0)
    """Mean time after the change."""
    regression_percent: float | None = None
    """``100 * (after - before) / before``; negative is an improvement."""
    verdict: Literal["Improved", "Neutral", "Regressed", "Inconclusive"] | None = None
    """The judgement."""


class StatementCounters(ApiModel):
    """A statement's cumulative ``pg_stat_statements`` counters when the baseline was taken."""

    query_id: str = Field(pattern=r"^-?[0-9]+$")
    """``queryid``."""
    calls: int = Field(ge=0)
    """Calls so far."""
    total_ms: float = Field(ge=0)
    """Total execution time so far (ms)."""


class Baseline(ApiModel):
    """What verification compares against, taken just before the change ran."""

    taken_at: datetime
    """When the counters were read."""
    reads: list[StatementCounters] = Field(default_factory=list, max_length=100)
    """Statements the change should speed up."""
    writes: list[StatementCounters] = Field(default_factory=list, max_length=100)
    """The table's write statements, whose slowdown is bounded by ``maxWriteRegressionPercent``."""
    postmaster_start_time: datetime | None = None
    """``pg_postmaster_start_time()`` when the counters were read: a server restarted since (a failover) makes the
    counters incomparable, and the verdict ``Inconclusive``."""
    stats_reset: datetime | None = None
    """``pg_stat_statements_info.stats_reset`` when the counters were read (absent before PostgreSQL 14): a reset
    since makes the verdict ``Inconclusive``, never a rollback."""


class RolloutStep(ApiModel):
    """One step of a partitioned index's rollout, as recorded in ``status.execution.steps``."""

    step: str = Field(max_length=160, pattern=r"^(only|build|attach|reindex):")
    """``kind:schema.index``: ``only`` (``CREATE INDEX … ON ONLY`` a partitioned table), ``build`` (``CREATE INDEX
    CONCURRENTLY`` on a partition), ``attach`` (``ALTER INDEX … ATTACH PARTITION``) or ``reindex`` (an attached
    partition's INVALID index rebuilt)."""
    state: Literal["Started", "Done"]
    """``Started`` is written before the statement is sent, ``Done`` after it finished."""


class Execution(ApiModel):
    """Written to the status *before* the first statement runs: the proof that an index found later under this
    name was built by this change (with the definition checked against the catalog), not by someone else."""

    started_at: datetime
    """When the operator first sent the statement."""
    sql: str = Field(max_length=65536)
    """The statements it sent, as rendered then."""
    index_name: str | None = Field(default=None, max_length=63)
    """The index the statements create or drop."""
    steps: list[RolloutStep] = Field(
        default_factory=list, max_length=4096, json_schema_extra={"x-kubernetes-list-type": "atomic"}
    )
    """For an index on a partitioned table, its rollout's steps so far (``changes.partitioned``): each is recorded
    ``Started`` before its statement is sent, which is what proves a partition's index found later under that name
    to be this change's own, and ``Done`` after. ``sql`` is then the parent's ``CREATE INDEX … ON ONLY``."""
    cluster_patched_at: datetime | None = None
    """For a CloudNativePG Cluster's setting: when the Cluster was patched (recorded right after); the rollout is
    waited for from then, and the Cluster is never patched a second time by the same change."""


class ReplacedSetting(ApiModel):
    """A setting as the server had it right before the change's ``ALTER SYSTEM``: what the rollback restores (never
    ``spec.setting.currentValue``, which whoever wrote the change chose)."""

    value: str = Field(max_length=256)
    """``current_setting(name)`` then."""
    source: str = Field(max_length=64)
    """Where it came from (``pg_settings.source``; ``ALTER SYSTEM`` for ``postgresql.auto.conf``)."""


class IndexChangeStatus(ApiModel):
    """Observed state of an ``IndexChange``, written by the operator only."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` last reconciled."""
    phase: IndexChangePhase | None = None
    """Where the change is: ``Pending`` (admission is waiting to reach the database) → ``WaitingForWindow`` →
    ``Applying`` → ``Verifying`` → ``Applied`` (or ``RolledBack`` / ``Failed``; ``Superseded`` when its
    recommendation no longer holds before it ran). ``Applying`` goes back to ``WaitingForWindow`` when the window
    closes before a statement or the connection is lost mid-statement (``optischema.lifecycle.indexchange``)."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    """``Ready``, ``Reconciling`` and ``Stalled``, per the Kubernetes API conventions."""
    sql: str | None = None
    """The SQL the operator rendered and will run (or ran)."""
    estimated_bytes: int | None = Field(default=None, ge=0)
    """Estimated size of the new index, counted against the target's ``indexStorageBudget``."""
    rollback_sql: str | None = None
    """The SQL that undoes it."""
    window: TimeWindow | None = None
    """The maintenance window used (or awaited)."""
    started_at: datetime | None = None
    """When applying started."""
    applied_at: datetime | None = None
    """When the statement finished; verification observes the workload from here."""
    baseline: Baseline | None = None
    """Counters taken before the change, for verification (kept so a restarted operator verifies the same way)."""
    system_identifier: str | None = Field(default=None, pattern=r"^[0-9]{1,20}$")
    """The database the change was admitted for (``spec.systemIdentifier``, else the target's at admission), then
    the one the pre-checks ran on; every later statement (and the rollback) runs only on that one."""
    execution: Execution | None = None
    """Marker written before executing; see ``Execution``."""
    dropped_definition: str | None = Field(default=None, max_length=65536)
    """For a drop: ``pg_get_indexdef`` of the index, captured just before it was dropped; the rollback re-creates
    exactly this."""
    replaced_setting: ReplacedSetting | None = None
    """For a setting: its value and source captured just before ``ALTER SYSTEM``; the rollback restores exactly
    this (``ALTER SYSTEM RESET`` when it came from the default or ``postgresql.conf``)."""
    completed_at: datetime | None = None
    """When the change reached a final phase."""
    duration_seconds: float | None = Field(default=None, ge=0)
    """Time spent executing SQL."""
    verification: VerificationResult | None = None
    """What verification measured."""
    history: list[AuditEntry] = Field(default_factory=list, json_schema_extra={"x-kubernetes-list-type": "atomic"})
    """Audit trail, oldest first; entries are only appended."""
