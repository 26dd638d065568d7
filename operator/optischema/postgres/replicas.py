"""Index usage read from each read replica (``spec.connection.replicas``), for :mod:`optischema.analysis.usage`.

A replica's ``idx_scan`` counts the scans its own queries made, which the primary never sees; its statistics
start at its own ``stats_reset`` or start. Each replica is read on a connection of its own (read-only, bounded in
time, the same credentials as the primary), all at once. A replica that cannot be read is recorded with the reason,
never skipped: :func:`optischema.analysis.usage.judge` then keeps every index (no drop on partial evidence). A
"replica" that turns out to be another database (another ``system_identifier``) is recorded as unreadable too: its
counters say nothing about this one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from optischema.analysis.errors import AnalysisError
from optischema.analysis.usage import IndexKey, InstanceUsage, collecting_since

from .connect import DATABASE_ERRORS, ConnectParams, ConnectTarget, connect, describe_target

USAGE_SQL = """SELECT schemaname AS schema, indexrelname AS name, coalesce(idx_scan, 0) AS scans
                FROM pg_stat_user_indexes"""
STARTED_SQL = """SELECT s.stats_reset, pg_postmaster_start_time() AS started
                  FROM pg_stat_database s WHERE s.datname = current_database()"""


def instance_name(dsn: ConnectTarget) -> str:
    """``host:port`` of an instance, as notes and rationales name it (no user, no password)."""
    if isinstance(dsn, ConnectParams):
        where = dsn.address or dsn.host  # a CloudNativePG instance: its Pod's IP (the host is the Cluster's)
        host = f"[{where}]" if ":" in where else where
        return f"{host}:{dsn.port}"
    described = describe_target(dsn)
    return described.split("@", 1)[-1].split("/", 1)[0]


async def read_usage(conn: asyncpg.Connection) -> tuple[dict[IndexKey, int], datetime | None]:
    """Every user index's scan count on this instance, and when its counters began."""
    rows = await conn.fetch(USAGE_SQL)
    started = await conn.fetchrow(STARTED_SQL)
    since = collecting_since(started["stats_reset"], started["started"]) if started else None
    return {(r["schema"], r["name"]): r["scans"] for r in rows}, since


async def _system_identifier(conn: asyncpg.Connection) -> str | None:
    try:
        value = await conn.fetchval("SELECT system_identifier::text FROM pg_control_system()")
    except asyncpg.InsufficientPrivilegeError:
        return None  # needs pg_monitor; without it the check is skipped, as for the primary
    return str(value) if value is not None else None


async def read_replica(dsn: ConnectTarget, *, timeout: float, system_identifier: str | None) -> InstanceUsage:
    """One replica's usage; unreadable (with the reason) when it cannot be reached or read in ``timeout`` seconds,
    or when it is not a copy of the database whose ``system_identifier`` is given."""
    name = instance_name(dsn)
    try:
        async with asyncio.timeout(timeout * 3):  # connect, then two small reads
            conn = await connect(dsn, timeout=timeout)
            try:
                identifier = await _system_identifier(conn)
                if system_identifier and identifier and identifier != system_identifier:
                    return InstanceUsage.unreachable(
                        name,
                        f"it is another database (system identifier {identifier}, the primary's is "
                        f"{system_identifier}), not a replica of this one",
                    )
                scans, since = await read_usage(conn)
            finally:
                await conn.close()
    except AnalysisError as error:
        return InstanceUsage.unreachable(name, error.message)
    except TimeoutError:
        return InstanceUsage.unreachable(name, f"no answer within {timeout * 3:g}s")
    except DATABASE_ERRORS as error:
        return InstanceUsage.unreachable(name, f"{type(error).__name__}: {error}")
    return InstanceUsage(name, scans, since)


async def read_replicas(
    replicas: Sequence[ConnectTarget], *, timeout: float, system_identifier: str | None
) -> list[InstanceUsage]:
    """Every replica's usage, read concurrently, in the order given."""
    return list(
        await asyncio.gather(
            *(read_replica(dsn, timeout=timeout, system_identifier=system_identifier) for dsn in replicas)
        )
    )
