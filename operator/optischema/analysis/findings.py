"""Findings beyond new indexes: indexes to drop or rebuild, tables to ANALYZE or VACUUM, bloat, transaction-ID
age, per-table autovacuum, settings to change.

Each rule is a small function over the snapshot (and, when HypoPG priced the workload, over the final plans), with
its thresholds named and its evidence and formula written into the recommendation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime

from optischema.api.index import IndexDefinition
from optischema.api.operations import MaintenanceAdvice, SettingChange, StorageParameter, TableRef
from optischema.api.recommendation import Evidence, MaintenanceEvidence, RecommendedChange
from optischema.api.target import Risk
from optischema.changes.ddl import (
    index_name,
    render_analyze,
    render_create,
    render_drop,
    render_reindex,
    render_setting,
)
from optischema.changes.ddl import render_setting_rollback as setting_rollback
from optischema.changes.maintenance import render_maintenance, render_maintenance_undo

from . import bloat
from .candidates import as_index, covers
from .report import Recommendation, days_since, index_definition, make
from .selection import WorkloadStatement
from .snapshot import Index, Setting, Snapshot, Statement, Table, TableVitals
from .usage import UsageEvidence, kept_notes

#: autovacuum's own default: ANALYZE after 50 rows + 10% of the table changed. Twice that and it is overdue.
ANALYZE_BASE_THRESHOLD = 50
ANALYZE_SCALE_FACTOR = 0.1
STALE_FACTOR = 2.0
#: VACUUM is advised past this share of dead rows (and this many).
DEAD_ROW_SHARE = 0.2
DEAD_ROW_MINIMUM = 10_000
#: Cache hit ratio above which random reads cost about what sequential ones do.
CACHED_HIT_RATIO = 0.99
RANDOM_PAGE_COST_CACHED = "1.1"
#: Largest work_mem proposed: it is per sort or hash, per connection.
MAX_WORK_MEM_MB = 256
#: Spilling statements must account for this share of total execution time to matter.
SPILL_TIME_SHARE = 0.01
#: A REINDEX of an index this large is medium risk: it needs room for a second copy while it builds.
REINDEX_MEDIUM_RISK_BYTES = 1 << 30
#: Freeze risk: a table whose ``age(relfrozenxid)`` reaches this share of ``autovacuum_freeze_max_age`` is due a
#: forced (anti-wraparound) vacuum, which reads the whole table and does not yield to lock conflicts: better run
#: VACUUM (FREEZE) at a chosen hour. Past the limit itself autovacuum is late (something holds it back: a long
#: transaction, a prepared transaction, a replication slot, or too little autovacuum capacity) — high risk, as is
#: any age past half the wraparound horizon.
FREEZE_DUE_SHARE = 0.9
WRAPAROUND_HORIZON = 2**31 - 3_000_000  # XIDs a database can age before PostgreSQL refuses new ones (stop limit)
WRAPAROUND_DANGER = 2**30
#: Per-table autovacuum: only tables of at least this many rows, that churn (updated or deleted rows since the
#: statistics were reset at least this share of their rows, or this share dead now), get thresholds of their own.
HOT_MIN_ROWS = 1_000_000
HOT_CHURN_SHARE = 0.5
HOT_DEAD_SHARE = 0.1
#: The dead rows a large table may gather before autovacuum starts: scale factor = this / rows, kept between the
#: bounds below (PostgreSQL's default 0.2 lets a 100M-row table carry 20M dead rows first).
HOT_DEAD_ROW_TARGET = 50_000
HOT_MIN_SCALE = 0.005
HOT_MAX_SCALE = 0.05


def index_findings(
    snapshot: Snapshot,
    chosen: Sequence[IndexDefinition],
    used: set[str] | None,
    usage: UsageEvidence | None = None,
) -> list[Recommendation]:
    """Drops: invalid, duplicate, unused, and redundant indexes. ``used`` holds the names of existing indexes that
    some statement's plan uses once ``chosen`` exist (None when there are no plans: HypoPG missing). ``usage`` is
    every instance's index usage (primary and replicas, :mod:`.usage`): with it, an index is dropped as unused only
    when no instance scanned it, all were read, and their statistics are old enough; without it, the primary's
    counters alone decide."""
    found: list[Recommendation] = []
    dropped: set[str] = set()
    for index in snapshot.indexes:
        if index.primary or index.constraint:
            continue
        reason = _drop_reason(index, snapshot, chosen, used, dropped, usage)
        if reason is None:
            continue
        recommendation = _drop(index, snapshot, *reason)
        if recommendation is not None:
            found.append(recommendation)
            dropped.add(index.name)
    return found


def _drop_reason(
    index: Index,
    snapshot: Snapshot,
    chosen: Sequence[IndexDefinition],
    used: set[str] | None,
    dropped: set[str],
    usage: UsageEvidence | None = None,
) -> tuple[str, str] | None:
    if not index.valid:
        return (
            "low",
            "it is INVALID (a failed CREATE INDEX CONCURRENTLY leaves one): it serves no query and still "
            "slows every write",
        )
    in_use = used is not None and index.name in used
    twins = [
        other
        for other in snapshot.indexes_on(index.table_key)
        if other.name != index.name and other.name not in dropped and other.valid and _same(other, index)
    ]
    if twins and not index.unique:
        keeper = max(twins, key=lambda o: (o.primary or bool(o.constraint), o.scans))
        if keeper.primary or keeper.constraint or keeper.scans >= index.scans:
            return ("low", f"it duplicates {keeper.name} (same keys, method and predicate)")
    if index.unique:
        return None  # uniqueness is a rule of the data, not a performance choice
    if index.scans == 0 and not in_use:
        if usage is None:
            return ("medium", f"no scan has used it {_since(snapshot)}, and no analysed statement's plan would")
        verdict = usage.judge((index.schema, index.name))
        if verdict.unused:
            return ("medium", f"no scan has used it: {verdict.reason}, and no analysed statement's plan would")
    wider = [
        o for o in snapshot.indexes_on(index.table_key) if o.name != index.name and o.valid and _prefix_of(index, o)
    ]
    wider_new = [
        c for c in chosen if (c.schema_, c.table) == index.table_key and covers(as_index(c), _definition(index))
    ]
    if (wider or wider_new) and not in_use:
        other = wider[0].name if wider else f"the proposed {index_name(wider_new[0])}"
        return ("medium", f"its keys are a prefix of {other}, which serves the same lookups")
    return None


def kept_unused_notes(
    snapshot: Snapshot, used: set[str] | None, usage: UsageEvidence, made: Sequence[Recommendation]
) -> list[str]:
    """Why indexes no scan used on the primary (and no plan would use) were not proposed for dropping: a replica
    used them, one could not be read, or the statistics are too young (see :func:`.usage.kept_notes`)."""
    dropped = {(r.change.index.schema_, r.change.index.name) for r in made if r.kind == "dropIndex" and r.change.index}
    idle = [
        (i.schema, i.name)
        for i in snapshot.indexes
        if not (i.primary or i.constraint or i.unique)
        and i.valid
        and i.scans == 0
        and (used is None or i.name not in used)
        and (i.schema, i.name) not in dropped
    ]
    return kept_notes(usage, idle)


def _since(snapshot: Snapshot) -> str:
    if snapshot.server.stats_reset is None:
        return "since the statistics were last reset"
    return f"since the statistics were reset on {snapshot.server.stats_reset:%Y-%m-%d}"


def _same(a: Index, b: Index) -> bool:
    return (a.method, a.keys, a.include, a.predicate) == (b.method, b.keys, b.include, b.predicate)


def _prefix_of(narrow: Index, wide: Index) -> bool:
    return (
        narrow.method == wide.method
        and narrow.predicate == wide.predicate
        and len(narrow.keys) < len(wide.keys)
        and wide.keys[: len(narrow.keys)] == narrow.keys
        and set(narrow.include) <= {k.column for k in wide.keys} | set(wide.include)
    )


def _definition(index: Index) -> IndexDefinition:
    return index_definition(index).model_copy(update={"name": None})


def _drop(index: Index, snapshot: Snapshot, risk: str, reason: str) -> Recommendation | None:
    try:
        definition = index_definition(index)
        rollback = render_create(definition)
    except ValueError:
        return None  # a definition we could not re-create exactly is never dropped
    table = snapshot.tables.get(index.table_key)
    writes = (table.n_tup_ins + table.n_tup_upd - table.n_tup_hot_upd) if table else 0
    rationale = f"Drop {index.name} on {index.schema}.{index.table}: {reason}. "
    rationale += f"It takes {_bytes(index.size_bytes)} and is maintained on writes ({writes} rows written or moved "
    rationale += "by updates since the statistics were reset). The rollback re-creates it exactly."
    return make(
        "dropIndex",
        RecommendedChange(index=definition),
        sql=render_drop(definition),
        rollback_sql=rollback,
        table=f"{index.schema}.{index.table}",
        evidence=Evidence(estimated_size_bytes=index.size_bytes, index_scans=index.scans),
        rationale=rationale,
        source="heuristic",
        risk=risk,  # type: ignore[arg-type]
    )


def maintenance_findings(snapshot: Snapshot, now: datetime) -> list[Recommendation]:
    """ANALYZE for stale statistics, VACUUM (ANALYZE) for tables carrying many dead rows."""
    found = []
    for table in snapshot.tables.values():
        stale = _stale(table)
        dead = table.n_dead_tup >= DEAD_ROW_MINIMUM and table.n_dead_tup > DEAD_ROW_SHARE * max(table.n_live_tup, 1)
        if not stale and not dead:
            continue
        ref = TableRef(schema_=table.schema, table=table.name, vacuum=dead)
        age = days_since(table.last_analyze, now)
        facts = [
            f"{table.n_mod_since_analyze} rows changed since the last ANALYZE "
            f"({'never analysed' if age is None else f'{age:.1f} days ago'}); autovacuum's threshold is "
            f"{ANALYZE_BASE_THRESHOLD} + {ANALYZE_SCALE_FACTOR:g} × {table.rows:.0f} rows"
        ]
        if dead:
            facts.append(
                f"{table.n_dead_tup} dead rows against {table.n_live_tup} live (over {DEAD_ROW_SHARE:.0%}): "
                "scans read them all, and space is not reused until VACUUM"
            )
        found.append(
            make(
                "analyze",
                RecommendedChange(analyze=ref),
                sql=render_analyze(ref),
                rollback_sql=None,
                table=f"{table.schema}.{table.name}",
                rationale="; ".join(facts) + ". The planner estimates from these statistics; stale ones mislead it.",
                source="heuristic",
                risk="low",
            )
        )
    return found


def _stale(table: Table) -> bool:
    if table.rows <= 0 and table.n_live_tup <= 0:
        return False
    threshold = ANALYZE_BASE_THRESHOLD + ANALYZE_SCALE_FACTOR * max(table.rows, table.n_live_tup)
    never = table.last_analyze is None and table.n_live_tup > ANALYZE_BASE_THRESHOLD
    return never or table.n_mod_since_analyze > STALE_FACTOR * threshold


def setting_findings(snapshot: Snapshot, workload: Iterable[WorkloadStatement]) -> list[Recommendation]:
    """Settings judged on the analysed statements only: one-off loads and maintenance say nothing about them."""
    keys = {s.key for s in workload}
    statements = [s for s in snapshot.statements if str(s.query_id) in keys]
    found = []
    work_mem = _work_mem(snapshot, statements)
    if work_mem:
        found.append(work_mem)
    random_page_cost = _random_page_cost(snapshot, statements)
    if random_page_cost:
        found.append(random_page_cost)
    cache_size = _effective_cache_size(snapshot)
    if cache_size:
        found.append(cache_size)
    return found


def _setting(name: str, value: str, current: Setting, rationale: str, risk: str = "medium") -> Recommendation:
    """The value seen and where it came from (``pg_settings.source``) are kept: the rollback resets to the
    server's files and defaults rather than pin the old value when that is where it came from."""
    change = SettingChange(name=name, value=value, current_value=current.value, current_source=current.source)
    return make(
        "setting",
        RecommendedChange(setting=change),
        sql=render_setting(change),
        rollback_sql=setting_rollback(change),
        table=None,
        rationale=rationale,
        source="heuristic",
        risk=risk,  # type: ignore[arg-type]
    )


