"""``TuningRecommendation``: one finding, its evidence, and a person's (or the policy's) decision on it.

The proposal (kind, change, SQL) is immutable once created and the decision is made once; both are enforced by
CEL rules in the API server, so an approver can approve or reject exactly what was measured, nothing else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from .base import ApiModel, LocalObjectReference, cel_rules, immutable
from .conditions import CONDITIONS_LIST, Condition
from .index import IndexDefinition, PartitionRef
from .operations import MaintenanceAdvice, SettingChange, TableRef
from .target import Risk

RecommendationKind = Literal["createIndex", "dropIndex", "reindex", "analyze", "setting", "queryRewrite", "maintenance"]
ApprovalState = Literal["Pending", "Approved", "Rejected"]
#: Where a recommendation is in its life; ``optischema.lifecycle.recommendation`` owns the transitions between them.
RecommendationPhase = Literal[
    "Benchmarking",
    "AwaitingApproval",
    "Approved",
    "Rejected",
    "Applied",
    "RolledBack",
    "Failed",
    "Superseded",
]

#: Longest compact plan kept per statement (``planBefore``/``planAfter``): enough for a dozen nodes.
PLAN_CHARS = 2048
IMMUTABLE = immutable("the proposal is what was measured; a new analysis makes a new recommendation")


class QueryRewrite(ApiModel):
    """A suggested rewrite of one statement, for its developers; never applied by the operator."""

    query_id: str = Field(pattern=r"^-?[0-9]+$")
    """``pg_stat_statements.queryid`` of the original statement."""
    fingerprint: str = Field(min_length=1, max_length=64)
    """Fingerprint of the normalised original."""
    original: str = Field(min_length=1, max_length=65536)
    """The normalised original statement."""
    rewritten: str = Field(min_length=1, max_length=65536)
    """The proposed statement, returning the same rows."""


class RecommendedChange(ApiModel):
    """The structured change; exactly the member matching the recommendation's ``kind`` is set."""

    index: IndexDefinition | None = None
    """For ``createIndex``, ``dropIndex`` and ``reindex``: the index to create, or the existing one to drop (its
    full definition, which the rollback re-creates) or to rebuild with ``REINDEX INDEX CONCURRENTLY``."""
    partitions: list[PartitionRef] | None = Field(
        default=None, max_length=1024, json_schema_extra={"x-kubernetes-list-type": "atomic"}
    )
    """For ``createIndex`` on a partitioned table: its partitions when the analysis ran (the first 1024, nearest
    the table first), so that ``sql`` shows the rollout for review (``CREATE INDEX … ON ONLY`` the table, then per
    partition a concurrent build and an attach). The apply path reads the partitions again from the catalog when it
    runs, and builds on every one."""
    analyze: TableRef | None = None
    """For ``analyze``: the table whose statistics are stale."""
    setting: SettingChange | None = None
    """For ``setting``: the server setting."""
    query_rewrite: QueryRewrite | None = None
    """For ``queryRewrite``: the statement and its rewrite."""
    maintenance: MaintenanceAdvice | None = None
    """For ``maintenance``: table bloat, freeze risk or per-table autovacuum settings, for a DBA to act on; never
    applied by the operator."""


class StatementEvidence(ApiModel):
    """A statement the change affects, with its share of the workload."""

    query_id: str = Field(pattern=r"^-?[0-9]+$")
    """``pg_stat_statements.queryid`` (a signed 64-bit integer, as a string so no client rounds it)."""
    fingerprint: str = Field(min_length=1, max_length=64)
    """Stable fingerprint of the normalised statement, the same across servers and resets."""
    query: str = Field(default="", max_length=4096)
    """The normalised statement text (constants replaced by ``$n``), truncated to 4 KiB."""
    calls: int = Field(default=0, ge=0)
    """Calls since the statistics were reset."""
    total_time_ms: float = Field(default=0.0, ge=0)
    """Total execution time in milliseconds."""
    mean_time_ms: float = Field(default=0.0, ge=0)
    """Mean execution time in milliseconds."""
    cost_before: float | None = Field(default=None, ge=0)
    """Planner cost without the change."""
    cost_after: float | None = Field(default=None, ge=0)
    """Planner cost with the change (hypothetical, from HypoPG; for ``source: measured``, the cost without it scaled
    by the time measured on the sandbox copy)."""
    measured_before_ms: float | None = Field(default=None, ge=0)
    """For ``source: measured``: the statement's median time on the sandbox copy without the index (server-side)."""
    measured_after_ms: float | None = Field(default=None, ge=0)
    """The same with the index built."""
    plan_before: str | None = Field(default=None, max_length=PLAN_CHARS)
    """For ``createIndex``: the generic plan of the statement without the change, compact (one node a line: node
    type, relation, index, estimated rows and cost), cut to 2 KiB. Planned from the normalised text, so it holds
    ``$n`` parameters and never a value; conditions are redacted when the target is ``piiSafe``."""
    plan_after: str | None = Field(default=None, max_length=PLAN_CHARS)
    """The same plan with the proposed index in place (HypoPG's hypothetical index, named as the recommendation
    names it; for an index HypoPG cannot simulate, the plan measured on the sandbox copy when there is one)."""


