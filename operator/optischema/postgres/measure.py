"""Indexes HypoPG cannot simulate, built for real on a sandbox copy and timed there (a
:class:`~optischema.analysis.pricing.Measurer`).

1. Once, on the first index asked about: the schema of the tables the statements read (``pg_dump`` pre-data),
   a sample of their rows, then post-data (the real indexes and constraints), sequences advanced, ``ANALYZE``;
   every statement bound to values from the copied rows (:func:`optischema.postgres.timing.prepare`).
2. Per statement, once: its time without any measured index (the median of several runs, server-side).
3. Per index, once: ``CREATE INDEX`` (no CONCURRENTLY: nobody else is on the sandbox), ``ANALYZE`` its table,
   time every statement on that table with it (writes in a rolled-back transaction), note its size, drop it.

Everything on the sandbox runs as its unprivileged role (:func:`clone.create_bench_role`); the target is only
read (``pg_dump`` and ``COPY ... TO``). A budget bounds the whole: past it, :meth:`SandboxMeasurer.measure` returns
None and :attr:`SandboxMeasurer.notes` says which indexes went unmeasured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from optischema.analysis.errors import AnalysisError
from optischema.analysis.pricing import Measured
from optischema.analysis.redact import redact_error
from optischema.analysis.statements import TableKey
from optischema.analysis.whatif import PlanRequest
from optischema.api.index import IndexDefinition
from optischema.changes.ddl import definition_key, render_create, render_drop
from optischema.changes.quoting import qualified

from . import clone, timing
from .connect import DATABASE_ERRORS, ConnectTarget, connect

#: Timed runs per statement and side; the median is kept (an odd number: a real middle run).
RUNS = 7
#: Seconds one statement's runs may take on one side before the rest are skipped (at least timing.MIN_RUNS run).
STATEMENT_SECONDS = 3.0
#: The whole measuring (copy included) stops asking the sandbox past this many seconds.
BUDGET_SECONDS = 120.0
#: The sample copied: this share of each table, at most this many rows.
SAMPLE_PERCENT = 100.0
MAX_ROWS = 200_000
#: What a step on the sandbox may raise and the measuring survives (as a note).
_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, TypeError, ValueError, OverflowError)
_SETUP_ERRORS: tuple[type[BaseException], ...] = (*_ERRORS, clone.CloneError, RuntimeError, AnalysisError)
#: A sandbox pod reported ready may not listen yet: its first connection is tried for this long.
CONNECT_SECONDS = 30.0
#: The name every measured index is built under (one at a time, dropped after).
INDEX_NAME = "optischema_measured"


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement to time: its plan request, and whether it writes (timed in a rolled-back transaction)."""

    request: PlanRequest
    calls: int
    write: bool


@dataclass(slots=True)
class _Built:
    """What one index did on the sandbox: each statement's median with it and whether its plan used it."""

    after: dict[str, tuple[float, bool, Mapping[str, Any] | None]] = field(default_factory=dict)
    bytes: int = 0


