"""The fixture gives what the engine needs: a real server, HypoPG's what-if planning, and pg_stat_statements."""

from __future__ import annotations

import json

import asyncpg


async def test_connects_to_postgresql_15(conn: asyncpg.Connection) -> None:
    version = await conn.fetchval("SHOW server_version_num")
    assert 150000 <= int(version) < 160000


async def test_hypothetical_index_changes_the_plan(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, note text);"
        "INSERT INTO orders SELECT g, g % 5000, md5(g::text) FROM generate_series(1, 100000) g;"
        "ANALYZE orders;"
    )
    query = "EXPLAIN (FORMAT JSON) SELECT * FROM orders WHERE customer_id = 42"

    before = json.loads(await conn.fetchval(query))[0]["Plan"]
    created = await conn.fetchrow(
        "SELECT indexrelid, indexname FROM hypopg_create_index('CREATE INDEX ON orders (customer_id)')"
    )
    after = json.loads(await conn.fetchval(query))[0]["Plan"]
    size = await conn.fetchval("SELECT hypopg_relation_size($1)", created["indexrelid"])

    assert before["Node Type"] == "Seq Scan"
    assert "Index" in after["Node Type"] or "Index" in after["Plans"][0]["Node Type"]
    assert created["indexname"] in json.dumps(after)
    assert after["Total Cost"] < before["Total Cost"] / 10
    assert size > 0
    # Nothing real was created.
    assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'orders'") == 1
    await conn.execute("SELECT hypopg_reset()")
    reset = json.loads(await conn.fetchval(query))[0]["Plan"]
    assert reset["Node Type"] == "Seq Scan"


async def test_generic_plan_of_a_normalised_statement_sees_hypothetical_indexes(conn: asyncpg.Connection) -> None:
    # The PostgreSQL 15 route for pg_stat_statements text: PREPARE after creating the hypothetical index.
    await conn.execute(
        "CREATE TABLE t (id int PRIMARY KEY, k int NOT NULL);"
        "INSERT INTO t SELECT g, g % 1000 FROM generate_series(1, 50000) g; ANALYZE t;"
        "SET plan_cache_mode = force_generic_plan;"
    )
    await conn.execute("SELECT * FROM hypopg_create_index('CREATE INDEX ON t (k)')")
    await conn.execute("PREPARE q(int) AS SELECT * FROM t WHERE k = $1")
    plan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) EXECUTE q(NULL)"))[0]["Plan"]
    assert "btree_t_k" in json.dumps(plan)


async def test_statements_are_recorded_in_pg_stat_statements(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE events (id int, kind text)")
    for i in range(5):
        await conn.fetch("SELECT count(*) FROM events WHERE kind = $1", f"k{i}")

    rows = await conn.fetch(
        "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
        "WHERE d.datname = current_database() AND query LIKE 'SELECT count(*) FROM events%'"
    )
    assert len(rows) == 1
    assert rows[0]["calls"] == 5
    assert "$1" in rows[0]["query"]


async def test_each_test_gets_an_empty_database(conn: asyncpg.Connection) -> None:
    tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    assert tables == 0
