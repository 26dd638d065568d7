"""A recommendation tried for real: copy the target into a sandbox, time its statements, apply, time again.

The same steps serve ``optischema benchmark`` (local provider) and the operator (pod provider). What a benchmark
measures: the statements the recommendation's evidence lists (the ones it helps; for a drop, the writes it
slows), plus the target's busiest writes on the table (what a new index costs them), each run repeatedly with
parameters bound from the sandbox's own rows, before and after the change. Nothing here ever writes to the
target: it is read through the read-only analysis connection, and ``pg_dump`` only reads.

Nothing from the target or a recommendation runs with power in the sandbox either: its superuser only creates
an unprivileged role (:func:`prepare_bench_role`), which restores the copy, owns it and runs every statement; the
change run is the one rendered from ``spec.change`` (:func:`change_statement`), a rewrite runs only in READ ONLY
transactions, and error texts are redacted before they reach a status or an Event.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from optischema.analysis.errors import AnalysisError
from optischema.analysis.latency import Summary, Timing, summarise
from optischema.analysis.parameters import runnable
from optischema.analysis.redact import redact_error
from optischema.analysis.scaling import is_lower_bound
from optischema.analysis.statements import Catalog, TableKey, parse_statement
from optischema.api.conditions import Reason
from optischema.api.quantity import quantity_bytes
from optischema.api.recommendation import Benchmark, StatementBenchmark, TuningRecommendationSpec
from optischema.api.target import Sandbox as SandboxSpec
from optischema.changes.ddl import render_create, render_drop
from optischema.changes.quoting import qualified
from optischema.flows.sandbox import Provider, SandboxError
from optischema.postgres import clone, timing
from optischema.postgres.connect import DATABASE_ERRORS, ConnectTarget, connect
from optischema.postgres.local import PostgresStartError

Progress = Callable[[str], None]
#: Timed executions per statement and side (fewer when a statement is slow: see timing.PHASE_BUDGET_SECONDS).
DEFAULT_RUNS = 20
BENCHMARKED_KINDS = {"createIndex", "dropIndex", "queryRewrite"}
#: A rewrite must be at least this much faster than the original in the sandbox to be worth a developer's time.
REWRITE_MIN_SPEEDUP = 1.2
#: Parameter sets on which a rewrite must return exactly the original's rows.
REWRITE_CHECKS = 5
_WRITE = re.compile(r"^\s*(insert|update|delete)\b", re.IGNORECASE)


@dataclass(slots=True)
class Statement:
    query_id: str
    query: str
    calls: int
    write: bool


@dataclass(slots=True)
class Plan:
    """What one benchmark copies and runs."""

    kind: str
    change_sql: str
    table: TableKey
    statements: list[Statement] = field(default_factory=list)
    tables: list[TableKey] = field(default_factory=list)
    shape: timing.Shape = field(default_factory=timing.Shape)
    predicate: str | None = None  # a partial index's WHERE: the rows its statements look for
    rewritten: str | None = None  # for a query rewrite: the statement run instead of applying a change


@dataclass(slots=True)
class Outcome:
    benchmark: Benchmark
    reason: str  # Reason.MEASURED or why it could not measure


def plan_for(spec: TuningRecommendationSpec, catalog: Catalog, writes: list[tuple[str, str, int]]) -> Plan:
    """The statements and tables of a recommendation's benchmark (its evidence, and writes on its table)."""
    rewrite = spec.change.query_rewrite
    if spec.kind == "queryRewrite" and rewrite is not None:
        parsed = parse_statement(rewrite.original, catalog)
        tables = sorted(parsed.tables | parse_statement(rewrite.rewritten, catalog).tables)
        if not tables:
            raise ValueError("the statement reads no known table")
        calls = next((s.calls for s in spec.evidence.statements if s.query_id == rewrite.query_id), 1)
        statement = Statement(rewrite.query_id, rewrite.original, calls, False)
        return Plan(spec.kind, "", tables[0], [statement], tables, rewritten=rewrite.rewritten)
    index = spec.change.index
    if spec.kind not in BENCHMARKED_KINDS or index is None:
        raise ValueError(f"kind {spec.kind} is not benchmarked (only {', '.join(sorted(BENCHMARKED_KINDS))})")
    table = (index.schema_, index.table)
    plan = Plan(spec.kind, change_statement(spec), table, tables=[table], predicate=index.where)
    seen: set[str] = set()
    for query_id, query, calls in [(s.query_id, s.query, s.calls) for s in spec.evidence.statements] + writes:
        if query_id in seen or not query:
            continue
        seen.add(query_id)
        parsed = parse_statement(query, catalog)
        write = parsed.kind in ("insert", "update", "delete") or bool(_WRITE.match(query))
        plan.statements.append(Statement(query_id, query, calls, write))
        for key in sorted(parsed.tables):
            if key not in plan.tables:
                plan.tables.append(key)
    return plan


