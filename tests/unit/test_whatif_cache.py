"""The plan cache: one plan per statement shape and relevant indexes, bounded, counting what it asked."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from optischema.analysis.whatif import Plan, PlanCache, PlanRequest, is_monotone
from optischema.api.index import IndexColumn, IndexDefinition
from optischema.changes.ddl import definition_key


class CountingPlanner:
    """Cost = 100 minus 10 per index on the statement's tables; records every request it is asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, frozenset[str]]] = []

    async def plan(self, requests: Sequence[PlanRequest], config: Sequence[IndexDefinition]) -> list[Plan]:
        plans = []
        for request in requests:
            relevant = frozenset(definition_key(i) for i in config if (i.schema_, i.table) in request.tables)
            self.asked.append((request.key, relevant))
            plans.append(Plan(100.0 - 10 * len(relevant), relevant))
        return plans

    async def size(self, index: IndexDefinition) -> int:
        return 8192


def _index(table: str, column: str) -> IndexDefinition:
    return IndexDefinition(table=table, columns=[IndexColumn(name=column)])


def _request(key: str, query: str, table: str = "t") -> PlanRequest:
    return PlanRequest(key, query, (), frozenset({("public", table)}))


REQUESTS = {
    "1": _request("1", "SELECT * FROM t WHERE a = $1"),
    "2": _request("2", "SELECT * FROM t WHERE a = $1"),  # same text under another query id (another user)
    "3": _request("3", "SELECT * FROM t WHERE b = $1"),
    "4": _request("4", "SELECT * FROM u WHERE c = $1", table="u"),
}


# (title, rounds of (keys, indexes as table.column), planner calls, cache hits)
CASES = [
    ("one shape under two query ids is planned once", [(["1", "2"], [])], 1, 1),
    ("asked again: answered by the cache", [(["1", "3"], []), (["1", "3"], [])], 2, 2),
    (
        "an index on another table changes no plan of this one",
        [(["1", "4"], []), (["1", "4"], ["u.c"])],
        3,  # 1, 4, then 4 with u.c
        1,
    ),
    (
        "an index on the statement's table is a new configuration",
        [(["3"], []), (["3"], ["t.a"]), (["3"], ["t.a", "u.c"])],
        2,
        1,
    ),
]


@pytest.mark.parametrize(("title", "rounds", "calls", "hits"), CASES, ids=[c[0] for c in CASES])
async def test_cache(title: str, rounds: list[tuple[list[str], list[str]]], calls: int, hits: int) -> None:
    planner = CountingPlanner()
    cache = PlanCache(planner, REQUESTS)
    for keys, indexes in rounds:
        config = [_index(*spec.split(".")) for spec in indexes]
        plans = await cache.plans(keys, config)
        assert set(plans) == set(keys), title
    assert (cache.calls, cache.hits) == (calls, hits), title
    assert cache.calls == len(planner.asked), title


async def test_shared_shape_gets_the_same_plan() -> None:
    cache = PlanCache(CountingPlanner(), REQUESTS)
    plans = await cache.plans(["1", "2"], [_index("t", "a")])
    assert plans["1"] is plans["2"]
    assert plans["1"].cost == 90.0


async def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    planner = CountingPlanner()
    cache = PlanCache(planner, REQUESTS, capacity=2)
    await cache.plans(["1"], [])
    await cache.plans(["3"], [])
    await cache.plans(["1"], [])  # used again: "3" is now the oldest
    await cache.plans(["4"], [])  # evicts "3"
    assert len(cache) == 2
    asked = len(planner.asked)
    await cache.plans(["1", "4"], [])
    assert len(planner.asked) == asked  # both still there
    await cache.plans(["3"], [])
    assert len(planner.asked) == asked + 1  # evicted, asked again (never a wrong plan)


def test_monotone_is_declared_not_assumed() -> None:
    class Declared(CountingPlanner):
        monotone = True

    assert is_monotone(Declared())
    assert not is_monotone(CountingPlanner())
