"""The real-PostgreSQL tier: one PostgreSQL 15 per test session (pg_stat_statements preloaded, HypoPG available),
started in a temporary directory on a free loopback port and removed afterwards. Tests get a fresh database each."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from devcluster import LocalPostgres, PostgresStartError

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    server = LocalPostgres()
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


@pytest.fixture
async def conn(pg_database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_database)
    try:
        yield connection
    finally:
        await connection.close()
