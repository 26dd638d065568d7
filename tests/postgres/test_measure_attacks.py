"""Hostile samples in measured pricing (real PostgreSQL 15 on both sides): a sample from pg_stat_activity is run in
the sandbox as whoever ran it wrote it, so what it calls must neither hold the analysis past its budget nor reach
anything the sandbox's unprivileged role may not."""

from __future__ import annotations

import time

import asyncpg

from optischema.analysis.whatif import PlanRequest
from optischema.api.index import IndexColumn, IndexDefinition
from optischema.flows.measuring import local_sandbox
from optischema.postgres.measure import SandboxMeasurer, Statement

from .conftest import run_sql

DOCS = ("public", "docs")
SLEEP_SECONDS = 20


async def test_samples_that_sleep_never_hold_the_measuring_past_its_budget(pg_database: str) -> None:
    """Two shapes whose samples sleep 20 s each: before, each ran until the sandbox's 30 s statement timeout (4 runs
    a side, the budget looked at only between indexes), holding the analysis for minutes; now the budget left bounds
    every run and a statement past it is not run."""
    await run_sql(
        pg_database,
        [
            "CREATE TABLE docs (id bigserial PRIMARY KEY, meta jsonb NOT NULL)",
            "INSERT INTO docs (meta) SELECT jsonb_build_object('kind', 'k' || (g % 100))"
            " FROM generate_series(1, 500) g",
            "ANALYZE docs",
        ],
    )
    sleepy = f"(SELECT pg_sleep({SLEEP_SECONDS})) IS NULL"
    statements = [
        Statement(
            PlanRequest(
                str(n),
                f"SELECT id FROM docs WHERE meta @> $1 AND id > {n}",
                samples=(f"""SELECT id FROM docs WHERE meta @> '{{"kind": "k1"}}' AND id > {n} AND {sleepy}""",),
                tables=frozenset({DOCS}),
            ),
            10,
            False,
        )
        for n in (1, 2)
    ]
    index = IndexDefinition(schema_="public", table="docs", method="gin", columns=[IndexColumn(name="meta")])
    budget = 8.0
    source = await asyncpg.connect(pg_database)
    try:
        async with local_sandbox(15) as sandbox:
            measurer = SandboxMeasurer(source, pg_database, sandbox, statements, {DOCS: 500.0}, budget_seconds=budget)
            started = time.monotonic()
            try:
                measured = await measurer.measure(statements[0].request, index)
            finally:
                await measurer.close()
            elapsed = time.monotonic() - started
    finally:
        await source.close()
    assert measured is None
    assert elapsed < budget + 5, f"{elapsed:.1f} s for a {budget:.0f} s budget"
    assert any("budget" in note or "timeout" in note for note in measurer.notes), measurer.notes
