"""Read a snapshot of the database's statistics and catalogs, with read-only queries only.

The column names of ``pg_stat_statements`` changed in PostgreSQL 13 (``total_time`` → ``total_exec_time``) and 17
(``blk_read_time`` → ``shared_blk_read_time``): the collector asks the view which columns it has rather than
trusting the server version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import asyncpg

from optischema.analysis import bloat
from optischema.analysis.errors import AnalysisError, ExitCode
from optischema.analysis.snapshot import (
    BloatMeasure,
    Column,
    Index,
    IndexKey,
    IndexVitals,
    Maintenance,
    Server,
    Setting,
    Snapshot,
    Statement,
    Table,
    TableVitals,
)
from optischema.analysis.statements import MAX_STATEMENT_CHARS, fingerprint
from optischema.changes.quoting import qualified

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
#: Settings the findings look at (and show as evidence).
SETTINGS = (
    "work_mem",
    "shared_buffers",
    "effective_cache_size",
    "random_page_cost",
    "seq_page_cost",
    "effective_io_concurrency",
    "maintenance_work_mem",
    "default_statistics_target",
    "track_activity_query_size",
    "compute_query_id",
    "autovacuum",
    "autovacuum_freeze_max_age",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_threshold",
    "autovacuum_analyze_scale_factor",
)
HIDDEN = "<insufficient privilege>"
#: A relation named by (schema, name) bind parameters, for the pgstattuple functions.
_RELATION = "format('%I.%I', $1::text, $2::text)::regclass"
#: Schemas analysed: not the system's, not temporary or TOAST ones, not those the caller ignores ($1).
_USER_SCHEMAS = "n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg\\_temp%' AND n.nspname NOT LIKE 'pg\\_toast%'"


async def collect(
    conn: asyncpg.Connection,
    *,
    ignore_schemas: Iterable[str] = (),
    sample_seconds: float = 0.0,
    min_calls: int = 1,
    statement_limit: int | None = None,
) -> Snapshot:
    """The whole snapshot. Raises :class:`AnalysisError` when pg_stat_statements is missing or unreadable.

    ``min_calls`` and ``statement_limit`` cut the statements in SQL (see :func:`read_statements`)."""
    skip = [*SYSTEM_SCHEMAS, *ignore_schemas]
    server = await read_server(conn)
    statements, hidden = await read_statements(conn, server, min_calls=min_calls, limit=statement_limit)
    tables = await read_tables(conn, skip)
    indexes = await read_indexes(conn, skip)
    settings = await read_settings(conn)
    samples = await sample_activity(conn, server, statements, sample_seconds) if sample_seconds > 0 else {}
    snapshot = Snapshot(server, statements, tables, indexes, settings, samples, hidden)
    snapshot.maintenance = await read_maintenance(conn, skip)
    if "pgstattuple" in server.extensions:
        await measure_bloat(conn, snapshot)
    snapshot.views = await read_views(conn, skip)
    return snapshot


async def read_views(conn: asyncpg.Connection, skip_schemas: list[str]) -> dict[tuple[str, str], str]:
    """Each view's definition as PostgreSQL prints it (``pg_get_viewdef``): statements that read a view are analysed
    against its base tables. Materialized views are tables here (they hold rows and indexes); an extension's views
    (``pg_stat_statements`` itself) read no table of the application."""
    rows = await conn.fetch(
        f"""SELECT n.nspname AS schema, c.relname AS name, pg_get_viewdef(c.oid) AS definition
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'v' AND {_USER_SCHEMAS}
             AND NOT EXISTS (SELECT 1 FROM pg_depend d
                             WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')""",
        skip_schemas,
    )
    return {(r["schema"], r["name"]): r["definition"].strip().rstrip(";") for r in rows if r["definition"]}


