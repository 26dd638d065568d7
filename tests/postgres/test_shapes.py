"""Statement shapes on real PostgreSQL 15 + HypoPG (issue 20, item 4): each case runs a workload through
pg_stat_statements and asserts the exact index the engine proposes (or that the statement is planned, or that
nothing is proposed). The shape each case covers is in its name: view, cte, order_by, update, untyped_parameters,
prepare, and the empty workload."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from optischema.analysis.whatif import PlanRequest
from optischema.api.target import PostgresTargetSpec
from optischema.cli.main import main
from optischema.flows.analyze import AnalyzeOptions, analyze
from optischema.flows.target import Check, run_analysis
from optischema.postgres.planner import HypoPGPlanner

from .conftest import run_sql
from .test_engine import NO_SAMPLES, ORDERS, creates, of_kind, setup

JOBS = """
CREATE TABLE jobs (id bigint PRIMARY KEY, state text NOT NULL, run_at timestamptz NOT NULL, payload text);
INSERT INTO jobs SELECT g, CASE WHEN g % 2000 = 0 THEN 'a' ELSE 'done' END, now() - g * interval '1 second',
                        repeat('x', 40) FROM generate_series(1, 200000) g;
VACUUM ANALYZE;
"""


async def test_view_is_analysed_against_its_base_table(pg_database: str) -> None:
    """view: the predicate on the view's renamed column is a predicate on orders.customer_id."""
    await setup(
        pg_database,
        ORDERS + "CREATE VIEW customer_orders AS SELECT o.id, o.customer_id AS cust, o.total FROM orders o;\n",
        [f"SELECT id, total FROM customer_orders WHERE cust = {c}" for c in (11, 4242, 777)],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    assert result.statements_analysed == 1
    assert creates(result, "orders") == [
        'CREATE INDEX "x" ON "public"."orders" ("customer_id") INCLUDE ("id", "total")'
    ]


async def test_inlined_cte_predicate_reaches_the_table(pg_database: str) -> None:
    """cte: WITH x AS (SELECT * FROM t) SELECT ... FROM x WHERE ... is planned as a predicate on t."""
    await setup(
        pg_database,
        ORDERS,
        [
            f"WITH mine AS NOT MATERIALIZED (SELECT * FROM invoices) SELECT id, amount FROM mine "
            f"WHERE customer_id = {c}"
            for c in (3, 14, 159)
        ],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    assert creates(result, "invoices") == [
        'CREATE INDEX "x" ON "public"."invoices" ("customer_id") INCLUDE ("amount", "id")'
    ]


async def test_order_by_position_is_the_sort_column(pg_database: str) -> None:
    """order_by: ORDER BY 2 sorts by issued_at: the same partial index as ORDER BY issued_at."""
    await setup(
        pg_database,
        ORDERS,
        [
            "SELECT id, issued_at FROM invoices WHERE paid_at IS NULL AND issued_at < now() - interval '30 days' "
            "ORDER BY 2 LIMIT 50"
        ],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    assert creates(result, "invoices") == [
        'CREATE INDEX "x" ON "public"."invoices" ("issued_at") WHERE paid_at IS NULL'
    ]


async def test_update_setting_its_filter_column_still_gets_the_index_when_the_scan_dominates(
    pg_database: str,
) -> None:
    """update: each call moves 100 of 200,000 jobs from one state to another. An index on state makes each of
    those updates non-HOT (charged: 100 index writes per call), but the sequential scan it saves reads all 200,000
    rows: it is recommended, partial on the rare states (the value bound from pg_stats is a rare one, since each
    call touches far fewer rows than 'done' holds)."""
    await setup(
        pg_database,
        JOBS,
        ["UPDATE jobs SET state = 'b' WHERE state = 'a'", "UPDATE jobs SET state = 'a' WHERE state = 'b'"],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    [update] = [s for s in result.statements if s[1].startswith("UPDATE jobs")]
    assert update[4] == 4000  # 40 calls of 100 rows: the write penalty has rows to charge
    assert creates(result, "jobs") == ['CREATE INDEX "x" ON "public"."jobs" ("state") WHERE state <> \'done\'']


async def test_parameters_the_planner_cannot_infer_are_typed_one_by_one(conn: asyncpg.Connection) -> None:
    """untyped_parameters: jsonb_build_object's arguments cannot be typed, and typing all parameters text breaks
    the bigint column; typed one by one as PostgreSQL names them, both statements plan."""
    await conn.execute(
        "CREATE TABLE posts (id bigint PRIMARY KEY, thread_id bigint NOT NULL, meta jsonb, created_at timestamptz);"
        "CREATE TABLE counters (id bigint PRIMARY KEY, n bigint NOT NULL)"
    )
    insert = (
        "INSERT INTO posts (id, thread_id, meta, created_at) VALUES ($1, $2, jsonb_build_object($3, $4, $5, "
        "substr(md5($6::text), $7, $8)), now())"
    )
    lookup = "SELECT id, thread_id FROM posts WHERE meta @> jsonb_build_object($1, substr(md5($2::text), $3, $4))"
    arithmetic = "SELECT id FROM counters WHERE n = $1 * $2 % $3"
    planner = await HypoPGPlanner(conn).start()
    try:
        plans = await planner.plan(
            [
                PlanRequest(key, text, (), frozenset())
                for key, text in [("1", insert), ("2", lookup), ("3", arithmetic)]
            ],
            [],
        )
    finally:
        await planner.close()
    # As the forum workload's statements are normalised: both were unplannable ("function substr(text, text, text)
    # does not exist" once every parameter was declared text) before parameters were typed one by one.
    assert [p.error for p in plans] == [None, None, None]
    assert all(p.cost is not None for p in plans)


async def test_sql_prepared_statement_is_analysed_as_what_it_prepares(pg_database: str) -> None:
    """prepare: pg_stat_statements records the PREPARE's text for the EXECUTEs; the engine analyses and plans the
    statement it prepares (with its declared types), and proposes its index."""
    await setup(pg_database, ORDERS, [])
    connection = await asyncpg.connect(pg_database)
    try:
        await connection.execute("PREPARE by_customer(bigint) AS SELECT id, total FROM orders WHERE customer_id = $1")
        for customer in range(1, 21):
            await connection.execute(f"EXECUTE by_customer({customer})")
    finally:
        await connection.close()
    result = await analyze(pg_database, NO_SAMPLES)
    assert not [s for s in result.skipped if s.query.startswith("PREPARE by_customer")]
    assert not result.unplannable
    assert creates(result, "orders") == [
        'CREATE INDEX "x" ON "public"."orders" ("customer_id") INCLUDE ("id", "total")'
    ]


async def test_a_workload_of_catalog_queries_needs_nothing(pg_database: str) -> None:
    """empty workload: no statement reads a table of the analysed schemas. Not an error: no index, and a note."""
    await run_sql(pg_database, ["SELECT count(*) FROM pg_class", "SELECT now()"], 5)
    result = await analyze(pg_database, AnalyzeOptions(sample_seconds=0))
    assert result.statements_analysed == 0
    assert of_kind(result, "createIndex") == []
    assert any(n.startswith("nothing to analyse") and "no index is proposed" in n for n in result.notes)


def test_an_already_indexed_workload_exits_0_with_no_index(
    pg_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """empty workload: every statement is served by the primary key: `optischema analyze` exits 0, no index."""
    asyncio.run(setup(pg_database, ORDERS, [f"SELECT total FROM orders WHERE id = {n}" for n in (1, 2, 3)]))
    assert main(["analyze", "--dsn", pg_database, "--sample-seconds", "0", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["statements_analysed"] == 1
    assert [r for r in document["recommendations"] if r["kind"] == "createIndex"] == []


def test_a_workload_needing_nothing_exits_0_with_a_note(pg_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    """empty workload, through the CLI: only catalog queries: exit 0 (it was 4), no index, the note says why."""
    asyncio.run(run_sql(pg_database, ["SELECT count(*) FROM pg_class", "SELECT now()"], 5))
    assert main(["analyze", "--dsn", pg_database, "--sample-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "No recommendations: no statement needed analysing (see the note below)." in out
    assert "note: nothing to analyse" in out


async def test_the_operator_s_analysis_of_a_database_needing_nothing_succeeds(pg_database: str) -> None:
    """empty workload, operator path: the analysis a target runs (flows.target.run_analysis) returns a result, not
    the error that used to mark the target's analysis Failed (EmptyWorkload): the target stays Ready, and its
    lastAnalysis carries the note."""
    await run_sql(pg_database, ["SELECT count(*) FROM pg_class"], 5)
    spec = PostgresTargetSpec.model_validate(
        {"connection": {"host": "db", "database": "shop", "credentialsSecret": {"name": "db"}}}
    )
    check = Check(True, "Ready", "", dsn=pg_database, spec=spec)  # type: ignore[arg-type]  # a DSN string connects too
    result, error, _ = await run_analysis(check, 0.0, asyncio.Semaphore(1))
    assert error is None
    assert result is not None
    assert result.statements_analysed == 0
    assert of_kind(result, "createIndex") == []
    assert any(n.startswith("nothing to analyse") for n in result.notes)
