"""Choosing indexes for the whole workload: greedy on net benefit, priced by the what-if planner.

1. Plan every statement as it is (the baseline).
2. For each candidate, price the statements it can touch with and without it, on top of what is already chosen:
   benefit = Σ calls × (cost now − cost with it). Charge its write cost: every row inserted into the table, and
   every row updated when updates are not HOT (or when this index would make them so).
3. Take the candidate with the largest net benefit, if it clears the threshold and fits the budget and the
   per-table limit; re-price only the candidates whose statements that choice changed (lazy greedy).
4. Finally, drop any chosen index the others made unnecessary.

Every candidate that is not chosen keeps the reason, so a reviewer (and the tests) can see why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    stamp: int

    @property
    def net(self) -> float:
        return self.benefit - self.penalty


@dataclass(slots=True)
class _State:
    chosen: list[Choice] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    priced: dict[str, _Priced] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)

    def config(self) -> list[IndexDefinition]:
        return [c.candidate.index for c in self.chosen]


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
    affected = {c.key: _affected(c, statements, plannable) for c in candidates}
    state = _State(versions=dict.fromkeys(statements, 0))
    pool = []
    for candidate in candidates:
        if affected[candidate.key]:
            pool.append(candidate)
        else:
            state.rejected[candidate.key] = "no statement that could use it can be planned"

    # 2-3. Greedy, re-pricing only what the last choice changed.
    while pool:
        best: Candidate | None = None
        for number, candidate in enumerate(pool):
            if progress:
                progress(f"choosing indexes ({len(state.chosen)} chosen so far): pricing", number + 1, len(pool))
            priced = await _price(candidate, affected[candidate.key], statements, cache, state, existing, limits)
            if best is None or priced.net > state.priced[best.key].net:
                best = candidate
        assert best is not None
        best = await _smallest_of_equals(best, pool, state, cache)
        top = state.priced[best.key]
        threshold = limits.min_gain_fraction * await _remaining(plannable, statements, cache, state.config())
        if top.net <= threshold:
            for candidate in pool:
                state.rejected[candidate.key] = _weak(state.priced[candidate.key], threshold)
            break
        pool.remove(best)
        refusal = await _refusal(best, state, existing, limits, cache)
        if refusal:
            state.rejected[best.key] = refusal
            continue
        size = await cache.planner.size(best.index)
        state.chosen.append(Choice(best, size, top.benefit, top.penalty))
        for key in affected[best.key]:
            state.versions[key] += 1

    # 4. Drop what later choices made unnecessary.
    threshold = limits.min_gain_fraction * await _remaining(plannable, statements, cache, state.config())
    await _prune(state, affected, statements, cache, existing, limits, threshold)
    final = await cache.plans(list(statements), state.config())
    return Selection(state.chosen, state.rejected, base, final, total, cache.calls, cache.hits)


async def _smallest_of_equals(best: Candidate, pool: list[Candidate], state: _State, cache: PlanCache) -> Candidate:
    """Among candidates within ``TIE_TOLERANCE`` of the best net benefit, the smallest: as good, cheaper to keep."""
    top = state.priced[best.key].net
    if top <= 0:
        return best
    ties = [c for c in pool if state.priced[c.key].net >= top * (1 - TIE_TOLERANCE)]
    if len(ties) == 1:
        return best
    sizes = {c.key: await cache.planner.size(c.index) for c in ties}
    return min(ties, key=lambda c: (sizes[c.key], -state.priced[c.key].net))


async def _remaining(
    keys: list[str], statements: dict[str, WorkloadStatement], cache: PlanCache, config: list[IndexDefinition]
) -> float:
    plans = await cache.plans(keys, config)
    return sum(statements[k].weight * (plans[k].cost or 0.0) for k in keys)


def _affected(candidate: Candidate, statements: dict[str, WorkloadStatement], plannable: list[str]) -> list[str]:
    """Statements the candidate could change: those using its table through its leading key."""
    first = candidate.index.columns[0]
    found = []
    for key in plannable:
        usage = statements[key].parsed.usages.get(candidate.table)
        if usage is None:
            continue
        if key in candidate.statements or _leads(usage, first.name, first.expression):
            found.append(key)
    return found


def _leads(usage: TableUsage, name: str | None, expression: str | None) -> bool:
    if expression is not None:
        return expression in usage.expressions
    return name in usage.filtered() or name in {n for n, _ in usage.order_by} or name in usage.group_by


async def _price(
    candidate: Candidate,
    keys: list[str],
    statements: dict[str, WorkloadStatement],
    cache: PlanCache,
    state: _State,
    existing: Sequence[Index],
    limits: Limits,
) -> _Priced:
    stamp = sum(state.versions[k] for k in keys)
    priced = state.priced.get(candidate.key)
    if priced is not None and priced.stamp == stamp:
        priced.penalty = write_penalty(candidate, statements.values(), state.config(), existing, limits)
        return priced
    config = state.config()
    now = await cache.plans(keys, config)
    with_it = await cache.plans(keys, [*config, candidate.index])
    benefit = sum(
        statements[k].weight * ((now[k].cost or 0.0) - (with_it[k].cost or 0.0))
        for k in keys
        if now[k].cost is not None and with_it[k].cost is not None
    )
    penalty = write_penalty(candidate, statements.values(), config, existing, limits)
    priced = state.priced[candidate.key] = _Priced(benefit, penalty, stamp)
    return priced


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
    touched = candidate.touched_columns
    table_indexes = [i for i in existing if i.table_key == candidate.table]
    covered = {k.column for i in table_indexes for k in i.keys if k.column} | {
        c.name for d in chosen if (d.schema_, d.table) == candidate.table for c in d.columns if c.name
    }
    total = 0.0
    for statement in workload:  # type: ignore[attr-defined]
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
    candidate: Candidate, state: _State, existing: Sequence[Index], limits: Limits, cache: PlanCache
) -> str | None:
    for choice in state.chosen:
        if choice.candidate.table == candidate.table and covers(as_index(choice.candidate.index), candidate.index):
            # It would be flagged as prefix-redundant the moment it exists.
            return f"the chosen index on ({choice.candidate.leading}, ...) already serves every lookup it could"
    on_table = sum(1 for i in existing if i.table_key == candidate.table) + sum(
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
    if priced.benefit <= 0:
        return "no statement's plan gets cheaper with it (given the indexes chosen before it)"
    if priced.net <= 0:
        return f"its write cost ({priced.penalty:.0f}) exceeds what it saves ({priced.benefit:.0f})"
    return f"it saves {priced.net:.0f}, under the threshold of {threshold:.0f} (a share of the remaining workload cost)"


async def _prune(
    state: _State,
    affected: dict[str, list[str]],
    statements: dict[str, WorkloadStatement],
    cache: PlanCache,
    existing: Sequence[Index],
    limits: Limits,
    threshold: float,
) -> None:
    for choice in list(reversed(state.chosen)):
        others = [c.candidate.index for c in state.chosen if c is not choice]
        keys = affected[choice.candidate.key]
        with_all = await cache.plans(keys, state.config())
        without = await cache.plans(keys, others)
        loss = sum(
            statements[k].weight * ((without[k].cost or 0.0) - (with_all[k].cost or 0.0))
            for k in keys
            if without[k].cost is not None and with_all[k].cost is not None
        )
        penalty = write_penalty(choice.candidate, statements.values(), others, existing, limits)
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
