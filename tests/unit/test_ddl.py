"""DDL rendered from structured definitions (fixtures/ddl.yaml), and what the renderer refuses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.api.index import MAX_IDENTIFIER_BYTES, IndexDefinition
from optischema.api.indexchange import IndexChangeSpec
from optischema.api.operations import SettingChange, TableRef
from optischema.changes import partitioned
from optischema.changes.ddl import (
    UnsafeDefinition,
    definition_key,
    index_name,
    partition_index_name,
    recreate,
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
    name = index_name(index)
    assert name == index_name(index.model_copy())
    assert re.fullmatch(r"t_a_[0-9a-f]{8}_idx", name)
    other = index_name(index, taken=[name])
    assert other != name
    assert other == index_name(index, taken=[name])


@pytest.mark.parametrize(
    "variant",
    [
        {"unique": True},
        {"method": "hash"},
        {"include": ["b"]},
        {"where": "a > 0"},
        {"columns": [{"name": "a", "order": "desc"}]},
    ],
    ids=["unique", "method", "include", "predicate", "order"],
)
def test_generated_names_never_match_postgres_default_and_differ_per_definition(variant: dict[str, Any]) -> None:
    # The attack: a plain UNIQUE index someone built as ``t_a_idx`` (PostgreSQL's default name) was taken for
    # the operator's own. A generated name always carries the definition's hash, so it is never the default name,
    # and two definitions on the same keys never share one.
    plain = IndexDefinition.model_validate({"table": "t", "columns": [{"name": "a"}]})
    other = IndexDefinition.model_validate({"table": "t", "columns": [{"name": "a"}], **variant})
    assert index_name(plain) != "t_a_idx"
    assert index_name(other) not in ("t_a_idx", "t_a_part_idx")
    assert index_name(other) != index_name(plain)


def test_recreate_a_captured_definition_concurrently() -> None:
    captured = "CREATE UNIQUE INDEX t_a_idx ON public.t USING btree (a) WHERE (a > 0)"
    assert recreate(captured) == "CREATE UNIQUE INDEX CONCURRENTLY t_a_idx ON public.t USING btree (a) WHERE (a > 0)"
    assert recreate("CREATE INDEX x ON public.t USING btree (a)").startswith("CREATE INDEX CONCURRENTLY x ON")
    with pytest.raises(UnsafeDefinition, match=r"status\.droppedDefinition"):
        recreate("DROP TABLE t")


@pytest.mark.parametrize(
    "tampered",
    [
        "CREATE INDEX x ON public.t USING btree (a); DROP TABLE public.t",
        "CREATE INDEX x ON public.t USING btree (a);COPY (SELECT 1) TO PROGRAM 'touch /tmp/owned'",
        "CREATE INDEX x ON public.t USING btree (a) WHERE (a <> 'x); DROP TABLE t; --",  # a quote left open
    ],
)
def test_a_tampered_captured_definition_never_carries_a_second_statement(tampered: str) -> None:
    """The rollback runs ``status.droppedDefinition``; whoever can write the status must not append SQL to it (the
    simple query protocol runs every statement of a string). A ';' inside a string literal is not a separator."""
    with pytest.raises(UnsafeDefinition, match=r"status\.droppedDefinition: (must be one statement|cannot be read)"):
        recreate(tampered)
    assert recreate("CREATE INDEX x ON public.t USING btree (a) WHERE (b <> 'a;b'::text)").startswith(
        "CREATE INDEX CONCURRENTLY x ON"
    )


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


# -- indexes on partitioned tables (fixtures/ddl_partitioned.yaml) ---------------------------------------------------

PARTITIONED = yaml.safe_load((Path(__file__).parent / "fixtures" / "ddl_partitioned.yaml").read_text())


@pytest.mark.parametrize("case", PARTITIONED["rollout"], ids=lambda c: c["title"])
def test_partitioned_rollout(case: dict[str, Any]) -> None:
    spec = IndexChangeSpec.model_validate({"targetRef": {"name": "db"}, **case["change"]})
    root = partitioned.tree(tuple(row) for row in case["partitions"])
    assert partitioned.statements(spec, root) == case["statements"]
    name = spec.index.name if spec.index else None
    assert partitioned.undo(spec, name, root) == case["rollback"]
    assert all("CONCURRENTLY" not in s for s in case["statements"] if " ON ONLY " in s or s.startswith("DROP"))
    if root is not None and spec.operation == "create":
        assert spec.index is not None
        steps = partitioned.rollout(spec.index, root)
        assert [s.sql for s in steps] == case["statements"]
        assert len({s.key for s in steps}) == len(steps), "every step is recorded under its own key"
        assert all(len(s.index.encode()) <= MAX_IDENTIFIER_BYTES for s in steps)


@pytest.mark.parametrize(
    ("parent", "table"),
    [
        ("x" * 63, "p_" + "y" * 61),  # both at the limit
        ("posts_author_id_fcef60a4_idx", "posts_2024_01"),
        ("ünïcode_índex", "pärtition_" + "é" * 25),  # multi-byte characters are never cut in half
    ],
    ids=["63-byte names", "short names", "multi-byte names"],
)
def test_partition_index_names_fit_and_are_stable(parent: str, table: str) -> None:
    index = IndexDefinition.model_validate({"table": "p", "columns": [{"name": "c" * 60}]})
    name = partition_index_name(index, parent, "public", table)
    assert len(name.encode()) <= MAX_IDENTIFIER_BYTES
    assert name == partition_index_name(index.model_copy(), parent, "public", table)
    # Another parent, another partition or another schema: another name (the parent is in the hash).
    assert name != partition_index_name(index, parent + "2", "public", table)
    assert name != partition_index_name(index, parent, "archive", table)
    # Not the name a change on the partition alone would derive for the same definition.
    assert name != index_name(index.model_copy(update={"table": table}))


def test_on_only_is_never_concurrent() -> None:
    index = IndexDefinition.model_validate({"table": "posts", "columns": [{"name": "a"}]})
    with pytest.raises(UnsafeDefinition, match=r"ON ONLY cannot be CONCURRENTLY"):
        render_create(index, only=True)
    assert render_create(index, only=True, concurrently=False, name="p_a").startswith(
        'CREATE INDEX "p_a" ON ONLY "public"."posts"'
    )


@pytest.mark.parametrize(("count", "cut"), [(3, False), (2000, True)], ids=["a few partitions", "two thousand"])
def test_a_long_rollout_is_shown_within_what_a_recommendation_holds(count: int, cut: bool) -> None:
    rows = [("root", None, "public", "events", True)]
    rows += [(f"p{n}", "root", "public", f"events_{n:05d}", False) for n in range(count)]
    root = partitioned.tree(rows)
    assert root is not None
    index = IndexDefinition.model_validate({"table": "events", "columns": [{"name": "kind"}]})
    steps = [s.sql for s in partitioned.rollout(index, root)]
    text = partitioned.shown(steps)
    assert len(text) <= partitioned.MAX_SHOWN_SQL
    assert text.startswith(steps[0])
    if cut:
        assert text.endswith("more steps: CREATE INDEX CONCURRENTLY and ATTACH PARTITION per partition")
        kept = text.split(";\n")[:-1]
        assert kept == steps[: len(kept)]
        assert f"-- and {len(steps) - len(kept)} more steps" in text
    else:
        assert text == ";\n".join(steps)
