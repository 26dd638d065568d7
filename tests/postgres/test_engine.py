"""The engine on purpose-built schemas: each case asserts the exact index proposed (or that none is)."""

from __future__ import annotations

import asyncpg
import pytest

from optischema.analysis.report import Recommendation
from optischema.changes.ddl import render_create
from optischema.flows.analyze import AnalysisResult, AnalyzeOptions, analyze

from .conftest import run_sql, traffic

ORDERS = """
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, region text NOT NULL);
INSERT INTO customers SELECT g, 'C' || g || '@Example.org', 'r' || (g % 20) FROM generate_series(1, 20000) g;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL,
                     created_at timestamptz NOT NULL, total numeric NOT NULL);
INSERT INTO orders SELECT g, 1 + g % 20000, CASE WHEN g % 50 = 0 THEN 'open' ELSE 'closed' END,
                          now() - g * interval '1 minute', g % 1000 FROM generate_series(1, 200000) g;
CREATE TABLE invoices (id bigint PRIMARY KEY, customer_id bigint NOT NULL, amount numeric(10,2) NOT NULL,
                       issued_at timestamptz NOT NULL, paid_at timestamptz);
INSERT INTO invoices SELECT g, 1 + g % 20000, g % 500, now() - g * interval '1 minute',
                            CASE WHEN g % 20 <> 0 THEN now() END FROM generate_series(1, 200000) g;
VACUUM ANALYZE;
"""

NO_SAMPLES = AnalyzeOptions(sample_seconds=0)


def creates(result: AnalysisResult, table: str) -> list[str]:
    """The proposed CREATE INDEX statements on ``table``, rendered without a name for comparison."""
    return [
        render_create(r.change.index.model_copy(update={"name": "x"}), concurrently=False)
        for r in result.recommendations
        if r.kind == "createIndex" and r.change.index is not None and r.change.index.table == table
    ]


def of_kind(result: AnalysisResult, kind: str) -> list[Recommendation]:
    return [r for r in result.recommendations if r.kind == kind]


async def setup(dsn: str, schema: str, workload: list[str], times: int = 20) -> None:
    """Load ``schema`` (statements ending a line with ';') and run the workload ``times`` times."""
    await run_sql(dsn, [s for s in schema.split(";\n") if s.strip()])
    await run_sql(dsn, workload, times)