async def read_server(conn: asyncpg.Connection) -> Server:
    row = await conn.fetchrow(
        """SELECT current_setting('server_version') AS version,
                  current_setting('server_version_num')::int AS version_num,
                  current_database() AS database,
                  d.datcollate AS collation,
                  s.stats_reset,
                  pg_postmaster_start_time() AS started
           FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid
           WHERE d.datname = current_database()"""
    )
    installed = await conn.fetch(
        "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
    )
    extensions = {r["extname"]: r["extversion"] for r in installed}
    try:
        identifier = await conn.fetchval("SELECT system_identifier::text FROM pg_control_system()")
    except asyncpg.InsufficientPrivilegeError:
        identifier = None  # needs pg_monitor (or superuser); the operator reports it as unknown
    return Server(
        version=row["version"],
        version_num=row["version_num"],
        system_identifier=identifier,
        database=row["database"],
        collation=row["collation"],
        extensions=extensions,
        extension_schemas={r["extname"]: r["nspname"] for r in installed},
        stats_reset=row["stats_reset"],
        started=row["started"],
    )


async def read_statements(
    conn: asyncpg.Connection, server: Server, *, min_calls: int = 1, limit: int | None = None
) -> tuple[list[Statement], int]:
    """Statements of this database, one per query id (summed over users and nesting levels); the count hidden by
    missing privileges.

    The cut happens in SQL, so that a ``pg_stat_statements`` of 100,000 long statements never reaches Python
    whole: only statements called ``min_calls`` times or more, the ``limit`` with the most total time, and of each
    text its first :data:`MAX_STATEMENT_CHARS` + 1 characters (one more than the parser reads, so that a longer
    text is known to be longer and skipped as such).

    Statements nested in an EXPLAIN are left out: with ``pg_stat_statements.track = all`` the what-if planner's
    own EXPLAINs are recorded under the query id of the statement they plan, and must not count as its calls.
    """
    if "pg_stat_statements" not in server.extensions:
        raise AnalysisError(
            "ExtensionMissing",
            f"pg_stat_statements is not installed in database {server.database!r}: add it to "
            "shared_preload_libraries (restart needed), then run CREATE EXTENSION pg_stat_statements",
            ExitCode.PREREQUISITE,
        )
    schema = await conn.fetchval(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_stat_statements'"
    )
    columns = {
        r["attname"]
        for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = format('%I.pg_stat_statements', $1::text)::regclass",
            schema,
        )
    }
    total = "total_exec_time" if "total_exec_time" in columns else "total_time"
    view = qualified(schema, "pg_stat_statements")
    try:
        rows = await conn.fetch(
            f"""SELECT queryid, left(min(query), $1) AS query, sum(calls)::bigint AS calls, sum({total}) AS total_time,
                       sum(rows)::bigint AS rows, sum(shared_blks_hit)::bigint AS hit,
                       sum(shared_blks_read)::bigint AS read, sum(temp_blks_written)::bigint AS temp_written
                FROM {view}
                WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND queryid IS NOT NULL
                  AND query !~* '^\\s*explain\\M'
                GROUP BY queryid
                HAVING sum(calls) >= $2
                ORDER BY total_time DESC
                LIMIT $3""",
            MAX_STATEMENT_CHARS + 1,
            min_calls,
            limit,
        )
    except asyncpg.ObjectNotInPrerequisiteStateError as error:
        raise AnalysisError(
            "ExtensionMissing",
            f"pg_stat_statements is installed but not loaded ({error}): add it to shared_preload_libraries and "
            "restart the server",
            ExitCode.PREREQUISITE,
        ) from error
    # Without pg_read_all_stats, other users' rows show this text and no query id.
    hidden = await conn.fetchval(
        f"SELECT count(*) FROM {view} WHERE query = $1 "
        "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        HIDDEN,
    )
    statements = []
    for row in rows:
        if row["query"] == HIDDEN:
            continue
        calls = int(row["calls"] or 0)
        total_time = float(row["total_time"] or 0.0)
        statements.append(
            Statement(
                query_id=int(row["queryid"]),
                query=row["query"],
                calls=calls,
                total_time_ms=total_time,
                mean_time_ms=total_time / calls if calls else 0.0,
                rows=int(row["rows"] or 0),
                shared_blks_hit=int(row["hit"] or 0),
                shared_blks_read=int(row["read"] or 0),
                temp_blks_written=int(row["temp_written"] or 0),
            )
        )
    return statements, hidden