def change_statement(spec: TuningRecommendationSpec) -> str:
    """What the sandbox runs for an index recommendation: its structured change rendered by the apply path's
    renderer, never the text of ``spec.sql`` (which a person or a tool wrote, and admission only compares)."""
    index = spec.change.index
    if index is None:
        raise ValueError(f"kind {spec.kind}: change.index is required")
    if spec.kind == "dropIndex":
        return render_drop(index)
    if spec.kind == "createIndex":
        return render_create(index)
    raise ValueError(f"kind {spec.kind} is not benchmarked (only {', '.join(sorted(BENCHMARKED_KINDS))})")


async def measure(
    source_dsn: ConnectTarget,
    sandbox_dsn: str,
    plan: Plan,
    spec: SandboxSpec,
    *,
    runs: int = DEFAULT_RUNS,
    progress: Progress = lambda _: None,
) -> Benchmark:
    """Prepare the sandbox from the target, run the plan before and after the change; raises SandboxError."""
    started = time.monotonic()
    try:
        source = await connect(source_dsn, statement_timeout_ms=spec.timeout_seconds * 1000)
    except AnalysisError as error:
        raise SandboxError("BenchmarkFailed", f"cannot read the target: {error.message}") from error
    try:
        bench_dsn = await prepare_bench_role(sandbox_dsn)
        sandbox = await connect(
            bench_dsn, read_only=False, application_name="optischema-sandbox", statement_timeout_ms=0
        )
        power = await clone.power_of(sandbox)
        if power:
            await sandbox.close()
            raise SandboxError(
                "SandboxFailed", f"the sandbox role {clone.BENCH_ROLE} has {', '.join(power)}; refusing to run as it"
            )
    except AnalysisError as error:
        await source.close()
        raise SandboxError("SandboxFailed", f"cannot connect to the sandbox: {error.message}") from error
    except BaseException:
        await source.close()
        raise
    dump: clone.SchemaDump | None = None
    try:
        major = await clone.server_major(source)
        if spec.data_mode == "full":
            size, limit = await clone.database_bytes(source), quantity_bytes(spec.full_max_size)
            if size > limit:
                raise SandboxError(
                    "BenchmarkFailed",
                    f"the database is {size / 2**30:.1f} GiB, above sandbox.fullMaxSize ({spec.full_max_size}); "
                    "use dataMode sample or synthetic",
                )
        progress("dumping the schema (pg_dump --schema-only)")
        dump = clone.SchemaDump(major)
        await dump.take(source_dsn)
        warnings = await dump.restore(bench_dsn, "pre-data")
        loaded = await clone.fill(
            source,
            sandbox,
            plan.tables,
            mode=spec.data_mode,
            percent=100.0 if spec.data_mode == "full" else spec.sample_percent,
            max_rows=spec.max_rows_per_table,
            pii_safe=spec.pii_safe,
            progress=progress,
        )
        progress("creating indexes and constraints")
        warnings += loaded.warnings + await dump.restore(bench_dsn, "post-data")
        await clone.advance_sequences(sandbox)
        # Vacuumed as the target is: an index-only scan on a copy never vacuumed visits the heap for every row
        await clone.settle(sandbox, [t for t in plan.tables if f"{t[0]}.{t[1]}" in loaded.rows])
        await sandbox.execute("SET plan_cache_mode = force_custom_plan; SET statement_timeout = '30s'")
        progress(f"timing {len(plan.statements)} statement(s) before the change")
        prepared = await timing.prepare(
            sandbox,
            [(s.query_id, s.query, s.calls, s.write) for s in plan.statements],
            runs,
            plan.shape,
            {plan.table: plan.predicate} if plan.predicate else {},
        )
        if plan.rewritten is not None:
            return await _rewrite(sandbox, plan, prepared, loaded, warnings, spec, started, progress)
        before = await timing.time_all(sandbox, prepared)
        progress("applying the change in the sandbox")
        try:
            await sandbox.execute(plan.change_sql)
            await sandbox.execute(f"ANALYZE {qualified(*plan.table)}")
        except DATABASE_ERRORS as error:
            raise SandboxError("BenchmarkFailed", f"the change failed in the sandbox: {_first_line(error)}") from error
        progress("timing the statements after the change")
        after = await timing.time_all(sandbox, prepared)
        version = await sandbox.fetchval("SHOW server_version")
    except DATABASE_ERRORS as error:
        raise SandboxError("BenchmarkFailed", _first_line(error)) from error
    except (clone.CloneError, PostgresStartError) as error:  # pg_dump/pg_restore missing or refused
        raise SandboxError("BenchmarkFailed", redact_error(str(error))[:2000]) from error
    finally:
        if dump is not None:
            dump.remove()
        await source.close()
        await sandbox.close()
    timings = timing.timings(prepared, before, after)
    summary = summarise(timings)
    improvement = summary.improvement_percent
    if plan.kind == "dropIndex" and improvement is None and summary.write_overhead_percent is not None:
        improvement = -summary.write_overhead_percent  # a drop is judged on what it saves the writers
    unmeasured = None if summary.measured else "no statement could be measured (see statements)"
    return _recorded(spec, loaded, timings, summary, improvement, str(version), started, warnings, unmeasured)