class MaintenanceEvidence(ApiModel):
    """The figures behind a ``reindex`` or ``maintenance`` finding, as a DBA would check them."""

    size_bytes: int | None = Field(default=None, ge=0)
    """Size of the table (heap) or index."""
    wasted_bytes: int | None = Field(default=None, ge=0)
    """Bloat: bytes a rebuild would give back, from ``method``."""
    wasted_percent: float | None = Field(default=None, ge=0, le=100)
    """``wastedBytes`` as a share of ``sizeBytes``."""
    method: Literal["estimate", "pgstattuple"] | None = None
    """How bloat was found: ``estimate`` (from ``pg_class`` and ``pg_stats``, the pgsql-bloat-estimation formulas)
    or ``pgstattuple`` (measured with ``pgstattuple_approx`` or ``pgstatindex``)."""
    estimated_wasted_bytes: int | None = Field(default=None, ge=0)
    """The statistical estimate, also when a measurement was taken."""
    xid_age: int | None = Field(default=None, ge=0)
    """``age(relfrozenxid)`` of the table (or of its TOAST table, whichever is older)."""
    database_xid_age: int | None = Field(default=None, ge=0)
    """``age(datfrozenxid)`` of the database."""
    freeze_max_age: int | None = Field(default=None, ge=0)
    """``autovacuum_freeze_max_age`` in effect for the table: past it, autovacuum forces an aggressive vacuum."""
    live_tuples: int | None = Field(default=None, ge=0)
    """``n_live_tup``."""
    dead_tuples: int | None = Field(default=None, ge=0)
    """``n_dead_tup``."""
    modifications: int | None = Field(default=None, ge=0)
    """Rows updated or deleted since the statistics were reset (``n_tup_upd + n_tup_del``)."""
    autovacuum_count: int | None = Field(default=None, ge=0)
    """Autovacuum runs on the table since the statistics were reset."""
    last_autovacuum: datetime | None = None
    """When autovacuum last processed the table (absent: never since the statistics were reset)."""


class Evidence(ApiModel):
    """Why the change is proposed: the numbers a reviewer checks before approving."""

    statements: list[StatementEvidence] = Field(default_factory=list, max_length=50)
    """The statements helped (or, for a drop, the ones that wrote to the index), largest share first."""
    cost_before: float | None = Field(default=None, ge=0)
    """Workload cost of the affected statements without the change, weighted by calls."""
    cost_after: float | None = Field(default=None, ge=0)
    """The same with the change."""
    estimated_improvement_percent: float | None = Field(default=None, ge=-100, le=100)
    """``100 * (before - after) / before`` for the affected statements, write overhead included."""
    estimated_size_bytes: int | None = Field(default=None, ge=0)
    """Estimated size of a new index, or the size freed by a drop."""
    index_scans: int | None = Field(default=None, ge=0)
    """For a drop: scans of the index since the statistics were reset."""
    maintenance: MaintenanceEvidence | None = None
    """For ``reindex`` and ``maintenance``: bloat, transaction-ID age and autovacuum figures."""


class Approval(ApiModel):
    """The decision on a recommendation. Made once; the operator records who made it."""

    model_config = cel_rules(
        (
            "oldSelf.state == 'Pending' || self.state == oldSelf.state",
            "approval.state is decided once: it goes from Pending to Approved or Rejected, never back or across",
        ),
        ("self.state != 'Rejected' || (has(self.reason) && size(self.reason) > 0)", "a rejection needs a reason"),
    )

    state: ApprovalState = "Pending"
    """``Pending`` until decided, then ``Approved`` or ``Rejected`` for good."""
    reason: str | None = Field(default=None, max_length=1024)
    """Why it was approved or rejected; required for a rejection."""
    decided_by: str | None = Field(default=None, max_length=512)
    """Who decided, as the API server authenticated them (or ``policy:<target>`` for auto-approval). Filled by the
    operator's admission webhook; a value sent by a client is refused."""
    decided_at: datetime | None = None
    """When the decision was recorded."""
    when: Literal["nextWindow", "immediate"] = "nextWindow"
    """Apply in the next maintenance window, or at once when the target's policy allows ``immediate``."""

    @model_validator(mode="after")
    def _rejection_has_reason(self) -> Approval:
        if self.state == "Rejected" and not self.reason:
            raise ValueError("a rejection needs a reason")
        return self