async def read_tables(conn: asyncpg.Connection, skip_schemas: list[str]) -> dict[tuple[str, str], Table]:
    column_rows = await conn.fetch(
        f"""SELECT n.nspname AS schema, c.relname AS table, a.attname AS name,
                  format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
                  s.null_frac, s.n_distinct, s.avg_width,
                  (s.most_common_vals::text::text[])[1:10] AS mcv, (s.most_common_freqs)[1:10] AS mcf,
                  (s.histogram_bounds::text::text[])[1 + cardinality(s.histogram_bounds::text::text[]) / 2] AS mid,
                  s.correlation
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
                                AND s.inherited = (c.relkind = 'p')  -- a partitioned table has only inherited ones
           WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'm')
             AND {_USER_SCHEMAS}
           ORDER BY n.nspname, c.relname, a.attnum""",
        skip_schemas,
    )
    columns: dict[tuple[str, str], list[Column]] = {}
    for r in column_rows:
        columns.setdefault((r["schema"], r["table"]), []).append(
            Column(
                name=r["name"],
                type=r["type"],
                not_null=r["not_null"],
                null_frac=r["null_frac"],
                n_distinct=r["n_distinct"],
                avg_width=r["avg_width"],
                most_common_vals=tuple(r["mcv"] or ()),
                most_common_freqs=tuple(float(f) for f in r["mcf"] or ()),
                histogram_middle=r["mid"],
                correlation=r["correlation"],
            )
        )
    rows = await conn.fetch(
        f"""SELECT n.nspname AS schema, c.relname AS name,
                  CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(greatest(l.reltuples, 0)), 0)
                                                   FROM pg_partition_tree(c.oid) t JOIN pg_class l ON l.oid = t.relid
                                                   WHERE t.isleaf)
                       ELSE greatest(c.reltuples, 0) END::float8 AS rows,
                  CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_table_size(t.relid)), 0)
                                                   FROM pg_partition_tree(c.oid) t WHERE t.isleaf)
                       ELSE pg_table_size(c.oid) END AS size,
                  ARRAY(SELECT ARRAY[ln.nspname::text, l.relname::text]
                        FROM pg_partition_tree(c.oid) t JOIN pg_class l ON l.oid = t.relid
                        JOIN pg_namespace ln ON ln.oid = l.relnamespace
                        WHERE t.isleaf AND c.relkind = 'p' ORDER BY 1) AS partitions,
                  (SELECT ARRAY[pn.nspname::text, p.relname::text] FROM pg_inherits i
                   JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
                   WHERE i.inhrelid = c.oid AND c.relispartition) AS parent,
                  coalesce(s.seq_scan, 0) AS seq_scan,
                  coalesce(s.idx_scan, 0) AS idx_scan,
                  coalesce(s.n_tup_ins, 0) AS ins, coalesce(s.n_tup_upd, 0) AS upd,
                  coalesce(s.n_tup_hot_upd, 0) AS hot, coalesce(s.n_tup_del, 0) AS del,
                  coalesce(s.n_live_tup, 0) AS live, coalesce(s.n_dead_tup, 0) AS dead,
                  coalesce(s.n_mod_since_analyze, 0) AS modified,
                  greatest(s.last_analyze, s.last_autoanalyze) AS analysed
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
           WHERE c.relkind IN ('r', 'p', 'm')
             AND {_USER_SCHEMAS}""",
        skip_schemas,
    )
    return {
        (r["schema"], r["name"]): Table(
            schema=r["schema"],
            name=r["name"],
            rows=r["rows"],
            size_bytes=r["size"],
            columns=tuple(columns.get((r["schema"], r["name"]), ())),
            seq_scan=r["seq_scan"],
            idx_scan=r["idx_scan"],
            n_tup_ins=r["ins"],
            n_tup_upd=r["upd"],
            n_tup_hot_upd=r["hot"],
            n_tup_del=r["del"],
            n_live_tup=r["live"],
            n_dead_tup=r["dead"],
            n_mod_since_analyze=r["modified"],
            last_analyze=r["analysed"],
            partitions=tuple((p[0], p[1]) for p in r["partitions"] or ()),
            partition_of=(r["parent"][0], r["parent"][1]) if r["parent"] else None,
        )
        for r in rows
    }


