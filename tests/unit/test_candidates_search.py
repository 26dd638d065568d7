"""GIN and BRIN candidates from the shapes that need them, table-driven from fixtures/search_candidates.yaml:
containment and key existence on jsonb (``jsonb_path_ops`` only when containment is all that is asked), arrays,
substring / regular-expression / similarity searches (trigrams, when pg_trgm is installed, named with its schema),
full-text search on the statement's exact expression, and BRIN where the physical order follows the column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.analysis.candidates import fixed_configuration, generate, search_notes
from optischema.analysis.snapshot import Column, Server, Table
from optischema.analysis.statements import Catalog, parse_statement
from optischema.changes.ddl import render_create

FIXTURE = yaml.safe_load((Path(__file__).parent / "fixtures" / "search_candidates.yaml").read_text())
CASES: list[dict[str, Any]] = FIXTURE["cases"]


def _table(rows: float) -> Table:
    ((name, spec),) = FIXTURE["tables"].items()
    columns = tuple(
        Column(name=c, type=t, correlation=FIXTURE["correlation"].get(c)) for c, t in spec["columns"].items()
    )
    return Table("public", name, rows=rows, size_bytes=int(rows * 100), columns=columns)


@pytest.mark.parametrize("case", CASES, ids=[c["title"] for c in CASES])
def test_search_candidates(case: dict[str, Any]) -> None:
    table = _table(case.get("rows", FIXTURE["tables"]["docs"]["rows"]))
    catalog = Catalog({table.key: {c.name for c in table.columns}})
    parsed = parse_statement(case["sql"], catalog)
    assert parsed.skip_reason is None, parsed.skip_reason
    schemas = case.get("extensions", {"pg_trgm": "public"})
    server = Server("15.18", 150018, collation="en_US.UTF-8", extensions=dict.fromkeys(schemas, "1.6"),
                    extension_schemas=schemas)  # fmt: skip
    found = [render_create(c.index) for c in generate(parsed.usages.items(), {table.key: table}, [], server)]
    for wanted in case.get("want", []):
        assert any(wanted in sql for sql in found), f"{wanted!r} not among {found}"
    for unwanted in case.get("not", []):
        assert not any(unwanted in sql for sql in found), f"{unwanted!r} among {found}"


@pytest.mark.parametrize(
    ("expression", "fixed"),
    [
        ("to_tsvector('simple', title)", True),
        ("to_tsvector('english'::regconfig, coalesce(title, '') || ' ' || body)", True),
        ("to_tsvector(title)", False),
        ("to_tsvector(coalesce(title, 'a,b'))", False),
        ("lower(title)", False),
    ],
)
def test_only_a_to_tsvector_naming_its_configuration_can_be_indexed(expression: str, fixed: bool) -> None:
    assert fixed_configuration(expression) is fixed


def test_without_pg_trgm_the_analysis_says_why_substring_searches_get_no_index() -> None:
    table = _table(500_000)
    parsed = parse_statement("SELECT id FROM docs WHERE title ILIKE $1", Catalog({table.key: {"title", "id"}}))
    notes = search_notes(parsed.usages.items(), Server("15.18", 150018))
    assert len(notes) == 1
    assert "docs.title" in notes[0]
    assert "CREATE EXTENSION pg_trgm" in notes[0]
    assert search_notes(parsed.usages.items(), Server("15.18", 150018, extensions={"pg_trgm": "1.6"})) == []
