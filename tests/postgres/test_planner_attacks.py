"""What-if planning on the target (real PostgreSQL 15 + HypoPG) never runs a function someone created: planning
folds an IMMUTABLE call with constant arguments, so a statement in pg_stat_statements, a pg_stat_activity sample, or
an overload of a built-in (``public.to_tsvector(regconfig, varchar)``) would run its author's code as the analysis
role. And an operator class, whose support functions run on every write, can be created by a superuser only."""

from __future__ import annotations

import asyncpg
import pytest

from optischema.analysis.whatif import PlanRequest
from optischema.postgres.planner import HypoPGPlanner

T = frozenset({("public", "t")})
RAN = "SELECT current_setting('x.ran', true)"


@pytest.mark.parametrize(
    ("query", "samples"),
    [
        ("SELECT * FROM t WHERE a = public.evil()", ()),  # kept as written by pg_stat_statements (no constant)
        ("SELECT * FROM t WHERE a = $1", ("SELECT * FROM t WHERE a = public.evil()",)),  # a sample
        ('SELECT * FROM t WHERE a = "evil"()', ()),  # quoted
        ("SELECT * FROM t WHERE a = wrapper()", ()),  # a VOLATILE SQL function inlined, its body folded
        (
            "SELECT * FROM t WHERE to_tsvector('simple', title) @@ to_tsquery('simple', $1)",
            ("SELECT * FROM t WHERE to_tsvector('simple', 'abc'::varchar) @@ to_tsquery('simple', 'x')",),
        ),
    ],
    ids=["statement", "sample", "quoted", "inlined", "overload of to_tsvector"],
)
async def test_planning_never_runs_a_function_someone_created(
    conn: asyncpg.Connection, query: str, samples: tuple[str, ...]
) -> None:
    await conn.execute(
        "CREATE EXTENSION IF NOT EXISTS hypopg; CREATE TABLE t (a int, title varchar);"
        "CREATE FUNCTION public.evil() RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
        "$$BEGIN PERFORM set_config('x.ran', current_user, false); RETURN 1; END$$;"
        "CREATE FUNCTION public.wrapper() RETURNS int LANGUAGE sql AS 'SELECT public.evil()';"
        "CREATE FUNCTION public.to_tsvector(regconfig, varchar) RETURNS tsvector IMMUTABLE LANGUAGE plpgsql AS "
        "$$BEGIN PERFORM set_config('x.ran', current_user, false); RETURN pg_catalog.to_tsvector($1, $2::text); END$$"
    )
    planner = await HypoPGPlanner(conn).start()
    try:
        await conn.execute("SELECT set_config('x.ran', '', false)")
        [plan] = await planner.plan([PlanRequest("1", query, samples=samples, tables=T)], [])
        generic = await planner.explain_generic(query, [])  # the plans shown before/after a recommendation
    finally:
        await planner.close()
    assert await conn.fetchval(RAN) == "", "the function ran while planning"
    if query == "SELECT * FROM t WHERE a = $1":  # the normalised statement calls nothing: planned generically
        assert plan.cost is not None
        assert generic is not None
    else:
        assert plan.cost is None
        assert "a function someone created" in (plan.error or "")
        assert generic is None


async def test_the_control_a_statement_calling_only_built_ins_is_planned(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg; CREATE TABLE t (a int, title text)")
    planner = await HypoPGPlanner(conn).start()
    try:
        [plan] = await planner.plan([PlanRequest("1", "SELECT * FROM t WHERE a = abs($1)", tables=T)], [])
    finally:
        await planner.close()
    assert plan.cost is not None, plan.error


async def test_an_operator_class_cannot_be_created_by_a_role_that_is_no_superuser(conn: asyncpg.Connection) -> None:
    """``opclassSchema`` from Git names where an operator class lives: its support functions are a superuser's
    (CREATE OPERATOR CLASS is refused to anyone else, even in their own schema), so no schema check is needed."""
    await conn.execute("CREATE ROLE mallory LOGIN; CREATE SCHEMA m AUTHORIZATION mallory")
    await conn.execute("SET ROLE mallory")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="superuser"):
            await conn.execute(
                "CREATE OPERATOR CLASS m.evil_ops FOR TYPE int4 USING btree AS "
                "OPERATOR 1 <, FUNCTION 1 btint4cmp(int4, int4)"
            )
    finally:
        await conn.execute("RESET ROLE")
    assert await conn.fetchval("SELECT count(*) FROM pg_opclass WHERE opcname = 'evil_ops'") == 0
