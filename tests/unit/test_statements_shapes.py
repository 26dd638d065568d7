"""Statement shapes (issue 20, item 4), table-driven from fixtures/shapes.yaml: views resolved to their base tables,
CTEs that PostgreSQL 12+ inlines, ORDER BY by position and alias, an UPDATE filtering on the column it sets,
statements prepared in SQL, and the retyping of parameters PostgreSQL cannot infer. Each case names its shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.analysis.candidates import generate
from optischema.analysis.selection import Limits, WorkloadStatement, write_penalty
from optischema.analysis.snapshot import Column, Server, Table
from optischema.analysis.statements import Catalog, parse_statement, prepared_statement
from optischema.analysis.whatif import PlanRequest
from optischema.changes.ddl import render_create
from optischema.postgres.planner import refine_types

FIXTURES: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "fixtures" / "shapes.yaml").read_text())
SHAPES = {"view", "cte", "order-by", "update", "untyped-parameters", "prepare"}


def _key(name: str) -> tuple[str, str]:
    schema, table = name.split(".")
    return (schema, table)


CATALOG = Catalog(
    {_key(name): set(columns) for name, columns in FIXTURES["catalog"].items()},
    views={_key(name): text for name, text in FIXTURES["views"].items()},
)


def _as_fixture(value: Any) -> Any:
    if isinstance(value, set):
        return sorted(value)
    if isinstance(value, list):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value


def _title(case: dict[str, Any]) -> str:
    return f"{case['shape']}: {case.get('title') or case['query'][:40]}"


def test_every_shape_has_cases() -> None:
    """The six peer-suite shapes of item 4 each have at least one case."""
    seen = {c["shape"] for part in ("cases", "skipped", "prepared", "retype") for c in FIXTURES[part]}
    assert seen == SHAPES


@pytest.mark.parametrize("case", FIXTURES["cases"], ids=_title)
def test_shape(case: dict[str, Any]) -> None:
    parsed = parse_statement(case["query"], CATALOG)

    assert parsed.skip_reason is None
    assert parsed.kind == case.get("kind", "select")
    if "written" in case:
        assert parsed.written_table == _key(case["written"])
    if "updated" in case:
        assert list(parsed.updated_columns) == case["updated"]
    assert {_key(name) for name in case["expect"]} <= set(parsed.usages)
    for name, fields in case["expect"].items():
        usage = parsed.usages[_key(name)]
        for field, expected in fields.items():
            assert _as_fixture(getattr(usage, field)) == expected, f"{name}.{field}"


#: The fixture's tables as the candidate generator sees them (no statistics: its defaults apply).
TABLES = {
    _key(name): Table(*_key(name), rows=200_000, size_bytes=20_000_000, columns=tuple(Column(c, "text") for c in cols))
    for name, cols in FIXTURES["catalog"].items()
}


@pytest.mark.parametrize("case", [c for c in FIXTURES["cases"] if "candidates" in c], ids=_title)
def test_shape_candidates(case: dict[str, Any]) -> None:
    """The index each shape should make possible is among the candidates (the planner then prices them)."""
    parsed = parse_statement(case["query"], CATALOG)
    usages = [(str(n), usage) for n, usage in enumerate(parsed.usages.values())]
    found = [render_create(c.index) for c in generate(usages, TABLES, [], Server("15.18", 150018))]
    if not case["candidates"]:
        assert found == []
    for wanted in case["candidates"]:
        assert any(wanted in sql for sql in found), f"{wanted!r} not among {found}"


@pytest.mark.parametrize("case", FIXTURES["skipped"], ids=_title)
def test_skipped_with_a_reason(case: dict[str, str]) -> None:
    parsed = parse_statement(case["query"], CATALOG)
    assert parsed.skip_reason is not None
    assert parsed.skip_reason.startswith(case["reason"])


@pytest.mark.parametrize("case", FIXTURES["prepared"], ids=_title)
def test_prepared_statement_text(case: dict[str, str]) -> None:
    assert prepared_statement(case["query"]) == case["body"]


@pytest.mark.parametrize("case", FIXTURES["retype"], ids=_title)
def test_parameters_retyped_after_a_refusal(case: dict[str, Any]) -> None:
    assert refine_types(case["types"], case["error"], set(case["arithmetic"])) == case["then"]


def test_a_prepared_statement_keeps_the_fingerprint_of_its_prepare() -> None:
    """pg_stat_statements keys the PREPARE's text: the analysed statement keeps that identity."""
    text = "PREPARE q(int) AS SELECT id FROM orders WHERE customer_id = $1"
    assert parse_statement(text, CATALOG).fingerprint != parse_statement(text.split(" AS ", 1)[1], CATALOG).fingerprint


def test_an_update_setting_its_filter_column_keeps_its_candidate_and_is_charged_for_it() -> None:
    """update: the candidate on the column an UPDATE both filters on and sets is generated, and the selection
    charges its write cost (the update stops being HOT: every index of the table is written) rather than
    discarding it; whether it is worth it is the planner's call (tests/postgres/test_shapes.py proves it is when
    the scan dominates)."""
    catalog = Catalog({("public", "jobs"): {"id", "state", "run_at"}})
    parsed = parse_statement("UPDATE jobs SET state = $1 WHERE state = $2", catalog)
    columns = (Column("id", "bigint", True), Column("state", "text", True), Column("run_at", "timestamptz", True))
    table = Table("public", "jobs", rows=200_000, size_bytes=20_000_000, columns=columns)
    candidates = generate([("1", u) for u in parsed.usages.values()], {table.key: table}, [], Server("15.18", 150018))
    [on_state] = [c for c in candidates if [k.name for k in c.index.columns] == ["state"] and c.index.where is None]
    statement = WorkloadStatement("1", 40, 4000, parsed, PlanRequest("1", "", (), frozenset(parsed.tables)))
    limits = Limits()
    penalty = write_penalty(on_state, [statement], [], [], limits)
    assert penalty == 4000 * limits.index_write_cost  # one index on the table (this one): HOT before, not after
