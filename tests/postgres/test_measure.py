"""Indexes HypoPG cannot simulate, priced by measuring them on a local sandbox copy (real PostgreSQL 15 on both
sides: the target with HypoPG and pg_stat_statements, and a temporary sandbox server of the same major)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from optischema.analysis.pricing import MeasuredPlanner
from optischema.analysis.whatif import PlanRequest
from optischema.api.index import IndexColumn, IndexDefinition
from optischema.changes.ddl import definition_key
from optischema.cli.main import build_parser
from optischema.flows.analyze import AnalyzeOptions, analyze
from optischema.flows.measuring import local_sandbox
from optischema.postgres.measure import SandboxMeasurer, Statement
from optischema.postgres.planner import HypoPGPlanner

from .conftest import run_sql

DOCS = ("public", "docs")


async def _docs(dsn: str, rows: int, keys: int) -> None:
    """``docs``: ``rows`` JSON documents, a thousand kinds (so ``meta @> '{"kind": …}'`` keeps 0.1 % of them)
    and ``keys`` more keys each (what a GIN index holds an entry for, per row)."""
    extra = ", ".join(f"'k{n}', g % {n + 3}" for n in range(keys))
    await run_sql(
        dsn,
        [
            "CREATE TABLE docs (id bigserial PRIMARY KEY, title text NOT NULL, meta jsonb NOT NULL)",
            f"INSERT INTO docs (title, meta) SELECT 'title ' || g, jsonb_build_object('kind', 'k' || (g % 1000), "
            f"'n', g{', ' + extra if extra else ''}) FROM generate_series(1, {rows}) g",
            "ANALYZE docs",
        ],
    )


async def _containment(dsn: str, times: int) -> None:
    """The workload: containment searches with their constants (pg_stat_statements records ``meta @> $1``)."""
    await run_sql(dsn, [f"""SELECT id, title FROM docs WHERE meta @> '{{"kind": "k{n}"}}'""" for n in range(times)])


def _gin(rec: object) -> bool:
    index = getattr(getattr(rec, "change", None), "index", None)
    return index is not None and index.method == "gin"


async def test_a_gin_candidate_is_measured_in_a_local_sandbox_and_chosen_with_its_measured_gain(
    pg_database: str,
) -> None:
    await _docs(pg_database, 200_000, 0)
    await _containment(pg_database, 12)
    await run_sql(
        pg_database,
        [f"""INSERT INTO docs (title, meta) VALUES ('new {n}', '{{"kind": "k{n}"}}')""" for n in range(20)],
    )

    result = await analyze(pg_database, AnalyzeOptions(sample_seconds=0, measure=local_sandbox))

    gin = [r for r in result.recommendations if _gin(r)]
    assert len(gin) == 1, (result.notes, [r.sql for r in result.recommendations])
    rec = gin[0]
    assert rec.source == "measured", rec
    assert rec.change.index is not None
    assert rec.change.index.columns[0].name == "meta"
    assert rec.change.index.columns[0].opclass == "jsonb_path_ops"
    measured = [s for s in rec.evidence.statements if s.measured_before_ms is not None]
    assert measured, rec.evidence
    top = measured[0]
    assert "@>" in top.query
    assert top.measured_after_ms is not None
    assert top.measured_before_ms is not None
    assert top.measured_after_ms < 0.2 * top.measured_before_ms, top  # measured on the sandbox: a real index scan
    # The plan after is the sandbox's, its index under the name the recommendation gives it; the plan before is
    # the generic one from the target.
    assert top.plan_after is not None, top
    assert f"{rec.change.index.name} (measured in the sandbox)" in top.plan_after
    assert "optischema_measured" not in top.plan_after
    assert top.plan_before is not None
    assert "Seq Scan" in top.plan_before
    assert rec.evidence.estimated_size_bytes
    assert rec.evidence.estimated_size_bytes > 1 << 20
    assert "Priced by measuring" in rec.rationale
    assert "the writes it slows took" in rec.rationale  # the table's INSERT was timed with the index too
    # Nothing was written to the target: no index, no role, the statements' table as it was.
    async with _connected(pg_database) as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'docs'") == 1
        assert await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = 'optischema_bench'") == 0


def test_the_cli_alone_proposes_a_gin_index_with_its_measured_gain(pg_database: str) -> None:
    asyncio.run(_docs(pg_database, 50_000, 0))
    asyncio.run(_containment(pg_database, 12))
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(
        ["analyze", "--dsn", pg_database, "--measure", "--format", "json", "--sample-seconds", "0", "--quiet"]
    )
    assert args.run(args, out, err) == 0, err.getvalue()
    found = [r for r in json.loads(out.getvalue())["recommendations"] if r["source"] == "measured"]
    assert len(found) == 1, out.getvalue()
    assert "USING gin" in found[0]["sql"]
    assert "jsonb_path_ops" in found[0]["sql"]
    statement = found[0]["evidence"]["statements"][0]
    assert statement["measured_after_ms"] < 0.5 * statement["measured_before_ms"], statement


async def test_without_measuring_no_gin_index_is_proposed_and_a_note_says_how(pg_database: str) -> None:
    await _docs(pg_database, 20_000, 0)
    await _containment(pg_database, 12)

    result = await analyze(pg_database, AnalyzeOptions(sample_seconds=0))

    assert not [r for r in result.recommendations if _gin(r)], [r.sql for r in result.recommendations]
    assert any("--measure" in note and "GIN" in note for note in result.notes), result.notes


async def test_the_writes_a_gin_index_slows_are_measured_and_charged(pg_database: str) -> None:
    """On a write-heavy table the measured slowdown of each write raises its priced cost with the index: the
    selection charges it against what the index saves the readers."""
    await _docs(pg_database, 20_000, 40)
    read = PlanRequest("1", "SELECT id FROM docs WHERE meta @> $1", tables=frozenset({DOCS}))
    write = PlanRequest("2", "INSERT INTO docs (title, meta) VALUES ($1, $2)", tables=frozenset({DOCS}))
    index = IndexDefinition(
        schema_="public", table="docs", method="gin", columns=[IndexColumn(name="meta", opclass="jsonb_path_ops")]
    )
    source = await asyncpg.connect(pg_database)
    try:
        async with local_sandbox(15) as sandbox:
            measurer = SandboxMeasurer(
                source,
                pg_database,
                sandbox,
                [Statement(read, 10, False), Statement(write, 10_000, True)],
                {DOCS: 20_000.0},
                runs=15,
            )
            whatif = await HypoPGPlanner(source).start()
            try:
                planner = MeasuredPlanner(whatif=whatif, measurer=measurer)
                without = await planner.plan([read, write], [])
                with_it = await planner.plan([read, write], [index])
                size = await planner.size(index)
            finally:
                await whatif.close()
                await measurer.close()
    finally:
        await source.close()

    reading = planner.measured[("1", definition_key(index))]
    writing = planner.measured[("2", definition_key(index))]
    assert reading.used, reading
    assert not reading.write
    assert reading.ratio < 0.5, reading
    assert writing.write, writing
    assert not writing.used, writing
    assert writing.after_ms > writing.before_ms, writing  # 40 keys a row: 40 more index entries per insert
    assert without[1].cost is not None
    assert with_it[1].cost is not None
    assert with_it[1].cost > without[1].cost  # the write is charged the measured slowdown
    assert with_it[0].cost is not None
    assert without[0].cost is not None
    assert with_it[0].cost < without[0].cost
    assert size > 0
    assert measurer.copied == {DOCS: 20_000}
    assert not measurer.notes, measurer.notes


async def test_past_its_budget_the_measurer_prices_nothing_and_says_so(pg_database: str) -> None:
    await _docs(pg_database, 2_000, 0)
    read = PlanRequest("1", "SELECT id FROM docs WHERE meta @> $1", tables=frozenset({DOCS}))
    index = IndexDefinition(schema_="public", table="docs", method="gin", columns=[IndexColumn(name="meta")])
    source = await asyncpg.connect(pg_database)
    try:
        async with local_sandbox(15) as sandbox:
            measurer = SandboxMeasurer(
                source, pg_database, sandbox, [Statement(read, 10, False)], {DOCS: 2_000.0}, budget_seconds=0
            )
            try:
                assert await measurer.measure(read, index) is None
            finally:
                await measurer.close()
    finally:
        await source.close()
    assert any("budget" in note for note in measurer.notes), measurer.notes


@asynccontextmanager
async def _connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def test_a_read_that_writes_is_timed_read_only_and_changes_nothing(conn: asyncpg.Connection) -> None:
    """A data-modifying CTE parses as a SELECT, and a sample from pg_stat_activity is run as it was written: reads
    are timed in READ ONLY transactions, so such a statement fails there instead of deleting the copied rows."""
    from optischema.postgres import timing

    await conn.execute("CREATE TABLE victims AS SELECT g AS id FROM generate_series(1, 100) g")
    sneaky = timing.Prepared("1", "WITH d AS (DELETE FROM victims RETURNING 1) SELECT count(*) FROM d", 1, False, [[]])
    try:
        await timing.time_runs(conn, sneaky)
    except asyncpg.ReadOnlySQLTransactionError:
        pass
    else:
        raise AssertionError("the deleting read ran")
    assert await conn.fetchval("SELECT count(*) FROM victims") == 100