async def read_indexes(conn: asyncpg.Connection, skip_schemas: list[str]) -> list[Index]:
    rows = await conn.fetch(
        f"""SELECT n.nspname AS schema, t.relname AS table, i.relname AS name,
                  pg_get_indexdef(x.indexrelid) AS definition, am.amname AS method,
                  x.indnkeyatts AS nkeys, x.indkey::int2[] AS attnums, x.indoption::int2[] AS options,
                  ARRAY(SELECT pg_get_indexdef(x.indexrelid, k, true) FROM generate_series(1, x.indnatts) k) AS cols,
                  ARRAY(SELECT CASE WHEN o.opcdefault THEN NULL ELSE o.opcname END
                        FROM unnest(x.indclass::oid[]) WITH ORDINALITY AS u(opc, ord)
                        JOIN pg_opclass o ON o.oid = u.opc ORDER BY u.ord) AS opclasses,
                  pg_get_expr(x.indpred, x.indrelid, true) AS predicate,
                  pg_relation_size(x.indexrelid) AS size, coalesce(s.idx_scan, 0) AS scans,
                  x.indisunique AS is_unique, x.indisprimary AS is_primary, x.indisvalid AS valid,
                  con.conname AS constraint_name
           FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid
           JOIN pg_class t ON t.oid = x.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           JOIN pg_am am ON am.oid = i.relam
           LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = x.indexrelid
           LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.contype IN ('p', 'u', 'x')
           WHERE {_USER_SCHEMAS}
           ORDER BY n.nspname, t.relname, i.relname""",
        skip_schemas,
    )
    indexes = []
    for r in rows:
        keys = []
        for position in range(r["nkeys"]):
            option = r["options"][position] if position < len(r["options"]) else 0
            is_column = r["attnums"][position] != 0
            text = r["cols"][position]
            keys.append(
                IndexKey(
                    column=_unquote(text) if is_column else None,
                    expression=None if is_column else text,
                    opclass=r["opclasses"][position] if position < len(r["opclasses"]) else None,
                    descending=bool(option & 1),
                    nulls_first=bool(option & 2),
                )
            )
        indexes.append(
            Index(
                schema=r["schema"],
                table=r["table"],
                name=r["name"],
                definition=r["definition"],
                method=r["method"],
                keys=tuple(keys),
                include=tuple(_unquote(c) for c in r["cols"][r["nkeys"] :]),
                predicate=r["predicate"],
                size_bytes=r["size"],
                scans=r["scans"],
                unique=r["is_unique"],
                primary=r["is_primary"],
                constraint=r["constraint_name"],
                valid=r["valid"],
            )
        )
    return indexes


def _unquote(identifier: str) -> str:
    """``"MixedCase"`` → ``MixedCase`` (pg_get_indexdef quotes only when needed)."""
    if len(identifier) >= 2 and identifier[0] == identifier[-1] == '"':
        return identifier[1:-1].replace('""', '"')
    return identifier


async def read_settings(conn: asyncpg.Connection) -> dict[str, Setting]:
    """The settings the advice reads, with where each value came from (:func:`setting_source`)."""
    rows = await conn.fetch(
        "SELECT name, current_setting(name) AS value, source, sourcefile FROM pg_settings WHERE name = ANY($1::text[])",
        list(SETTINGS),
    )
    return {r["name"]: Setting(r["name"], r["value"], setting_source(r["source"], r["sourcefile"])) for r in rows}


