"""The what-if seam: what the selection asks of a planner, and a cache so it never asks twice.

The protocol is implemented against real PostgreSQL with HypoPG (``optischema.postgres.planner``); the decisions
stay pure over the costs it returns. A statement's cost depends only on the hypothetical indexes on the tables it
reads, so the cache key is the statement plus exactly those indexes: adding an index to ``trips`` never re-plans a
statement on ``invoices``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from optischema.api.index import IndexDefinition
from optischema.changes.ddl import definition_key

from .statements import TableKey


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """How to plan one statement: its samples as they ran (constants in place) or, without any, a generic plan of
    its normalised text (with some parameters bound from statistics when they hide an index's value)."""

    key: str
    query: str
    samples: tuple[str, ...] = ()
    tables: frozenset[TableKey] = frozenset()
    bound: str | None = None  # without samples: the query with parameters bound from statistics (see binding)


@dataclass(frozen=True, slots=True)
class Plan:
    """A planned statement: total cost (None when it cannot be planned), and the indexes the plan uses (real index
    names, or the definition keys of hypothetical ones)."""

    cost: float | None
    uses: frozenset[str] = frozenset()
    error: str | None = None


class Planner(Protocol):
    async def plan(self, requests: Sequence[PlanRequest], config: Sequence[IndexDefinition]) -> list[Plan]:
        """Plan each request as if exactly the indexes in ``config`` existed besides the real ones."""

    async def size(self, index: IndexDefinition) -> int:
        """Estimated size in bytes of ``index`` once built."""


@dataclass(slots=True)
class PlanCache:
    """Plans by (statement, hypothetical indexes on its tables); counts what it really asked the planner."""

    planner: Planner
    requests: Mapping[str, PlanRequest]
    calls: int = 0
    hits: int = 0
    _plans: dict[tuple[str, frozenset[str]], Plan] = field(default_factory=dict)

    async def plans(self, keys: Sequence[str], config: Sequence[IndexDefinition]) -> dict[str, Plan]:
        relevant = {key: self._relevant(key, config) for key in keys}
        missing = [key for key in keys if (key, relevant[key]) not in self._plans]
        self.hits += len(keys) - len(missing)
        if missing:
            self.calls += len(missing)
            planned = await self.planner.plan([self.requests[key] for key in missing], config)
            for key, plan in zip(missing, planned, strict=True):
                self._plans[(key, relevant[key])] = plan
        return {key: self._plans[(key, relevant[key])] for key in keys}

    def _relevant(self, key: str, config: Sequence[IndexDefinition]) -> frozenset[str]:
        tables = self.requests[key].tables
        return frozenset(definition_key(i) for i in config if (i.schema_, i.table) in tables)
