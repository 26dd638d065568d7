"""The analysis connection: read-only by construction, bounded in time, named in pg_stat_activity.

Every way a connection can fail becomes an :class:`AnalysisError` that names the cause and the fix, because the
person reading it is deciding whether to fix a Secret, a pg_hba.conf line or a network policy.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import asyncpg

from optischema.analysis.errors import AnalysisError, ExitCode
from optischema.api.network import host_problem

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


@dataclass(frozen=True, slots=True)
class ConnectParams:
    """Where and as whom to connect, each part apart: handed to asyncpg as keyword arguments, never formatted
    into a DSN, so that no part (a crafted host such as ``db/postgres?sslmode=disable#``) can rewrite another.

    The password and the CA stay out of the repr (logs, tracebacks).
    """

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str
    sslmode: SslMode = "verify-full"
    ca_pem: str | None = field(default=None, repr=False)
    """PEM CA certificate(s) the server's certificate must chain to (``sslrootcert``); None: the system's CAs."""
    address: str | None = None
    """IP address to connect to instead of resolving ``host`` (libpq's ``hostaddr``); TLS still authenticates
    ``host``. Set for a CloudNativePG instance (its pod's IP, the certificate naming the Cluster's Services) and by
    the operator's ``hostAddresses`` setting."""

    def __post_init__(self) -> None:
        problem = host_problem(self.host)
        if problem is not None:
            raise ValueError(f"spec.connection.host {problem}")
        if self.address is not None:
            ipaddress.ip_address(self.address)  # ValueError: an address, nothing else

    def describe(self) -> str:
        """``user@host:port/db``, for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        via = f" (at {self.address})" if self.address else ""
        return f"{self.user}@{host}:{self.port}/{self.database}{via}"

    def ssl_context(self) -> ssl.SSLContext | bool | str:
        """asyncpg's ``ssl=``: False for ``disable``; libpq's own words for ``allow``/``prefer`` (try TLS without
        authenticating the server); a context for the rest, verifying against ``ca_pem`` (else the system's CAs),
        the host name too for ``verify-full``. ``require`` with a CA verifies it, as libpq does with a root cert."""
        if self.sslmode == "disable":
            return False
        if self.sslmode in ("allow", "prefer"):
            return self.sslmode
        context = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
        defaults = ssl.create_default_context()  # its flags and floor, whatever this Python's defaults are
        context.verify_flags, context.minimum_version = defaults.verify_flags, defaults.minimum_version
        context.options |= defaults.options
        context.server_name = self.host
        if self.ca_pem:
            context.load_verify_locations(cadata=self.ca_pem)
        else:
            context.load_default_certs()
        context.check_hostname = self.sslmode == "verify-full"
        if self.sslmode == "require" and not self.ca_pem:
            context.verify_mode = ssl.CERT_NONE
        return context

    def asyncpg_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.address or self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "ssl": self.ssl_context(),
        }

    def libpq_env(self, scratch: Path) -> dict[str, str]:
        """The same parameters as libpq environment variables (for pg_dump): no password on a command line; the CA
        written to a file in ``scratch``, which the caller removes."""
        env = {
            "PGHOST": self.host,
            **({"PGHOSTADDR": self.address} if self.address else {}),
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.database,
            "PGSSLMODE": self.sslmode,
        }
        if self.ca_pem:
            root = scratch / "root.crt"
            root.write_text(self.ca_pem)
            env["PGSSLROOTCERT"] = str(root)
        elif self.sslmode in ("verify-ca", "verify-full"):
            env["PGSSLROOTCERT"] = "system"  # libpq 16+; older ones need the CA from sslRootCertSecret
        return env


class _NamedContext(ssl.SSLContext):
    """A client context that authenticates ``server_name`` whatever address the socket was opened to: asyncpg
    names the host it connects to as the TLS server name, which with ``address`` is an IP the certificate does not
    carry (libpq's ``hostaddr`` keeps ``host`` for the check)."""

    server_name: str | None = None

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        if self.server_name is not None:
            kwargs["server_hostname"] = self.server_name
        return super().wrap_bio(*args, **kwargs)


#: A connection's target: our parameters, or a DSN a person wrote (``optischema analyze --dsn``) or we built for a
#: sandbox we started ourselves.
ConnectTarget = ConnectParams | str

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


def describe_target(dsn: ConnectTarget) -> str:
    """``user@host:port/db`` without the password, for messages."""
    if isinstance(dsn, ConnectParams):
        return dsn.describe()
    try:
        parts = urlsplit(dsn)
        port = parts.port or 5432
    except ValueError:
        return "the database"
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}  # libpq's ?host=&port=&dbname=
    user = parts.username or query.get("user")
    host = parts.hostname or query.get("host") or "localhost"
    database = parts.path.lstrip("/") or query.get("dbname") or ""
    return f"{f'{user}@' if user else ''}{host}:{query.get('port', port)}{'/' + database if database else ''}"


async def connect(
    dsn: ConnectTarget,
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
        if isinstance(dsn, ConnectParams):
            return await asyncpg.connect(timeout=timeout, server_settings=settings, **dsn.asyncpg_kwargs())
        return await asyncpg.connect(dsn, timeout=timeout, server_settings=settings)
    except ssl.SSLCertVerificationError as error:
        raise AnalysisError(
            "TLSVerificationFailed",
            f"the server at {where} was not authenticated: {error.verify_message} (check "
            "spec.connection.sslRootCertSecret holds the CA that signed its certificate, and that spec.connection.host "
            "is a name the certificate carries)",
            ExitCode.UNREACHABLE,
        ) from error
    except ConnectionError as error:
        if "rejected SSL upgrade" not in str(error):
            raise _unreachable(where, error) from error
        mode = dsn.sslmode if isinstance(dsn, ConnectParams) else "require or stricter"
        raise AnalysisError(
            "TLSUnavailable",
            f"the server at {where} does not offer TLS and spec.connection.sslmode is {mode}: turn ssl on in the "
            "server, or write sslmode: disable (the password then crosses the network in clear text)",
            ExitCode.UNREACHABLE,
        ) from error
    except ssl.SSLError as error:
        raise AnalysisError(
            "TLSFailed", f"TLS with {where} failed: {error.reason or error}", ExitCode.UNREACHABLE
        ) from error
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
        raise _unreachable(where, error) from error


def _unreachable(where: str, error: OSError) -> AnalysisError:
    return AnalysisError(
        "ConnectionFailed",
        f"cannot reach {where}: {error.strerror or error} (is the server running and listening there?)",
        ExitCode.UNREACHABLE,
    )