def setting_source(source: str, sourcefile: str | None) -> str:
    """``pg_settings.source``, told apart where a rollback needs it: a value from ``postgresql.auto.conf`` was set
    by someone's ``ALTER SYSTEM`` (``ALTER SYSTEM RESET`` would drop it, so it is reported as such), and a
    ``configuration file`` whose file this role may not see (``sourcefile`` needs ``pg_read_all_settings``) could
    be either, so it is not reported as a plain configuration file."""
    if source != "configuration file":
        return source
    if sourcefile is None:
        return "configuration file (not visible to this role)"
    if sourcefile.endswith("postgresql.auto.conf"):
        return "ALTER SYSTEM"
    return source


async def sample_activity(
    conn: asyncpg.Connection,
    server: Server,
    statements: list[Statement],
    seconds: float,
    *,
    interval: float = 0.01,
    per_statement: int = 5,
) -> dict[int, list[str]]:
    """Statements as they run right now, with their constants, read from pg_stat_activity for ``seconds``.

    Matched to pg_stat_statements by query id (PostgreSQL 14+, ``compute_query_id``), else by fingerprint. Texts
    cut at ``track_activity_query_size`` are left out. Only text is read: nothing is executed.
    """
    has_query_id = server.version_num >= 140000
    known = {s.query_id for s in statements}
    by_fingerprint: dict[str, int] | None = None  # built on first need: idle backends report no query id
    fingerprints: dict[str, str] = {}
    limit = int(await conn.fetchval("SELECT setting::int FROM pg_settings WHERE name = 'track_activity_query_size'"))
    query = (
        "SELECT query, {qid} AS query_id FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
        "AND query <> '' AND query NOT LIKE 'EXPLAIN%'"
    ).format(qid="query_id" if has_query_id else "NULL::bigint")
    samples: dict[int, list[str]] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for row in await conn.fetch(query):
            text = row["query"]
            if len(text.encode()) >= limit - 1:
                continue
            query_id = row["query_id"]
            if query_id not in known:
                if by_fingerprint is None:
                    by_fingerprint = {fingerprint(s.query): s.query_id for s in statements}
                if text not in fingerprints:
                    fingerprints[text] = fingerprint(text)
                query_id = by_fingerprint.get(fingerprints[text])
            if query_id is None:
                continue
            bucket = samples.setdefault(query_id, [])
            if text not in bucket and len(bucket) < per_statement:
                bucket.append(text)
        await asyncio.sleep(interval)
    return samples


async def read_maintenance(conn: asyncpg.Connection, skip_schemas: list[str]) -> Maintenance:
    """Pages, fill factors, transaction-ID ages and vacuum history of tables and indexes (catalog reads only)."""
    database_age = await conn.fetchval(
        "SELECT age(datfrozenxid)::bigint FROM pg_database WHERE datname = current_database()"
    )
    block_size = int(await conn.fetchval("SELECT current_setting('block_size')::int"))
    table_rows = await conn.fetch(
        f"""SELECT n.nspname AS schema, c.relname AS name, c.relpages::bigint AS pages,
                  coalesce(c.reloptions, '{{}}') AS options,
                  CASE WHEN c.relkind IN ('r', 'm') THEN greatest(age(c.relfrozenxid), age(t.relfrozenxid))::bigint
                  END AS xid_age,
                  s.last_vacuum, s.last_autovacuum, coalesce(s.autovacuum_count, 0) AS autovacuum_count,
                  c.relkind = 'p' AS partitioned
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
           LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
           WHERE c.relkind IN ('r', 'p', 'm') AND {_USER_SCHEMAS}""",
        skip_schemas,
    )
    index_rows = await conn.fetch(
        f"""SELECT n.nspname AS schema, i.relname AS name, i.relpages::bigint AS pages,
                  greatest(i.reltuples, 0)::float8 AS tuples, coalesce(i.reloptions, '{{}}') AS options
           FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid
           JOIN pg_class t ON t.oid = x.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           WHERE {_USER_SCHEMAS}""",
        skip_schemas,
    )
    tables = {}
    for r in table_rows:
        options = _options(r["options"])
        tables[(r["schema"], r["name"])] = TableVitals(
            schema=r["schema"],
            name=r["name"],
            pages=int(r["pages"]),
            fillfactor=_int(options.get("fillfactor")) or 100,
            xid_age=r["xid_age"],
            options=options,
            last_vacuum=r["last_vacuum"],
            last_autovacuum=r["last_autovacuum"],
            autovacuum_count=int(r["autovacuum_count"]),
            partitioned=r["partitioned"],
        )
    indexes = {
        (r["schema"], r["name"]): IndexVitals(
            schema=r["schema"],
            name=r["name"],
            pages=int(r["pages"]),
            tuples=float(r["tuples"]),
            fillfactor=_int(_options(r["options"]).get("fillfactor")),
        )
        for r in index_rows
    }
    return Maintenance(block_size=block_size, database_xid_age=database_age, tables=tables, indexes=indexes)


