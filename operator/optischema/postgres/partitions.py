"""Catalog questions of a partitioned index's rollout, asked at apply time (never taken from the analysis snapshot,
since partitions come and go): which tables make up the partition tree, and which index of a partition is attached
to a given partitioned index. Read-only, one query each; names are bind parameters."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import asyncpg

from optischema.changes.partitioned import Partition, tree


async def partition_tree(conn: asyncpg.Connection, schema: str, table: str) -> Partition | None:
    """The partition tree under ``schema.table`` when it is a partitioned table (``relkind = 'p'``), else ``None``
    (an ordinary table, or none of that name). Read from ``pg_partition_tree`` (PostgreSQL 12+)."""
    oid = await conn.fetchval(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'p'",
        schema,
        table,
    )
    if oid is None:
        return None
    rows = await conn.fetch(
        "SELECT t.relid::oid::text AS relid, t.parentrelid::oid::text AS parent, n.nspname AS schema, "
        "       c.relname AS table, c.relkind = 'p' AS partitioned "
        "  FROM pg_partition_tree($1::oid::regclass) t JOIN pg_class c ON c.oid = t.relid "
        "  JOIN pg_namespace n ON n.oid = c.relnamespace",
        oid,
    )
    return tree((r["relid"], r["parent"], r["schema"], r["table"], bool(r["partitioned"])) for r in rows)


@dataclass(frozen=True, slots=True)
class Attached:
    """An index of a partition attached to a partitioned index (``pg_inherits``)."""

    schema: str
    name: str
    valid: bool


async def attached_on(
    conn: asyncpg.Connection, parent_schema: str, parent_index: str, table_schema: str, table: str
) -> Attached | None:
    """The index of ``table_schema.table`` attached to the partitioned index ``parent_schema.parent_index``: ours,
    or the one PostgreSQL built itself for a partition created after the parent's index existed."""
    row = await conn.fetchrow(
        "SELECT n.nspname AS schema, i.relname AS name, x.indisvalid AS valid "
        "  FROM pg_inherits h "
        "  JOIN pg_class p ON p.oid = h.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace "
        "  JOIN pg_class i ON i.oid = h.inhrelid JOIN pg_namespace n ON n.oid = i.relnamespace "
        "  JOIN pg_index x ON x.indexrelid = i.oid "
        "  JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace "
        " WHERE pn.nspname = $1 AND p.relname = $2 AND tn.nspname = $3 AND t.relname = $4",
        parent_schema,
        parent_index,
        table_schema,
        table,
    )
    return None if row is None else Attached(row["schema"], row["name"], bool(row["valid"]))


async def partitioned_index(conn: asyncpg.Connection, schema: str, name: str) -> bool:
    """Whether ``schema.name`` is the index of a partitioned table (``relkind = 'I'``)."""
    return bool(
        await conn.fetchval(
            "SELECT c.relkind = 'I' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname = $2",
            schema,
            name,
        )
    )


async def partitions_without(conn: asyncpg.Connection, schema: str, name: str) -> list[str]:
    """Leaf partitions under the partitioned index ``schema.name``'s table with no valid index attached below it:
    what keeps the parent's index INVALID (empty once the rollout is complete)."""
    rows = await conn.fetch(
        "WITH RECURSIVE root AS ("
        "  SELECT i.oid, x.indrelid FROM pg_class i JOIN pg_namespace n ON n.oid = i.relnamespace "
        "    JOIN pg_index x ON x.indexrelid = i.oid WHERE n.nspname = $1 AND i.relname = $2), "
        "idx AS (SELECT oid FROM root "
        "        UNION ALL SELECT h.inhrelid FROM pg_inherits h JOIN idx ON h.inhparent = idx.oid) "
        "SELECT t.relid::regclass::text AS partition "
        "  FROM root, pg_partition_tree(root.indrelid) t "
        " WHERE t.isleaf AND NOT EXISTS (SELECT 1 FROM pg_index x JOIN idx ON x.indexrelid = idx.oid "
        "                                 WHERE x.indrelid = t.relid AND x.indisvalid) "
        " ORDER BY 1",
        schema,
        name,
    )
    return [r["partition"] for r in rows]


