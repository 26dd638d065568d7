"""The core subset on every PostgreSQL major of the matrix (13–18): collection, analysis, apply and verification.

Each test runs once per major (``pg_major_database``); a major whose binaries ``make install`` has not cached is
skipped with the command that fetches them. What differs between majors and is probed rather than assumed:
``pg_stat_statements``' columns (``total_exec_time`` from 13; ``shared_blk_read_time`` from 17), ``query_id`` in
``pg_stat_activity`` (14+), the statistics views (``pg_stat_checkpointer`` from 17, ``pg_stat_io`` from 16), and
HypoPG, which only 13 (Debian bullseye's 1.1.4) and 15 (bookworm's 1.3.1) have here.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from optischema.changes.ddl import render_create
from optischema.changes.verdict import judge
from optischema.flows.analyze import AnalysisResult, AnalyzeOptions, analyze
from optischema.postgres import catalog, execute
from optischema.postgres.collect import collect

from .conftest import run_sql, traffic

pytestmark = pytest.mark.majors

#: The analysis mode each major gets here: what-if where HypoPG is installed, shapes alone elsewhere (no sandbox
#: is given to these analyses; measured pricing has its own tests).
MODES = {13: "whatif", 14: "heuristic", 15: "whatif", 16: "heuristic", 17: "heuristic", 18: "heuristic"}

SCHEMA = [
    "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL, "
    "created_at timestamptz NOT NULL, total numeric NOT NULL)",
    "INSERT INTO orders SELECT g, 1 + g % 5000, CASE WHEN g % 50 = 0 THEN 'open' ELSE 'closed' END, "
    "now() - g * interval '1 minute', g % 1000 FROM generate_series(1, 100000) g",
    "VACUUM ANALYZE orders",
]
#: One statement shape (pg_stat_statements keeps it as ``customer_id = $1``), several constants.
WORKLOAD = [f"SELECT id, total FROM orders WHERE customer_id = {c}" for c in (11, 4242, 777, 1500)]
WANTED = 'CREATE INDEX "x" ON "public"."orders" ("customer_id")'


async def _major(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SHOW server_version_num")) // 10000


def _creates(result: AnalysisResult) -> list[str]:
    """The proposed CREATE INDEX statements on orders, rendered without a name and without INCLUDE columns."""
    return [
        render_create(r.change.index.model_copy(update={"name": "x", "include": []}), concurrently=False)
        for r in result.recommendations
        if r.kind == "createIndex" and r.change.index is not None and r.change.index.table == "orders"
    ]


async def test_collection_reads_statements_tables_indexes_settings_and_samples(pg_major_database: str) -> None:
    await run_sql(pg_major_database, SCHEMA)
    await run_sql(pg_major_database, WORKLOAD, times=5)
    conn = await asyncpg.connect(pg_major_database)
    try:
        major = await _major(conn)
        async with traffic(pg_major_database, WORKLOAD):
            snapshot = await collect(conn, sample_seconds=0.6, min_calls=2)
        server = await catalog.server(conn)
    finally:
        await conn.close()
    assert snapshot.server.version_num // 10000 == major
    assert snapshot.server.version.startswith(str(major))
    assert server.system_identifier
    (statement,) = [s for s in snapshot.statements if "FROM orders WHERE customer_id" in s.query]
    assert statement.calls >= 20
    assert statement.total_time_ms > 0
    assert statement.shared_blks_hit + statement.shared_blks_read > 0
    assert [c.name for c in snapshot.tables["public", "orders"].columns][:3] == ["id", "customer_id", "status"]
    assert {i.name for i in snapshot.indexes} == {"orders_pkey"}
    assert {"work_mem", "shared_buffers", "random_page_cost"} <= set(snapshot.settings)
    assert ("public", "orders") in snapshot.maintenance.tables
    # Live samples: by query_id on 14+, by fingerprint on 13 (pg_stat_activity has no query_id there).
    assert any("customer_id = " in text for text in snapshot.samples.get(statement.query_id, [])), snapshot.samples


async def test_analysis_proposes_the_index_in_the_mode_this_major_allows(pg_major_database: str) -> None:
    await run_sql(pg_major_database, SCHEMA)
    await run_sql(pg_major_database, WORKLOAD, times=10)
    conn = await asyncpg.connect(pg_major_database)
    try:
        major = await _major(conn)
    finally:
        await conn.close()

    result = await analyze(pg_major_database, AnalyzeOptions(sample_seconds=0))

    assert result.mode == MODES[major], result.notes
    assert result.server_version.startswith(str(major))
    assert result.statements_analysed >= 1
    assert _creates(result) == [WANTED], (result.notes, [r.sql for r in result.recommendations])
    (create,) = [r for r in result.recommendations if r.kind == "createIndex"]
    assert create.source == ("whatif" if MODES[major] == "whatif" else "heuristic")
    assert not result.unplannable


async def test_apply_concurrently_then_verify_the_statements_improved(pg_major_database: str) -> None:
    await run_sql(pg_major_database, SCHEMA)
    await run_sql(pg_major_database, WORKLOAD, times=10)
    writer = await execute.connect_writer(pg_major_database)
    try:
        reads = await execute.statements_on(writer, "orders", writes=False)
        assert reads
        before = await execute.counters(writer, reads)
        assert before
        assert all(c.calls > 0 and c.total_ms > 0 for c in before.values())
        done = await execute.execute(
            writer,
            'CREATE INDEX CONCURRENTLY "orders_customer_idx" ON "public"."orders" ("customer_id")',
            lock_timeout_ms=2000,
            statement_timeout_ms=120_000,
            retry_until=time.monotonic() + 60,
        )
        assert done.attempts == 1
        await run_sql(pg_major_database, WORKLOAD, times=10)
        after = await execute.counters(writer, reads)
        # Before 15 the statistics collector gets index scans by message, a moment after each session ends (CI on
        # PostgreSQL 14 read 0 at once): read until they arrive, for a few seconds.
        deadline = time.monotonic() + 10
        while True:
            state = await catalog.index_state(writer, "public", "orders_customer_idx")
            if state is None or state.scans >= 40 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await writer.close()
    assert state is not None
    assert state.valid
    assert state.ready
    assert state.scans >= 40  # every statement of the workload used it
    verdict = judge(before, after, max_regression_percent=25, min_calls=20)
    assert verdict.verdict == "Improved", verdict.message
