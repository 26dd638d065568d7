"""Choosing indexes for the whole workload: greedy on net benefit, priced by the what-if planner.

1. Plan every statement as it is (the baseline).
2. For each candidate, price the statements it can touch with and without it, on top of what is already chosen:
   benefit = Σ calls × (cost now − cost with it). Charge its write cost: every row inserted into the table, and
   every row updated when updates are not HOT (or when this index would make them so).
3. Take the candidate with the largest net benefit, if it clears the threshold and fits the budget and the
   per-table limit; re-price only the candidates whose statements that choice changed (lazy greedy).
4. Finally, drop any chosen index the others made unnecessary.

Every candidate that is not chosen keeps the reason, so a reviewer (and the tests) can see why.

Pricing is the cost (two plans per statement a candidate can touch), so it is done only where it can change the
choice. With a planner whose costs never rise as indexes are added (``PlanCache.monotone``: PostgreSQL's), each
statement is also planned once with every candidate at once: no single candidate can take it below that floor, so
``Σ calls × (cost now − floor)`` bounds what a candidate can save. Candidates are priced in the order of their
bounds, and pricing stops once no bound left can beat (or tie with) the best price found, or clear the threshold:
the choice is the one pricing them all would make, for a fraction of the plans.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from optischema.api.index import IndexDefinition

from .candidates import Candidate, as_index, covers
from .snapshot import Index
from .statements import ParsedStatement, TableKey, TableUsage
from .whatif import Plan, PlanCache, PlanRequest

#: Planner cost units charged per index entry written (a descent through cached pages and a leaf write): of the
#: order of one random page read, so that an index on a table written far more than read is not worth it.
INDEX_WRITE_COST = 4.0
#: A chosen index must save at least this fraction of the workload's remaining (weighted) cost, given the indexes
#: chosen before it. Relative to what remains, not to the start: once the large scans are gone, the small-table
#: scans they hid are what the workload spends its time on.
MIN_GAIN_FRACTION = 0.01

#: Net benefits this close count as equal, and the smaller index wins.
TIE_TOLERANCE = 0.01
#: The floor of a statement's cost (planned with every candidate) is lowered by this share before it bounds a
#: candidate: PostgreSQL keeps a path up to 1% dearer when it is better sorted (STD_FUZZ_FACTOR), at each join
#: level, so more indexes can, rarely, end a little above fewer.
FLOOR_SLACK = 0.02
#: Candidates made hypothetical at once for the floors: HypoPG 1.3 has a few thousand oids for hypothetical indexes
#: (one per partition of a partitioned table), and planning with hundreds on a table is slower for little gain.
FLOOR_BATCH = 400

Progress = Callable[[str, int, int], None]


@dataclass(slots=True)
class WorkloadStatement:
    """A statement as the selection sees it: its weight, shape and how to plan it."""

    key: str
    calls: int
    rows: int
    parsed: ParsedStatement
    request: PlanRequest

    @property
    def weight(self) -> float:
        return float(self.calls)


@dataclass(slots=True)
class Choice:
    candidate: Candidate
    size_bytes: int
    benefit: float  # weighted cost saved, at the time it was chosen
    penalty: float  # write cost charged


@dataclass(slots=True)
class Selection:
    chosen: list[Choice]
    rejected: dict[str, str]  # candidate key -> reason
    base: dict[str, Plan]
    final: dict[str, Plan]
    total_cost: float
    planner_calls: int = 0
    cache_hits: int = 0


@dataclass(slots=True)
class Limits:
    budget_bytes: int | None = None
    max_indexes_per_table: int = 10
    min_gain_fraction: float = MIN_GAIN_FRACTION
    index_write_cost: float = INDEX_WRITE_COST


@dataclass(slots=True)
class _Priced:
    benefit: float
    penalty: float
    stamp: int  # how many indexes were chosen when its statements last changed (its price holds until they do)
    bound: bool = False  # ``benefit`` is only an upper bound: not priced since its statements changed

    @property
    def net(self) -> float:
        return self.benefit - self.penalty


@dataclass(slots=True)
class _State:
    chosen: list[Choice] = field(default_factory=list)
    since: dict[str, int] = field(default_factory=dict)  # candidate key -> the stamp its price must have
    priced: dict[str, _Priced] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)

    def config(self) -> list[IndexDefinition]:
        return [c.candidate.index for c in self.chosen]


@dataclass(slots=True)
class _Workload:
    """The statements with what the greedy looks up again and again, indexed once."""

    statements: dict[str, WorkloadStatement]
    plannable: list[str]
    writers: dict[TableKey, list[WorkloadStatement]]  # inserts and updates with rows, in workload order
    existing: dict[TableKey, list[Index]]
    floors: dict[str, Plan] | None = None  # cost with every candidate (monotone planners only)

    @classmethod
    def of(cls, workload: Sequence[WorkloadStatement], plannable: list[str], existing: Sequence[Index]) -> _Workload:
        writers: dict[TableKey, list[WorkloadStatement]] = {}
        for statement in workload:
            table = statement.parsed.written_table
            if table is not None and statement.rows > 0 and statement.parsed.kind in ("insert", "update"):
                writers.setdefault(table, []).append(statement)
        on_table: dict[TableKey, list[Index]] = {}
        for index in existing:
            on_table.setdefault(index.table_key, []).append(index)
        return cls({s.key: s for s in workload}, plannable, writers, on_table)


async def select_indexes(
    workload: Sequence[WorkloadStatement],
    candidates: Sequence[Candidate],
    cache: PlanCache,
    existing: Sequence[Index],
    limits: Limits,
    progress: Progress | None = None,
    size_of: Callable[[IndexDefinition], object] | None = None,
) -> Selection:
    statements = {s.key: s for s in workload}
    # 1. The baseline.
    base = await cache.plans(list(statements), [])
    plannable = [k for k, plan in base.items() if plan.cost is not None]
    total = sum(statements[k].weight * (base[k].cost or 0.0) for k in plannable)
    known = _Workload.of(workload, plannable, existing)
    reach = _Reach(statements, plannable)
    affected = {c.key: reach.affected(c) for c in candidates}
    state = _State()
    pool = []
    for candidate in candidates:
        if affected[candidate.key]:
            pool.append(candidate)
            state.since[candidate.key] = 0
        else:
            state.rejected[candidate.key] = "no statement that could use it can be planned"
    users = _users(pool, affected)
    if cache.monotone and pool:
        touched = sorted({k for c in pool for k in affected[c.key]}, key=reach.position.__getitem__)
        if progress:
            progress("choosing indexes: planning each statement with every candidate at once", 0, len(touched))
        known.floors = await _floors(touched, pool, statements, cache)

    # 2-3. Greedy, pricing only what can still win and re-pricing only what the last choice changed.
    while pool:
        config = state.config()
        threshold = limits.min_gain_fraction * await _remaining(plannable, statements, cache, config)
        await _estimate(pool, affected, known, cache, state, limits)
        best = await _best(pool, affected, known, cache, state, limits, threshold, progress)
        best = await _smallest_of_equals(best, pool, state, cache)
        top = state.priced[best.key]
        if top.net <= threshold:
            for candidate in pool:
                state.rejected[candidate.key] = _weak(state.priced[candidate.key], threshold)
            break
        pool.remove(best)
        refusal = await _refusal(best, state, known, limits, cache)
        if refusal:
            state.rejected[best.key] = refusal
            continue
        size = await cache.planner.size(best.index)
        state.chosen.append(Choice(best, size, top.benefit, top.penalty))
        for key in affected[best.key]:
            for user in users.get(key, ()):
                state.since[user] = len(state.chosen)

    # 4. Drop what later choices made unnecessary.
    threshold = limits.min_gain_fraction * await _remaining(plannable, statements, cache, state.config())
    await _prune(state, affected, known, cache, limits, threshold)
    final = await cache.plans(list(statements), state.config())
    return Selection(state.chosen, state.rejected, base, final, total, cache.calls, cache.hits)


async def _floors(
    keys: list[str], pool: list[Candidate], statements: dict[str, WorkloadStatement], cache: PlanCache
) -> dict[str, Plan]:
    """Each statement's cost with every candidate on its tables at once, planned in batches of at most
    ``FLOOR_BATCH`` candidates. A statement whose tables hold more, or whose batch the planner could not plan
    (HypoPG ran out of oids for hypothetical indexes, say), gets no floor: its candidates are priced exactly."""
    on_table: dict[TableKey, dict[str, IndexDefinition]] = {}
    for candidate in pool:
        on_table.setdefault(candidate.table, {})[candidate.key] = candidate.index
    groups: dict[frozenset[TableKey], list[str]] = {}
    for key in keys:
        groups.setdefault(statements[key].request.tables, []).append(key)
    floors: dict[str, Plan] = {}
    batch: list[str] = []
    tables: set[TableKey] = set()

    async def flush() -> None:
        config = [index for table in tables for index in on_table.get(table, {}).values()]
        with contextlib.suppress(Exception):  # a bound is an optimisation: without one, pricing is exact
            floors.update(await cache.plans(batch, config))
        batch.clear()
        tables.clear()

    for group, members in groups.items():
        if sum(len(on_table.get(t, {})) for t in group) > FLOOR_BATCH:
            continue
        if sum(len(on_table.get(t, {})) for t in tables | group) > FLOOR_BATCH:
            await flush()
        batch.extend(members)
        tables.update(group)
    if batch:
        await flush()
    return floors


def _users(pool: list[Candidate], affected: dict[str, list[str]]) -> dict[str, list[str]]:
    """Statement key -> the candidates that can touch it: whose prices a choice touching it makes stale."""
    users: dict[str, list[str]] = {}
    for candidate in pool:
        for key in affected[candidate.key]:
            users.setdefault(key, []).append(candidate.key)
    return users


async def _estimate(
    pool: list[Candidate],
    affected: dict[str, list[str]],
    known: _Workload,
    cache: PlanCache,
    state: _State,
    limits: Limits,
) -> None:
    """Every candidate's write cost under the current choice, and a bound on what it saves where its price is
    stale (infinite without floors: then every stale candidate is priced)."""
    config = state.config()
    for candidate in pool:
        penalty = _penalty(candidate, known, config, limits)
        since = state.since[candidate.key]
        priced = state.priced.get(candidate.key)
        if priced is not None and priced.stamp == since:
            priced.penalty = penalty
            continue
        if known.floors is None:
            bound = math.inf
        else:
            keys = affected[candidate.key]
            now = await cache.plans(keys, config[:since])
            bound = 0.0
            for key in keys:
                cost, floored = now[key].cost, known.floors.get(key)
                floor = floored.cost if floored is not None else None
                if cost is not None:
                    lowest = 0.0 if floor is None else floor * (1 - FLOOR_SLACK)
                    bound += known.statements[key].weight * max(0.0, cost - lowest)
        state.priced[candidate.key] = _Priced(bound, penalty, since, bound=True)


async def _best(
    pool: list[Candidate],
    affected: dict[str, list[str]],
    known: _Workload,
    cache: PlanCache,
    state: _State,
    limits: Limits,
    threshold: float,
    progress: Progress | None,
) -> Candidate:
    """The candidate with the largest net benefit (the first in pool order among equals), after pricing every
    candidate whose bound could still beat it, tie with it, or clear the threshold."""
    best_net = max((p.net for c in pool if not (p := state.priced[c.key]).bound), default=-math.inf)
    waiting = sorted((c for c in pool if state.priced[c.key].bound), key=lambda c: -state.priced[c.key].net)
    for number, candidate in enumerate(waiting):
        bound = state.priced[candidate.key].net
        if best_net > threshold and bound < best_net * (1 - TIE_TOLERANCE):
            break
        if best_net <= threshold and bound <= threshold and best_net > -math.inf:
            break
        if progress:
            progress(f"choosing indexes ({len(state.chosen)} chosen so far): pricing", number + 1, len(waiting))
        priced = await _price(candidate, affected[candidate.key], known, cache, state)
        best_net = max(best_net, priced.net)
    best: Candidate | None = None
    for candidate in pool:
        priced = state.priced[candidate.key]
        if not priced.bound and (best is None or priced.net > state.priced[best.key].net):
            best = candidate
    assert best is not None
    return best


async def _smallest_of_equals(best: Candidate, pool: list[Candidate], state: _State, cache: PlanCache) -> Candidate:
    """Among candidates within ``TIE_TOLERANCE`` of the best net benefit, the smallest: as good, cheaper to keep."""
    top = state.priced[best.key].net
    if top <= 0:
        return best
    ties = [
        c for c in pool if not (p := state.priced[c.key]).bound and p.net >= top * (1 - TIE_TOLERANCE)
    ]  # every candidate whose bound reached this far was priced (see _best)
    if len(ties) == 1:
        return best
    sizes = {c.key: await cache.planner.size(c.index) for c in ties}
    return min(ties, key=lambda c: (sizes[c.key], -state.priced[c.key].net))


async def _remaining(
    keys: list[str], statements: dict[str, WorkloadStatement], cache: PlanCache, config: list[IndexDefinition]
) -> float:
    plans = await cache.plans(keys, config)
    return sum(statements[k].weight * (plans[k].cost or 0.0) for k in keys)


class _Reach:
    """Which statements a candidate could change: those using its table through its leading key (or that
    suggested it). Indexed by (table, column) and (table, expression), so that finding them is a lookup."""

    def __init__(self, statements: dict[str, WorkloadStatement], plannable: list[str]) -> None:
        self.position = {key: number for number, key in enumerate(plannable)}
        self.on_table: dict[TableKey, set[str]] = {}
        self.by_name: dict[tuple[TableKey, str], set[str]] = {}
        self.by_expression: dict[tuple[TableKey, str], set[str]] = {}
        for key in plannable:
            for table, usage in statements[key].parsed.usages.items():
                self.on_table.setdefault(table, set()).add(key)
                names, expressions = _leading_keys(usage)
                for name in names:
                    self.by_name.setdefault((table, name), set()).add(key)
                for expression in expressions:
                    self.by_expression.setdefault((table, expression), set()).add(key)

    def affected(self, candidate: Candidate) -> list[str]:
        first = candidate.index.columns[0]
        table = candidate.table
        on_table = self.on_table.get(table, set())
        if first.expression is not None:
            leading = self.by_expression.get((table, first.expression), set())
        else:
            leading = self.by_name.get((table, first.name), set()) if first.name is not None else set()
        found = leading | (on_table & candidate.statements)
        return sorted(found, key=self.position.__getitem__)


def _leading_keys(usage: TableUsage) -> tuple[set[str], set[str]]:
    """The columns and expressions of one table a statement could use an index through, as its leading key."""
    names = {*usage.filtered(), *(n for n, _ in usage.order_by), *usage.group_by}
    searched = {text for text, expression in usage.substrings if expression}
    return names, {*usage.expressions, *usage.fulltext, *searched}


async def _price(
    candidate: Candidate,
    keys: list[str],
    known: _Workload,
    cache: PlanCache,
    state: _State,
) -> _Priced:
    """Its exact benefit given the indexes chosen when its statements last changed (what re-pricing at that
    moment gave: a choice elsewhere does not change its price)."""
    priced = state.priced[candidate.key]
    config = state.config()[: priced.stamp]
    now = await cache.plans(keys, config)
    with_it = await cache.plans(keys, [*config, candidate.index])
    benefit = sum(
        known.statements[k].weight * ((now[k].cost or 0.0) - (with_it[k].cost or 0.0))
        for k in keys
        if now[k].cost is not None and with_it[k].cost is not None
    )
    priced = state.priced[candidate.key] = _Priced(benefit, priced.penalty, priced.stamp)
    return priced


def _penalty(candidate: Candidate, known: _Workload, chosen: Sequence[IndexDefinition], limits: Limits) -> float:
    return _write_cost(
        candidate, known.writers.get(candidate.table, []), chosen, known.existing.get(candidate.table, []), limits
    )


def write_penalty(
    candidate: Candidate,
    workload: object,
    chosen: Sequence[IndexDefinition],
    existing: Sequence[Index],
    limits: Limits,
) -> float:
    """Write cost of maintaining ``candidate``, in weighted planner units.

    Inserts write one entry per index. An update writes one only when it is not HOT, and it is not HOT as soon as
    any index covers an updated column: then an index that breaks HOT is charged for every index of the table.
    """
    table_indexes = [i for i in existing if i.table_key == candidate.table]
    return _write_cost(candidate, workload, chosen, table_indexes, limits)  # type: ignore[arg-type]


def _write_cost(
    candidate: Candidate,
    workload: Iterable[WorkloadStatement],
    chosen: Sequence[IndexDefinition],
    table_indexes: Sequence[Index],
    limits: Limits,
) -> float:
    touched = candidate.touched_columns
    covered = {k.column for i in table_indexes for k in i.keys if k.column} | {
        c.name for d in chosen if (d.schema_, d.table) == candidate.table for c in d.columns if c.name
    }
    total = 0.0
    for statement in workload:
        parsed: ParsedStatement = statement.parsed
        if parsed.written_table != candidate.table or statement.rows <= 0:
            continue
        if parsed.kind == "insert":
            total += statement.rows * limits.index_write_cost
        elif parsed.kind == "update":
            updated = set(parsed.updated_columns)
            hot_before = not (updated & covered)
            if updated & touched:
                indexes = len(table_indexes) + 1 if hot_before else 1
                total += statement.rows * limits.index_write_cost * indexes
            elif not hot_before:
                total += statement.rows * limits.index_write_cost
    return total


async def _refusal(
    candidate: Candidate, state: _State, known: _Workload, limits: Limits, cache: PlanCache
) -> str | None:
    for choice in state.chosen:
        if choice.candidate.table == candidate.table and covers(as_index(choice.candidate.index), candidate.index):
            # It would be flagged as prefix-redundant the moment it exists.
            return f"the chosen index on ({choice.candidate.leading}, ...) already serves every lookup it could"
    on_table = len(known.existing.get(candidate.table, [])) + sum(
        1 for c in state.chosen if c.candidate.table == candidate.table
    )
    if on_table >= limits.max_indexes_per_table:
        return f"the table already has {on_table} indexes (maxIndexesPerTable is {limits.max_indexes_per_table})"
    if limits.budget_bytes is not None:
        size = await cache.planner.size(candidate.index)
        used = sum(c.size_bytes for c in state.chosen)
        if used + size > limits.budget_bytes:
            return (
                f"its estimated {size} bytes exceed what is left of the storage budget ({limits.budget_bytes - used})"
            )
    return None


def _weak(priced: _Priced, threshold: float) -> str:
    """Why a candidate is not worth it; a candidate never priced (its bound could not win) says "at most"."""
    most = " at most" if priced.bound else ""
    if priced.benefit <= 0:
        return "no statement's plan gets cheaper with it (given the indexes chosen before it)"
    if priced.net <= 0:
        return f"its write cost ({priced.penalty:.0f}) exceeds what it saves{most} ({priced.benefit:.0f})"
    return (
        f"it saves{most} {priced.net:.0f}, under the threshold of {threshold:.0f} (a share of the remaining "
        "workload cost)"
    )


async def _prune(
    state: _State,
    affected: dict[str, list[str]],
    known: _Workload,
    cache: PlanCache,
    limits: Limits,
    threshold: float,
) -> None:
    for choice in list(reversed(state.chosen)):
        others = [c.candidate.index for c in state.chosen if c is not choice]
        keys = affected[choice.candidate.key]
        with_all = await cache.plans(keys, state.config())
        without = await cache.plans(keys, others)
        loss = sum(
            known.statements[k].weight * ((without[k].cost or 0.0) - (with_all[k].cost or 0.0))
            for k in keys
            if without[k].cost is not None and with_all[k].cost is not None
        )
        penalty = _penalty(choice.candidate, known, others, limits)
        if loss - penalty <= threshold:
            state.chosen.remove(choice)
            state.rejected[choice.candidate.key] = "indexes chosen after it serve its statements as well"


def statements_using(plans: dict[str, Plan], index_key: str) -> list[str]:
    """Statements whose plan uses the index (by definition key or real name)."""
    return [k for k, plan in plans.items() if index_key in plan.uses]


def requests_for(workload: Sequence[WorkloadStatement]) -> dict[str, PlanRequest]:
    return {s.key: s.request for s in workload}


def tables_of(parsed: ParsedStatement) -> frozenset[TableKey]:
    return frozenset(parsed.tables)