async def measure_bloat(conn: asyncpg.Connection, snapshot: Snapshot) -> None:
    """Bloat measured with pgstattuple for the relations :func:`bloat.to_measure` picks (it reads them, so few).

    Needs EXECUTE on the functions (``pg_stat_scan_tables``); without it, or past the connection's statement
    timeout, the estimate stands and ``measure_error`` says why."""
    facts = snapshot.maintenance
    tables, indexes = bloat.to_measure(snapshot)
    schema = await conn.fetchval(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pgstattuple'"
    )
    try:
        for key in tables:
            row = await conn.fetchrow(
                "SELECT table_len, dead_tuple_len, approx_free_space, scanned_percent "
                f"FROM {qualified(schema, 'pgstattuple_approx')}({_RELATION})",
                *key,
            )
            vitals = facts.tables[key]
            wasted = bloat.measured_table_waste(
                int(row["table_len"]), int(row["dead_tuple_len"]), int(row["approx_free_space"]), vitals.fillfactor
            )
            facts.measured[key] = BloatMeasure(
                key[0],
                key[1],
                int(row["table_len"]),
                wasted,
                f"pgstattuple_approx: {row['dead_tuple_len']} bytes of dead rows and {row['approx_free_space']} "
                f"bytes free of {row['table_len']} ({row['scanned_percent']:.0f}% of the pages scanned)",
            )
        for key in indexes:
            row = await conn.fetchrow(
                "SELECT index_size, leaf_pages, empty_pages, deleted_pages, avg_leaf_density "
                f"FROM {qualified(schema, 'pgstatindex')}({_RELATION})",
                *key,
            )
            density = float(row["avg_leaf_density"])
            wasted = bloat.measured_index_waste(
                facts.block_size,
                int(row["leaf_pages"]),
                int(row["empty_pages"]),
                int(row["deleted_pages"]),
                density,
                facts.indexes[key].fillfactor,
            )
            facts.measured[key] = BloatMeasure(
                key[0],
                key[1],
                int(row["index_size"]),
                wasted,
                f"pgstatindex: {row['leaf_pages']} leaf pages at {density:.1f}% average density, "
                f"{row['empty_pages']} empty and {row['deleted_pages']} deleted",
            )
    except (asyncpg.InsufficientPrivilegeError, asyncpg.QueryCanceledError, asyncpg.UndefinedFunctionError) as error:
        facts.measure_error = f"pgstattuple could not measure ({str(error).splitlines()[0]}); the estimate stands"


def _options(options: list[str]) -> dict[str, str]:
    """``{fillfactor=70,autovacuum_enabled=off}`` as a dict."""
    return dict(option.split("=", 1) for option in options if "=" in option)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