async def prepare_bench_role(sandbox_dsn: str) -> str:
    """The sandbox's one superuser session: create the unprivileged role everything else runs as; its DSN."""
    admin = await connect(sandbox_dsn, read_only=False, application_name="optischema-sandbox-setup")
    try:
        return await clone.create_bench_role(admin, sandbox_dsn)
    except DATABASE_ERRORS as error:
        raise SandboxError("SandboxFailed", f"cannot create the sandbox's role: {_first_line(error)}") from error
    finally:
        await admin.close()


async def _rewrite(
    sandbox: Any,
    plan: Plan,
    prepared: list[timing.Prepared],
    loaded: clone.Loaded,
    warnings: list[str],
    spec: SandboxSpec,
    started: float,
    progress: Progress,
) -> Benchmark:
    """A rewrite is proved, not applied: the same rows as the original for several parameter sets, and faster."""
    assert plan.rewritten is not None
    original = prepared[0]
    rewritten = timing.Prepared(original.query_id, runnable(plan.rewritten), original.calls, False,
                                original.arguments, original.error)  # fmt: skip
    progress("comparing the rewrite's rows with the original's")
    differs = None
    if original.error is None:
        differs = await timing.compare_rows(
            sandbox, original, rewritten, REWRITE_CHECKS, ordered=_ordered(original.query)
        )
    progress("timing the original and the rewrite, interleaved")
    first, second = await timing.time_pair(sandbox, original, rewritten)
    before, after = [first], [second]
    version = await sandbox.fetchval("SHOW server_version")
    timings = timing.timings(prepared, before, after)
    summary = summarise(timings)
    error = differs or (None if summary.measured else f"could not run both: {timings[0].error}")
    if error is None and (summary.speedup or 0) < REWRITE_MIN_SPEEDUP:
        error = f"not faster in the sandbox (speed-up {summary.speedup}x, below {REWRITE_MIN_SPEEDUP}x)"
    return _recorded(
        spec, loaded, timings, summary, summary.improvement_percent, str(version), started, warnings, error
    )