def _work_mem(snapshot: Snapshot, statements: list[Statement]) -> Recommendation | None:
    setting = snapshot.settings.get("work_mem")
    spilling = [s for s in statements if s.temp_blks_written > 0 and s.calls > 0]
    total_time = sum(s.total_time_ms for s in statements) or 1.0
    spill_time = sum(s.total_time_ms for s in spilling)
    if setting is None or not spilling or spill_time < SPILL_TIME_SHARE * total_time:
        return None
    current_mb = _megabytes(setting.value)
    if current_mb is None:
        return None
    worst = max(s.temp_blks_written * 8 / 1024 / s.calls for s in spilling)  # MB spilled per call
    proposed = min(MAX_WORK_MEM_MB, 2 ** math.ceil(math.log2(max(current_mb + worst, 1))))
    if proposed <= current_mb:
        return None
    return _setting(
        "work_mem",
        f"{proposed}MB",
        setting,
        f"{len(spilling)} statements write temporary files ({spill_time / total_time:.0%} of execution time); the "
        f"largest spills {worst:.1f} MB per call. Formula: next power of two ≥ work_mem ({setting.value}) + largest "
        f"spill per call, at most {MAX_WORK_MEM_MB}MB since every sort and hash of every connection may use it.",
    )


def _random_page_cost(snapshot: Snapshot, statements: list[Statement]) -> Recommendation | None:
    setting = snapshot.settings.get("random_page_cost")
    hit = sum(s.shared_blks_hit for s in statements)
    read = sum(s.shared_blks_read for s in statements)
    if setting is None or hit + read == 0:
        return None
    ratio = hit / (hit + read)
    try:
        current = float(setting.value)
    except ValueError:
        return None
    if ratio < CACHED_HIT_RATIO or current <= 2.0:
        return None
    return _setting(
        "random_page_cost",
        RANDOM_PAGE_COST_CACHED,
        setting,
        f"{ratio:.2%} of the workload's block reads are served from shared buffers: a random read costs about what "
        f"a sequential one does, but random_page_cost = {setting.value} makes the planner avoid index scans. "
        f"Formula: {RANDOM_PAGE_COST_CACHED} when the hit ratio is at least {CACHED_HIT_RATIO:.0%} (or on SSDs).",
    )


