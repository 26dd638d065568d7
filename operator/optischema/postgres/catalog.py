"""Catalog questions asked before a change is admitted or applied: does the table exist, how big would the index
be, is an index of that name there and valid, which database is this. Read-only, one query each."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from optischema.api.index import IndexDefinition
from optischema.changes.ddl import render_create

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
        async with conn.transaction():
            oid = await conn.fetchval("SELECT indexrelid FROM hypopg_create_index($1)", sql)
            try:
                return int(await conn.fetchval("SELECT hypopg_relation_size($1)", oid))
            finally:
                await conn.execute("SELECT hypopg_drop_index($1)", oid)
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
