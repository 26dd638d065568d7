"""Bloat of tables and btree indexes: estimated from statistics, measured by pgstattuple where it is installed.

The estimate is the one DBAs have used for years, from ioguix/pgsql-bloat-estimation
(https://github.com/ioguix/pgsql-bloat-estimation, ``table/table_bloat.sql`` and ``btree/btree_bloat.sql``): the
pages the live rows would need — their count (``pg_class.reltuples``) times the width of a tuple built from
``pg_stats.avg_width`` and ``null_frac`` with PostgreSQL's header and alignment rules, packed to the fill factor —
against the pages the relation has (``relpages``). Done here in Python over what the collector read, so that it is
testable on numbers written by hand; the SQL versions compute the same expressions.

Where it cannot be trusted it says so (returns None): a relation never analysed (no tuple count or column widths),
an index on an expression (its widths are the index's own statistics, not read here), a method other than btree.
TOAST is left out on both sides (its bloat is not reclaimed by a REINDEX, and a rewrite reclaims it anyway). btree
deduplication (PostgreSQL 13+) packs repeated keys tighter than the estimate assumes, so the estimate errs low:
safe for a finding that recommends work.

pgstattuple reads the relation (``pgstattuple_approx`` skips the pages the visibility map marks all-visible;
``pgstatindex`` reads the whole index): the collector measures only the relations :func:`to_measure` picks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .snapshot import Column, Index, IndexVitals, Snapshot, Table, TableVitals

#: PostgreSQL's layout constants (64-bit builds): page header, btree special space, line pointer, tuple headers.
PAGE_HEADER = 24
BTREE_OPAQUE = 16
ITEM_ID = 4
HEAP_TUPLE_HEADER = 23
INDEX_TUPLE_HEADER = 8
INDEX_NULL_BITMAP = 4  # IndexAttributeBitMapData: (32 + 8 - 1) / 8
MAXALIGN = 8
BTREE_DEFAULT_FILLFACTOR = 90

#: An index is worth a REINDEX when it wastes at least this many bytes and this share of its size: below, the
#: rebuild's I/O buys too little (small indexes are ignored).
INDEX_BLOAT_MIN_BYTES = 10 << 20
INDEX_BLOAT_MIN_SHARE = 0.3
#: A table is worth a rewrite (VACUUM FULL or pg_repack) only well past that: the rewrite is heavier.
TABLE_BLOAT_MIN_BYTES = 100 << 20
TABLE_BLOAT_MIN_SHARE = 0.4
#: pgstattuple is asked about at most this many relations per analysis, largest first, and only about relations
#: big enough to matter whose estimate is at least half the threshold share or unknown.
MEASURE_LIMIT = 20
#: pgstatindex reads the whole index: above this size (tens of seconds of I/O, against the analysis connection's
#: 30 s statement timeout) the estimate stands.
MEASURE_MAX_INDEX_BYTES = 2 << 30

Method = Literal["estimate", "pgstattuple"]


@dataclass(frozen=True, slots=True)
class Bloat:
    """A relation's bloat: the figure used (measured when pgstattuple measured it) and the estimate beside it."""

    size_bytes: int
    wasted_bytes: int
    method: Method
    estimated_wasted_bytes: int | None = None
    detail: str = ""

    @property
    def share(self) -> float:
        return self.wasted_bytes / self.size_bytes if self.size_bytes > 0 else 0.0


def _align(size: float) -> int:
    """``size`` rounded up to MAXALIGN, as the SQL does: ``size + ma - (size % ma or ma)``."""
    whole = math.ceil(size)
    remainder = whole % MAXALIGN
    return whole + (MAXALIGN - remainder if remainder else 0)


def _widths(columns: list[Column | None]) -> tuple[float, bool] | None:
    """Average data width of a tuple of these columns and whether any may be NULL; None without statistics."""
    if not columns or any(c is None or c.avg_width is None for c in columns):
        return None
    data = sum((1 - (c.null_frac or 0.0)) * (c.avg_width or 0) for c in columns if c is not None)
    return data, any((c.null_frac or 0.0) > 0 for c in columns if c is not None)


