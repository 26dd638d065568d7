"""A partitioned index's rollback on real PostgreSQL 15 never drops an index the operator did not build: a table
attached to the partitioned table with a matching index of its own has that index adopted by ours (PostgreSQL builds
none then), and a ``DROP INDEX`` of ours would take it along."""

from __future__ import annotations

import asyncpg
import pytest

from .test_apply_attacks import context, drive, force_regression, ready
from .test_partitioned_apply import CrashingApi, Recorder, start


@pytest.fixture
def api() -> CrashingApi:
    return CrashingApi()


@pytest.fixture
def events() -> Recorder:
    return Recorder()


async def _indexes_of(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT indexrelid::regclass::text AS name FROM pg_index WHERE indrelid = $1::regclass", table
    )
    return sorted(r["name"] for r in rows)


async def test_a_rollback_never_drops_an_index_someone_attached_with_their_table(
    conn: asyncpg.Connection, pg_database: str, api: CrashingApi, events: Recorder
) -> None:
    name = await start(conn, api, pg_database)
    ctx = context(api, events)
    status = await drive(ctx, api, name, "Verifying", "Failed")
    assert status["phase"] == "Verifying", status
    # After the rollout, someone attaches a table with their own index on the same column: PostgreSQL adopts it.
    # In one transaction, as a migration script would: the index is as new as the attach.
    await conn.execute(
        "CREATE TABLE dba_part (LIKE posts); CREATE INDEX dba_idx ON dba_part (author_id);"
        "ALTER TABLE posts ATTACH PARTITION dba_part FOR VALUES FROM ('2030-01-01') TO ('2031-01-01')"
    )
    # And one made earlier under the very name PostgreSQL would choose, attached later.
    await conn.execute("CREATE TABLE posts_2031 (LIKE posts); CREATE INDEX ON posts_2031 (author_id)")
    await conn.execute("ALTER TABLE posts ATTACH PARTITION posts_2031 FOR VALUES FROM ('2031-01-01') TO ('2032-01-01')")
    # A partition created afterwards gets an index PostgreSQL builds for ours: that one is ours to drop.
    await conn.execute("CREATE TABLE posts_2024_03 PARTITION OF posts FOR VALUES FROM ('2024-03-01') TO ('2024-04-01')")
    parent = status["sql"].split('"')[1]
    await force_regression(api, conn, name)
    status = await drive(ctx, api, name, "RolledBack", "Applied", "Failed")

    assert await _indexes_of(conn, "dba_part") == ["dba_idx"], "their index was dropped with ours"
    assert await _indexes_of(conn, "posts_2031") == ["posts_2031_author_id_idx"], "their index was dropped with ours"
    assert status["phase"] == "Failed", status
    assert ready(status)["reason"] == "ProtectedIndex"
    assert "public.dba_idx" in ready(status)["message"]
    assert "public.posts_2031_author_id_idx" in ready(status)["message"]
    assert "public.posts_2024_03" not in ready(status)["message"]
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = $1", parent) == 1, "nothing was dropped"
