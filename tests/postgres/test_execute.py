"""Executing changes on a real PostgreSQL: concurrent builds under write load, lock timeouts, cancelled builds."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import asyncpg
import pytest

from devcluster.writeload import create_ledger, write_load
from optischema.postgres import catalog, execute
from optischema.postgres.local import LocalPostgres


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


def test_a_concurrent_build_on_a_million_rows_fails_no_client_transaction(
    pg_server: LocalPostgres, pg_database: str
) -> None:
    name = database_of(pg_database)
    create_ledger(pg_server, name, 1_000_000)
    built: list[execute.Executed] = []

    async def build() -> None:
        conn = await execute.connect_writer(pg_database)
        try:
            built.append(
                await execute.execute(
                    conn,
                    'CREATE INDEX CONCURRENTLY "ledger_account_idx" ON "public"."ledger" ("account")',
                    lock_timeout_ms=2000,
                    statement_timeout_ms=600_000,
                    retry_until=time.monotonic() + 120,
                )
            )
        finally:
            await conn.close()

    load = write_load(pg_server, name, 12, rows=1_000_000, during=lambda: asyncio.run(build()))
    assert built, "the build finished"
    assert load.transactions > 100
    assert load.failed == 0

    async def state() -> catalog.IndexState | None:
        conn = await asyncpg.connect(pg_database)
        try:
            return await catalog.index_state(conn, "public", "ledger_account_idx")
        finally:
            await conn.close()

    found = asyncio.run(state())
    assert found is not None
    assert found.valid


async def test_a_held_lock_times_out_then_the_retry_succeeds(conn: asyncpg.Connection, pg_database: str) -> None:
    await conn.execute("CREATE TABLE t (id int)")
    holder = await asyncpg.connect(pg_database)
    writer = await execute.connect_writer(pg_database)
    retries: list[str] = []

    async def note(attempt: int, error: str, delay: float) -> None:
        retries.append(error)

    try:
        await holder.execute("BEGIN; LOCK TABLE t IN SHARE MODE")  # conflicts with CREATE INDEX CONCURRENTLY
        release = asyncio.get_running_loop().call_later(1.5, lambda: asyncio.ensure_future(holder.execute("COMMIT")))
        done = await execute.execute(
            writer,
            'CREATE INDEX CONCURRENTLY "t_id_idx" ON "public"."t" ("id")',
            lock_timeout_ms=200,
            statement_timeout_ms=60_000,
            retry_until=time.monotonic() + 30,
            backoff=0.2,
            on_retry=note,
        )
        release.cancel()
    finally:
        await holder.close()
        await writer.close()
    assert done.attempts >= 2
    assert retries
    assert "lock timeout" in retries[0]
    state = await catalog.index_state(conn, "public", "t_id_idx")
    assert state is not None
    assert state.valid


async def test_without_time_left_a_lock_timeout_is_an_error(conn: asyncpg.Connection, pg_database: str) -> None:
    await conn.execute("CREATE TABLE t (id int)")
    holder = await asyncpg.connect(pg_database)
    writer = await execute.connect_writer(pg_database)
    try:
        await holder.execute("BEGIN; LOCK TABLE t IN SHARE MODE")
        with pytest.raises(execute.ExecuteError) as raised:
            await execute.execute(
                writer, 'CREATE INDEX CONCURRENTLY "t_id_idx" ON "public"."t" ("id")', lock_timeout_ms=200,
                statement_timeout_ms=60_000, retry_until=time.monotonic() + 0.5, backoff=1.0,
            )  # fmt: skip
        await holder.execute("ROLLBACK")
    finally:
        await holder.close()
        await writer.close()
    assert raised.value.reason == "LockTimeout"
    # Refused at its first lock, the build left nothing behind (later failures leave an INVALID index: test_apply).
    assert await catalog.index_state(conn, "public", "t_id_idx") is None


async def test_the_advisory_lock_admits_one_session(pg_database: str) -> None:
    first, second = await execute.connect_writer(pg_database), await execute.connect_writer(pg_database)
    key = execute.lock_key("uid-1")
    try:
        assert await execute.try_lock(first, key)
        assert not await execute.try_lock(second, key)
        await execute.unlock(first, key)
        assert await execute.try_lock(second, key)
    finally:
        await first.close()
        await second.close()


async def test_estimates_with_and_without_hypopg(conn: asyncpg.Connection) -> None:
    from optischema.api.index import IndexDefinition

    await conn.execute("CREATE TABLE e AS SELECT g AS id, g % 100 AS k FROM generate_series(1, 100000) g")
    await conn.execute("ANALYZE e")
    index = IndexDefinition.model_validate({"table": "e", "columns": [{"name": "k"}]})
    with_hypopg = await catalog.estimate_index_bytes(conn, index, hypopg=True)
    without = await catalog.estimate_index_bytes(conn, index, hypopg=False)
    assert 1_000_000 < with_hypopg < 4_000_000
    assert 0.5 < without / with_hypopg < 2.0
    missing = IndexDefinition.model_validate({"table": "nope", "columns": [{"name": "k"}]})
    with pytest.raises(asyncpg.UndefinedTableError):
        await catalog.estimate_index_bytes(conn, missing, hypopg=False)
