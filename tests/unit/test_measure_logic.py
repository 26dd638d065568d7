"""Measured pricing's pure parts: which parameters take a part of a row's value, what that part is, and what the
server's EXPLAIN ANALYZE says of a run (its time and the indexes it used)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from optischema.analysis.parameters import Parameter, Source, plan_parameters
from optischema.analysis.statements import Catalog
from optischema.postgres.timing import Run, member_value, read_explain

DOCS = ("public", "docs")
CATALOG = Catalog({DOCS: {"id", "meta", "tags"}})

MEMBERS: list[tuple[str, list[Parameter]]] = [
    ("SELECT id FROM docs WHERE meta @> $1", [Parameter(1, "member", Source(DOCS, "docs", "meta"))]),
    ("SELECT id FROM docs WHERE $1 <@ tags", [Parameter(1, "member", Source(DOCS, "docs", "tags"))]),
    ("SELECT id FROM docs d WHERE d.tags && $1", [Parameter(1, "member", Source(DOCS, "d", "d.tags"))]),
    ("SELECT id FROM docs WHERE meta ? $1", [Parameter(1, "member", Source(DOCS, "docs", "meta"))]),
    ("SELECT id FROM docs WHERE meta ?| $1", [Parameter(1, "member", Source(DOCS, "docs", "meta"))]),
    ("SELECT id FROM docs WHERE $1 @> $2", [Parameter(1, "unknown"), Parameter(2, "unknown")]),
]


@pytest.mark.parametrize(("query", "expected"), MEMBERS, ids=[q for q, _ in MEMBERS])
def test_containment_overlap_and_key_tests_take_a_part_of_a_row_s_value(query: str, expected: list[Parameter]) -> None:
    assert plan_parameters(query, CATALOG) == expected


PARTS: list[tuple[str, Any, int, str, Any]] = [
    ("a key and its value of a document", '{"b": 2, "a": {"x": 1}}', 0, "jsonb", json.dumps({"a": {"x": 1}})),
    ("the next key on the next run", '{"b": 2, "a": 1}', 1, "jsonb", json.dumps({"b": 2})),
    ("a key alone for ?", '{"b": 2, "a": 1}', 0, "text", "a"),
    ("a one-key array for ?|", '{"b": 2, "a": 1}', 1, "_text", ["b"]),
    ("an element of an array column", ["red", "blue"], 1, "_text", ["blue"]),
    ("an element of a JSON array", "[1, 2, 3]", 2, "jsonb", "[3]"),
    ("a scalar as it is", "7", 0, "jsonb", "7"),
    ("an empty document as it is", "{}", 0, "jsonb", "{}"),
]


@pytest.mark.parametrize(("value", "turn", "type_name", "expected"), [p[1:] for p in PARTS], ids=[p[0] for p in PARTS])
def test_the_part_taken_follows_the_parameter_s_type(value: Any, turn: int, type_name: str, expected: Any) -> None:
    assert member_value(value, turn, type_name) == expected


PLAN = {
    "Plan": {
        "Node Type": "Bitmap Heap Scan",
        "Plans": [
            {"Node Type": "BitmapOr", "Plans": [
                {"Node Type": "Bitmap Index Scan", "Index Name": "docs_meta"},
                {"Node Type": "Bitmap Index Scan", "Index Name": "docs_tags"},
            ]},
        ],
    },
    "Planning Time": 0.25,
    "Execution Time": 1.5,
}  # fmt: skip


EXPLAINS: list[tuple[str, Any, Run]] = [
    ("planning and execution, every index named", json.dumps([PLAN]), Run(1.75, frozenset({"docs_meta", "docs_tags"}))),
    ("a parsed document", [PLAN], Run(1.75, frozenset({"docs_meta", "docs_tags"}))),
    ("a scan without index", [{"Plan": {"Node Type": "Seq Scan"}, "Execution Time": 3.0}], Run(3.0)),
]


@pytest.mark.parametrize(("document", "expected"), [e[1:] for e in EXPLAINS], ids=[e[0] for e in EXPLAINS])
def test_a_run_is_timed_by_the_server(document: Any, expected: Run) -> None:
    assert read_explain(document) == expected


def test_an_explain_without_its_summary_is_refused() -> None:
    with pytest.raises(ValueError, match="no execution time"):
        read_explain([{"Plan": {"Node Type": "Seq Scan"}}])
