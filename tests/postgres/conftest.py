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
from optischema.postgres.local import DEFAULT_MAJOR, find_bindir

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


#: The majors the core subset (``@pytest.mark.majors``, tests/postgres/test_majors.py) runs on; 15 is the session's.
MAJORS = (13, 14, 15, 16, 17, 18)


@pytest.fixture(scope="session", params=MAJORS, ids=lambda major: f"pg{major}")
def pg_major_server(request: pytest.FixtureRequest) -> Iterator[LocalPostgres]:
    """A server of each major in turn (pytest keeps one alive at a time): 15 is ``pg_server`` itself, the others
    come from the binaries ``make install`` caches (devcluster.pgbinaries); a major not cached is skipped, saying
    how to get it."""
    major: int = request.param
    if major == DEFAULT_MAJOR:
        yield request.getfixturevalue("pg_server")
        return
    try:
        find_bindir(major, exact=True)
    except PostgresStartError:
        pytest.skip(f"PostgreSQL {major} binaries are not cached: run make install (python -m devcluster.pgbinaries)")
    server = LocalPostgres(major=major)
    try:
        server.start()
    except PostgresStartError as exc:
        pytest.fail(f"could not start PostgreSQL {major}: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_major_database(pg_major_server: LocalPostgres) -> Iterator[str]:
    """A new database on ``pg_major_server`` with pg_stat_statements, and HypoPG where that major has it."""
    name = f"m{next(_names)}"
    pg_major_server.psql(f"CREATE DATABASE {name}")
    pg_major_server.psql("CREATE EXTENSION pg_stat_statements", database=name)
    if pg_major_server.psql("SELECT count(*) FROM pg_available_extensions WHERE name = 'hypopg'").strip() == "1":
        pg_major_server.psql("CREATE EXTENSION hypopg", database=name)
    yield pg_major_server.dsn(name)
    pg_major_server.psql(f"DROP DATABASE {name} WITH (FORCE)")


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