class SandboxMeasurer:
    """A :class:`~optischema.analysis.pricing.Measurer` over one sandbox database (its superuser's DSN).

    ``source`` is the analysis's own read-only connection (statistics, row counts); ``source_dsn`` is given to
    ``pg_dump`` and the copy. ``real_rows`` are the target's row counts, to scale sizes from the sample. The copy
    follows the target's ``sandbox`` settings where there are some (``mode``, ``pii_safe``...): a ``synthetic``
    copy holds no real value, but rows made from statistics answer containment and substring searches poorly."""

    def __init__(
        self,
        source: asyncpg.Connection,
        source_dsn: ConnectTarget,
        sandbox_dsn: str,
        statements: Sequence[Statement],
        real_rows: Mapping[TableKey, float],
        *,
        budget_seconds: float = BUDGET_SECONDS,
        runs: int = RUNS,
        mode: str = "sample",
        sample_percent: float = SAMPLE_PERCENT,
        max_rows: int = MAX_ROWS,
        pii_safe: bool = False,
    ) -> None:
        self.source = source
        self.source_dsn = source_dsn
        self.sandbox_dsn = sandbox_dsn
        self.statements = {s.request.key: s for s in statements}
        self.real_rows = dict(real_rows)
        self.budget_seconds = budget_seconds
        self.runs = runs
        self.sample_percent = sample_percent
        self.max_rows = max_rows
        self.mode = mode
        self.pii_safe = pii_safe
        self.notes: list[str] = []
        self.copied: dict[TableKey, int] = {}
        self._deadline: float | None = None
        self._conn: asyncpg.Connection | None = None
        self._failed: str | None = None
        self._prepared: dict[str, timing.Prepared] = {}
        self._before: dict[str, tuple[float, frozenset[str], Mapping[str, Any] | None] | None] = {}
        self._built: dict[str, _Built | None] = {}
        self._skipped: list[str] = []
        self.bench_dsn: str | None = None  # the sandbox's unprivileged role, once the copy is loaded

    # -- the Measurer protocol ------------------------------------------------------------------------------------

    async def measure(self, request: PlanRequest, index: IndexDefinition) -> Measured | None:
        built = await self._build(index)
        statement = self.statements.get(request.key)
        if built is None or statement is None or request.key not in built.after:
            return None
        before = self._before.get(request.key)
        if before is None:
            return None
        after, used, plan = built.after[request.key]
        return Measured(
            before_ms=before[0], after_ms=after, used=used and not statement.write, write=statement.write, plan=plan
        )

    async def size(self, index: IndexDefinition) -> int:
        built = await self._build(index)
        return built.bytes if built is not None else 0

    async def loaded(self) -> str | None:
        """The bench role's DSN on the sandbox once the copy is loaded (loading it now if need be), for a planner
        that builds its candidates on the same copy (:class:`~optischema.postgres.sandbox_planner.SandboxPlanner`);
        None when the sandbox could not be prepared (:attr:`notes` says why)."""
        return self.bench_dsn if await self._ready() is not None else None

    def scale(self, table: TableKey) -> float:
        """Real rows per copied row of ``table``: what a size measured on the copy is multiplied by."""
        return self._scale(table)

    async def close(self) -> None:
        """Close the sandbox connection (the sandbox itself is its opener's to remove) and note what the budget
        left unmeasured."""
        if self._skipped:
            self.notes.append(
                f"the measuring budget ({self.budget_seconds:.0f} s) ran out: {len(self._skipped)} index candidate(s) "
                f"HypoPG cannot simulate were not measured and not proposed ({', '.join(self._skipped[:5])})."
            )
            self._skipped = []
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    # -- steps ----------------------------------------------------------------------------------------------------

    def _over_budget(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    def _left_ms(self) -> int | None:
        """Milliseconds left in the budget (None before it started)."""
        return None if self._deadline is None else int((self._deadline - time.monotonic()) * 1000)

    async def _build(self, index: IndexDefinition) -> _Built | None:
        """Step 3 for ``index`` (once; None when it could not be measured)."""
        key = definition_key(index)
        if key in self._built:
            return self._built[key]
        conn = await self._ready()
        if conn is None:
            return None
        if self._over_budget():
            self._skipped.append(key)
            return None  # not cached: a later call is refused the same way, and counted once
        table = (index.schema_, index.table)
        keys = [k for k, s in self.statements.items() if table in s.request.tables and k in self._prepared]
        for statement_key in keys:
            await self._baseline(conn, statement_key)
        built = _Built()
        definition = index.model_copy(update={"name": INDEX_NAME})
        try:
            await conn.execute(render_create(definition, concurrently=False))
            try:
                relation = qualified(index.schema_, INDEX_NAME)
                # On a partitioned table the index is a partitioned one with an index per partition, named by
                # PostgreSQL: those are what the plans name, what holds the bytes and what fastupdate applies to.
                leaves = [
                    (r["schema"], r["name"])
                    for r in await conn.fetch(
                        "SELECT n.nspname AS schema, c.relname AS name FROM pg_partition_tree($1::regclass) t "
                        "JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE t.isleaf",
                        relation,
                    )
                ] or [(index.schema_, INDEX_NAME)]
                if index.method == "gin":
                    # A write adds its entries to GIN's pending list, merged in bulk later (by VACUUM, or by the
                    # write that fills the list): the few timed writes would never pay that. Without the list they
                    # pay their entries' insertion themselves, which is what the writers pay on average.
                    for leaf in leaves:
                        await conn.execute(f"ALTER INDEX {qualified(*leaf)} SET (fastupdate = off)")
                if has_expressions(index):
                    await conn.execute(f"ANALYZE {qualified(*table)}")
                sizes = [
                    await conn.fetchval("SELECT pg_relation_size($1::regclass)", qualified(*leaf)) for leaf in leaves
                ]
                built.bytes = int(sum(int(size) for size in sizes) * self._scale(table))
                used_names = {name for _, name in leaves}
                for statement_key in keys:
                    if self._before.get(statement_key) is None:
                        continue
                    runs = await self._time(conn, statement_key)
                    if runs is not None:
                        built.after[statement_key] = (runs[0], bool(used_names & set(runs[1])), runs[2])
            finally:  # the index's expression statistics go with it: the table's own are left as they are
                await conn.execute(render_drop(definition, concurrently=False))
        except _ERRORS as error:
            self.notes.append(f"{key}: could not be measured in the sandbox ({_first_line(error)}).")
            self._built[key] = None
            return None
        self._built[key] = built
        return built

    def _scale(self, table: TableKey) -> float:
        copied = self.copied.get(table, 0)
        real = self.real_rows.get(table, 0.0)
        return real / copied if copied > 0 and real > copied else 1.0

    async def _baseline(self, conn: asyncpg.Connection, key: str) -> None:
        """Step 2 for one statement (once)."""
        if key not in self._before:
            self._before[key] = await self._time(conn, key)

    async def _time(
        self, conn: asyncpg.Connection, key: str
    ) -> tuple[float, frozenset[str], Mapping[str, Any] | None] | None:
        """The median server-side time of the statement's runs and the indexes most of them used; None when it
        fails (its error becomes a note once)."""
        item = self._prepared[key]
        # A sample runs as someone wrote it (pg_sleep, a slow function): the budget left bounds each run, and a
        # statement past it is not run at all, or a few such samples would hold the analysis for many minutes.
        left = self._left_ms()
        if left is not None and left <= 0:
            note = f"statement {key} was not timed in the sandbox: the measuring budget ran out"
            if note not in self.notes:
                self.notes.append(note)
            return None
        try:
            if left is not None:
                await conn.execute("SELECT set_config('statement_timeout', $1, false)", str(min(left, 30_000)))
            runs = await timing.time_runs(conn, item, STATEMENT_SECONDS)
        except _ERRORS as error:
            note = f"statement {key} could not be timed in the sandbox: {_first_line(error)}"
            if note not in self.notes:
                self.notes.append(note)
            return None
        ordered = sorted(runs, key=lambda r: r.ms)
        middle = ordered[(len(ordered) - 1) // 2]
        return middle.ms, middle.indexes, middle.plan

    async def _ready(self) -> asyncpg.Connection | None:
        """Step 1 (once): the sandbox connection, the copy loaded and the statements bound; None if it failed."""
        if self._conn is not None or self._failed is not None:
            return self._conn
        self._deadline = time.monotonic() + self.budget_seconds
        try:
            self._conn = await self._load()
        except _SETUP_ERRORS as error:
            self._failed = _first_line(error)
            self.notes.append(
                f"the sandbox for measuring indexes HypoPG cannot simulate could not be prepared ({self._failed}): "
                "those candidates were not priced."
            )
        return self._conn

    async def _load(self) -> asyncpg.Connection:
        admin = await _first_connection(self.sandbox_dsn)
        try:
            bench_dsn = await clone.create_bench_role(admin, self.sandbox_dsn)
        finally:
            await admin.close()
        conn = await connect(bench_dsn, read_only=False, application_name="optischema-measure", statement_timeout_ms=0)
        self.bench_dsn = bench_dsn
        try:
            power = await clone.power_of(conn)
            if power:
                raise RuntimeError(f"the sandbox role {clone.BENCH_ROLE} has {', '.join(power)}; refusing to run as it")
            tables = sorted({t for s in self.statements.values() for t in s.request.tables})
            dump = clone.SchemaDump(await clone.server_major(self.source))
            try:
                await dump.take(self.source_dsn)
                await dump.restore(bench_dsn, "pre-data")
                loaded = await clone.fill(
                    self.source,
                    conn,
                    tables,
                    mode=self.mode,
                    percent=self.sample_percent,
                    max_rows=self.max_rows,
                    pii_safe=self.pii_safe,
                )
                await dump.restore(bench_dsn, "post-data")
            finally:
                dump.remove()
            self.copied = {t: loaded.rows.get(f"{t[0]}.{t[1]}", 0) for t in tables}
            await clone.advance_sequences(conn)
            await clone.settle(conn, [t for t in tables if f"{t[0]}.{t[1]}" in loaded.rows])
            await conn.execute("SET plan_cache_mode = force_custom_plan; SET statement_timeout = '30s'")
            prepared = await timing.prepare(
                conn,
                [(k, s.request.query, s.calls, s.write) for k, s in self.statements.items()],
                self.runs,
                await timing.shape_of(self.source, list(self.statements), tables),
            )
            for item in prepared:
                sampled = as_sampled(item, self.statements[item.query_id], self.runs)
                if sampled is not None:
                    self._prepared[item.query_id] = sampled
                elif item.error is None and item.arguments:
                    self._prepared[item.query_id] = item
                else:
                    self.notes.append(f"statement {item.query_id} could not be bound in the sandbox: {item.error}")
        except BaseException:
            await conn.close()
            raise
        return conn


def has_expressions(index: IndexDefinition) -> bool:
    """Whether building ``index`` calls for ``ANALYZE`` of its table: only an expression key has statistics of its
    own (gathered by ``ANALYZE``, and only of the whole table); ``CREATE INDEX`` itself sets the index's size and
    row count. Any other ``ANALYZE`` on the copy draws a new random sample of a table larger than the sample
    (30,000 rows at the default statistics target), so plans priced before and after it would differ by sampling
    noise alone, enough to turn near-ties between candidates (one key order against another) either way from one
    run to the next."""
    return any(column.expression is not None for column in index.columns)


def as_sampled(item: timing.Prepared, statement: Statement, runs: int) -> timing.Prepared | None:
    """A read with samples (the statement as it ran, constants in place, from pg_stat_activity) is timed as it ran:
    no value has to be guessed for its parameters, and what an index depends on (a full-text configuration, a
    pattern's leading wildcard) is there as the application wrote it. Writes keep bound values: a sampled INSERT
    carries a key the copied rows already hold."""
    samples = [s.strip().rstrip(";") for s in statement.request.samples if s.strip()]
    if statement.write or not samples:
        return None
    return timing.Prepared(item.query_id, samples[0], item.calls, False, [[] for _ in range(max(runs, 1))])


async def _first_connection(dsn: str) -> asyncpg.Connection:
    """The sandbox's first connection, tried again while the server is still starting (a pod is ready before
    PostgreSQL listens on its address)."""
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        try:
            return await connect(dsn, read_only=False, application_name="optischema-measure-setup")
        except AnalysisError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def _first_line(error: BaseException) -> str:
    """The error's first line, its values redacted: notes are shown and recorded, and the sandbox holds real rows."""
    text = str(error).strip()
    return f"{type(error).__name__}: {redact_error(text.splitlines()[0])}"[:500] if text else type(error).__name__
