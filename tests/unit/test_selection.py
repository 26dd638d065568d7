"""The greedy selection over recorded costs (fixtures/selection.yaml): decisions are pure, the planner is data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.analysis.candidates import Candidate
from optischema.analysis.selection import Limits, WorkloadStatement, select_indexes
from optischema.analysis.snapshot import Index, IndexKey
from optischema.analysis.statements import ParsedStatement, TableUsage
from optischema.analysis.whatif import Plan, PlanCache, PlanRequest
from optischema.api.index import IndexColumn, IndexDefinition
from optischema.changes.ddl import definition_key

CASES = yaml.safe_load((Path(__file__).parent / "fixtures" / "selection.yaml").read_text())["cases"]
TABLE = ("public", "t")


class RecordedPlanner:
    """Costs from the fixture: the cheapest listed subset of the configuration applies."""

    def __init__(self, costs: dict[str, dict[str, float]], names: dict[str, str], sizes: dict[str, int]) -> None:
        self.costs = costs
        self.names = names  # definition key -> candidate name
        self.sizes = sizes

    async def plan(self, requests: Sequence[PlanRequest], config: Sequence[IndexDefinition]) -> list[Plan]:
        present = {self.names[definition_key(i)] for i in config}
        plans = []
        for request in requests:
            options = [
                (cost, names)
                for names, cost in self.costs[request.key].items()
                if set(filter(None, names.split("+"))) <= present
            ]
            cost, names = min(options)
            keys = {k for k, n in self.names.items() if n in names.split("+")}
            plans.append(Plan(float(cost), frozenset(keys)))
        return plans

    async def size(self, index: IndexDefinition) -> int:
        return self.sizes.get(self.names[definition_key(index)], 8192)


class MonotoneRecordedPlanner(RecordedPlanner):
    """The same costs, declared monotone (they are: more indexes only add subsets to choose the cheapest from), so
    the selection bounds candidates by each statement's cost with all of them and prices only what can win."""

    monotone = True


def _statement(key: str, spec: dict[str, Any]) -> WorkloadStatement:
    kind = spec.get("kind", "select")
    usage = TableUsage(TABLE, equality=list(spec.get("uses", [])))
    parsed = ParsedStatement(kind, key, usages={TABLE: usage}, written_table=TABLE if kind != "select" else None)
    request = PlanRequest(key, key, (), frozenset({TABLE}))
    return WorkloadStatement(key, spec["calls"], spec.get("rows", 0), parsed, request)


