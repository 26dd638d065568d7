"""Executing an approved change on the database: the only module that writes.

It runs statements the operator rendered itself (``changes.ddl``), on a connection opened with the target's *write*
credentials, each under ``lock_timeout`` and ``statement_timeout``. A session-level advisory lock keyed on the
change makes a second operator replica (or a restarted one whose old session still runs) wait instead of building
the same index twice; ``client_connection_check_interval`` makes the server abort a build whose operator died,
which leaves an INVALID index that the next attempt finds and drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import asyncpg

from optischema.changes.ddl import BUILT_INS_ONLY
from optischema.changes.verdict import Counters
from optischema.postgres.connect import ConnectParams, ConnectTarget

APPLICATION_NAME = "optischema-apply"
#: The first major with ``client_connection_check_interval``.
CONNECTION_CHECK_SINCE = 14


#: The session is gone, not the statement refused: the backend was terminated (``pg_terminate_backend``, a server
#: shut down or failed over) or the connection dropped. Nothing needs a person: the change waits and tries again.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
)


class ExecuteError(Exception):
    """A statement failed; ``reason`` is ``LockTimeout``, ``StatementTimeout``, ``ConnectionLost`` or
    ``ApplyFailed``, ``message`` the server's words."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Executed:
    sql: str
    seconds: float
    attempts: int


async def connect_writer(dsn: ConnectTarget, *, timeout: float = 10.0) -> asyncpg.Connection:
    """A writing session, named in ``pg_stat_activity``; the server notices within a second if we go away.

    Parameters go to asyncpg as keyword arguments (see :class:`ConnectParams`), never through a DSN.
    ``client_connection_check_interval`` came in PostgreSQL 14: sent at start-up, 13 refuses the whole connection
    (unrecognized configuration parameter), so it is set afterwards where the server has it; on 13 a dead
    operator's build runs to its end (or its statement_timeout) instead."""
    server_settings = {
        "application_name": APPLICATION_NAME,
        "idle_in_transaction_session_timeout": "60000",
    }
    if isinstance(dsn, ConnectParams):
        conn = await asyncpg.connect(timeout=timeout, server_settings=server_settings, **dsn.asyncpg_kwargs())
    else:
        conn = await asyncpg.connect(dsn, timeout=timeout, server_settings=server_settings)
    if conn.get_server_version().major >= CONNECTION_CHECK_SINCE:
        try:
            await conn.execute("SET client_connection_check_interval = 1000")
        except BaseException:
            await conn.close()
            raise
    return conn


def lock_key(change_uid: str) -> int:
    """A signed 64-bit advisory-lock key for a change."""
    return int.from_bytes(hashlib.sha256(change_uid.encode()).digest()[:8], "big", signed=True)


async def try_lock(conn: asyncpg.Connection, key: int) -> bool:
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))


async def unlock(conn: asyncpg.Connection, key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def execute(
    conn: asyncpg.Connection,
    sql: str,
    *,
    lock_timeout_ms: int,
    statement_timeout_ms: int,
    retry_until: float | None = None,
    backoff: float = 1.0,
    on_retry: Callable[[int, str, float], Awaitable[None]] | None = None,
    recheck: Callable[[], Awaitable[int]] | None = None,
) -> Executed:
    """Run one statement outside a transaction (``CONCURRENTLY`` needs that), retrying lock timeouts with
    exponential backoff until ``retry_until`` (a ``time.monotonic()`` deadline).

    ``recheck`` runs right before every attempt (the first and each retry): it raises to stop (the window
    closed, the database changed), else returns the milliseconds the statement may take, which bound
    ``statement_timeout``."""
    attempts = 0
    delay = backoff
    while True:
        attempts += 1
        timeout_ms = statement_timeout_ms
        if recheck is not None:
            timeout_ms = min(timeout_ms, await recheck())
        started = time.monotonic()
        try:
            await conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
            await conn.execute(f"SET statement_timeout = {int(max(timeout_ms, 1))}")
            # Names resolve to built-ins only, and strings are read as sqlglot read them (see catalog.LEX_AS_RENDERED).
            await conn.execute(f"SET search_path = {BUILT_INS_ONLY}; SET standard_conforming_strings = on")
            await conn.execute(sql)
        except asyncpg.LockNotAvailableError as error:
            if retry_until is None or time.monotonic() + delay >= retry_until:
                raise ExecuteError("LockTimeout", f"{error} (after {attempts} attempt(s))") from error
            if on_retry is not None:
                await on_retry(attempts, str(error), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
            continue
        except asyncpg.QueryCanceledError as error:
            raise ExecuteError("StatementTimeout", str(error)) from error
        except CONNECTION_LOST as error:
            raise ExecuteError("ConnectionLost", _first_line(error)) from error
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            raise ExecuteError("ApplyFailed", _first_line(error)) from error
        finally:
            await _reset(conn)
        return Executed(sql, time.monotonic() - started, attempts)


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


async def _reset(conn: asyncpg.Connection) -> None:
    if not conn.is_closed():
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute(
                "RESET lock_timeout; RESET statement_timeout; RESET search_path; RESET standard_conforming_strings"
            )


async def counters(conn: asyncpg.Connection, query_ids: Iterable[str]) -> dict[str, Counters]:
    """Cumulative calls and time of the given statements (all users and databases summed per query id)."""
    ids = [int(q) for q in query_ids]
    if not ids:
        return {}
    rows = await conn.fetch(
        "SELECT queryid::text AS id, sum(calls)::bigint AS calls, sum(total_exec_time) AS total "
        "FROM pg_stat_statements WHERE queryid = ANY($1::bigint[]) AND dbid = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) GROUP BY queryid",
        ids,
    )
    return {row["id"]: Counters(int(row["calls"]), float(row["total"])) for row in rows}


async def statements_on(conn: asyncpg.Connection, table: str, *, writes: bool) -> list[str]:
    """Query ids of this database's statements that name ``table`` (reads, or INSERT/UPDATE/DELETE when
    ``writes``): the statements a Git change is judged on, having no recommendation to list them."""
    pattern = rf"\m{table}\M"
    rows = await conn.fetch(
        "SELECT queryid::text AS id FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND query ~* $1 AND (query ~* '^\\s*(insert|update|delete)\\M') = $2 "
        "AND query !~* '^\\s*(explain|create|drop|alter|vacuum|analyze|reindex)\\M' "
        "ORDER BY total_exec_time DESC LIMIT 50",
        pattern,
        writes,
    )
    return [row["id"] for row in rows]
