"""Hostile and unlucky statements in a real ``pg_stat_statements``: the analysis completes, each such statement is
listed as skipped with its reason, and the rest of the workload still gets its index.

Before, one statement with 60 nested parentheses raised ``RecursionError`` out of every analysis.
"""

from __future__ import annotations

import asyncpg

from optischema.analysis.statements import MAX_STATEMENT_CHARS
from optischema.flows.analyze import AnalyzeOptions, analyze_off_loop, statement_limit

from .conftest import run_sql

SCHEMA = [
    "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL)",
    "INSERT INTO orders SELECT g, 1 + g % 5000, CASE WHEN g % 50 = 0 THEN 'open' ELSE 'closed' END "
    "FROM generate_series(1, 100000) g",
    "VACUUM ANALYZE orders",
]
GOOD = [f"SELECT id, status FROM orders WHERE customer_id = {c}" for c in (11, 4242, 777)]
DEEP = "SELECT id FROM orders WHERE customer_id = " + "(" * 60 + "7" + ")" * 60
HUGE = "SELECT id FROM orders WHERE customer_id IN (" + ", ".join(str(n) for n in range(1, 3000)) + ")"
#: A comment survives normalisation, so the hostile text reaches the ignore patterns as it is.
LONG_RUN = "/* " + "a" * 5000 + "b */ SELECT count(*) FROM orders WHERE status = 'open'"


async def _catalog(dsn: str) -> tuple[list[str], int]:
    connection = await asyncpg.connect(dsn)
    try:
        indexes = [r["indexname"] for r in await connection.fetch("SELECT indexname FROM pg_indexes ORDER BY 1")]
        deep = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE $1", "%" + "(" * 60 + "%"
        )
        return indexes, int(deep)
    finally:
        await connection.close()


async def test_a_60_deep_parenthesis_among_the_workload_is_skipped_and_the_analysis_completes(
    pg_database: str,
) -> None:
    await run_sql(pg_database, SCHEMA)
    await run_sql(pg_database, [*GOOD, DEEP, HUGE, LONG_RUN], times=20)
    before, deep_recorded = await _catalog(pg_database)
    assert deep_recorded == 1  # the hostile statement is in pg_stat_statements

    options = AnalyzeOptions(sample_seconds=0, ignore_statements=[r"(a+)+$"])  # catastrophic for a backtracker
    result = await analyze_off_loop(pg_database, options)  # completes: no RecursionError, no stall

    reasons = {s.query: s.reason for s in result.skipped}
    deep_reason = next(reason for query, reason in reasons.items() if "(" * 60 in query)
    assert deep_reason == "nested too deeply to parse (60 levels of parentheses, more than 32)"
    huge_reason = next(
        reason for query, reason in reasons.items() if query.startswith("SELECT id FROM orders WHERE customer_id IN")
    )
    assert huge_reason == f"longer than {MAX_STATEMENT_CHARS} characters"
    huge_text = next(
        text for _, text, *_ in result.statements if text.startswith("SELECT id FROM orders WHERE customer_id IN")
    )
    assert len(huge_text) == MAX_STATEMENT_CHARS + 1  # cut in SQL: the whole text never reached the operator
    # The rest of the workload was analysed: the lookup by customer still gets its index.
    creates = [r.sql for r in result.recommendations if r.kind == "createIndex"]
    assert any('"customer_id"' in sql for sql in creates), creates
    # What did not happen: the analysis changed nothing (no index built, the statement still recorded).
    assert await _catalog(pg_database) == (before, 1)


SHAPE = "SELECT id FROM orders WHERE customer_id = 5"  # each OR more is another statement to pg_stat_statements


async def test_the_top_statements_are_cut_in_sql(pg_database: str) -> None:
    await run_sql(pg_database, SCHEMA)
    await run_sql(pg_database, [SHAPE + " OR customer_id = 6" * n for n in range(150)], times=2)
    await run_sql(pg_database, ["SELECT id AS once FROM orders WHERE status = 'x'"])  # called once
    result = await analyze_off_loop(pg_database, AnalyzeOptions(sample_seconds=0, top_statements=1, min_calls=2))
    assert len(result.statements) == statement_limit(1)  # read from pg_stat_statements: no more
    assert not any("status =" in text for _, text, *_ in result.statements)  # under minCalls: never read
    assert result.statements_analysed == 1
    assert any("were read from pg_stat_statements" in note for note in result.notes)
