"""A statement's text (pg_stat_statements, a pg_stat_activity sample: any database user writes them) never makes a
GIN candidate whose expression calls anything but a built-in, or carries a query or a second statement: the
renderer refuses such an expression, and a candidate that cannot be rendered is never proposed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from optischema.api.index import IndexColumn, IndexDefinition
from optischema.changes.ddl import UnsafeDefinition, render_create

HOSTILE = [
    "to_tsvector('simple', title || (SELECT secret FROM s))",
    "public.to_tsvector('simple', title)",
    "to_tsvector('simple', title); DROP TABLE t",
    "to_tsvector(current_setting('x')::regconfig, title)",
    "to_tsvector('simple', evil(title))",
    "to_tsvector('simple', title) || pg_sleep(1)",
    "to_tsvector('simple', title::public.evil_domain)",
    "to_tsvector('simple', title OPERATOR(public.||) body)",
]


@pytest.mark.parametrize("expression", HOSTILE)
def test_a_hostile_full_text_expression_is_never_rendered(expression: str) -> None:
    with pytest.raises((UnsafeDefinition, ValidationError)):  # refused when read (the model) or when rendered
        render_create(
            IndexDefinition(schema_="public", table="t", method="gin", columns=[IndexColumn(expression=expression)])
        )


def test_the_control_a_statement_s_own_full_text_expression_is_rendered() -> None:
    index = IndexDefinition(
        schema_="public", table="t", method="gin", columns=[IndexColumn(expression="to_tsvector('simple', title)")]
    )
    assert "to_tsvector('simple', title)" in render_create(index)
