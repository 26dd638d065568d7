"""The analysis connection: read-only by construction, bounded in time, named in pg_stat_activity.

Every way a connection can fail becomes an :class:`AnalysisError` that names the cause and the fix, because the
person reading it is deciding whether to fix a Secret, a pg_hba.conf line or a network policy.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import asyncpg

from optischema.analysis.errors import AnalysisError, ExitCode

APPLICATION_NAME = "optischema-analyze"
#: What a lost or broken connection raises mid-work, for callers that must not import asyncpg.
#: What a failing or vanishing server raises. ``InternalClientError`` too: when the server ends a connection while a
#: statement is in flight (a sandbox pod deleted mid-benchmark), asyncpg may report the next call as a protocol state
#: error rather than a lost connection — the connection is unusable either way.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
)


def describe_target(dsn: str) -> str:
    """``user@host:port/db`` without the password, for messages."""
    try:
        parts = urlsplit(dsn)
        port = parts.port or 5432
    except ValueError:
        return "the database"
    user = f"{parts.username}@" if parts.username else ""
    return f"{user}{parts.hostname or 'localhost'}:{port}{parts.path or ''}"


async def connect(
    dsn: str,
    *,
    timeout: float = 10.0,
    statement_timeout_ms: int = 30_000,
    application_name: str = APPLICATION_NAME,
    read_only: bool = True,
) -> asyncpg.Connection:
    """Open a connection; ``read_only`` makes every transaction read-only, so analysis cannot write by mistake."""
    settings = {
        "application_name": application_name,
        "statement_timeout": str(statement_timeout_ms),
        "lock_timeout": "2000",
        "idle_in_transaction_session_timeout": "60000",
    }
    if read_only:
        settings["default_transaction_read_only"] = "on"
    where = describe_target(dsn)
    try:
        return await asyncpg.connect(dsn, timeout=timeout, server_settings=settings)
    except asyncpg.InvalidPasswordError as error:
        raise AnalysisError(
            "AuthenticationFailed",
            f"cannot log in to {where}: {error} (check the password in the credentials Secret)",
            ExitCode.UNREACHABLE,
        ) from error
    except asyncpg.InvalidAuthorizationSpecificationError as error:
        raise AnalysisError(
            "AuthenticationFailed",
            f"cannot log in to {where}: {error} (check the role exists, may log in, and pg_hba.conf allows it)",
            ExitCode.UNREACHABLE,
        ) from error
    except asyncpg.InvalidCatalogNameError as error:
        raise AnalysisError("ConnectionFailed", f"{where}: {error}", ExitCode.UNREACHABLE) from error
    except asyncpg.PostgresError as error:
        raise AnalysisError("ConnectionFailed", f"{where}: {error}", ExitCode.UNREACHABLE) from error
    except (asyncpg.ClientConfigurationError, ValueError) as error:
        raise AnalysisError("InvalidDSN", f"the DSN is not valid: {error}", ExitCode.BAD_INPUT) from error
    except TimeoutError as error:
        raise AnalysisError(
            "ConnectionFailed", f"cannot reach {where}: no answer within {timeout:g}s", ExitCode.UNREACHABLE
        ) from error
    except (OSError, socket.gaierror) as error:
        raise AnalysisError(
            "ConnectionFailed",
            f"cannot reach {where}: {error.strerror or error} (is the server running and listening there?)",
            ExitCode.UNREACHABLE,
        ) from error
