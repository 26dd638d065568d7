"""A sandbox filled from its target: the schema always, then a sample, everything, or synthetic rows.

The schema comes from ``pg_dump --schema-only`` of the server's major version, restored in two parts around the
data (tables first, indexes and constraints after the rows are in, as ``pg_restore`` itself does). Foreign keys are
left out: a sample of a parent and a sample of its child do not match, and the benchmark measures reads, not
referential checks. Rows stream from one connection's ``COPY … TO STDOUT`` into the other's ``COPY … FROM STDIN``
through a small bounded queue, so memory stays flat however large the table. ``sample`` takes a repeatable
row-level percentage (``TABLESAMPLE BERNOULLI … REPEATABLE``) with a row cap; ``synthetic`` reads only
``pg_stats`` and writes generated rows (see :mod:`optischema.analysis.synthetic`). ``ANALYZE`` ends the load.

Everything restored belongs to :data:`BENCH_ROLE`, an unprivileged role the sandbox's superuser creates first
(:func:`create_bench_role`), and every step after that — restore, load, index builds, the benchmark itself —
connects as that role. The copied objects are the target users' code (functions, index expressions, CHECK
constraints, defaults, triggers): run as the superuser, any of them could read server files or start programs on
the machine hosting the sandbox; run as the bench role they cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from optischema.analysis.synthetic import CannotGenerate, ColumnStats, Value, rows
from optischema.changes.quoting import column_list, qualified, quote_ident, quote_literal

from .connect import ConnectParams, ConnectTarget
from .local import find_bindir

DataMode = str  # "sample" | "full" | "synthetic"
#: Chunks in flight between the two COPY streams (each is what asyncpg reads at once, up to about 64 KiB).
QUEUE_CHUNKS = 16
SEED = 42


class CloneError(RuntimeError):
    """The sandbox could not be prepared; the message says which step and why."""


@dataclass(slots=True)
class Loaded:
    rows: dict[str, int] = field(default_factory=dict)  # "schema.table" -> rows copied or generated
    warnings: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def _libpq(dsn: ConnectTarget, scratch: Path) -> tuple[list[str], dict[str, str]]:
    """The connection arguments without the password, and the environment carrying it: no password on a command
    line. Our parameters go whole through libpq's environment (``scratch`` receives the CA file), never as a DSN.

    A target's parameters go with no other libpq variable of the operator's environment: a service file
    (``PGSERVICE``) outranks the environment in libpq and would turn verify-full into ``require``, and
    ``PGHOSTADDR`` or ``PGOPTIONS`` would send the password elsewhere or change the session."""
    env = {**os.environ, "PGCONNECT_TIMEOUT": "15"}
    if isinstance(dsn, ConnectParams):
        own = {key: value for key, value in env.items() if not key.startswith("PG") or key == "PGCONNECT_TIMEOUT"}
        return [], {**own, **dsn.libpq_env(scratch)}
    parts = urlsplit(dsn)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return [f"--dbname={urlunsplit((parts.scheme, netloc, parts.path, query, ''))}"], env


async def _run(*command: str, dsn: ConnectTarget) -> str:
    with tempfile.TemporaryDirectory(prefix="optischema-libpq-") as scratch:
        target, env = _libpq(dsn, Path(scratch))
        process = await asyncio.create_subprocess_exec(
            *command, *target, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _out, err = await process.communicate()
    if process.returncode != 0 and b"errors ignored on restore" not in err:
        raise CloneError(
            f"{Path(command[0]).name} failed ({process.returncode}): {err.decode(errors='replace')[-2000:]}"
        )
    return err.decode(errors="replace")


#: Extensions the operator needs on the target to observe it, never in a sandbox: creating them needs the
#: superuser, whom the restore does not run as (see :func:`create_bench_role`), so they would only be warnings.
_OBSERVABILITY = re.compile(r"\bEXTENSION (- )?(pg_stat_statements|hypopg|pg_qualstats)\b")


class SchemaDump:
    """The target's schema as a custom-format archive, and the list of what to restore from it."""

    def __init__(self, major: int) -> None:
        self.bindir = find_bindir(major, program="pg_dump")
        self.directory = Path(tempfile.mkdtemp(prefix="optischema-schema-"))
        self.archive = self.directory / "schema.dump"
        self.listing = self.directory / "restore.list"

    async def take(self, source_dsn: ConnectTarget) -> None:
        await _run(
            str(self.bindir / "pg_dump"), "--schema-only", "--format=custom", f"--file={self.archive}", dsn=source_dsn
        )
        process = await asyncio.create_subprocess_exec(
            str(self.bindir / "pg_restore"), "--list", str(self.archive), stdout=asyncio.subprocess.PIPE
        )
        listing, _ = await process.communicate()
        kept = [
            line
            for line in listing.decode().splitlines()
            if " FK CONSTRAINT " not in line and not _OBSERVABILITY.search(line)
        ]
        self.listing.write_text("\n".join(kept) + "\n")

    async def restore(self, sandbox_dsn: str, section: str) -> list[str]:
        """Restore one section (``pre-data`` or ``post-data``); errors of single items become warnings (an
        extension the sandbox lacks must not stop the rest)."""
        stderr = await _run(
            str(self.bindir / "pg_restore"),
            f"--section={section}",
            f"--use-list={self.listing}",
            "--no-owner",
            "--no-privileges",
            "--no-comments",
            str(self.archive),
            dsn=sandbox_dsn,
        )
        return [line for line in stderr.splitlines() if line.startswith("pg_restore: error")][:20]

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            for item in self.directory.iterdir():
                item.unlink()
            self.directory.rmdir()