#: Kinds whose change can be undone, and so must carry rollback SQL. ANALYZE and VACUUM only refresh statistics and
#: reclaim space; a query rewrite is never applied.
#: ``reindex`` rebuilds the same definition: nothing to undo. ``maintenance`` is advice, never applied (a per-table
#: autovacuum setting still shows the statement that undoes it, for the DBA who runs it).
_REVERSIBLE = {"createIndex", "dropIndex", "setting"}
_KIND_TO_MEMBER = {
    "createIndex": "index",
    "dropIndex": "index",
    "reindex": "index",
    "analyze": "analyze",
    "setting": "setting",
    "queryRewrite": "query_rewrite",
    "maintenance": "maintenance",
}


class TuningRecommendationSpec(ApiModel):
    """A proposed change and its evidence. Only ``approval`` may be edited after creation."""

    model_config = cel_rules(
        (
            "(self.kind in ['createIndex', 'dropIndex', 'reindex']) == has(self.change.index)",
            "change.index is set exactly for kinds createIndex, dropIndex and reindex",
        ),
        ("(self.kind == 'analyze') == has(self.change.analyze)", "change.analyze is set exactly for kind analyze"),
        ("(self.kind == 'setting') == has(self.change.setting)", "change.setting is set exactly for kind setting"),
        (
            "(self.kind == 'queryRewrite') == has(self.change.queryRewrite)",
            "change.queryRewrite is set exactly for kind queryRewrite",
        ),
        (
            "(self.kind == 'maintenance') == has(self.change.maintenance)",
            "change.maintenance is set exactly for kind maintenance",
        ),
        (
            "!(self.kind in ['dropIndex', 'reindex']) || !has(self.change.index) || has(self.change.index.name)",
            "change.index.name is required to drop or reindex an index",
        ),
    )

    target_ref: LocalObjectReference = Field(json_schema_extra=IMMUTABLE)
    """The ``PostgresTarget`` (same namespace) this recommendation is for."""
    kind: RecommendationKind = Field(json_schema_extra=IMMUTABLE)
    """What the change does."""
    change: RecommendedChange = Field(json_schema_extra=IMMUTABLE)
    """The structured change."""
    sql: str = Field(min_length=1, max_length=65536, json_schema_extra=IMMUTABLE)
    """The exact SQL the operator will run, rendered from ``change`` (shown for review)."""
    rollback_sql: str | None = Field(default=None, max_length=65536, json_schema_extra=IMMUTABLE)
    """The SQL that undoes it; absent for ``analyze`` and ``reindex`` (nothing to undo) and ``queryRewrite``
    (never applied). For ``maintenance`` (never applied) it is shown when there is something to undo."""
    evidence: Evidence = Field(default_factory=Evidence)
    """The numbers behind the proposal."""
    rationale: str = Field(default="", max_length=8192)
    """The reasoning in a few sentences, for the reviewer."""
    source: Literal["heuristic", "whatif", "measured", "llm"] = "whatif"
    """How it was priced: ``whatif`` (HypoPG's hypothetical index), ``measured`` (built on a sandbox copy and the
    statements timed there: GIN and GiST, which HypoPG cannot simulate), ``heuristic`` (statement shapes only, not
    costed); ``llm`` findings are re-checked by the what-if engine before they appear."""
    model: str | None = Field(default=None, max_length=200)
    """The LLM that suggested it, for ``source: llm``."""
    risk: Risk = "medium"
    """Operational risk: lock time, write overhead, and how much the change could hurt if the estimate is off."""
    system_identifier: str | None = Field(default=None, pattern=r"^[0-9]{1,20}$", json_schema_extra=IMMUTABLE)
    """The database's ``system_identifier`` when the analysis ran: the IndexChange made on approval carries it, and
    the apply path compares it with the database right before every statement (a repointed target is refused)."""
    approval: Approval = Field(
        default_factory=Approval, json_schema_extra={"default": {"state": "Pending", "when": "nextWindow"}}
    )
    """The decision; the only part a person edits. Defaulted to ``Pending`` by the API server. Everything else in
    the spec is written by the operator's analysis only (its admission webhook refuses other users' edits), and
    ``approval`` cannot change once decided."""

    @model_validator(mode="after")
    def _change_matches_kind(self) -> TuningRecommendationSpec:
        expected = _KIND_TO_MEMBER[self.kind]
        present = [
            member
            for member in ("index", "analyze", "setting", "query_rewrite", "maintenance")
            if getattr(self.change, member) is not None
        ]
        if present != [expected]:
            found = ", ".join(map(_camel, present)) or "none"
            raise ValueError(f"change must set exactly {_camel(expected)} for kind {self.kind} (found: {found})")
        if self.kind in ("dropIndex", "reindex") and self.change.index is not None and not self.change.index.name:
            verb = "drop" if self.kind == "dropIndex" else "reindex"
            raise ValueError(f"change.index.name is required to {verb} an index")
        if self.kind in _REVERSIBLE and not self.rollback_sql:
            raise ValueError(f"rollbackSql is required for kind {self.kind}")
        return self