async def largest_unindexed(conn: asyncpg.Connection, schema: str, table: str, index: str) -> int:
    """Bytes of the largest leaf partition of ``schema.table`` without a valid index attached (through the tree)
    to the partitioned index ``schema.index`` (all leaves when that index does not exist yet): the longest build
    the rest of the rollout has to fit in a window."""
    value = await conn.fetchval(
        "WITH RECURSIVE idx AS ("
        "  SELECT i.oid FROM pg_class i JOIN pg_namespace n ON n.oid = i.relnamespace "
        "   WHERE n.nspname = $1 AND i.relname = $3 "
        "  UNION ALL SELECT h.inhrelid FROM pg_inherits h JOIN idx ON h.inhparent = idx.oid) "
        "SELECT coalesce(max(pg_relation_size(t.relid)), 0) "
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, pg_partition_tree(c.oid) t "
        " WHERE n.nspname = $1 AND c.relname = $2 AND t.isleaf "
        "   AND NOT EXISTS (SELECT 1 FROM pg_index x JOIN idx ON x.indexrelid = idx.oid "
        "                    WHERE x.indrelid = t.relid AND x.indisvalid)",
        schema,
        table,
        index,
    )
    return int(value or 0)


async def scans_below(conn: asyncpg.Connection, schema: str, index: str) -> int:
    """Index scans of every partition's index attached (through the tree) to the partitioned index ``schema.index``:
    the planner scans those, never the parent's own (whose counter stays at 0)."""
    value = await conn.fetchval(
        "WITH RECURSIVE idx AS ("
        "  SELECT i.oid FROM pg_class i JOIN pg_namespace n ON n.oid = i.relnamespace "
        "   WHERE n.nspname = $1 AND i.relname = $2 "
        "  UNION ALL SELECT h.inhrelid FROM pg_inherits h JOIN idx ON h.inhparent = idx.oid) "
        "SELECT coalesce(sum(s.idx_scan), 0) FROM idx JOIN pg_stat_all_indexes s ON s.indexrelid = idx.oid",
        schema,
        index,
    )
    return int(value or 0)


async def adopted_below(
    conn: asyncpg.Connection, schema: str, name: str, ours: Collection[tuple[str, str]]
) -> list[str]:
    """Indexes attached (through the tree) to the partitioned index ``schema.name`` that are not in ``ours`` and
    that PostgreSQL did not build for it: a table attached with a matching index of its own has that index adopted
    (PostgreSQL builds none then), and a ``DROP INDEX`` of ours would take someone else's index along. One PostgreSQL
    built for a partition was created in the transaction that attached it (``pg_index.xmin`` is the ``pg_inherits``
    row's) under the name it chooses (``<table>_<columns>_idx[N]``); an index someone made in that same
    transaction under such a name cannot be told from it. Read-only."""
    rows = await conn.fetch(
        "WITH RECURSIVE idx AS ("
        "  SELECT i.oid FROM pg_class i JOIN pg_namespace n ON n.oid = i.relnamespace "
        "   WHERE n.nspname = $1 AND i.relname = $2 "
        "  UNION ALL SELECT h.inhrelid FROM pg_inherits h JOIN idx ON h.inhparent = idx.oid) "
        "SELECT n.nspname AS schema, c.relname AS name, t.relname AS table, x.xmin::text = h.xmin::text AS same "
        "  FROM idx JOIN pg_inherits h ON h.inhrelid = idx.oid JOIN pg_index x ON x.indexrelid = idx.oid "
        "  JOIN pg_class c ON c.oid = idx.oid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "  JOIN pg_class t ON t.oid = x.indrelid ORDER BY 1, 2",
        schema,
        name,
    )
    return [
        f"{r['schema']}.{r['name']}"
        for r in rows
        if (r["schema"], r["name"]) not in ours and not (r["same"] and _chosen_by_postgres(r["name"], r["table"]))
    ]


def _chosen_by_postgres(index: str, table: str) -> bool:
    """Whether ``index`` is a name PostgreSQL chooses for an index of ``table`` (ChooseRelationName: the table's
    name, cut to about half of 63 bytes when both parts are long, the columns', then ``idx`` and a number)."""
    return index.startswith(table[:25]) and re.search(r"_idx\d*$", index) is not None