def _effective_cache_size(snapshot: Snapshot) -> Recommendation | None:
    cache, buffers = snapshot.settings.get("effective_cache_size"), snapshot.settings.get("shared_buffers")
    if cache is None or buffers is None:
        return None
    cache_mb, buffers_mb = _megabytes(cache.value), _megabytes(buffers.value)
    if cache_mb is None or buffers_mb is None or cache_mb >= 2 * buffers_mb:
        return None
    proposed = int(3 * buffers_mb)
    return _setting(
        "effective_cache_size",
        f"{proposed}MB",
        cache,
        f"effective_cache_size ({cache.value}) is below twice shared_buffers ({buffers.value}), though it should "
        "count shared buffers and the operating system's page cache. Formula: 3 × shared_buffers, a floor; raise "
        "it to about 75% of the server's memory if you know it. It only informs the planner: nothing is allocated.",
        risk="low",
    )


def _megabytes(value: str) -> float | None:
    units = {"kB": 1 / 1024, "MB": 1.0, "GB": 1024.0, "TB": 1024.0 * 1024}
    for unit, factor in units.items():
        if value.endswith(unit):
            try:
                return float(value[: -len(unit)]) * factor
            except ValueError:
                return None
    return None


def _bytes(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size //= 1024
    return f"{size} TB"


def table_health_findings(
    snapshot: Snapshot, now: datetime, made: Sequence[Recommendation] = ()
) -> list[Recommendation]:
    """Bloat (REINDEX for indexes, advice for tables), freeze risk, and autovacuum for hot tables. ``made`` are the
    findings already made: an index proposed for dropping is not proposed for a rebuild too."""
    dropped = {(r.change.index.schema_, r.change.index.name) for r in made if r.kind == "dropIndex" and r.change.index}
    return [*bloat_findings(snapshot, dropped), *freeze_findings(snapshot), *autovacuum_findings(snapshot, now)]


def bloat_findings(snapshot: Snapshot, dropped: Collection[tuple[str, str | None]] = ()) -> list[Recommendation]:
    """``reindex`` for a btree index past :data:`bloat.INDEX_BLOAT_MIN_BYTES` and ``INDEX_BLOAT_MIN_SHARE`` of
    waste (unless it is in ``dropped``); ``maintenance`` advice (never applied) for a table past the table
    thresholds."""
    found = []
    for index in snapshot.indexes:
        if not index.valid or (index.schema, index.name) in dropped:
            continue  # dropped instead (index_findings)
        measured = bloat.index_bloat(snapshot, index)
        if measured is None or not _bloated(measured, bloat.INDEX_BLOAT_MIN_BYTES, bloat.INDEX_BLOAT_MIN_SHARE):
            continue
        recommendation = _reindex(index, measured, snapshot)
        if recommendation is not None:
            found.append(recommendation)
    for key in snapshot.maintenance.tables:
        measured = bloat.table_bloat(snapshot, key)
        if measured is None or not _bloated(measured, bloat.TABLE_BLOAT_MIN_BYTES, bloat.TABLE_BLOAT_MIN_SHARE):
            continue
        advice = _safely(lambda: _table_bloat(snapshot, key, measured))  # noqa: B023 (called at once)
        if advice is not None:
            found.append(advice)
    return found


def _safely(build: Callable[[], Recommendation]) -> Recommendation | None:
    """A finding, or None when a name cannot be carried by the API's models (an identifier with a double quote or
    a semicolon, which :class:`~optischema.api.index.Identifier` refuses): it is skipped, never the analysis."""
    try:
        return build()
    except ValueError:
        return None


def _bloated(found: bloat.Bloat, min_bytes: int, min_share: float) -> bool:
    return found.wasted_bytes >= min_bytes and found.share >= min_share


def _how(found: bloat.Bloat, snapshot: Snapshot) -> str:
    """The method and its figures, for a rationale."""
    if found.method == "pgstattuple":
        text = f"measured with {found.detail}"
        if found.estimated_wasted_bytes is not None:
            text += f"; the estimate from statistics says {_bytes(found.estimated_wasted_bytes)}"
        return text
    text = "estimated from pg_class and pg_stats (the pgsql-bloat-estimation formulas)"
    if "pgstattuple" not in snapshot.server.extensions:
        text += "; install pgstattuple (CREATE EXTENSION pgstattuple) to have it measured"
    elif snapshot.maintenance.measure_error:
        text += f"; {snapshot.maintenance.measure_error}"
    return text


def _bloat_evidence(found: bloat.Bloat) -> MaintenanceEvidence:
    return MaintenanceEvidence(
        size_bytes=found.size_bytes,
        wasted_bytes=found.wasted_bytes,
        wasted_percent=round(min(100.0 * found.share, 100.0), 1),
        method=found.method,
        estimated_wasted_bytes=found.estimated_wasted_bytes,
    )


def _reindex(index: Index, found: bloat.Bloat, snapshot: Snapshot) -> Recommendation | None:
    try:
        definition = index_definition(index)
        sql = render_reindex(definition)
    except ValueError:
        return None
    rationale = (
        f"{index.name} on {index.schema}.{index.table} wastes about {_bytes(found.wasted_bytes)} of its "
        f"{_bytes(found.size_bytes)} ({found.share:.0%}), {_how(found, snapshot)}. Deleted and updated rows leave "
        "index pages half empty, and a B-tree never merges them back: every scan reads the extra pages. REINDEX "
        "INDEX CONCURRENTLY builds a fresh copy without blocking reads or writes and swaps it in; it needs room for "
        "the second copy while it runs. Threshold: at least "
        f"{_bytes(bloat.INDEX_BLOAT_MIN_BYTES)} and {bloat.INDEX_BLOAT_MIN_SHARE:.0%} wasted."
    )
    return make(
        "reindex",
        RecommendedChange(index=definition),
        sql=sql,
        rollback_sql=None,
        table=f"{index.schema}.{index.table}",
        evidence=Evidence(index_scans=index.scans, maintenance=_bloat_evidence(found)),
        rationale=rationale,
        source="heuristic",
        risk="medium" if found.size_bytes >= REINDEX_MEDIUM_RISK_BYTES else "low",
    )


def _table_bloat(snapshot: Snapshot, key: tuple[str, str], found: bloat.Bloat) -> Recommendation:
    table = snapshot.tables[key]
    advice = MaintenanceAdvice(topic="tableBloat", schema_=key[0], table=key[1])
    rationale = (
        f"{key[0]}.{key[1]} wastes about {_bytes(found.wasted_bytes)} of its {_bytes(found.size_bytes)} "
        f"({found.share:.0%}), {_how(found, snapshot)}. VACUUM makes dead rows' space reusable but gives nothing "
        "back; only a rewrite does. VACUUM (FULL) rewrites it under an ACCESS EXCLUSIVE lock (reads and writes wait "
        f"for the whole rewrite); pg_repack (pg_repack --table {key[0]}.{key[1]}) rewrites it online. Advice only: "
        "the operator never runs it. Threshold: at least "
        f"{_bytes(bloat.TABLE_BLOAT_MIN_BYTES)} and {bloat.TABLE_BLOAT_MIN_SHARE:.0%} wasted."
    )
    if table.n_dead_tup > table.n_live_tup:
        rationale += f" {table.n_dead_tup} of the rows are dead: VACUUM first, then judge again."
    evidence = _bloat_evidence(found).model_copy(
        update={"live_tuples": table.n_live_tup, "dead_tuples": table.n_dead_tup}
    )
    return _advice(advice, evidence, rationale, "high")


def _advice(advice: MaintenanceAdvice, evidence: MaintenanceEvidence, rationale: str, risk: Risk) -> Recommendation:
    return make(
        "maintenance",
        RecommendedChange(maintenance=advice),
        sql=render_maintenance(advice),
        rollback_sql=render_maintenance_undo(advice),
        table=f"{advice.schema_}.{advice.table}" if advice.table else None,
        evidence=Evidence(maintenance=evidence),
        rationale=rationale,
        source="heuristic",
        risk=risk,
    )


def freeze_findings(snapshot: Snapshot, due_share: float = FREEZE_DUE_SHARE) -> list[Recommendation]:
    """Tables whose transaction-ID age reached ``due_share`` of their ``autovacuum_freeze_max_age`` (and the
    database as a whole, when no analysed table explains its age)."""
    limit = _setting_int(snapshot, "autovacuum_freeze_max_age")
    if limit is None:
        return []
    database_age = snapshot.maintenance.database_xid_age
    found = []
    for key, vitals in sorted(snapshot.maintenance.tables.items()):
        if vitals.xid_age is None:
            continue
        own = _int(vitals.options.get("autovacuum_freeze_max_age"))
        effective = min(limit, own) if own else limit  # a table's own value only counts when lower
        if vitals.xid_age < due_share * effective:
            continue
        age = vitals.xid_age
        advice = _safely(lambda: _freeze(key, age, effective, database_age))  # noqa: B023 (called at once)
        if advice is not None:
            found.append(advice)
    if not found and database_age is not None and database_age >= due_share * limit:
        found.append(_freeze(None, database_age, limit, database_age))
    return found


def _freeze(key: tuple[str, str] | None, age: int, limit: int, database_age: int | None) -> Recommendation:
    what = f"{key[0]}.{key[1]}" if key else "the database (no analysed table explains it: catalogs or TOAST)"
    late = age > limit
    risk: Risk = "high" if late or age >= WRAPAROUND_DANGER else "medium"
    rationale = (
        f"Transaction-ID age of {what} is {age:,} (age(relfrozenxid)"
        + (f"; the database's age(datfrozenxid) is {database_age:,}" if database_age is not None else "")
        + f"), against autovacuum_freeze_max_age = {limit:,} ({age / limit:.0%}). "
    )
    if late:
        rationale += (
            "Autovacuum should already have frozen it and has not: look for what holds it back (a long-running or "
            "prepared transaction, a stale replication slot, autovacuum workers all busy). "
        )
    else:
        rationale += (
            "Past the limit autovacuum forces an aggressive vacuum that reads the whole table and does not yield "
            "to lock conflicts; running VACUUM (FREEZE) at a quiet hour does the same work when you choose. "
        )
    rationale += (
        f"{WRAPAROUND_HORIZON - age:,} transaction IDs remain before PostgreSQL stops assigning new ones to avoid "
        "wraparound. Advice only: the operator never runs it."
    )
    advice = MaintenanceAdvice(topic="freeze", schema_=key[0] if key else None, table=key[1] if key else None)
    evidence = MaintenanceEvidence(xid_age=age, database_xid_age=database_age, freeze_max_age=limit)
    return _advice(advice, evidence, rationale, risk)


def autovacuum_findings(snapshot: Snapshot, now: datetime) -> list[Recommendation]:
    """Per-table autovacuum thresholds for large tables that churn, where the server-wide ones let too many dead
    rows gather before a vacuum starts."""
    scale = _setting_float(snapshot, "autovacuum_vacuum_scale_factor")
    threshold = _setting_int(snapshot, "autovacuum_vacuum_threshold")
    if scale is None or threshold is None:
        return []
    found = []
    for key, vitals in sorted(snapshot.maintenance.tables.items()):
        table = snapshot.tables.get(key)
        if table is None or vitals.partitioned:
            continue
        try:
            recommendation = _autovacuum(table, vitals, scale, threshold, now)
        except ValueError:
            continue  # a name the API's models cannot carry (see _safely)
        if recommendation is not None:
            found.append(recommendation)
    return found


def hot_scale_factor(rows: float) -> float:
    """The proposed ``autovacuum_vacuum_scale_factor``: :data:`HOT_DEAD_ROW_TARGET` dead rows, within bounds."""
    return min(max(HOT_DEAD_ROW_TARGET / max(rows, 1.0), HOT_MIN_SCALE), HOT_MAX_SCALE)


def _autovacuum(
    table: Table, vitals: TableVitals, scale: float, threshold: int, now: datetime
) -> Recommendation | None:
    rows = max(table.rows, float(table.n_live_tup))
    modified = table.n_tup_upd + table.n_tup_del
    churns = modified >= HOT_CHURN_SHARE * rows or table.n_dead_tup >= HOT_DEAD_SHARE * rows
    if rows < HOT_MIN_ROWS or not churns:
        return None
    own_scale = _float(vitals.options.get("autovacuum_vacuum_scale_factor"))
    own_threshold = _int(vitals.options.get("autovacuum_vacuum_threshold"))
    current_scale = own_scale if own_scale is not None else scale
    current_trigger = (own_threshold if own_threshold is not None else threshold) + current_scale * rows
    proposed = hot_scale_factor(rows)
    proposed_trigger = (own_threshold if own_threshold is not None else threshold) + proposed * rows
    if proposed_trigger > current_trigger / 2:
        return None  # its thresholds are already about right
    analyze_scale = vitals.options.get("autovacuum_analyze_scale_factor")
    parameters = [
        StorageParameter(
            name="autovacuum_vacuum_scale_factor",
            value=_number(proposed),
            current_value=vitals.options.get("autovacuum_vacuum_scale_factor"),
        ),
        StorageParameter(
            name="autovacuum_analyze_scale_factor", value=_number(proposed / 2), current_value=analyze_scale
        ),
    ]
    advice = MaintenanceAdvice(topic="autovacuum", schema_=table.schema, table=table.name, parameters=parameters)
    last = days_since(vitals.last_autovacuum, now)
    rationale = (
        f"{table.schema}.{table.name} has {rows:,.0f} rows and churns: {modified:,} rows updated or deleted since the "
        f"statistics were reset, {table.n_dead_tup:,} dead now; autovacuum ran {vitals.autovacuum_count} times "
        + ("and never since the reset" if last is None else f"(last {last:.1f} days ago)")
        + f". With autovacuum_vacuum_scale_factor = {current_scale:g} it waits for about {current_trigger:,.0f} dead "
        f"rows, which every scan reads and the table grows by. Formula: scale factor = {HOT_DEAD_ROW_TARGET:,} / rows "
        f"within [{HOT_MIN_SCALE:g}, {HOT_MAX_SCALE:g}] = {_number(proposed)} (about {proposed_trigger:,.0f} dead "
        "rows), ANALYZE at half that. Vacuuming more often costs I/O: check autovacuum_vacuum_cost_limit too. "
        "Advice only: the operator never runs it."
    )
    if vitals.options.get("autovacuum_enabled", "on").lower() in ("off", "false", "0", "no"):
        rationale += " Autovacuum is switched off for this table (autovacuum_enabled = off): it only runs to freeze."
    evidence = MaintenanceEvidence(
        size_bytes=table.size_bytes,
        live_tuples=table.n_live_tup,
        dead_tuples=table.n_dead_tup,
        modifications=modified,
        autovacuum_count=vitals.autovacuum_count,
        last_autovacuum=vitals.last_autovacuum,
    )
    return _advice(advice, evidence, rationale, "low")


def _number(value: float) -> str:
    """A scale factor as a plain decimal (never exponent notation, which a storage parameter's value refuses)."""
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _setting_int(snapshot: Snapshot, name: str) -> int | None:
    setting = snapshot.settings.get(name)
    return _int(setting.value) if setting else None


def _setting_float(snapshot: Snapshot, name: str) -> float | None:
    setting = snapshot.settings.get(name)
    return _float(setting.value) if setting else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
