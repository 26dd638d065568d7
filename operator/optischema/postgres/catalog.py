"""Catalog questions asked before a change is admitted or applied: does the table exist, how big would the index
be, is an index of that name there and valid, which database is this. Read-only, one query each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from optischema.api.index import IndexDefinition
from optischema.changes.ddl import BUILT_INS_ONLY, qualified, quote, render_create

#: Run first in a transaction that parses rendered DDL: names resolve to built-ins only, and strings are read as
#: sqlglot read them when the expression was checked (``standard_conforming_strings = off``, a database's
#: choice, makes ``'\\' || ' || f(1) -- '`` a call of ``f`` where sqlglot saw two strings).
LEX_AS_RENDERED = f"SET LOCAL search_path = {BUILT_INS_ONLY}; SET LOCAL standard_conforming_strings = on"

#: Per-entry overhead of a B-tree leaf tuple (header + line pointer) and the default fill factor.
BTREE_TUPLE_OVERHEAD = 12
BTREE_FILL = 0.9


@dataclass(frozen=True, slots=True)
class IndexState:
    """An existing index of the name a change uses."""

    name: str
    valid: bool
    ready: bool
    size_bytes: int
    scans: int


async def system_identifier(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SELECT system_identifier FROM pg_control_system()"))


async def setting(conn: asyncpg.Connection, name: str) -> tuple[str, str] | None:
    """``(value, source)`` of a server setting now (source as :func:`collect.setting_source` tells it)."""
    from optischema.postgres.collect import setting_source

    row = await conn.fetchrow(
        "SELECT current_setting(name) AS value, source, sourcefile FROM pg_settings WHERE name = $1", name
    )
    return None if row is None else (row["value"], setting_source(row["source"], row["sourcefile"]))


async def table_bytes(conn: asyncpg.Connection, schema: str, table: str) -> int | None:
    """The table's size (heap only), or ``None`` when it does not exist."""
    value = await conn.fetchval(
        "SELECT pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'm')",
        schema,
        table,
    )
    return None if value is None else int(value)


async def index_state(conn: asyncpg.Connection, schema: str, name: str) -> IndexState | None:
    row = await conn.fetchrow(
        "SELECT x.indisvalid, x.indisready, pg_relation_size(i.oid) AS size, "
        "       coalesce(s.idx_scan, 0) AS scans "
        "  FROM pg_class i JOIN pg_namespace n ON n.oid = i.relnamespace "
        "  JOIN pg_index x ON x.indexrelid = i.oid "
        "  LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = i.oid "
        " WHERE n.nspname = $1 AND i.relname = $2",
        schema,
        name,
    )
    if row is None:
        return None
    return IndexState(name, bool(row["indisvalid"]), bool(row["indisready"]), int(row["size"]), int(row["scans"]))


async def estimate_index_bytes(conn: asyncpg.Connection, index: IndexDefinition, hypopg: bool) -> int:
    """HypoPG's estimate when installed (it knows the access method and partial predicates); otherwise rows times
    the average key width from ``pg_stats`` — an upper bound for partial indexes, which is the safe side for a
    budget. Raises ``asyncpg.PostgresError`` when the table or a column does not exist."""
    if hypopg:
        sql = render_create(index, concurrently=False, name="optischema_estimate")
        schema = await conn.fetchval(  # its functions are called qualified: the search path has built-ins only
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'hypopg'"
        )
        async with conn.transaction():
            await conn.execute(LEX_AS_RENDERED)  # HypoPG parses the text, and folds constant calls, as we would
            oid = await conn.fetchval(f"SELECT indexrelid FROM {quote(schema)}.hypopg_create_index($1)", sql)
            try:
                return int(await conn.fetchval(f"SELECT {quote(schema)}.hypopg_relation_size($1)", oid))
            finally:
                await conn.execute(f"SELECT {quote(schema)}.hypopg_drop_index($1)", oid)
    columns = [c.name for c in index.columns if c.name] + list(index.include)
    row = await conn.fetchrow(
        "SELECT greatest(c.reltuples, 0)::bigint AS rows, "
        "       (SELECT coalesce(sum(s.avg_width), 0) FROM pg_stats s "
        "         WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = ANY($3::text[])) AS width "
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        " WHERE n.nspname = $1 AND c.relname = $2",
        index.schema_,
        index.table,
        columns,
    )
    if row is None:
        raise asyncpg.UndefinedTableError(f'relation "{index.schema_}.{index.table}" does not exist')
    expressions = sum(1 for c in index.columns if not c.name)
    width = int(row["width"]) + 8 * expressions + BTREE_TUPLE_OVERHEAD
    return int(int(row["rows"]) * width / BTREE_FILL)


