"""Measured and what-if costs in one unit (analysis.pricing.MeasuredPlanner), over recorded figures: a measured
index scales the statement's what-if cost by its measured ratio, the best index wins, an index the plan did not
use changes nothing, and a write's measured slowdown is charged in cost units learnt from the reads."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from optischema.analysis.pricing import Measured, MeasuredPlanner, needs_measuring
from optischema.analysis.whatif import Plan, PlanRequest
from optischema.api.index import IndexColumn, IndexDefinition
from optischema.changes.ddl import definition_key

T = ("public", "docs")
READ = PlanRequest("read", "SELECT id FROM docs WHERE meta @> $1", tables=frozenset({T}))
WRITE = PlanRequest("write", "INSERT INTO docs VALUES ($1, $2)", tables=frozenset({T}))
OTHER = PlanRequest("other", "SELECT 1 FROM elsewhere", tables=frozenset({("public", "elsewhere")}))
PATH_OPS = IndexDefinition(table="docs", method="gin", columns=[IndexColumn(name="meta", opclass="jsonb_path_ops")])
JSONB_OPS = IndexDefinition(table="docs", method="gin", columns=[IndexColumn(name="meta")])
BTREE = IndexDefinition(table="docs", columns=[IndexColumn(name="id")])
COSTS = {"read": 1000.0, "write": 0.01, "other": 50.0}


class RecordedWhatIf:
    """What-if costs that ignore indexes (the statements here gain only from GIN)."""

    def __init__(self) -> None:
        self.configs: list[list[str]] = []

    async def plan(self, requests: Sequence[PlanRequest], config: Sequence[IndexDefinition]) -> list[Plan]:
        self.configs.append([definition_key(i) for i in config])
        return [Plan(COSTS[r.key]) for r in requests]

    async def size(self, index: IndexDefinition) -> int:
        return 8192


class RecordedMeasurer:
    def __init__(self, figures: dict[tuple[str, str], Measured]) -> None:
        self.figures = figures
        self.asked: list[tuple[str, str]] = []

    async def measure(self, request: PlanRequest, index: IndexDefinition) -> Measured | None:
        self.asked.append((request.key, definition_key(index)))
        return self.figures.get((request.key, definition_key(index)))

    async def size(self, index: IndexDefinition) -> int:
        return 4 << 20


def planner(figures: dict[tuple[str, str], Measured]) -> tuple[MeasuredPlanner, RecordedWhatIf, RecordedMeasurer]:
    whatif, measurer = RecordedWhatIf(), RecordedMeasurer(figures)
    return MeasuredPlanner(whatif=whatif, measurer=measurer), whatif, measurer


def key(index: IndexDefinition) -> str:
    return definition_key(index)


async def test_a_measured_index_scales_the_what_if_cost_and_the_best_one_wins() -> None:
    measured, whatif, _ = planner(
        {
            ("read", key(PATH_OPS)): Measured(before_ms=40.0, after_ms=0.4, used=True),
            ("read", key(JSONB_OPS)): Measured(before_ms=40.0, after_ms=0.8, used=True),
        }
    )
    (plan,) = await measured.plan([READ], [PATH_OPS, JSONB_OPS, BTREE])
    assert plan.cost == pytest.approx(1000.0 * 0.01)
    assert plan.uses == frozenset({key(PATH_OPS)})
    assert whatif.configs == [[key(BTREE)]]  # HypoPG is asked only about what it can simulate


async def test_an_index_the_plan_did_not_use_or_noise_changes_nothing() -> None:
    measured, _, _ = planner(
        {
            ("read", key(PATH_OPS)): Measured(before_ms=40.0, after_ms=10.0, used=False),
            ("read", key(JSONB_OPS)): Measured(before_ms=40.0, after_ms=39.0, used=True),  # within noise
        }
    )
    (plan,) = await measured.plan([READ], [PATH_OPS, JSONB_OPS])
    assert plan == Plan(1000.0, frozenset())


async def test_a_writes_slowdown_is_charged_in_units_learnt_from_the_reads() -> None:
    measured, _, _ = planner(
        {
            ("read", key(PATH_OPS)): Measured(before_ms=40.0, after_ms=0.4, used=True),
            ("write", key(PATH_OPS)): Measured(before_ms=0.02, after_ms=0.22, used=False, write=True),
        }
    )
    read, write = await measured.plan([READ, WRITE], [PATH_OPS])
    # 1000 units for 40 ms: 25 units per ms; the write is 0.2 ms slower: 5 units more than its 0.01.
    assert write.cost == pytest.approx(0.01 + 0.2 * 25)
    assert read.cost == pytest.approx(10.0)


async def test_statements_on_other_tables_are_never_measured() -> None:
    measured, _, measurer = planner({})
    (plan,) = await measured.plan([OTHER], [PATH_OPS])
    assert plan == Plan(50.0)
    assert measurer.asked == []


async def test_measurements_are_asked_once_and_sizes_come_from_the_right_side() -> None:
    measured, _, measurer = planner({("read", key(PATH_OPS)): Measured(40.0, 0.4, True)})
    await measured.plan([READ], [PATH_OPS])
    await measured.plan([READ], [PATH_OPS, BTREE])
    assert measurer.asked == [("read", key(PATH_OPS))]
    assert await measured.size(PATH_OPS) == 4 << 20
    assert await measured.size(BTREE) == 8192


@pytest.mark.parametrize(
    ("method", "measured"),
    [("btree", False), ("hash", False), ("brin", False), ("gin", True), ("gist", True), ("spgist", True)],
)
def test_what_hypopg_cannot_simulate_is_measured(method: str, measured: bool) -> None:
    index = IndexDefinition(table="docs", method=method, columns=[IndexColumn(name="meta")])  # type: ignore[arg-type]
    assert needs_measuring(index) is measured