async def test_equality_then_range_makes_one_composite(pg_database: str) -> None:
    await setup(
        pg_database,
        ORDERS,
        [
            f"SELECT created_at FROM orders WHERE customer_id = {c} AND created_at > now() - interval '30 days' "
            "ORDER BY created_at"
            for c in (11, 4242, 777)
        ],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    assert creates(result, "orders") == ['CREATE INDEX "x" ON "public"."orders" ("customer_id", "created_at")']


async def test_join_key_on_the_many_side_and_the_filter_on_the_one_side(pg_database: str) -> None:
    await setup(
        pg_database,
        ORDERS,
        [
            "SELECT o.id, o.total FROM customers c JOIN orders o ON o.customer_id = c.id "
            f"WHERE c.email = 'C{n}@Example.org'"
            for n in (5, 99, 1234)
        ],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    # email is unique: one key, nothing carried. Each customer has 10 orders: carrying the two columns read turns
    # ten heap visits per call into an index-only scan.
    assert creates(result, "customers") == ['CREATE INDEX "x" ON "public"."customers" ("email")']
    assert creates(result, "orders") == [
        'CREATE INDEX "x" ON "public"."orders" ("customer_id") INCLUDE ("id", "total")'
    ]


async def test_expression_index_matches_the_statement_expression(pg_database: str) -> None:
    await setup(
        pg_database,
        ORDERS,
        [f"SELECT id FROM customers WHERE lower(email) = lower('c{n}@example.ORG')" for n in (1, 2, 3)],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    assert creates(result, "customers") == ['CREATE INDEX "x" ON "public"."customers" ((lower(email)))']


async def test_partial_index_for_is_null_with_sort_column(pg_database: str) -> None:
    await setup(
        pg_database,
        ORDERS,
        [
            "SELECT id, customer_id FROM invoices WHERE paid_at IS NULL AND issued_at < now() - interval '30 days' "
            "ORDER BY issued_at LIMIT 50"
        ],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    assert creates(result, "invoices") == [
        'CREATE INDEX "x" ON "public"."invoices" ("issued_at") WHERE paid_at IS NULL'
    ]


async def test_include_turns_an_aggregate_into_an_index_only_scan(pg_database: str) -> None:
    await setup(
        pg_database, ORDERS, [f"SELECT sum(amount) FROM invoices WHERE customer_id = {c}" for c in (3, 14, 159)]
    )
    result = await analyze(pg_database, NO_SAMPLES)
    assert creates(result, "invoices") == ['CREATE INDEX "x" ON "public"."invoices" ("customer_id") INCLUDE ("amount")']


async def test_prefix_like_gets_pattern_ops_from_live_samples(pg_database: str) -> None:
    schema = """
    CREATE TABLE drivers (id bigint PRIMARY KEY, name text NOT NULL, license_no text NOT NULL);
    INSERT INTO drivers SELECT g, 'Driver ' || g, 'DL' || lpad((g * 7919 % 1000000)::text, 6, '0')
      FROM generate_series(1, 100000) g;
    VACUUM ANALYZE;
    """
    statements = [f"SELECT id, name FROM drivers WHERE license_no LIKE 'DL{p}%'" for p in ("0791", "1583", "2375")]
    await setup(pg_database, schema, statements)
    async with traffic(pg_database, statements):
        result = await analyze(pg_database, AnalyzeOptions(sample_seconds=1.0))
    # The database collation is C.UTF-8, not C: a plain btree could not serve LIKE 'prefix%'.
    assert creates(result, "drivers") == ['CREATE INDEX "x" ON "public"."drivers" ("license_no" "text_pattern_ops")']


async def test_prefix_like_without_samples_is_bound_from_statistics(pg_database: str) -> None:
    schema = """
    CREATE TABLE drivers (id bigint PRIMARY KEY, name text NOT NULL, license_no text NOT NULL);
    INSERT INTO drivers SELECT g, 'Driver ' || g, 'DL' || lpad((g * 7919 % 1000000)::text, 6, '0')
      FROM generate_series(1, 100000) g;
    VACUUM ANALYZE;
    """
    await setup(pg_database, schema, [])
    conn = await asyncpg.connect(pg_database)
    try:  # parameters, as an application sends them: pg_stat_statements shows `LIKE $1 || $2`
        for prefix in ("0791", "1583", "2375"):
            await conn.fetch("SELECT id, name FROM drivers WHERE license_no LIKE $1 || $2", f"DL{prefix}", "%")
    finally:
        await conn.close()
    result = await analyze(pg_database, NO_SAMPLES)
    assert creates(result, "drivers") == ['CREATE INDEX "x" ON "public"."drivers" ("license_no" "text_pattern_ops")']


async def test_rare_values_of_a_dominated_column_get_a_partial_index(pg_database: str) -> None:
    schema = """
    CREATE TABLE trips (id bigint PRIMARY KEY, vehicle_id bigint NOT NULL, state text NOT NULL, km numeric);
    INSERT INTO trips SELECT g, g % 3000, CASE WHEN g % 100 = 0 THEN 'planned' WHEN g % 100 < 3 THEN 'active'
                                               ELSE 'done' END, g % 400 FROM generate_series(1, 300000) g;
    VACUUM ANALYZE;
    """
    statements = [
        "SELECT id, vehicle_id FROM trips WHERE state = 'active'",
        "SELECT id, vehicle_id FROM trips WHERE state = 'planned'",
    ]
    await setup(pg_database, schema, statements)
    async with traffic(pg_database, statements):
        result = await analyze(pg_database, AnalyzeOptions(sample_seconds=1.0))
    proposed = creates(result, "trips")
    assert len(proposed) == 1
    assert proposed[0].startswith('CREATE INDEX "x" ON "public"."trips" ("state")')
    assert proposed[0].endswith("WHERE state <> 'done'")


async def test_nothing_is_proposed_that_an_existing_index_covers(pg_database: str) -> None:
    await setup(
        pg_database,
        ORDERS + "CREATE INDEX orders_customer_created ON orders (customer_id, created_at);\nANALYZE orders;\n",
        [f"SELECT created_at FROM orders WHERE customer_id = {c} ORDER BY created_at" for c in (1, 2)],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    assert creates(result, "orders") == []


async def test_small_tables_and_primary_key_lookups_need_nothing(pg_database: str) -> None:
    await setup(pg_database, ORDERS, [f"SELECT * FROM orders WHERE id = {n}" for n in (1, 2, 3)])
    result = await analyze(pg_database, NO_SAMPLES)
    assert of_kind(result, "createIndex") == []


async def test_ids_are_stable_across_runs(pg_database: str) -> None:
    await setup(pg_database, ORDERS, [f"SELECT sum(amount) FROM invoices WHERE customer_id = {c}" for c in (3, 14)])
    # Vacuumed and analysed first: autovacuum would do it between the two analyses on its own schedule (CI once saw
    # it), and a table's maintenance findings rightly change then; the ids of the same findings are what is tested.
    conn = await asyncpg.connect(pg_database)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    first = await analyze(pg_database, NO_SAMPLES)
    second = await analyze(pg_database, NO_SAMPLES)
    assert [r.id for r in first.recommendations] == [r.id for r in second.recommendations]
    assert first.recommendations


async def test_analysis_writes_nothing(pg_database: str) -> None:
    await setup(pg_database, ORDERS, [f"SELECT sum(amount) FROM invoices WHERE customer_id = {c}" for c in (3, 14)])
    conn = await asyncpg.connect(pg_database)
    try:
        query = (
            "SELECT (SELECT count(*) FROM pg_class), (SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) "
            "FROM pg_stat_user_tables), (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())"
        )
        before = await conn.fetchrow(query)
        await analyze(pg_database, NO_SAMPLES)
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        after = await conn.fetchrow(query)
    finally:
        await conn.close()
    assert after[0] == before[0]  # no relation created (hypothetical indexes live in backend memory)
    assert after[1] == before[1]  # no row written


async def test_the_analysis_connection_refuses_writes(pg_database: str) -> None:
    from optischema.postgres.connect import connect

    conn = await connect(pg_database)
    try:
        assert await conn.fetchval("SHOW default_transaction_read_only") == "on"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("CREATE TABLE nope (id int)")
    finally:
        await conn.close()
