"""Findings beyond new indexes: indexes to drop, tables to ANALYZE or VACUUM, settings to change.

Each rule is a small function over the snapshot (and, when HypoPG priced the workload, over the final plans), with
its thresholds named and its evidence and formula written into the recommendation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime

from optischema.api.index import IndexDefinition
from optischema.api.operations import SettingChange, TableRef
from optischema.api.recommendation import Evidence, RecommendedChange
from optischema.changes.ddl import index_name, render_analyze, render_create, render_drop, render_setting
from optischema.changes.ddl import render_setting_rollback as setting_rollback

from .candidates import as_index, covers
from .report import Recommendation, days_since, index_definition, make
from .selection import WorkloadStatement
from .snapshot import Index, Setting, Snapshot, Statement, Table

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


def index_findings(
    snapshot: Snapshot,
    chosen: Sequence[IndexDefinition],
    used: set[str] | None,
) -> list[Recommendation]:
    """Drops: invalid, duplicate, unused, and redundant indexes. ``used`` holds the names of existing indexes that
    some statement's plan uses once ``chosen`` exist (None when there are no plans: HypoPG missing)."""
    found: list[Recommendation] = []
    dropped: set[str] = set()
    for index in snapshot.indexes:
        if index.primary or index.constraint:
            continue
        reason = _drop_reason(index, snapshot, chosen, used, dropped)
        if reason is None:
            continue
        recommendation = _drop(index, snapshot, *reason)
        if recommendation is not None:
            found.append(recommendation)
            dropped.add(index.name)
    return found


def _drop_reason(
    index: Index, snapshot: Snapshot, chosen: Sequence[IndexDefinition], used: set[str] | None, dropped: set[str]
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
        since = _since(snapshot)
        return ("medium", f"no scan has used it {since}, and no analysed statement's plan would")
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
