"""DDL rendered from structured definitions (fixtures/ddl.yaml), and what the renderer refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.api.index import IndexDefinition
from optischema.api.operations import SettingChange, TableRef
from optischema.changes.ddl import (
    UnsafeDefinition,
    definition_key,
    index_name,
    render_analyze,
    render_create,
    render_drop,
    render_reindex,
    render_setting,
    render_setting_rollback,
)

CASES = yaml.safe_load((Path(__file__).parent / "fixtures" / "ddl.yaml").read_text())


@pytest.mark.parametrize("case", CASES["render"], ids=lambda c: c["title"])
def test_render(case: dict[str, Any]) -> None:
    index = IndexDefinition.model_validate(case["index"])
    assert render_create(index) == case["create"]
    if "drop" in case:
        assert render_drop(index) == case["drop"]
    assert len(index_name(index).encode()) <= 63


@pytest.mark.parametrize("case", CASES["unsafe"], ids=lambda c: c["title"])
def test_unsafe_definitions_are_refused(case: dict[str, Any]) -> None:
    index = IndexDefinition.model_validate(case["index"])
    with pytest.raises(UnsafeDefinition) as caught:
        render_create(index)
    assert case["error"] in str(caught.value)


def test_names_are_stable_and_avoid_taken_ones() -> None:
    index = IndexDefinition.model_validate({"table": "t", "columns": [{"name": "a"}]})
    assert index_name(index) == index_name(index.model_copy()) == "t_a_idx"
    other = index_name(index, taken=["t_a_idx"])
    assert other != "t_a_idx"
    assert other == index_name(index, taken=["t_a_idx"])


def test_definition_key_ignores_the_name_only() -> None:
    a = IndexDefinition.model_validate({"table": "t", "name": "x", "columns": [{"name": "a"}]})
    b = IndexDefinition.model_validate({"table": "t", "name": "y", "columns": [{"name": "a"}]})
    c = IndexDefinition.model_validate({"table": "t", "columns": [{"name": "a", "order": "desc"}]})
    assert definition_key(a) == definition_key(b)
    assert definition_key(a) != definition_key(c)


def test_reindex_needs_a_name() -> None:
    named = IndexDefinition.model_validate({"table": "t", "name": "t_a_idx", "columns": [{"name": "a"}]})
    assert render_reindex(named) == 'REINDEX INDEX CONCURRENTLY "public"."t_a_idx"'
    with pytest.raises(UnsafeDefinition, match=r"index.name: is required"):
        render_reindex(IndexDefinition.model_validate({"table": "t", "columns": [{"name": "a"}]}))


def test_analyze_and_vacuum() -> None:
    assert render_analyze(TableRef(table="trips")) == 'ANALYZE "public"."trips"'
    assert render_analyze(TableRef(table="trips", vacuum=True)) == 'VACUUM (ANALYZE) "public"."trips"'


def test_setting_and_its_rollback() -> None:
    change = SettingChange(name="work_mem", value="64MB", current_value="4MB")
    assert render_setting(change) == "ALTER SYSTEM SET \"work_mem\" = '64MB';\nSELECT pg_reload_conf()"
    assert render_setting_rollback(change) == "ALTER SYSTEM SET \"work_mem\" = '4MB';\nSELECT pg_reload_conf()"
    reset = SettingChange(name="work_mem", value="64MB")
    assert render_setting_rollback(reset).startswith('ALTER SYSTEM RESET "work_mem"')
