"""What the collector read from the database, as plain data: the analysis works on this and nothing else.

Kept apart from I/O so that every decision can be tested on a snapshot built by hand, and so that a snapshot could
be recorded once and analysed again (the CLI's JSON output carries enough of it to explain each decision).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    not_null: bool = False
    #: From pg_stats, when the table was analysed: fraction of NULLs, distinct values (negative: a fraction of
    #: the rows, as PostgreSQL stores it), average width, and the most common values with their frequencies.
    null_frac: float | None = None
    n_distinct: float | None = None
    avg_width: int | None = None
    most_common_vals: tuple[str, ...] = ()
    most_common_freqs: tuple[float, ...] = ()
    histogram_middle: str | None = None  # the middle histogram bound: a typical value of a column without MCVs
    #: How closely the rows' physical order follows the column's order (-1..1): near ±1, a BRIN index serves ranges.
    correlation: float | None = None

    def typical_value(self) -> str | None:
        """A value the column really holds, from its statistics (never read from the table)."""
        return self.most_common_vals[0] if self.most_common_vals else self.histogram_middle

    def distinct_values(self, rows: float) -> float:
        """Distinct values expected in ``rows`` rows (PostgreSQL's convention: negative means a fraction)."""
        if self.n_distinct is None:
            return float(max(rows, 1.0) ** 0.5)  # unknown: assume moderately selective
        return -self.n_distinct * rows if self.n_distinct < 0 else self.n_distinct


@dataclass(frozen=True, slots=True)
class Table:
    schema: str
    name: str
    rows: float
    size_bytes: int
    columns: tuple[Column, ...] = ()
    seq_scan: int = 0
    idx_scan: int = 0
    n_tup_ins: int = 0
    n_tup_upd: int = 0
    n_tup_hot_upd: int = 0
    n_tup_del: int = 0
    n_live_tup: int = 0
    n_dead_tup: int = 0
    n_mod_since_analyze: int = 0
    last_analyze: datetime | None = None
    #: For a partitioned table: its leaf partitions. An index proposed on it is priced on them (the planner plans
    #: partitions, never the parent) and applied to each. ``rows`` and ``size_bytes`` are then their sums.
    partitions: tuple[tuple[str, str], ...] = ()
    #: For a partition: the partitioned table it belongs to (indexes are proposed there, not on each partition).
    partition_of: tuple[str, str] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.schema, self.name)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True, slots=True)
class IndexKey:
    """One key of an existing index: a column name, or an expression's text as ``pg_get_indexdef`` prints it."""

    column: str | None
    expression: str | None = None
    opclass: str | None = None  # only when not the type's default
    collation: str | None = None  # only when not the column's default
    descending: bool = False
    nulls_first: bool = False


@dataclass(frozen=True, slots=True)
class Index:
    schema: str
    table: str
    name: str
    definition: str  # pg_get_indexdef, for people and for the rollback of a drop
    method: str
    keys: tuple[IndexKey, ...]
    include: tuple[str, ...] = ()
    predicate: str | None = None
    size_bytes: int = 0
    scans: int = 0
    unique: bool = False
    primary: bool = False
    constraint: str | None = None  # the constraint it backs (PK, UNIQUE, EXCLUDE): never dropped by us
    valid: bool = True

    @property
    def table_key(self) -> tuple[str, str]:
        return (self.schema, self.table)


@dataclass(frozen=True, slots=True)
class Statement:
    """One row of ``pg_stat_statements`` (summed over users when the same text ran as several)."""

    query_id: int
    query: str
    calls: int
    total_time_ms: float
    mean_time_ms: float
    rows: int = 0
    shared_blks_hit: int = 0
    shared_blks_read: int = 0
    temp_blks_written: int = 0


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    value: str  # as SHOW prints it
    source: str = "default"


@dataclass(frozen=True, slots=True)
class Server:
    version: str
    version_num: int
    system_identifier: str | None = None
    database: str = ""
    collation: str = "C"  # the database's LC_COLLATE: prefix LIKE needs text_pattern_ops unless it is C/POSIX
    extensions: dict[str, str] = field(default_factory=dict)
    extension_schemas: dict[str, str] = field(default_factory=dict)  # where each extension's objects live
    stats_reset: datetime | None = None
    started: datetime | None = None  # pg_postmaster_start_time(): index usage counters are no older than this

    @property
    def collation_is_c(self) -> bool:
        return self.collation in ("C", "POSIX")


@dataclass(frozen=True, slots=True)
class TableVitals:
    """What vacuum and bloat advice reads about a table besides its statistics (:class:`Table`)."""

    schema: str
    name: str
    pages: int = 0  # pg_class.relpages of the heap (as of the last VACUUM or ANALYZE)
    fillfactor: int = 100
    xid_age: int | None = None  # greatest age(relfrozenxid) of the heap and its TOAST table; None: no heap
    options: dict[str, str] = field(default_factory=dict)  # reloptions, e.g. autovacuum_vacuum_scale_factor
    last_vacuum: datetime | None = None
    last_autovacuum: datetime | None = None
    autovacuum_count: int = 0
    partitioned: bool = False  # a partitioned table holds no rows: its partitions are judged, each on its own

    @property
    def key(self) -> tuple[str, str]:
        return (self.schema, self.name)


@dataclass(frozen=True, slots=True)
class IndexVitals:
    """An index's page and tuple counts (pg_class) and fill factor, for the bloat estimate."""

    schema: str
    name: str
    pages: int = 0
    tuples: float = 0.0
    fillfactor: int | None = None  # None: the method's default (90 for btree)


@dataclass(frozen=True, slots=True)
class BloatMeasure:
    """Bloat measured by pgstattuple (``pgstattuple_approx`` for a table, ``pgstatindex`` for a btree index)."""

    schema: str
    name: str
    size_bytes: int
    wasted_bytes: int
    detail: str  # the figures it came from, for the rationale


@dataclass(slots=True)
class Maintenance:
    """Vacuum, freeze and bloat facts, keyed by (schema, relation name)."""

    block_size: int = 8192
    database_xid_age: int | None = None
    tables: dict[tuple[str, str], TableVitals] = field(default_factory=dict)
    indexes: dict[tuple[str, str], IndexVitals] = field(default_factory=dict)
    measured: dict[tuple[str, str], BloatMeasure] = field(default_factory=dict)
    #: Why pgstattuple measured nothing although installed (no privilege, a timeout); None otherwise.
    measure_error: str | None = None


@dataclass(slots=True)
class Snapshot:
    server: Server
    statements: list[Statement]
    tables: dict[tuple[str, str], Table]
    indexes: list[Index]
    settings: dict[str, Setting]
    #: Statements as they really ran (constants in place), from pg_stat_activity, keyed by query id: the values
    #: that a normalised statement hides and a partial or prefix index depends on.
    samples: dict[int, list[str]] = field(default_factory=dict)
    #: Statements hidden from this role (``<insufficient privilege>``).
    hidden_statements: int = 0
    #: Vacuum, freeze and bloat facts (read by :mod:`optischema.postgres.collect`, judged by the findings).
    maintenance: Maintenance = field(default_factory=Maintenance)
    #: Each view's definition (``pg_get_viewdef``), by schema and name: a statement reading a view is analysed
    #: against the view's base tables, as the planner sees it once the view is flattened.
    views: dict[tuple[str, str], str] = field(default_factory=dict)

    def indexes_on(self, table: tuple[str, str]) -> list[Index]:
        return [i for i in self.indexes if i.table_key == table]
