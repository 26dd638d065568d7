"""The what-if seam: what the selection asks of a planner, and a cache so it never asks twice.

The protocol is implemented against real PostgreSQL with HypoPG (``optischema.postgres.planner``); the decisions
stay pure over the costs it returns. A statement's cost depends only on the hypothetical indexes on the tables it
reads, so the cache key is the statement plus exactly those indexes: adding an index to ``trips`` never re-plans a
statement on ``invoices``.

Two statements planned from the same text, samples and bound parameters (one shape recorded under several query
ids: other users, nested and top-level calls) have one plan, asked once. The cache is bounded: the least recently
used plans go first (the greedy selection only ever extends its chosen set, so the configurations it left behind
are the ones not asked for again), and a plan evicted is only asked again, never wrong.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from optischema.api.index import IndexDefinition
from optischema.changes.ddl import definition_key

from .statements import TableKey

#: Plans the cache keeps (about 0.5 kB each, so at most ~50 MB): several rounds of the greedy on 10,000 statements.
PLAN_CACHE_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """How to plan one statement: its samples as they ran (constants in place) or, without any, a generic plan of
    its normalised text (with some parameters bound from statistics when they hide an index's value)."""

    key: str
    query: str
    samples: tuple[str, ...] = ()
    tables: frozenset[TableKey] = frozenset()
    bound: str | None = None  # without samples: the query with parameters bound from statistics (see binding)

    @property
    def shape(self) -> tuple[str, tuple[str, ...], frozenset[TableKey], str | None]:
        """What the plan depends on: everything but the key."""
        return (self.query, self.samples, self.tables, self.bound)


@dataclass(frozen=True, slots=True)
class Plan:
    """A planned statement: total cost (None when it cannot be planned), and the indexes the plan uses (real index
    names, or the definition keys of hypothetical ones)."""

    cost: float | None
    uses: frozenset[str] = frozenset()
    error: str | None = None


class Planner(Protocol):
    """Plans statements under hypothetical index configurations.

    A planner whose costs come from a cost model that picks the cheapest plan it finds (PostgreSQL's) may say so
    with a class attribute ``monotone = True``: adding indexes never makes its cost of a statement higher, so the
    cost with many candidates at once is a floor under the cost with any one of them, and the selection prices
    only the candidates whose bound can still win (:func:`is_monotone`). Timings are not monotone (noise)."""

    async def plan(self, requests: Sequence[PlanRequest], config: Sequence[IndexDefinition]) -> list[Plan]:
        """Plan each request as if exactly the indexes in ``config`` existed besides the real ones."""

    async def size(self, index: IndexDefinition) -> int:
        """Estimated size in bytes of ``index`` once built."""


def is_monotone(planner: Planner) -> bool:
    """Whether ``planner`` declares ``monotone = True`` (see :class:`Planner`)."""
    return getattr(planner, "monotone", False) is True


@dataclass(slots=True)
class PlanCache:
    """Plans by (statement shape, hypothetical indexes on its tables), least recently used evicted beyond
    ``capacity``; counts what it really asked the planner (``calls``) and what it answered itself (``hits``)."""

    planner: Planner
    requests: Mapping[str, PlanRequest]
    calls: int = 0
    hits: int = 0
    capacity: int = PLAN_CACHE_SIZE
    _plans: OrderedDict[tuple[str, frozenset[str]], Plan] = field(default_factory=OrderedDict)
    _shapes: dict[str, str] = field(default_factory=dict)  # request key -> key of the first request of its shape

    def __post_init__(self) -> None:
        first: dict[tuple[str, tuple[str, ...], frozenset[TableKey], str | None], str] = {}
        self._shapes = {key: first.setdefault(request.shape, key) for key, request in self.requests.items()}

    @property
    def monotone(self) -> bool:
        return is_monotone(self.planner)

    def __len__(self) -> int:
        return len(self._plans)

    async def plans(self, keys: Sequence[str], config: Sequence[IndexDefinition]) -> dict[str, Plan]:
        on_table: dict[TableKey, list[str]] = {}
        for index in config:
            on_table.setdefault((index.schema_, index.table), []).append(definition_key(index))
        relevant_of: dict[frozenset[TableKey], frozenset[str]] = {}
        found: dict[str, Plan] = {}
        missing: dict[tuple[str, frozenset[str]], list[str]] = {}  # cache key -> the keys waiting for it
        for key in keys:
            tables = self.requests[key].tables
            relevant = relevant_of.get(tables)
            if relevant is None:
                relevant = relevant_of[tables] = frozenset(k for t in tables for k in on_table.get(t, ()))
            slot = (self._shapes.get(key, key), relevant)
            plan = self._plans.get(slot)
            if plan is not None:
                self._plans.move_to_end(slot)
                found[key] = plan
                self.hits += 1
            elif slot in missing:
                missing[slot].append(key)
                self.hits += 1
            else:
                missing[slot] = [key]
        if missing:
            self.calls += len(missing)
            slots = list(missing)
            planned = await self.planner.plan([self.requests[slot[0]] for slot in slots], config)
            for slot, plan in zip(slots, planned, strict=True):
                self._plans[slot] = plan
                for key in missing[slot]:
                    found[key] = plan
            while len(self._plans) > self.capacity:
                self._plans.popitem(last=False)
        return {key: found[key] for key in keys}