# -- ownership: is the index of this name the one a change means? -------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """An existing index, with what decides whether the operator may treat it as its own or drop it."""

    oid: int
    schema: str
    name: str
    table_schema: str
    table: str
    """The table it is on (``indrelid``)."""
    definition: str
    """``pg_get_indexdef``: what re-creates it."""
    shape: str
    """The definition without its own name and table (``[UNIQUE ]USING method (keys) ...``), to compare with."""
    valid: bool
    unique: bool
    primary: bool
    replica_identity: bool
    """``indisreplident``: logical replication identifies rows by it."""
    constraint: str | None
    """A constraint it backs or that depends on it (``pg_constraint.conindid``: primary key, unique, exclusion, or a
    foreign key referencing it)."""
    scans: int


_INDEX_INFO = """
SELECT i.oid, n.nspname AS schema, i.relname AS name, tn.nspname AS table_schema, t.relname AS table,
       pg_get_indexdef(i.oid) AS definition, x.indisvalid, x.indisunique, x.indisprimary, x.indisreplident,
       quote_ident(i.relname) AS qname, quote_ident(tn.nspname) AS qschema, quote_ident(t.relname) AS qtable,
       (SELECT string_agg(c.conname || ' (' || c.contype::text || ' on ' || c.conrelid::regclass::text || ')', ', ')
          FROM pg_constraint c WHERE c.conindid = i.oid) AS constraint,
       coalesce(s.idx_scan, 0) AS scans
  FROM pg_class i JOIN pg_namespace n ON n.oid = i.relnamespace
  JOIN pg_index x ON x.indexrelid = i.oid
  JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
  LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = i.oid
"""


def _shape(definition: str, qname: str, qschema: str, qtable: str) -> str:
    """``CREATE [UNIQUE] INDEX name ON [ONLY] schema.table USING …`` → ``[UNIQUE ]USING …``."""
    unique = definition.startswith("CREATE UNIQUE INDEX ")
    head = f"CREATE {'UNIQUE ' if unique else ''}INDEX {qname} ON "
    rest = definition.removeprefix(head)
    # The session's own temporary schema is written ``pg_temp`` rather than its real name.
    tables = [f"{schema}.{qtable} " for schema in (qschema, "pg_temp")]
    for on in [*(f"ONLY {t}" for t in tables), *tables]:
        if rest.startswith(on):
            return ("UNIQUE " if unique else "") + rest.removeprefix(on)
    return definition  # not the form expected: compares unequal to any rendered shape


def _info(row: asyncpg.Record) -> IndexInfo:
    return IndexInfo(
        oid=int(row["oid"]),
        schema=row["schema"],
        name=row["name"],
        table_schema=row["table_schema"],
        table=row["table"],
        definition=row["definition"],
        shape=_shape(row["definition"], row["qname"], row["qschema"], row["qtable"]),
        valid=bool(row["indisvalid"]),
        unique=bool(row["indisunique"]),
        primary=bool(row["indisprimary"]),
        replica_identity=bool(row["indisreplident"]),
        constraint=row["constraint"],
        scans=int(row["scans"]),
    )


async def index_info(conn: asyncpg.Connection, schema: str, name: str) -> IndexInfo | None:
    """The index called ``schema.name``, or ``None``."""
    async with conn.transaction():  # pg_get_indexdef qualifies names as the probe's path would (and the recreate)
        await conn.execute(LEX_AS_RENDERED)
        row = await conn.fetchrow(_INDEX_INFO + " WHERE n.nspname = $1 AND i.relname = $2", schema, name)
    return None if row is None else _info(row)


