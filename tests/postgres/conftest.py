"""The real-PostgreSQL tier: one PostgreSQL 15 per test session (pg_stat_statements preloaded, HypoPG available),
started in a temporary directory on a free loopback port and removed afterwards. Tests get a fresh database each."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

import asyncpg
import pytest

from devcluster import LocalPostgres, PostgresStartError

from .replica import StreamingReplica

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    # A role that must give a password over TCP, for the authentication tests; everyone else is trusted.
    server = LocalPostgres(hba=["host all secure 127.0.0.1/32 scram-sha-256"])
    try:
        server.start()
    except PostgresStartError as exc:
        pytest.fail(f"could not start the test PostgreSQL: {exc}")  # a missing server is a failure, never a skip
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(pg_server: LocalPostgres) -> Iterator[str]:
    """A new, empty database with pg_stat_statements and hypopg created; its DSN."""
    name = f"t{next(_names)}"
    pg_server.psql(f"CREATE DATABASE {name}")
    pg_server.psql("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;", database=name)
    yield pg_server.dsn(name)
    pg_server.psql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_replica(pg_server: LocalPostgres) -> Iterator[StreamingReplica]:
    """A streaming replica (hot standby, ``pg_basebackup -R``) of ``pg_server`` on 127.0.0.3: every test database
    is there too; call ``catch_up()`` before reading on it what the primary just wrote."""
    replica = StreamingReplica(pg_server)
    try:
        replica.start()
    except PostgresStartError as exc:
        pytest.fail(f"could not start the test replica: {exc}")  # a failure, never a skip
    try:
        yield replica
    finally:
        replica.stop()


@pytest.fixture
async def conn(pg_database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_database)
    try:
        yield connection
    finally:
        await connection.close()


async def run_sql(dsn: str, statements: Sequence[str], times: int = 1) -> None:
    """Run each statement ``times`` times with the simple protocol (constants in the text, as pgbench sends them)."""
    connection = await asyncpg.connect(dsn)
    try:
        for _ in range(times):
            for statement in statements:
                await connection.execute(statement)
    finally:
        await connection.close()


@asynccontextmanager
async def traffic(dsn: str, statements: Sequence[str], pause: float = 0.002) -> AsyncIterator[None]:
    """Live traffic while the body runs: the statements in a loop on their own connection (so that
    pg_stat_activity shows them with their constants), stopped and closed afterwards."""
    connection = await asyncpg.connect(dsn)
    stop = asyncio.Event()

    async def loop() -> None:
        number = 0
        while not stop.is_set():
            await connection.execute(statements[number % len(statements)])
            number += 1
            await asyncio.sleep(pause)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        stop.set()
        await task
        await connection.close()
