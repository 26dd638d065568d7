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


def _statement(key: str, spec: dict[str, Any]) -> WorkloadStatement:
    kind = spec.get("kind", "select")
    usage = TableUsage(TABLE, equality=list(spec.get("uses", [])))
    parsed = ParsedStatement(kind, key, usages={TABLE: usage}, written_table=TABLE if kind != "select" else None)
    request = PlanRequest(key, key, (), frozenset({TABLE}))
    return WorkloadStatement(key, spec["calls"], spec.get("rows", 0), parsed, request)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["title"])
async def test_selection(case: dict[str, Any]) -> None:
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
    planner = RecordedPlanner(case["costs"], names, case.get("sizes", {}))
    cache = PlanCache(planner, {s.key: s.request for s in workload})

    selection = await select_indexes(workload, candidates, cache, existing, Limits(**case.get("limits", {})))

    assert [names[c.candidate.key] for c in selection.chosen] == case["chosen"]
    rejected = {names[k]: reason for k, reason in selection.rejected.items()}
    for name, reason in case.get("rejected", {}).items():
        assert name in rejected
        assert reason in rejected[name]
