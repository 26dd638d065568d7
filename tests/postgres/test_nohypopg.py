"""Full index selection without HypoPG: candidates built for real on a sandbox copy and planned there
(``postgres.sandbox_planner``), on a server that has no HypoPG.

Sets of indexes are priced together (a join needs one index per side), each configuration is shown exactly, and a
candidate the copy cannot build is never priced.
"""

from __future__ import annotations

from optischema.analysis.whatif import PlanRequest
from optischema.api.index import IndexDefinition
from optischema.flows.measuring import local_sandbox
from optischema.postgres.connect import connect
from optischema.postgres.measure import SandboxMeasurer, Statement
from optischema.postgres.sandbox_planner import SandboxPlanner

from .conftest import run_sql

JOIN = """
CREATE TABLE trips (id bigint PRIMARY KEY, customer_id bigint NOT NULL, state text NOT NULL);
CREATE TABLE invoices (id bigint PRIMARY KEY, trip_id bigint NOT NULL, amount numeric NOT NULL);
INSERT INTO trips SELECT g, g % 5000, 'done' FROM generate_series(1, 100000) g;
INSERT INTO invoices SELECT g, g, g % 97 FROM generate_series(1, 100000) g;
VACUUM ANALYZE;
"""


def btree(table: str, *columns: str) -> IndexDefinition:
    return IndexDefinition.model_validate(
        {"schema": "public", "table": table, "columns": [{"name": c} for c in columns]}
    )


async def test_a_join_is_priced_with_an_index_on_each_side_together(pg_database: str) -> None:
    """What timing one index at a time never sees: the join gains little from either index alone and most from
    both, and the planner's uses name both. Each configuration is shown exactly, also after a larger one."""
    await run_sql(pg_database, [s for s in JOIN.split(";\n") if s.strip()])
    query = "SELECT t.id, i.amount FROM trips t JOIN invoices i ON i.trip_id = t.id WHERE t.customer_id = $1"
    request = PlanRequest("j", query, (), frozenset({("public", "trips"), ("public", "invoices")}))
    left, right = btree("trips", "customer_id"), btree("invoices", "trip_id")
    source = await connect(pg_database)
    async with local_sandbox(15) as sandbox:
        measurer = SandboxMeasurer(
            source, pg_database, sandbox, [Statement(request, 10, False)], {("public", "trips"): 100_000}
        )
        planner = SandboxPlanner(measurer)
        try:
            costs = {}
            for name, config in {
                "none": [],
                "left": [left],
                "right": [right],
                "both": [left, right],
                "none again": [],
                "left again": [left],
            }.items():
                (plan,) = await planner.plan([request], config)
                assert plan.cost is not None, name
                costs[name] = (plan.cost, plan.uses)
            assert await planner.size(left) > 0
            assert planner.builds == 2  # each candidate built once, whatever the configurations asked
        finally:
            await planner.close()
            await measurer.close()
            await source.close()
    (none, _), (one, _), (other, _), (both, uses) = (costs[k] for k in ("none", "left", "right", "both"))
    assert both < min(one, other) / 5, costs
    assert len(uses) == 2, uses
    assert costs["none again"][0] == none
    assert not costs["none again"][1]
    assert costs["left again"][0] == one


async def test_a_candidate_that_cannot_be_built_is_never_priced_or_chosen(pg_database: str) -> None:
    """Hostile: a candidate whose build fails on the copy (here a unique index over duplicate values) brings no
    gain, so the selection never proposes it, and a note names it; planning goes on for the others."""
    await run_sql(pg_database, [s for s in JOIN.split(";\n") if s.strip()])
    request = PlanRequest("u", "SELECT id FROM trips WHERE customer_id = $1", (), frozenset({("public", "trips")}))
    broken = IndexDefinition.model_validate(
        {"schema": "public", "table": "trips", "unique": True, "columns": [{"name": "customer_id"}]}
    )
    source = await connect(pg_database)
    async with local_sandbox(15) as sandbox:
        measurer = SandboxMeasurer(source, pg_database, sandbox, [Statement(request, 10, False)], {})
        planner = SandboxPlanner(measurer)
        try:
            (before,) = await planner.plan([request], [])
            (after,) = await planner.plan([request], [broken])
            (fine,) = await planner.plan([request], [btree("trips", "customer_id")])
        finally:
            await planner.close()
            await measurer.close()
            await source.close()
    assert after.cost == before.cost
    assert not after.uses
    assert any("could not be built on the sandbox copy" in note for note in planner.notes), planner.notes
    assert fine.cost is not None
    assert before.cost is not None
    assert fine.cost < before.cost / 10
