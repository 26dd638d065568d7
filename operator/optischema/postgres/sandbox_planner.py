"""What-if planning without HypoPG: the candidates built for real on a sandbox copy, shown to the planner by
configuration (a :class:`~optischema.analysis.whatif.Planner`).

Where HypoPG is missing (CloudNativePG's images, managed services, any server the extension was never installed
on) the selection still needs what HypoPG gives it: the cost of every statement with a *set* of indexes in place
(one per side of a join, a covering index beside a partial one), asked many times over. Timing one index at a time
cannot see such sets; building every configuration cannot be afforded. So each candidate is built once, by the
sandbox's unprivileged role, on the copy the measurer loaded (:class:`~optischema.postgres.measure.SandboxMeasurer`),
and each configuration is shown to the planner by flipping ``pg_index.indisvalid``: the planner skips an index that
is not valid, and its relcache entry is invalidated by the flip, so the next ``EXPLAIN`` sees exactly the indexes
asked for. A catalog write is never acceptable on a user's database; the sandbox is ours, and the flip is the only
statement its superuser runs here (its text holds nothing but index oids, passed as parameters).

Statements are planned as :class:`~optischema.postgres.planner.HypoPGPlanner` plans them (samples as they ran,
generic plans of the rest, statements calling a function someone created not planned), so costs come from the same
cost model with the same inputs, only on the copy. The copy holds at most ``max_rows`` of each table: costs are the
copy's, consistently for every configuration, and sizes are scaled to the target's row counts. After each
configuration every candidate is hidden again, so that the measurer timing GIN candidates on the same copy never
meets one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from optischema.analysis.errors import AnalysisError
from optischema.analysis.whatif import Plan, PlanRequest
from optischema.api.index import IndexDefinition
from optischema.changes.ddl import definition_key, render_create
from optischema.changes.quoting import qualified

from .connect import DATABASE_ERRORS, connect
from .measure import SandboxMeasurer, has_expressions
from .planner import _OWN_FUNCTIONS, HypoPGPlanner, _index_names

#: Candidates are built under this prefix and a number (the copy holds no index of ours otherwise).
PREFIX = "optischema_c"
_SHOW = (
    "UPDATE pg_index SET indisvalid = (indexrelid = ANY($1::oid[])) "
    "WHERE indexrelid = ANY($2::oid[]) AND indisvalid IS DISTINCT FROM (indexrelid = ANY($1::oid[]))"
)
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, AnalysisError)
#: The index and, on a partitioned table, the partitions' indexes PostgreSQL built under it (the ones plans name).
_LEAVES = (
    "SELECT c.oid, c.relname, pg_relation_size(c.oid) AS bytes FROM pg_class c "
    "WHERE c.oid = $1::regclass OR c.oid IN (SELECT relid FROM pg_partition_tree($1::regclass))"
)


class SandboxPlanner(HypoPGPlanner):
    """Plans on the measurer's sandbox copy with each configuration's candidates built and visible.

    ``monotone`` holds as with HypoPG: PostgreSQL keeps the cheapest plan it finds, so showing it more indexes
    never raises a cost."""

    monotone = True

    def __init__(self, measurer: SandboxMeasurer, *, build_timeout_ms: int = 60_000) -> None:
        super().__init__(conn=None)  # connected on first use (the copy loads then)
        self.measurer = measurer
        self.build_timeout_ms = build_timeout_ms
        self.notes: list[str] = []
        self._admin: asyncpg.Connection | None = None
        self._failed: str | None = None
        self._built: dict[str, list[int] | None] = {}  # definition key -> oids (the index, its partitions' ones)
        self._names: dict[str, str] = {}  # index name on the copy -> definition key
        self._bytes: dict[str, int] = {}
        self._visible: frozenset[int] = frozenset()
        self.builds = 0

    async def start(self) -> SandboxPlanner:
        return self  # nothing to do before the first question: the copy is loaded only if one is asked

    async def close(self) -> None:
        for conn in (self.conn, self._admin):
            if conn is not None:
                with contextlib.suppress(*DATABASE_ERRORS):  # the sandbox went first: nothing of ours is left to clean
                    await conn.close()
        self._admin = None

    # -- the protocol ------------------------------------------------------------------------------------------

    async def plan(self, requests: Sequence[PlanRequest], config: Sequence[IndexDefinition]) -> list[Plan]:
        if not await self._connected():
            return [Plan(None, error=f"no sandbox copy to plan on ({self._failed})") for _ in requests]
        await self._sync(config)
        try:
            return [await self._plan_one(request) for request in requests]
        finally:
            await self._show(frozenset())

    async def size(self, index: IndexDefinition) -> int:
        if not await self._connected():
            return 0
        key = definition_key(index)
        await self._build(index)
        return int(self._bytes.get(key, 0) * self.measurer.scale((index.schema_, index.table)))

    async def explain_generic(self, query: str, config: Sequence[IndexDefinition]) -> dict[str, Any] | None:
        """The generic plan on the copy with ``config`` built and visible, candidates named by definition key (as
        ``postgres.plans`` and ``advice.attach_plans`` expect of a what-if planner)."""
        if not await self._connected():
            return None
        try:
            top = await super().explain_generic(query, config)
        finally:
            await self._show(frozenset())
        return _renamed(top, self._names) if top is not None else None

    # -- candidates on the copy ----------------------------------------------------------------------------------

    async def _connected(self) -> bool:
        if self.conn is not None:
            return True
        if self._failed is not None:
            return False
        bench_dsn = await self.measurer.loaded()
        if bench_dsn is None:
            self._failed = "the sandbox copy could not be loaded"
            return False
        try:
            self._admin = await connect(self.measurer.sandbox_dsn, read_only=False, application_name="optischema-plan")
            self.conn = await connect(bench_dsn, read_only=False, application_name="optischema-plan")
            await self.conn.execute("SET plan_cache_mode = force_generic_plan; SET standard_conforming_strings = on")
            self._own_functions = frozenset(r["name"] for r in await self.conn.fetch(_OWN_FUNCTIONS))
        except _CONNECT_ERRORS as error:  # a sandbox that fails leaves no plan, not a crash
            self._failed = " ".join(str(error).split())[:300] or type(error).__name__
            self.notes.append(f"the sandbox copy could not be planned on ({self._failed}): no index was priced there.")
            await self.close()
            self.conn = None
            return False
        return True

    async def _sync(self, config: Sequence[IndexDefinition]) -> None:
        """Build what ``config`` holds and is not built yet, then show exactly its indexes."""
        for index in config:
            await self._build(index)
        await self._show(frozenset(oid for i in config for oid in self._built.get(definition_key(i)) or ()))

    async def _build(self, index: IndexDefinition) -> None:
        """Build ``index`` once (hidden at once); one that cannot be built is remembered as such and never shown,
        so it brings no gain and is never chosen."""
        key = definition_key(index)
        if key in self._built:
            return
        name = f"{PREFIX}{len(self._built)}"
        self._built[key] = None
        try:
            await self.conn.execute(f"SET statement_timeout = {int(self.build_timeout_ms)}")
            try:
                await self.conn.execute(render_create(index.model_copy(update={"name": name}), concurrently=False))
            finally:
                await self.conn.execute("SET statement_timeout = '30s'")
            rows = await self.conn.fetch(_LEAVES, qualified(index.schema_, name))
            if has_expressions(index):  # the planner needs the expression's statistics, which only ANALYZE makes
                await self.conn.execute(f"ANALYZE {qualified(index.schema_, index.table)}")
        except DATABASE_ERRORS as error:
            text = " ".join(str(error).split())[:300]
            self.notes.append(f"{key}: could not be built on the sandbox copy ({text}); it was not priced.")
            return
        self.builds += 1
        oids = [int(r["oid"]) for r in rows]
        self._built[key] = oids
        self._bytes[key] = sum(int(r["bytes"]) for r in rows)
        self._names.update({str(r["relname"]): key for r in rows})
        await self._show(self._visible)  # built valid: hidden at once, like every candidate not asked for

    async def _show(self, visible: frozenset[int]) -> None:
        """Make exactly ``visible`` of the built candidates valid (the planner ignores the others)."""
        every = [oid for oids in self._built.values() for oid in oids or ()]
        if self._admin is None or not every:
            return
        await self._admin.execute(_SHOW, sorted(visible), every)
        self._visible = visible

    def _read(self, raw: Any) -> Plan:
        document = json.loads(raw) if isinstance(raw, str) else raw
        top = document[0]["Plan"]
        uses = {self._names.get(name, name) for name in _index_names(top)}
        return Plan(float(top["Total Cost"]), frozenset(uses))


def _renamed(node: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    if "Index Name" in node:
        node = {**node, "Index Name": names.get(str(node["Index Name"]), node["Index Name"])}
    return {**node, "Plans": [_renamed(child, names) for child in node.get("Plans", [])]}
