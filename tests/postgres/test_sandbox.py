"""Sandboxes on real PostgreSQL: the copy (schema, sample, full, synthetic), the timing, the local provider, the CLI."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from devcluster import LocalPostgres
from optischema.api.target import Sandbox
from optischema.cli import benchmark as command
from optischema.cli.main import build_parser
from optischema.flows.benchmark import benchmark
from optischema.flows.sandbox import LocalProvider
from optischema.postgres import clone

from .conftest import run_sql

ORDERS = [
    "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL)",
    "INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 5000) g",
    "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers (id), "
    "status text NOT NULL, secret text NOT NULL UNIQUE, amount numeric(10, 2), note text, "
    "created_at timestamptz NOT NULL DEFAULT now())",
    "INSERT INTO orders (customer_id, status, secret, amount, note, created_at) "
    "SELECT 1 + g % 5000, CASE WHEN g % 25 = 0 THEN 'new' WHEN g % 50 = 1 THEN 'failed' ELSE 'done' END, "
    "md5('secret' || g), (g % 1000) / 10.0, CASE WHEN g % 10 = 0 THEN NULL ELSE 'same' END, "
    "timestamptz '2024-01-01' + g * interval '1 minute' FROM generate_series(1, 200000) g",
    "VACUUM ANALYZE",
]
BY_CUSTOMER = "SELECT * FROM orders WHERE customer_id = $1"


async def statement_id(dsn: str, prefix: str) -> tuple[str, str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT queryid::text AS id, query, calls FROM pg_stat_statements WHERE query LIKE $1 || '%'", prefix
        )
    finally:
        await conn.close()
    assert row is not None, f"no statement starting with {prefix!r}"
    return row["id"], row["query"], row["calls"]


def create_index(column: str, statements: list[tuple[str, str, int]], where: str | None = None) -> dict[str, Any]:
    index: dict[str, Any] = {"table": "orders", "columns": [{"name": column}]} | ({"where": where} if where else {})
    suffix = f" WHERE {where}" if where else ""
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "TuningRecommendation",
        "metadata": {"name": f"orders-{column}", "namespace": "test"},
        "spec": {
            "targetRef": {"name": "shop"},
            "kind": "createIndex",
            "change": {"index": index},
            "sql": f'CREATE INDEX CONCURRENTLY "orders_{column}_idx" ON "public"."orders" ("{column}"){suffix}',
            "rollbackSql": f'DROP INDEX CONCURRENTLY IF EXISTS "public"."orders_{column}_idx"',
            "evidence": {
                "statements": [
                    {"queryId": qid, "fingerprint": "f" + qid.lstrip("-"), "query": query, "calls": calls}
                    for qid, query, calls in statements
                ]
            },
        },
    }


@pytest.fixture
async def shop(pg_database: str) -> str:
    await run_sql(pg_database, ORDERS)
    await run_sql(pg_database, [f"SELECT * FROM orders WHERE customer_id = {c}" for c in range(1, 30)])
    await run_sql(pg_database, [f"UPDATE orders SET amount = amount WHERE id = {i}" for i in range(1, 20)])
    return pg_database


@pytest.fixture
async def sandbox_db(pg_server: LocalPostgres) -> AsyncIterator[str]:
    """A second, empty database on the session server, standing in for a sandbox."""
    pg_server.psql("CREATE DATABASE sandbox_copy")
    yield pg_server.dsn("sandbox_copy")
    pg_server.psql("DROP DATABASE sandbox_copy WITH (FORCE)")


async def test_the_local_provider_measures_a_real_speed_up_and_none_for_a_useless_index(shop: str) -> None:
    helped = await statement_id(shop, "SELECT * FROM orders WHERE customer_id")
    outcome = await benchmark(LocalProvider(), shop, create_index("customer_id", [helped]), Sandbox(), runs=10)
    bench = outcome.benchmark
    assert outcome.reason == "Measured", bench.error
    assert bench.speedup is not None
    assert bench.speedup > 3, bench
    assert bench.rows is not None
    assert 15_000 < bench.rows < 26_000, bench  # 10% of 200,000 orders and of 5,000 customers
    by_id = {s.query_id: s for s in bench.statements}
    assert by_id[helped[0]].runs == 10
    update = next(s for s in bench.statements if s.write)  # the table's busiest write, for the overhead
    assert update.p50_after_ms is not None
    assert bench.write_overhead_percent is not None

    # An index on a column the statement does not filter on buys nothing.
    useless = await benchmark(LocalProvider(), shop, create_index("amount", [helped]), Sandbox(), runs=10)
    assert useless.benchmark.speedup is not None
    assert 0.5 < useless.benchmark.speedup < 2.0, useless.benchmark


async def test_a_partial_index_is_measured_on_the_rows_its_statements_look_for(shop: str) -> None:
    # The application asks for the rare statuses, newest first; most rows are 'done', which the index leaves out.
    await run_sql(
        shop,
        [f"SELECT * FROM orders WHERE status = '{s}' ORDER BY created_at DESC LIMIT 20" for s in ("new", "failed")],
        times=5,
    )
    statement = await statement_id(shop, "SELECT * FROM orders WHERE status = $1 ORDER BY created_at DESC")
    rec = create_index("created_at", [statement], where="status <> 'done'")
    outcome = await benchmark(LocalProvider(), shop, rec, Sandbox(), runs=10)
    assert outcome.benchmark.speedup is not None, outcome.benchmark
    assert outcome.benchmark.speedup > 2, outcome.benchmark


async def test_statements_that_fail_are_recorded_and_the_others_measured(shop: str) -> None:
    helped = await statement_id(shop, "SELECT * FROM orders WHERE customer_id")
    broken = ("99", "SELECT missing_column FROM orders WHERE id = $1", 5)
    unparsable = ("98", "SELECT * FROM orders WHERE (((", 5)
    outcome = await benchmark(
        LocalProvider(), shop, create_index("customer_id", [helped, broken, unparsable]), Sandbox(), runs=5
    )
    by_id = {s.query_id: s for s in outcome.benchmark.statements}
    assert outcome.reason == "Measured"
    assert "missing_column" in (by_id["99"].error or "")
    assert "cannot parse" in (by_id["98"].error or "")
    assert by_id[helped[0]].p50_after_ms is not None


async def test_full_mode_refuses_a_database_above_its_limit(shop: str) -> None:
    helped = await statement_id(shop, "SELECT * FROM orders WHERE customer_id")
    spec = Sandbox(data_mode="full", full_max_size="1Mi")
    outcome = await benchmark(LocalProvider(), shop, create_index("customer_id", [helped]), spec)
    assert outcome.reason == "BenchmarkFailed"
    assert "sandbox.fullMaxSize (1Mi)" in (outcome.benchmark.error or ""), outcome.benchmark.error


async def load(source_dsn: str, sandbox_dsn: str, mode: str, **options: Any) -> clone.Loaded:
    dump = clone.SchemaDump(15)
    await dump.take(source_dsn)
    await dump.restore(sandbox_dsn, "pre-data")
    source, sandbox = await asyncpg.connect(source_dsn), await asyncpg.connect(sandbox_dsn)
    try:
        loaded = await clone.fill(
            source,
            sandbox,
            [("public", "customers"), ("public", "orders")],
            mode=mode,
            percent=options.get("percent", 10.0),
            max_rows=options.get("max_rows", 1_000_000),
            pii_safe=options.get("pii_safe", True),
        )
    finally:
        await source.close()
        await sandbox.close()
    loaded.warnings += await dump.restore(sandbox_dsn, "post-data")
    dump.remove()
    return loaded


async def test_a_sample_is_repeatable_capped_and_loads_without_foreign_keys(
    shop: str, pg_server: LocalPostgres, sandbox_db: str
) -> None:
    loaded = await load(shop, sandbox_db, "sample", percent=5.0, max_rows=4000)
    assert loaded.warnings == []
    assert loaded.rows["public.orders"] == 4000  # 5% would be ~10,000: the cap wins
    assert 150 < loaded.rows["public.customers"] < 350
    first = pg_server.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM customers", database="sandbox_copy")
    pg_server.psql("DROP DATABASE sandbox_copy WITH (FORCE)")
    pg_server.psql("CREATE DATABASE sandbox_copy")
    await load(shop, sandbox_db, "sample", percent=5.0, max_rows=4000)
    again = pg_server.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM customers", database="sandbox_copy")
    assert first == again  # REPEATABLE: the same rows each time
    constraints = pg_server.psql(
        "SELECT string_agg(contype::text, '' ORDER BY contype) FROM pg_constraint WHERE conrelid = 'orders'::regclass",
        database="sandbox_copy",
    ).strip()
    assert constraints == "pu"  # primary key and unique; the target's foreign key (f) is left out


async def test_synthetic_rows_follow_the_statistics_and_copy_no_real_value(
    shop: str, pg_server: LocalPostgres, sandbox_db: str
) -> None:
    loaded = await load(shop, sandbox_db, "synthetic", percent=10.0)
    assert loaded.warnings == []
    assert loaded.rows["public.orders"] == 20_000
    source, sandbox = await asyncpg.connect(shop), await asyncpg.connect(sandbox_db)
    try:
        real_secrets = {r[0] for r in await source.fetch("SELECT secret FROM orders")}
        real_statuses = {r[0] for r in await source.fetch("SELECT DISTINCT status FROM orders")}
        fake = await sandbox.fetch("SELECT secret, status, note, amount, created_at FROM orders")
        shares = await sandbox.fetch("SELECT status, count(*)::float / 20000 AS share FROM orders GROUP BY 1")
        unique_valid = await sandbox.fetchval(
            "SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 'orders'::regclass AND indisunique"
        )
    finally:
        await source.close()
        await sandbox.close()
    assert not {r["secret"] for r in fake} & real_secrets  # not one real secret
    assert len({r["secret"] for r in fake}) == 20_000  # unique, so the UNIQUE index could be built
    assert unique_valid
    assert not {r["status"] for r in fake} & real_statuses  # stand-ins, even for the common values
    assert sorted(round(r["share"], 1) for r in shares) == [0.0, 0.0, 0.9]  # 92% / 4% / 2% in the real table
    nulls = sum(1 for r in fake if r["note"] is None) / len(fake)
    assert 0.07 < nulls < 0.13  # 10% NULL in the real table
    amounts = [r["amount"] for r in fake if r["amount"] is not None]
    assert min(amounts) >= 0
    assert max(amounts) <= 100


def test_the_cli_benchmarks_each_index_recommendation(shop: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(
        ["benchmark", "--dsn", shop, "--format", "json", "--runs", "5", "--data-mode", "synthetic"]
    )
    assert command.run(args, out, err) == 0, err.getvalue()
    results = json.loads(out.getvalue())
    assert results, err.getvalue()
    assert all(r["dataMode"] == "synthetic" for r in results)
    assert max(r["speedup"] for r in results) > 2, results
    assert "loading public.orders (synthetic)" in err.getvalue()  # progress

    args = build_parser().parse_args(["benchmark", "--dsn", shop, "--recommendation", "nope"])
    assert command.run(args, io.StringIO(), err) == 2
    assert "--recommendation: no recommendation nope" in err.getvalue()


def rewrite(original: str, rewritten: str) -> dict[str, Any]:
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "TuningRecommendation",
        "metadata": {"name": "orders-rewrite", "namespace": "test"},
        "spec": {
            "targetRef": {"name": "shop"},
            "kind": "queryRewrite",
            "change": {
                "queryRewrite": {"queryId": "5", "fingerprint": "f5", "original": original, "rewritten": rewritten}
            },
            "sql": rewritten,
            "source": "llm",
            "model": "test/model",
        },
    }


async def test_a_rewrite_is_proved_on_the_sandbox_same_rows_and_faster_or_turned_down(shop: str) -> None:
    # id + 0 hides the primary key from the planner; the rewrite returns the same rows through the index.
    original = "SELECT id, status FROM orders WHERE id + 0 = $1"
    proved = await benchmark(LocalProvider(), shop, rewrite(original, "SELECT id, status FROM orders WHERE id = $1"),
                             Sandbox(), runs=5)  # fmt: skip
    assert proved.reason == "Measured", proved.benchmark
    assert (proved.benchmark.speedup or 0) > 3

    wrong = "SELECT id, status FROM orders WHERE id = $1 + 1"
    turned_down = await benchmark(LocalProvider(), shop, rewrite(original, wrong), Sandbox(), runs=5)
    assert turned_down.reason == "RowsDiffer"
    assert "different rows" in (turned_down.benchmark.error or "")

    same = "SELECT id, status FROM orders WHERE id + 0 = $1 AND true"
    slower = await benchmark(LocalProvider(), shop, rewrite(original, same), Sandbox(), runs=5)
    assert slower.reason == "NotFaster", slower.benchmark