async def database_bytes(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_database_size(current_database())"))


async def server_major(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SHOW server_version_num")) // 10000


async def _columns(conn: asyncpg.Connection, table: tuple[str, str]) -> list[asyncpg.Record]:
    """Columns that COPY can write (not dropped, not generated), in order, with their statistics."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
               EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique
                       AND i.indkey[0] = a.attnum) AS unique_first,
               s.null_frac, s.n_distinct, s.avg_width,
               s.most_common_vals::text::text[] AS mcv, s.most_common_freqs AS mcf,
               s.histogram_bounds::text::text[] AS bounds
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
        LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
             AND NOT s.inherited
        WHERE n.nspname = $1 AND c.relname = $2 ORDER BY a.attnum
        """,
        *table,
    )
    return found


async def table_rows(conn: asyncpg.Connection, table: tuple[str, str]) -> float:
    value = await conn.fetchval(
        "SELECT greatest(c.reltuples, 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2",
        *table,
    )
    return float(value or 0)


def quoted(table: tuple[str, str]) -> str:
    """``"schema"."table"`` (the quoting module's, under the name this module's callers know)."""
    return qualified(*table)


async def copy_table(
    source: asyncpg.Connection,
    sandbox: asyncpg.Connection,
    table: tuple[str, str],
    *,
    mode: DataMode,
    percent: float,
    max_rows: int,
    pii_safe: bool,
) -> int:
    """Fill one (empty) sandbox table; the number of rows written."""
    columns = await _columns(source, table)
    if not columns:
        raise CloneError(f"table {quoted(table)} not found on the target")
    names = [c["name"] for c in columns]
    if mode == "synthetic":
        count = min(max_rows, round(await table_rows(source, table) * percent / 100))
        stats = [_stats(c) for c in columns]
        try:
            generated = rows(stats, count, pii_safe=pii_safe, seed=f"{SEED}/{table[0]}.{table[1]}")
        except CannotGenerate as error:
            raise CloneError(f"{quoted(table)}: {error}") from error
        result = await sandbox.copy_to_table(
            table[1], schema_name=table[0], columns=names, source=_text_chunks(generated), format="text"
        )
        return _copied(result)
    query = f"SELECT {column_list(names)} FROM {qualified(*table)}"
    if mode == "sample":
        query += f" TABLESAMPLE BERNOULLI ({float(percent)}) REPEATABLE ({SEED})"
    query += f" LIMIT {int(max_rows)}"
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE_CHUNKS)

    async def produce() -> None:
        try:
            await source.copy_from_query(query, output=queue.put, format="binary")
        finally:
            await queue.put(None)

    async def chunks() -> AsyncIterator[bytes]:
        while (chunk := await queue.get()) is not None:
            yield chunk

    producer = asyncio.create_task(produce())
    try:
        result = await sandbox.copy_to_table(
            table[1], schema_name=table[0], columns=names, source=chunks(), format="binary"
        )
    except BaseException:
        producer.cancel()
        raise
    await producer
    return _copied(result)


def _copied(status: str) -> int:
    try:
        return int(status.split()[-1])
    except (ValueError, IndexError):
        return 0


def _stats(column: asyncpg.Record) -> ColumnStats:
    return ColumnStats(
        name=column["name"],
        type=column["type"],
        not_null=column["not_null"],
        unique=column["unique_first"],
        null_frac=float(column["null_frac"] or 0.0),
        n_distinct=float(column["n_distinct"] or 0.0),
        avg_width=int(column["avg_width"] or 8),
        most_common_vals=tuple(column["mcv"] or ()),
        most_common_freqs=tuple(float(f) for f in column["mcf"] or ()),
        histogram_bounds=tuple(column["bounds"] or ()),
    )


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


async def _text_chunks(generated: Iterable[tuple[Value, ...]], size: int = 1 << 16) -> AsyncIterator[bytes]:
    """COPY text format, about ``size`` bytes at a time, yielding to the event loop between chunks."""
    buffer: list[str] = []
    length = 0
    for row in generated:
        line = "\t".join("\\N" if v is None else v.translate(_ESCAPES) for v in row) + "\n"
        buffer.append(line)
        length += len(line)
        if length >= size:
            yield "".join(buffer).encode()
            buffer, length = [], 0
            await asyncio.sleep(0)
    if buffer:
        yield "".join(buffer).encode()