def _camel(member: str) -> str:
    return "queryRewrite" if member == "query_rewrite" else member


class StatementBenchmark(ApiModel):
    """One statement as the sandbox ran it."""

    query_id: str = Field(pattern=r"^-?[0-9]+$")
    """``pg_stat_statements.queryid`` on the target."""
    write: bool = False
    """An INSERT, UPDATE or DELETE (run in a transaction that is rolled back)."""
    runs: int = Field(default=0, ge=0)
    """Timed executions on each side."""
    p50_before_ms: float | None = Field(default=None, ge=0)
    """Median latency before the change."""
    p50_after_ms: float | None = Field(default=None, ge=0)
    """Median latency after the change."""
    error: str | None = Field(default=None, max_length=1024)
    """Why the statement could not be measured (the others still were)."""


class Benchmark(ApiModel):
    """What the sandbox measured for the affected statements."""

    data_mode: Literal["sample", "full", "synthetic"]
    """How the sandbox was filled."""
    rows: int | None = Field(default=None, ge=0)
    """Rows in the sandbox's copy of the affected tables."""
    p50_before_ms: float | None = Field(default=None, ge=0)
    """Median latency before the change."""
    p50_after_ms: float | None = Field(default=None, ge=0)
    """Median latency after the change."""
    p95_before_ms: float | None = Field(default=None, ge=0)
    """95th-percentile latency before the change."""
    p95_after_ms: float | None = Field(default=None, ge=0)
    """95th-percentile latency after the change."""
    speedup: float | None = Field(default=None, ge=0)
    """``p50 before / p50 after`` over the affected statements, weighted by calls (2.0 means twice as fast)."""
    improvement_percent: float | None = Field(default=None, le=100)
    """``100 * (1 - after / before)``: what auto-approval compares with its minimum."""
    write_overhead_percent: float | None = None
    """Extra latency of the table's write statements with the change."""
    server_version: str | None = None
    """PostgreSQL version of the sandbox."""
    duration_seconds: float | None = Field(default=None, ge=0)
    """Time the benchmark took, sandbox preparation included."""
    completed_at: datetime | None = None
    """When it finished."""
    error: str | None = Field(default=None, max_length=4096)
    """Why the benchmark could not complete, if it could not."""
    statements: list[StatementBenchmark] = Field(default_factory=list, max_length=100)
    """Each statement's figures, or its error."""
    warnings: list[str] = Field(default_factory=list, max_length=50)
    """What the sandbox preparation skipped (a table it could not load, a schema object it could not restore)."""
    sample_percent: float | None = Field(default=None, gt=0, le=100)
    """Share of each table's rows the sandbox held (``sample`` mode only)."""
    speedup_is_lower_bound: bool = False
    """True when ``speedup`` was measured on a sample: a scan's time grows with the table and an index lookup's
    barely, so production's speed-up is at least this (up to about ``speedup / samplePercent * 100`` for a statement
    that scanned the whole table before)."""


class TuningRecommendationStatus(ApiModel):
    """Observed state of a ``TuningRecommendation``, written by the operator only."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` last reconciled."""
    phase: RecommendationPhase | None = None
    """Where the recommendation is in its life."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    """``Ready``, ``Reconciling`` and ``Stalled``, per the Kubernetes API conventions."""
    benchmark: Benchmark | None = None
    """The sandbox measurement."""
    index_change_ref: LocalObjectReference | None = None
    """The ``IndexChange`` created on approval."""
    last_seen_at: datetime | None = None
    """When analysis last found this recommendation; older than the target's last analysis means superseded."""
