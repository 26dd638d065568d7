"""Pricing candidates HypoPG cannot simulate: what-if costs where HypoPG can, measured ones where it cannot.

HypoPG plans hypothetical btree, hash and BRIN indexes, but refuses GIN and GiST ("access method is not
supported"), and some servers have no HypoPG at all. Those candidates are built for real on a sandbox copy of the
tables and the statements they could serve are timed there, with and without them (``Measurer``, implemented over
a sandbox in ``optischema.postgres.measure``). A measured ratio ``after / before`` then scales the statement's
what-if cost on the real database, so that measured and hypothetical candidates compete in one workload-wide
selection, in the same units (``MeasuredPlanner``).

The composition is approximate on purpose: the ratio was measured with only that index added, and is applied on
top of whatever hypothetical indexes the selection holds at that moment; the smaller of the two costs wins, which
is how the planner would choose between two indexes serving the same predicate.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from optischema.api.index import IndexDefinition
from optischema.changes.ddl import definition_key

from .candidates import Candidate
from .snapshot import Snapshot
from .statements import TableKey
from .whatif import Plan, Planner, PlanRequest

#: Access methods HypoPG (1.3, 1.4) can simulate. Everything else is measured.
HYPOTHETICAL_METHODS = frozenset({"btree", "hash", "brin"})
#: A measured ratio above this (the statement did not get at least this much faster) counts as "not used".
USED_RATIO = 0.95


@dataclass(frozen=True, slots=True)
class Measured:
    """One statement timed on the sandbox copy without and with one index (server-side milliseconds, medians)."""

    before_ms: float
    after_ms: float
    used: bool  # the after plan used the index
    write: bool = False  # an INSERT/UPDATE/DELETE: the index slows it (maintenance), never serves it
    plan: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)  # the sandbox's plan with it

    @property
    def ratio(self) -> float:
        return self.after_ms / self.before_ms if self.before_ms > 0 else 1.0


class Measurer(Protocol):
    """Real indexes on a sandbox copy: how a statement's time changes with one index, and the index's size."""

    async def measure(self, request: PlanRequest, index: IndexDefinition) -> Measured | None:
        """The statement timed without and with ``index`` (built once, cached); None when it cannot be timed."""

    async def size(self, index: IndexDefinition) -> int:
        """The index's size in bytes on the real database (the sandbox's size scaled by the rows copied)."""


def needs_measuring(index: IndexDefinition) -> bool:
    """Whether HypoPG cannot price ``index``."""
    return index.method not in HYPOTHETICAL_METHODS


@dataclass(slots=True)
class MeasuredPlanner:
    """A :class:`~optischema.analysis.whatif.Planner` over a what-if planner and a measurer.

    Indexes HypoPG can simulate go to ``whatif``; for the others, each statement's what-if cost (with the
    simulated part of the configuration) is multiplied by the measured ratio of the best measured index on its
    tables. ``measured`` keeps every figure used, for the evidence (``source: measured``).
    """

    whatif: Planner
    measurer: Measurer
    measurable: Callable[[IndexDefinition], bool] = needs_measuring
    measured: dict[tuple[str, str], Measured] = field(default_factory=dict)  # (statement key, definition key)
    rates: dict[str, float] = field(default_factory=dict)  # read statement key -> cost units per measured ms

    async def plan(self, requests: Sequence[PlanRequest], config: Sequence[IndexDefinition]) -> list[Plan]:
        simulated = [i for i in config if not self.measurable(i)]
        real = [i for i in config if self.measurable(i)]
        plans = await self.whatif.plan(requests, simulated)
        if not real:
            return plans
        found = [await self._measurements(request, real) for request in requests]
        for request, plan, measurements in zip(requests, plans, found, strict=True):
            self._learn_rate(request, plan, measurements)
        return [self._priced(r, p, m) for r, p, m in zip(requests, plans, found, strict=True)]

    async def size(self, index: IndexDefinition) -> int:
        if self.measurable(index):
            return await self.measurer.size(index)
        return await self.whatif.size(index)

    async def measure(self, request: PlanRequest, index: IndexDefinition) -> Measured | None:
        """``request`` timed without and with ``index`` alone (once, kept in :attr:`measured`): the evidence of an
        index chosen by planning (no HypoPG), whatever its method."""
        found = await self._measurements(request, [index])
        return found[0][1] if found else None

    async def _measurements(self, request: PlanRequest, real: Sequence[IndexDefinition]) -> list[tuple[str, Measured]]:
        """The measured figures of ``request`` with each index in ``real`` on its tables (measured once)."""
        result = []
        for index in real:
            if (index.schema_, index.table) not in request.tables:
                continue
            key = definition_key(index)
            found = self.measured.get((request.key, key))
            if found is None:
                found = await self.measurer.measure(request, index)
                if found is None:
                    continue
                self.measured[(request.key, key)] = found
            result.append((key, found))
        return result

    def _learn_rate(self, request: PlanRequest, plan: Plan, measurements: list[tuple[str, Measured]]) -> None:
        """Planner cost units per sandbox millisecond, from the reads measured: how a write's measured slowdown
        (the time it spends maintaining the index, which its own plan's cost never shows) becomes cost."""
        for _, found in measurements:
            if not found.write and plan.cost and found.before_ms > 0:
                self.rates[request.key] = plan.cost / found.before_ms

    def _priced(self, request: PlanRequest, plan: Plan, measurements: list[tuple[str, Measured]]) -> Plan:
        if plan.cost is None:
            return plan
        best_cost, uses = plan.cost, set(plan.uses)
        rate = statistics.median(self.rates.values()) if self.rates else None
        for key, found in measurements:
            if found.write:  # the write maintains every index on its table: what it costs adds up
                slower = max(found.after_ms - found.before_ms, 0.0)
                best_cost += slower * rate if rate is not None else best_cost * (max(found.ratio, 1.0) - 1.0)
            elif found.used and found.ratio < USED_RATIO and plan.cost * found.ratio < best_cost:
                best_cost = plan.cost * found.ratio
                uses.add(key)
        return Plan(best_cost, frozenset(uses))


def partitions_of(snapshot: Snapshot) -> dict[TableKey, tuple[TableKey, ...]]:
    """Leaf partitions of each partitioned table, for the what-if planner to simulate a parent's index on."""
    return {key: table.partitions for key, table in snapshot.tables.items() if table.partitions}


def unpriceable(candidates: Sequence[Candidate], *, measuring: bool) -> tuple[list[Candidate], list[Candidate]]:
    """The candidates that can be priced here, and those that cannot (GIN, GiST without a sandbox to measure in)."""
    if measuring:
        return list(candidates), []
    kept = [c for c in candidates if not needs_measuring(c.index)]
    return kept, [c for c in candidates if needs_measuring(c.index)]


def unpriced_note(unpriced: Sequence[Candidate]) -> list[str]:
    """Say what was left unpriced, and how to price it."""
    if not unpriced:
        return []
    methods = sorted({c.index.method.upper() for c in unpriced})
    tables = sorted({f"{c.table[0]}.{c.table[1]}" for c in unpriced})
    return [
        f"{len(unpriced)} {'/'.join(methods)} index candidate(s) on {', '.join(tables[:5])} were not priced: HypoPG "
        "cannot simulate them, and they are measured only on a sandbox copy (optischema analyze --measure; "
        "the operator measures when the target's sandbox is enabled)."
    ]
