"""Statement parsing, table-driven from fixtures/statements.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.analysis.statements import Catalog, fingerprint, parse_statement, prepare_text, typed_parameters

FIXTURES = yaml.safe_load((Path(__file__).parent / "fixtures" / "statements.yaml").read_text())
CATALOG = Catalog({tuple(name.split(".")): set(columns) for name, columns in FIXTURES["catalog"].items()})  # type: ignore[misc]


def _key(name: str) -> tuple[str, str]:
    schema, table = name.split(".")
    return (schema, table)


def _as_fixture(value: Any) -> Any:
    if isinstance(value, set):
        return sorted(value)
    if isinstance(value, list):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value


@pytest.mark.parametrize("case", FIXTURES["cases"], ids=lambda c: c["title"])
def test_statement(case: dict[str, Any]) -> None:
    parsed = parse_statement(case["query"], CATALOG)

    assert parsed.skip_reason is None
    assert parsed.kind == case.get("kind", "select")
    if "written" in case:
        assert parsed.written_table == _key(case["written"])
    if "updated" in case:
        assert list(parsed.updated_columns) == case["updated"]
    expected_tables = {_key(name) for name in case.get("expect", {})}
    assert expected_tables <= set(parsed.usages)
    for name, fields in case.get("expect", {}).items():
        usage = parsed.usages[_key(name)]
        for field, expected in fields.items():
            assert _as_fixture(getattr(usage, field)) == expected, f"{name}.{field}"


@pytest.mark.parametrize("case", FIXTURES["skipped"], ids=lambda c: c["query"][:30])
def test_skipped_with_a_reason(case: dict[str, str]) -> None:
    parsed = parse_statement(case["query"], CATALOG)
    assert parsed.skip_reason is not None
    assert parsed.skip_reason.startswith(case["reason"])


def test_fingerprint_matches_normalised_and_literal_forms() -> None:
    normalised = (
        "SELECT id FROM orders WHERE customer_id = $1 AND status IN ($2,$3) AND created_at > now() - interval $4"
    )
    literal = (
        "select id from orders where customer_id = 42 and status in ('a', 'b') "
        "and created_at > now() - interval '1 day'"
    )
    assert fingerprint(normalised) == fingerprint(literal)
    assert fingerprint(normalised) != fingerprint("SELECT id FROM orders WHERE customer_id = $1")


def test_fingerprint_of_unparseable_text_is_stable() -> None:
    assert fingerprint("SELEC broken $1") == fingerprint("selec   broken 7")


def test_prepare_text_only_spaces_parameters() -> None:
    assert prepare_text("f($1,$2) = ANY(ARRAY[$3,$4])") == "f( $1, $2) = ANY(ARRAY[ $3, $4])"


@pytest.mark.parametrize(
    ("normalised", "valid"),
    [
        ("now() - interval $1", "now() - $1::interval"),
        ("d = date $2 AND t < timestamp with time zone $3", "d = $2::date AND t < $3::timestamp with time zone"),
        ("x = $1", "x = $1"),
        ("intervals $1", "intervals $1"),
    ],
)
def test_typed_parameters_become_casts(normalised: str, valid: str) -> None:
    assert typed_parameters(normalised) == valid


def test_typed_literal_and_its_normalised_form_share_a_fingerprint() -> None:
    assert fingerprint("SELECT 1 FROM t WHERE a > date $1") == fingerprint(
        "SELECT 1 FROM t WHERE a > date '2026-01-01'"
    )
