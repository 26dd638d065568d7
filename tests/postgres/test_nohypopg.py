"""Full index selection without HypoPG: candidates built for real on a sandbox copy and planned there
(``postgres.sandbox_planner``), on a server that has no HypoPG.

Sets of indexes are priced together (a join needs one index per side), each configuration is shown exactly, and a
candidate the copy cannot build is never priced.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path

import pytest

from devcluster import LocalPostgres
from devcluster.workload import Workload
from optischema.analysis.whatif import PlanRequest
from optischema.api.index import IndexDefinition
from optischema.changes.ddl import definition_key, render_create
from optischema.flows.analyze import AnalysisResult, AnalyzeOptions, analyze
from optischema.flows.measuring import local_sandbox
from optischema.postgres.connect import connect
from optischema.postgres.measure import SandboxMeasurer, Statement
from optischema.postgres.planner import HypoPGPlanner
from optischema.postgres.sandbox_planner import SandboxPlanner

from .conftest import run_sql

JOIN = """
CREATE TABLE trips (id bigint PRIMARY KEY, customer_id bigint NOT NULL, state text NOT NULL);
CREATE TABLE invoices (id bigint PRIMARY KEY, trip_id bigint NOT NULL, amount numeric NOT NULL);
INSERT INTO trips SELECT g, g % 5000, 'done' FROM generate_series(1, 100000) g;
INSERT INTO invoices SELECT g, g, g % 97 FROM generate_series(1, 100000) g;
VACUUM ANALYZE;
"""


#: The public benchmark workloads (``../shared/workloads`` beside the checkout, as ``bench/`` finds them).
SHARED = Path(os.environ.get("OPTISCHEMA_SHARED", Path(__file__).resolve().parents[3] / "shared"))
FLEET = SHARED / "workloads" / "fleet"
#: Small enough to load, run and analyse twice in well under a minute; large enough that its statements need indexes.
FLEET_SCALE = 0.05
#: The main statements: the fewest, by total time, that together carry this share of the workload's time.
MAIN_SHARE = 0.9
_fleets = itertools.count()


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


async def test_a_covering_index_saves_its_heap_visits_on_the_copy_as_on_the_target(pg_database: str) -> None:
    """The copy is vacuumed after its load, as autovacuum keeps the target: on a copy never vacuumed no page is
    all-visible, an index-only scan is costed as a heap fetch per row, and INCLUDE columns look worthless there
    (the plain index then wins, unlike on the target). Costs with HypoPG on the target are the yardstick."""
    await run_sql(
        pg_database,
        [
            "CREATE TABLE invoices (id bigint PRIMARY KEY, customer_id bigint NOT NULL, amount numeric NOT NULL)",
            "INSERT INTO invoices SELECT g, g % 5000, g % 97 FROM generate_series(1, 100000) g",
            "VACUUM ANALYZE invoices",
        ],
    )
    query = "SELECT sum(amount) FROM invoices WHERE customer_id = $1"
    request = PlanRequest("c", query, (), frozenset({("public", "invoices")}))
    plain = btree("invoices", "customer_id")
    covering = plain.model_copy(update={"include": ["amount"]})
    source = await connect(pg_database)
    try:
        target = await HypoPGPlanner(source).start()
        ((target_plain,), (target_covering,)) = [await target.plan([request], [i]) for i in (plain, covering)]
        await target.close()
        async with local_sandbox(15) as sandbox:
            measurer = SandboxMeasurer(source, pg_database, sandbox, [Statement(request, 10, False)], {})
            planner = SandboxPlanner(measurer)
            try:
                ((copy_plain,), (copy_covering,)) = [await planner.plan([request], [i]) for i in (plain, covering)]
            finally:
                await planner.close()
                await measurer.close()
    finally:
        await source.close()
    assert target_plain.cost is not None
    assert target_covering.cost is not None
    assert copy_plain.cost is not None
    assert copy_covering.cost is not None
    assert target_covering.cost < target_plain.cost / 2  # what the yardstick says: the heap visits are saved
    assert copy_covering.cost < copy_plain.cost / 2, (copy_plain, copy_covering)
    assert copy_covering.uses == {definition_key(covering)}


def indexes_by_statement(result: AnalysisResult) -> dict[str, set[str]]:
    """Each statement's proposed indexes (those whose evidence names it), rendered without a name: the table,
    keys (order, operator class), INCLUDE, method and predicate, all compared at once."""
    found: dict[str, set[str]] = {}
    for recommendation in result.recommendations:
        index = recommendation.change.index
        if recommendation.kind != "createIndex" or index is None:
            continue
        for statement in recommendation.evidence.statements:
            found.setdefault(statement.query_id, set()).add(
                render_create(index.model_copy(update={"name": "x"}), concurrently=False)
            )
    return found


def main_statements(result: AnalysisResult, share: float) -> list[str]:
    """The fewest statements, most total time first, that carry ``share`` of the time of all those read."""
    ranked = sorted(result.statements, key=lambda s: -s[3])
    total = sum(s[3] for s in ranked)
    main: list[str] = []
    carried = 0.0
    for query_id, _, _, total_ms, _ in ranked:
        if carried >= share * total:
            break
        main.append(query_id)
        carried += total_ms
    return main


async def test_without_hypopg_the_fleet_workloads_main_statements_get_the_indexes_what_if_chooses(
    pg_server: LocalPostgres,
) -> None:
    """Issue 21: the sandbox copy stands in for HypoPG, so on a workload it was not written for (the public fleet
    workload: join keys, composite equality + order, partial, expression and covering indexes) it must choose what
    what-if planning chooses on the same database, INCLUDE columns and key order included. The copy is vacuumed
    after the load: never vacuumed, it costs every index-only scan as heap fetches, and covering indexes lost there
    what they win on the target; and only an expression index re-analyses its table there, since every ANALYZE
    draws a new sample and near-ties (one key order against the other) then went either way. Compared statement by
    statement on the statements carrying most of the time: the same indexes for each, none where what-if has none."""
    if not (FLEET / "schema.sql").is_file():
        pytest.skip(f"the fleet workload is not at {FLEET} (set OPTISCHEMA_SHARED to the shared/ folder)")
    fleet = Workload(FLEET, pg_server, database=f"fleet{next(_fleets)}", scale=FLEET_SCALE)
    fleet.load()  # data, legacy indexes, pg_stat_statements and HypoPG
    try:
        # Only the mix's statements count (not the load's): this database's statistics start now.
        pg_server.psql(
            "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)",
            database=fleet.database,
        )
        fleet.run(6)
        options = AnalyzeOptions(sample_seconds=0)  # generic plans on both sides: no live traffic to sample
        whatif = await analyze(fleet.dsn, options)
        pg_server.psql("DROP EXTENSION hypopg", database=fleet.database)
        without = await analyze(fleet.dsn, replace(options, measure=local_sandbox))
    finally:
        pg_server.psql(f"DROP DATABASE {fleet.database} WITH (FORCE)")
    assert whatif.mode == "whatif"
    assert without.mode == "measured"
    chosen, stood_in = indexes_by_statement(whatif), indexes_by_statement(without)
    main = main_statements(whatif, MAIN_SHARE)
    texts = {key: text for key, text, *_ in whatif.statements}
    assert len([key for key in main if key in chosen]) >= 3, (main, whatif.statements)  # the test means something
    for key in main:
        assert stood_in.get(key, set()) == chosen.get(key, set()), texts[key]
    assert any("INCLUDE" in index for key in main for index in chosen.get(key, ()))  # what the issue was about