def _recorded(
    spec: SandboxSpec,
    loaded: clone.Loaded,
    timings: list[Timing],
    summary: Summary,
    improvement: float | None,
    version: str,
    started: float,
    warnings: list[str],
    error: str | None,
) -> Benchmark:
    """What a benchmark (of a change or a rewrite) records in the recommendation's status, within the API's caps."""
    return Benchmark(
        data_mode=spec.data_mode,
        rows=loaded.total_rows,
        p50_before_ms=summary.p50_before_ms,
        p50_after_ms=summary.p50_after_ms,
        p95_before_ms=summary.p95_before_ms,
        p95_after_ms=summary.p95_after_ms,
        speedup=summary.speedup,
        improvement_percent=None if improvement is None else min(100.0, improvement),
        write_overhead_percent=summary.write_overhead_percent,
        server_version=version,
        duration_seconds=round(time.monotonic() - started, 2),
        completed_at=datetime.now(UTC),
        statements=[
            StatementBenchmark(
                query_id=t.query_id,
                write=t.write,
                runs=len(t.before),
                p50_before_ms=round(_median(t.before), 4) if t.before else None,
                p50_after_ms=round(_median(t.after), 4) if t.after else None,
                error=t.error,
            )
            for t in timings
        ][:100],
        warnings=[redact_error(w)[:500] for w in warnings][:50],  # pg_restore's and the load's own words
        error=error,
        sample_percent=spec.sample_percent if spec.data_mode == "sample" else None,
        speedup_is_lower_bound=is_lower_bound(spec.data_mode, summary.speedup),
    )


def _ordered(query: str) -> bool:
    return bool(re.search(r"\border\s+by\b", query, re.IGNORECASE))


def _first_line(error: BaseException) -> str:
    """The error's first line, its values redacted: it goes to the recommendation's status and an Event, and a
    sandbox holds copies of real rows."""
    text = str(error).strip()
    return f"{type(error).__name__}: {redact_error(text.splitlines()[0])}" if text else type(error).__name__


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


async def benchmark(
    provider: Provider,
    source_dsn: ConnectTarget,
    recommendation: dict[str, Any],
    spec: SandboxSpec,
    *,
    runs: int = DEFAULT_RUNS,
    progress: Progress = lambda _: None,
) -> Outcome:
    """Start a sandbox, measure the recommendation, remove the sandbox. Failures come back as an Outcome whose
    benchmark carries the error: they are recorded, never raised."""
    started = time.monotonic()
    rec = TuningRecommendationSpec.model_validate(recommendation["spec"])
    try:
        source = await connect(source_dsn)
        try:
            catalog = await timing.catalog_of(source)
            index = rec.change.index
            writes = await timing.write_statements(source, index.table) if index and rec.kind != "queryRewrite" else []
            major = await clone.server_major(source)
            plan = plan_for(rec, catalog, writes)
            plan.shape = await timing.shape_of(source, [s.query_id for s in plan.statements], plan.tables)
        finally:
            await source.close()
        progress(f"starting a sandbox (PostgreSQL {major})")
        sandbox = await provider.start(recommendation, spec, major)
        try:
            result = await measure(source_dsn, sandbox.dsn, plan, spec, runs=runs, progress=progress)
        finally:
            await provider.stop(sandbox)
    except SandboxError as error:
        return _failed(spec, error.reason, str(error), started)
    except AnalysisError as error:
        return _failed(spec, Reason.BENCHMARK_FAILED, error.message, started)
    except DATABASE_ERRORS as error:
        return _failed(spec, Reason.BENCHMARK_FAILED, _first_line(error), started)
    except ValueError as error:  # not benchmarked, or a change the renderer refuses (UnsafeDefinition)
        return _failed(spec, Reason.BENCHMARK_FAILED, str(error), started)
    if rec.kind == "queryRewrite" and result.error is not None:
        if result.error.startswith("different rows"):
            return Outcome(result, Reason.ROWS_DIFFER)
        if result.error.startswith("not faster"):
            return Outcome(result, Reason.NOT_FASTER)
    return Outcome(result, Reason.MEASURED if result.error is None else Reason.BENCHMARK_FAILED)


def _failed(spec: SandboxSpec, reason: str, message: str, started: float) -> Outcome:
    return Outcome(
        Benchmark(
            data_mode=spec.data_mode,
            duration_seconds=round(time.monotonic() - started, 2),
            completed_at=datetime.now(UTC),
            error=message[:4000],
        ),
        str(reason),
    )