async def advance_sequences(sandbox: asyncpg.Connection) -> None:
    """Sequences owned by columns continue after the loaded rows, so a benchmarked INSERT does not collide.

    Every name here is a catalog name any database user may have chosen (a sequence called
    ``x'::text::regclass,1)WHERE false;SELECT f();--`` is legal): the sequence goes in as its OID, a bind
    parameter, and the table and column through the quoting module, one statement per extended-protocol call."""
    owned = await sandbox.fetch(
        """
        SELECT s.oid AS seq, n.nspname AS schema, t.relname AS table, a.attname AS column
        FROM pg_class s JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass
             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace n ON n.oid = t.relnamespace
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE s.relkind = 'S'
        """
    )
    for item in owned:
        highest = f"SELECT max({quote_ident(item['column'])}) FROM {qualified(item['schema'], item['table'])}"
        await sandbox.execute(
            f"SELECT setval($1::oid::regclass, coalesce(({highest}), 0) + 1, false)",
            item["seq"],
        )


async def settle(sandbox: asyncpg.Connection, tables: Sequence[tuple[str, str]]) -> None:
    """End a load as the target's tables are in a running database: vacuumed (so their visibility map is set),
    then analysed.

    Rows just copied in are on pages no VACUUM has marked all-visible, and the planner reads that share
    (``pg_class.relallvisible``) to cost an index-only scan: on a copy never vacuumed, every row it reads is
    costed (and, timed, really paid) as a heap fetch, so a covering index (``INCLUDE``) looks worthless there while
    on the target, which autovacuum keeps visible, it saves the heap visits. Each table is vacuumed by itself,
    as the bench role that owns it (a database-wide VACUUM would also go at catalogs it may not vacuum).
    ``ANALYZE`` then covers the whole copy, as before."""
    for table in tables:
        await sandbox.execute(f"VACUUM {quoted(table)}")
    await sandbox.execute("ANALYZE")


#: The role that owns everything restored into a sandbox and runs the benchmark: no superuser, no role
#: memberships (so no ``pg_read_server_files``, ``pg_write_server_files``, ``pg_execute_server_program``).
BENCH_ROLE = "optischema_bench"


async def create_bench_role(admin: asyncpg.Connection, admin_dsn: str) -> str:
    """Create (or reset) the sandbox's unprivileged role, make it the owner of the sandbox database (so it may
    create schemas, trusted extensions and, through ``pg_database_owner``, tables in ``public``), and return the
    DSN that logs in as it.

    The only statements the sandbox's superuser ever runs: their text holds our own role name, a random password
    and the sandbox database's name, all quoted; nothing from the target or a recommendation."""
    password = secrets.token_urlsafe(24)
    role = quote_ident(BENCH_ROLE)
    exists = await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", BENCH_ROLE)
    attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    verb = "ALTER" if exists else "CREATE"
    await admin.execute(f"{verb} ROLE {role} {attributes} PASSWORD {quote_literal(password)}")
    database = await admin.fetchval("SELECT current_database()")
    await admin.execute(f"ALTER DATABASE {quote_ident(database)} OWNER TO {role}")
    parts = urlsplit(admin_dsn)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{quote(BENCH_ROLE, safe='')}:{quote(password, safe='')}@{host}" + (
        f":{parts.port}" if parts.port else ""
    )
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("password", "user")])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


#: Roles whose members reach the server's files and programs (PostgreSQL 11+).
SERVER_ACCESS_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program")


async def power_of(conn: asyncpg.Connection) -> list[str]:
    """What the connection's role may do beyond its own objects: ``superuser``, or a role giving access to the
    server's files and programs. Empty for the bench role; checked before anything runs on it."""
    row = await conn.fetchrow(
        "SELECT r.rolsuper, ARRAY(SELECT s FROM unnest($1::text[]) s WHERE pg_has_role(current_user, s, 'USAGE')) "
        "AS roles FROM pg_roles r WHERE r.rolname = current_user",
        list(SERVER_ACCESS_ROLES),
    )
    return (["superuser"] if row["rolsuper"] else []) + list(row["roles"])


async def fill(
    source: asyncpg.Connection,
    sandbox: asyncpg.Connection,
    tables: Sequence[tuple[str, str]],
    *,
    mode: DataMode,
    percent: float,
    max_rows: int,
    pii_safe: bool,
    progress: Callable[[str], None] = lambda _: None,
) -> Loaded:
    """Copy (or generate) each table; a table that fails is a warning, not the end of the benchmark."""
    loaded = Loaded()
    # No user trigger or rule fires while loading: pg_restore creates them in post-data, after the rows are in.
    # (``session_replication_role = replica`` would need the superuser, which never loads anything here.)
    for table in tables:
        progress(f"loading {table[0]}.{table[1]} ({mode})")
        try:
            loaded.rows[f"{table[0]}.{table[1]}"] = await copy_table(
                source, sandbox, table, mode=mode, percent=percent, max_rows=max_rows, pii_safe=pii_safe
            )
        except (CloneError, asyncpg.PostgresError) as error:
            loaded.warnings.append(f"{table[0]}.{table[1]}: {str(error).splitlines()[0]}")
    return loaded