@pytest.mark.parametrize("planner_class", [RecordedPlanner, MonotoneRecordedPlanner], ids=["exact", "bounded"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["title"])
async def test_selection(case: dict[str, Any], planner_class: type[RecordedPlanner]) -> None:
    workload = [_statement(k, v) for k, v in case["statements"].items()]
    candidates, names = [], {}
    for name, keys in case["candidates"].items():
        index = IndexDefinition(table="t", columns=[IndexColumn(name=k) for k in keys])
        key = definition_key(index)
        names[key] = name
        statements = {s.key for s in workload if keys[0] in s.parsed.usages[TABLE].equality}
        candidates.append(Candidate(index, key, TABLE, statements))
    existing = [
        Index("public", "t", f"existing{n}", "", "btree", (IndexKey(f"z{n}"),)) for n in range(case.get("existing", 0))
    ]
    planner = planner_class(case["costs"], names, case.get("sizes", {}))
    cache = PlanCache(planner, {s.key: s.request for s in workload})

    selection = await select_indexes(workload, candidates, cache, existing, Limits(**case.get("limits", {})))

    assert [names[c.candidate.key] for c in selection.chosen] == case["chosen"]
    rejected = {names[k]: reason for k, reason in selection.rejected.items()}
    for name, reason in case.get("rejected", {}).items():
        assert name in rejected
        assert reason in rejected[name]


def _many(weak: int) -> tuple[list[WorkloadStatement], list[Candidate], dict[str, dict[str, float]]]:
    """Twenty busy statements on column a, which index ``good`` serves and ``ab`` a hair better but bigger (a near
    tie); five rare ones on b, on which each of ``weak`` candidates saves half a unit."""
    busy = [_statement(f"q{n}", {"calls": 10, "uses": ["a"]}) for n in range(20)]
    rare = [_statement(f"r{n}", {"calls": 1, "uses": ["b"]}) for n in range(5)]
    costs = {s.key: {"": 100.0, "good": 5.0, "ab": 4.99} for s in busy}
    costs |= {s.key: {"": 100.0, **{f"weak{n}": 99.5 for n in range(weak)}} for s in rare}
    candidates = []
    for name, (lead, served) in {
        "good": ("a", busy),
        "ab": ("a", busy),
        **{f"weak{n}": ("b", rare) for n in range(weak)},
    }.items():
        index = IndexDefinition(table="t", columns=[IndexColumn(name=lead), IndexColumn(name=name)])
        candidates.append(Candidate(index, definition_key(index), TABLE, {s.key for s in served}))
    return busy + rare, candidates, costs


@pytest.mark.parametrize("weak", [0, 5, 40])
async def test_bounds_price_only_what_can_win(weak: int) -> None:
    """With a monotone planner the choice is the one pricing every candidate makes, for fewer plans: the weak
    candidates' bounds (what is left above each statement's floor, the cost with all candidates) can neither beat
    the good index nor clear the threshold, so they are never priced."""
    workload, candidates, costs = _many(weak)
    names = {c.key: c.index.columns[1].name or "" for c in candidates}
    sizes = {"good": 1000, "ab": 2000}
    results = {}
    for planner_class in (RecordedPlanner, MonotoneRecordedPlanner):
        planner = planner_class(costs, names, sizes)
        cache = PlanCache(planner, {s.key: s.request for s in workload})
        results[planner_class] = await select_indexes(workload, candidates, cache, [], Limits())
    exact, bounded = results[RecordedPlanner], results[MonotoneRecordedPlanner]

    assert [names[c.candidate.key] for c in bounded.chosen] == ["good"]  # the smaller of two near equals
    assert [c.candidate.key for c in bounded.chosen] == [c.candidate.key for c in exact.chosen]
    assert set(bounded.rejected) == set(exact.rejected)
    # exact: baseline 25, good and ab on 20 each, the weak ones on 5 each, then with good chosen: ab again on 20
    # and the rare five (what remains)
    assert exact.planner_calls == 25 + 40 + 5 * weak + 20 + 5
    # bounded: baseline 25, floors (of the statements some candidate touches), good and ab on 20 each, the rare
    # five with good, ab on top of good (without weak candidates that is the floor's configuration: cached)
    assert bounded.planner_calls == 25 + (25 if weak else 20) + 40 + 5 + (20 if weak else 0)
    for key, reason in bounded.rejected.items():
        if names[key].startswith("weak"):
            assert reason.startswith("it saves at most"), reason


class FailingFloorsPlanner(MonotoneRecordedPlanner):
    """Refuses configurations of more than three indexes, as HypoPG does when it runs out of oids."""

    async def plan(self, requests: Sequence[PlanRequest], config: Sequence[IndexDefinition]) -> list[Plan]:
        if len(config) > 3:
            raise RuntimeError("hypopg: not more oid available")
        return await super().plan(requests, config)


async def test_floors_the_planner_refuses_leave_pricing_exact() -> None:
    workload, candidates, costs = _many(40)
    names = {c.key: c.index.columns[1].name or "" for c in candidates}
    planner = FailingFloorsPlanner(costs, names, {"good": 1000, "ab": 2000})
    cache = PlanCache(planner, {s.key: s.request for s in workload})

    selection = await select_indexes(workload, candidates, cache, [], Limits())

    assert [names[c.candidate.key] for c in selection.chosen] == ["good"]
    assert not any("at most" in reason for reason in selection.rejected.values())  # every candidate was priced