async def relation_exists(conn: asyncpg.Connection, schema: str, name: str) -> str | None:
    """The kind of relation called ``schema.name`` (``index``, ``table``, …), or ``None``: an index name must not be
    taken by any relation of the schema."""
    kind = await conn.fetchval(
        "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2",
        schema,
        name,
    )
    if kind is None:
        return None
    return {"i": "index", "I": "index", "r": "table", "p": "table", "v": "view", "m": "materialized view",
            "S": "sequence", "f": "foreign table", "c": "type"}.get(kind, "relation")  # fmt: skip


async def rendered_shape(conn: asyncpg.Connection, index: IndexDefinition) -> str:
    """How PostgreSQL itself would write ``index`` (``pg_get_indexdef``, shape only), without touching the table.

    The definition is created on an empty temporary copy of the table's columns (``LIKE``: same types and
    collations) inside a transaction that is rolled back: PostgreSQL parses and normalises the keys, operator
    classes and predicate exactly as it would for the real table, and nothing persists. The transaction is opened
    ``READ WRITE`` explicitly, so that the read-only admission session (``default_transaction_read_only``) can probe
    too: a temporary table is the only thing it ever writes, and it is rolled back. Raises
    ``asyncpg.PostgresError`` when the table or a column is missing (or temporary tables are not allowed)."""
    probe = "optischema_shape_probe"
    await conn.execute("BEGIN READ WRITE")
    try:
        await conn.execute(LEX_AS_RENDERED)
        await conn.execute(f"CREATE TEMPORARY TABLE {quote(probe)} (LIKE {qualified(index.schema_, index.table)})")
        temporary = index.model_copy(update={"schema_": "pg_temp", "table": probe})
        await conn.execute(render_create(temporary, concurrently=False, name=probe + "_idx"))
        row = await conn.fetchrow(_INDEX_INFO + " WHERE n.oid = pg_my_temp_schema() AND i.relname = $1", probe + "_idx")
        assert row is not None
        return _info(row).shape
    finally:
        if not conn.is_closed():
            await conn.execute("ROLLBACK")  # nothing of the probe persists


async def same_uniqueness(conn: asyncpg.Connection, index: IndexInfo) -> str | None:
    """Another valid, non-partial (or same-predicate) unique index on the same table whose plain key columns are a
    subset of this one's: it enforces at least the same uniqueness, so this one may go. Its name, or ``None``."""
    name = await conn.fetchval(
        """
        SELECT o.indexrelid::regclass::text
          FROM pg_index me JOIN pg_index o ON o.indrelid = me.indrelid AND o.indexrelid <> me.indexrelid
         WHERE me.indexrelid = $1 AND o.indisunique AND o.indisvalid AND o.indexprs IS NULL
           AND (o.indpred IS NULL
                OR pg_get_expr(o.indpred, o.indrelid) IS NOT DISTINCT FROM pg_get_expr(me.indpred, me.indrelid))
           AND (NOT me.indnullsnotdistinct OR o.indnullsnotdistinct)
           AND (o.indkey::int2[])[0:o.indnkeyatts - 1] <@ (me.indkey::int2[])[0:me.indnkeyatts - 1]
         ORDER BY 1 LIMIT 1
        """,
        index.oid,
    )
    return None if name is None else str(name)


@dataclass(frozen=True, slots=True)
class Server:
    """Who and when the database is: checked before every statement of a change, and kept with the baseline."""

    system_identifier: str
    now: datetime
    """The database's clock (``clock_timestamp()``)."""
    started: datetime
    """``pg_postmaster_start_time()``: moves on every restart, a failover included."""
    stats_reset: datetime | None
    """``pg_stat_statements_info.stats_reset`` (PostgreSQL 14+), ``None`` where the view does not exist."""


async def server(conn: asyncpg.Connection) -> Server:
    row = await conn.fetchrow(
        "SELECT (SELECT system_identifier FROM pg_control_system())::text AS id, clock_timestamp() AS now, "
        "pg_postmaster_start_time() AS started, to_regclass('pg_stat_statements_info') IS NOT NULL AS has_info"
    )
    reset = None
    if row["has_info"]:
        reset = await conn.fetchval("SELECT stats_reset FROM pg_stat_statements_info")
    return Server(row["id"], row["now"], row["started"], reset)