def table_estimate(table: Table, vitals: TableVitals, block_size: int) -> int | None:
    """Bytes of the heap beyond what its live rows need at its fill factor (table_bloat.sql's ``bloat_size``)."""
    if vitals.pages <= 0 or table.rows <= 0 or vitals.partitioned:
        return None
    widths = _widths(list(table.columns))
    if widths is None:
        return None
    data, nullable = widths
    header = HEAP_TUPLE_HEADER + ((7 + len(table.columns)) // 8 if nullable else 0)
    tuple_size = ITEM_ID + _align(header) + _align(data)
    per_page = (block_size - PAGE_HEADER) * vitals.fillfactor / (tuple_size * 100)
    needed = math.ceil(table.rows / per_page)
    return max(vitals.pages - needed, 0) * block_size


def index_estimate(index: Index, vitals: IndexVitals, table: Table | None, block_size: int) -> int | None:
    """Bytes of a btree index beyond what its entries need at its fill factor (btree_bloat.sql's ``bloat_size``)."""
    if index.method != "btree" or table is None or vitals.pages <= 1 or vitals.tuples <= 0:
        return None
    if any(k.column is None for k in index.keys):
        return None  # an expression's width is in the index's own statistics
    names = [k.column for k in index.keys if k.column is not None] + list(index.include)
    widths = _widths([table.column(n) for n in names])
    if widths is None:
        return None
    data, nullable = widths
    header = INDEX_TUPLE_HEADER + (INDEX_NULL_BITMAP if nullable else 0)
    entry = _align(header) + _align(data)
    fillfactor = vitals.fillfactor or BTREE_DEFAULT_FILLFACTOR
    per_page = math.floor((block_size - BTREE_OPAQUE - PAGE_HEADER) * fillfactor / (100 * (ITEM_ID + entry)))
    if per_page <= 0:
        return None
    needed = 1 + math.ceil(vitals.tuples / per_page)  # the metapage, then the leaves
    return max(vitals.pages - needed, 0) * block_size


def table_bloat(snapshot: Snapshot, key: tuple[str, str]) -> Bloat | None:
    """The table's bloat: measured when pgstattuple measured it, else estimated; None when neither is known."""
    facts = snapshot.maintenance
    table, vitals = snapshot.tables.get(key), facts.tables.get(key)
    if table is None or vitals is None:
        return None
    estimate = table_estimate(table, vitals, facts.block_size)
    return _bloat(snapshot, key, vitals.pages * facts.block_size, estimate)


def index_bloat(snapshot: Snapshot, index: Index) -> Bloat | None:
    facts = snapshot.maintenance
    key = (index.schema, index.name)
    vitals = facts.indexes.get(key)
    if vitals is None:
        return None
    estimate = index_estimate(index, vitals, snapshot.tables.get(index.table_key), facts.block_size)
    return _bloat(snapshot, key, vitals.pages * facts.block_size, estimate)


def _bloat(snapshot: Snapshot, key: tuple[str, str], size: int, estimate: int | None) -> Bloat | None:
    measured = snapshot.maintenance.measured.get(key)
    if measured is not None:
        return Bloat(measured.size_bytes, measured.wasted_bytes, "pgstattuple", estimate, measured.detail)
    if estimate is None:
        return None
    return Bloat(size, estimate, "estimate", estimate)


def to_measure(snapshot: Snapshot) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(tables, btree indexes) worth asking pgstattuple about: big enough for a finding, and not already clear
    from the estimate (at least half the threshold share, or no estimate), largest first, at most
    :data:`MEASURE_LIMIT` in all."""
    facts = snapshot.maintenance
    picked: list[tuple[int, str, tuple[str, str]]] = []
    for key, vitals in facts.tables.items():
        table, size = snapshot.tables.get(key), vitals.pages * facts.block_size
        if table is None or vitals.partitioned or size < TABLE_BLOAT_MIN_BYTES:
            continue
        estimate = table_estimate(table, vitals, facts.block_size)
        if estimate is None or estimate >= TABLE_BLOAT_MIN_SHARE / 2 * size:
            picked.append((size, "table", key))
    for index in snapshot.indexes:
        ivitals = facts.indexes.get((index.schema, index.name))
        if index.method != "btree" or not index.valid or ivitals is None:
            continue
        size = ivitals.pages * facts.block_size
        if size < INDEX_BLOAT_MIN_BYTES or size > MEASURE_MAX_INDEX_BYTES:
            continue
        estimate = index_estimate(index, ivitals, snapshot.tables.get(index.table_key), facts.block_size)
        if estimate is None or estimate >= INDEX_BLOAT_MIN_SHARE / 2 * size:
            picked.append((size, "index", (index.schema, index.name)))
    picked.sort(key=lambda p: -p[0])
    chosen = picked[:MEASURE_LIMIT]
    return [k for _, kind, k in chosen if kind == "table"], [k for _, kind, k in chosen if kind == "index"]


def measured_table_waste(table_len: int, dead_len: int, free_space: int, fillfactor: int) -> int:
    """Waste from ``pgstattuple_approx``: dead tuples and free space, less the free space the fill factor keeps on
    purpose (room for HOT updates)."""
    reserve = table_len * (100 - fillfactor) / 100
    return max(int(dead_len + free_space - reserve), 0)


def measured_index_waste(
    block_size: int, leaf_pages: int, empty_pages: int, deleted_pages: int, density: float, fillfactor: int | None
) -> int:
    """Waste from ``pgstatindex``: the part of the leaf pages left empty below the fill factor (a fresh build fills
    them to it), and the empty and deleted pages."""
    target = float(fillfactor or BTREE_DEFAULT_FILLFACTOR)
    if math.isnan(density):
        density = target
    unused = leaf_pages * max(1 - density / target, 0.0)
    return int((unused + empty_pages + deleted_pages) * block_size)
