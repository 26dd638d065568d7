"""Bloat, freeze and autovacuum findings, and the plans before/after, decided on snapshots written by hand."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from optischema.analysis import bloat, findings
from optischema.analysis.advice import PlanPair, attach_plans, render_plan
from optischema.analysis.report import Recommendation, make
from optischema.analysis.snapshot import (
    BloatMeasure,
    Column,
    Index,
    IndexKey,
    IndexVitals,
    Maintenance,
    Server,
    Setting,
    Snapshot,
    Table,
    TableVitals,
)
from optischema.api.index import IndexColumn, IndexDefinition
from optischema.api.operations import MaintenanceAdvice, StorageParameter
from optischema.api.recommendation import Evidence, RecommendedChange, StatementEvidence, TuningRecommendationSpec
from optischema.changes.ddl import UnsafeDefinition, definition_key, render_create, render_drop
from optischema.changes.maintenance import render_maintenance, render_maintenance_undo
from optischema.cli.plugin import render_show
from optischema.flows.decisions import check_sql

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MB = 1 << 20
PAGE = 8192
SETTINGS = {
    "autovacuum_freeze_max_age": Setting("autovacuum_freeze_max_age", "200000000"),
    "autovacuum_vacuum_scale_factor": Setting("autovacuum_vacuum_scale_factor", "0.2"),
    "autovacuum_vacuum_threshold": Setting("autovacuum_vacuum_threshold", "50"),
}
COLUMNS = (Column("id", "bigint", True, 0.0, -1.0, 8), Column("handle", "text", True, 0.0, -1.0, 33))


def snapshot(
    *,
    rows: float = 1_000_000,
    table_pages: int = 10_000,
    index_pages: int = 0,
    index_tuples: float = 1_000_000,
    measured: dict[tuple[str, str], BloatMeasure] | None = None,
    vitals: dict[str, Any] | None = None,
    table: dict[str, Any] | None = None,
    database_xid_age: int | None = 1000,
    extensions: dict[str, str] | None = None,
) -> Snapshot:
    events = Table("public", "events", rows, table_pages * PAGE, COLUMNS, n_live_tup=int(rows), **(table or {}))
    index = Index(
        "public", "events", "events_handle", "", "btree", (IndexKey("handle"),), size_bytes=index_pages * PAGE
    )
    facts = Maintenance(
        block_size=PAGE,
        database_xid_age=database_xid_age,
        tables={events.key: TableVitals("public", "events", pages=table_pages, **(vitals or {}))},
        indexes={("public", "events_handle"): IndexVitals("public", "events_handle", index_pages, index_tuples)},
        measured=measured or {},
    )
    return Snapshot(
        Server("15.18", 150018, extensions=extensions or {}),
        [],
        {events.key: events},
        [index],
        dict(SETTINGS),
        maintenance=facts,
    )


# -- the estimate ------------------------------------------------------------------------------------------------


def test_estimates_follow_the_pgsql_bloat_estimation_formulas() -> None:
    """Worked by hand: a heap tuple is 4 (line pointer) + 24 (header 23, aligned) + 48 (data 8 + 33 = 41, aligned)
    = 76 bytes, (8192 - 24) / 76 = 107.47 a page, 1M rows → 9,305 pages. A btree entry is 8 (header) + 40 (33,
    aligned) = 48 + 4, floor(8152 × 0.9 / 52) = 141 a page, 1M entries → 1 + 7,093 pages."""
    facts = snapshot(table_pages=9_305 + 1_000, index_pages=7_094 + 3_000)
    table, index = facts.tables[("public", "events")], facts.indexes[0]
    assert bloat.table_estimate(table, facts.maintenance.tables[table.key], PAGE) == 1_000 * PAGE
    vitals = facts.maintenance.indexes[("public", "events_handle")]
    assert bloat.index_estimate(index, vitals, table, PAGE) == 3_000 * PAGE


@pytest.mark.parametrize(
    ("change", "why"),
    [
        pytest.param({"rows": 0}, "never analysed: no tuple count", id="no rows"),
        pytest.param({"columns": (Column("id", "bigint"),)}, "no column statistics", id="no widths"),
    ],
)
def test_no_estimate_without_statistics(change: dict[str, Any], why: str) -> None:
    facts = snapshot(index_pages=20_000)
    table = facts.tables[("public", "events")]
    table = dataclasses.replace(table, **change)
    vitals = facts.maintenance.indexes[("public", "events_handle")]
    assert bloat.table_estimate(table, facts.maintenance.tables[table.key], PAGE) is None, why
    if "columns" in change:
        assert bloat.index_estimate(facts.indexes[0], vitals, table, PAGE) is None, why


def test_an_expression_index_has_no_estimate() -> None:
    facts = snapshot(index_pages=20_000)
    index = Index("public", "events", "events_lower", "", "btree", (IndexKey(None, "lower(handle)"),))
    vitals = IndexVitals("public", "events_lower", 20_000, 1_000_000)
    assert bloat.index_estimate(index, vitals, facts.tables[("public", "events")], PAGE) is None


@pytest.mark.parametrize(
    ("leaf", "empty", "deleted", "density", "fillfactor", "wasted_pages"),
    [
        pytest.param(1000, 0, 0, 90.0, None, 0, id="fresh build: full to the fill factor"),
        pytest.param(1000, 0, 0, 45.0, None, 500, id="half full"),
        pytest.param(1000, 10, 20, 90.0, None, 30, id="empty and deleted pages"),
        pytest.param(1000, 0, 0, 35.0, 70, 500, id="own fill factor"),
        pytest.param(0, 0, 0, float("nan"), None, 0, id="empty index (NaN density)"),
    ],
)
def test_measured_index_waste(
    leaf: int, empty: int, deleted: int, density: float, fillfactor: int | None, wasted_pages: int
) -> None:
    assert bloat.measured_index_waste(PAGE, leaf, empty, deleted, density, fillfactor) == wasted_pages * PAGE


def test_the_fill_factor_reserve_is_not_waste() -> None:
    assert bloat.measured_table_waste(100 * MB, 0, 10 * MB, 90) == 0
    assert bloat.measured_table_waste(100 * MB, 30 * MB, 10 * MB, 90) == 30 * MB


# -- bloat findings ----------------------------------------------------------------------------------------------


def measure(name: str, size: int, wasted: int) -> dict[tuple[str, str], BloatMeasure]:
    return {("public", name): BloatMeasure("public", name, size, wasted, "pgstatindex: figures")}


@pytest.mark.parametrize(
    ("measured", "index_pages", "expected"),
    [
        pytest.param(measure("events_handle", 100 * MB, 60 * MB), 0, "pgstattuple", id="measured: 60%"),
        pytest.param(measure("events_handle", 100 * MB, 20 * MB), 0, None, id="measured: 20%, below the share"),
        pytest.param(measure("events_handle", 12 * MB, 8 * MB), 0, None, id="measured: small index, 8 MB"),
        pytest.param(None, 7_094 + 10_000, "estimate", id="estimated: 10,000 spare pages"),
        pytest.param(None, 7_094 + 100, None, id="estimated: compact"),
    ],
)
def test_reindex_only_past_both_thresholds(
    measured: dict[tuple[str, str], BloatMeasure] | None, index_pages: int, expected: str | None
) -> None:
    found = findings.bloat_findings(snapshot(index_pages=index_pages or 1, measured=measured))
    reindex = [r for r in found if r.kind == "reindex"]
    if expected is None:
        assert reindex == []
        return
    assert [r.sql for r in reindex] == ['REINDEX INDEX CONCURRENTLY "public"."events_handle"']
    evidence = reindex[0].evidence.maintenance
    assert evidence is not None
    assert evidence.method == expected
    assert f"{bloat.INDEX_BLOAT_MIN_SHARE:.0%} wasted" in reindex[0].rationale
    assert reindex[0].rollback_sql is None


def test_an_index_proposed_for_dropping_is_not_rebuilt_too() -> None:
    facts = snapshot(measured=measure("events_handle", 100 * MB, 60 * MB))
    index = IndexDefinition(
        schema_="public", table="events", name="events_handle", columns=[IndexColumn(name="handle")]
    )
    drop = make(
        "dropIndex",
        RecommendedChange(index=index),
        sql=render_drop(index),
        rollback_sql=render_create(index),
        table="public.events",
        rationale="",
        source="heuristic",
        risk="medium",
    )
    assert [r.kind for r in findings.table_health_findings(facts, NOW, [drop]) if r.kind == "reindex"] == []
    assert [r.kind for r in findings.table_health_findings(facts, NOW) if r.kind == "reindex"] == ["reindex"]


@pytest.mark.parametrize(
    ("wasted", "advised"),
    [
        pytest.param(300 * MB, True, id="300 of 500 MB"),
        pytest.param(150 * MB, False, id="150 of 500 MB: below the share"),
    ],
)
def test_table_bloat_is_advice_never_a_change(wasted: int, advised: bool) -> None:
    measured = {("public", "events"): BloatMeasure("public", "events", 500 * MB, wasted, "pgstattuple_approx: x")}
    found = [r for r in findings.bloat_findings(snapshot(measured=measured)) if r.kind == "maintenance"]
    if not advised:
        assert found == []
        return
    assert [r.sql for r in found] == ['VACUUM (FULL, ANALYZE) "public"."events"']
    assert found[0].change.maintenance == MaintenanceAdvice(topic="tableBloat", schema_="public", table="events")
    assert "pg_repack" in found[0].rationale
    assert "ACCESS EXCLUSIVE" in found[0].rationale
    assert found[0].risk == "high"


def test_without_pgstattuple_the_rationale_says_how_to_measure() -> None:
    found = findings.bloat_findings(snapshot(index_pages=7_094 + 10_000))
    assert "CREATE EXTENSION pgstattuple" in found[0].rationale
    with_extension = snapshot(index_pages=7_094 + 10_000, extensions={"pgstattuple": "1.5"})
    with_extension.maintenance.measure_error = "pgstattuple could not measure (permission denied); the estimate stands"
    assert "permission denied" in findings.bloat_findings(with_extension)[0].rationale


def test_only_big_suspects_are_measured() -> None:
    facts = snapshot(table_pages=9_305, index_pages=7_094 + 10_000)  # the table is compact, the index is not
    assert bloat.to_measure(facts) == ([], [("public", "events_handle")])
    small = snapshot(table_pages=100, index_pages=100, rows=1000, index_tuples=1000)
    assert bloat.to_measure(small) == ([], [])
    huge = snapshot(rows=500_000_000, index_tuples=500_000_000, index_pages=(3 << 30) // PAGE)
    assert bloat.to_measure(huge)[1] == []  # pgstatindex would read 3 GB: the estimate stands


# -- freeze ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xid_age", "options", "database_age", "expected"),
    [
        pytest.param(100_000_000, {}, 100_000_000, [], id="half way: nothing"),
        pytest.param(185_000_000, {}, 185_000_000, [("public.events", "medium")], id="due"),
        pytest.param(250_000_000, {}, 250_000_000, [("public.events", "high")], id="overdue: autovacuum held back"),
        pytest.param(
            95_000_000,
            {"autovacuum_freeze_max_age": "100000000"},
            95_000_000,
            [("public.events", "medium")],
            id="the table's own lower limit",
        ),
        pytest.param(
            185_000_000,
            {"autovacuum_freeze_max_age": "400000000"},
            185_000_000,
            [("public.events", "medium")],
            id="a higher own limit does not count",
        ),
        pytest.param(1_000, {}, 190_000_000, [(None, "medium")], id="the database, not this table"),
    ],
)
def test_freeze_findings(
    xid_age: int, options: dict[str, str], database_age: int, expected: list[tuple[str | None, str]]
) -> None:
    facts = snapshot(vitals={"xid_age": xid_age, "options": options}, database_xid_age=database_age)
    found = findings.freeze_findings(facts)
    assert [(r.table, r.risk) for r in found] == expected
    for recommendation in found:
        assert recommendation.kind == "maintenance"
        assert recommendation.sql.startswith("VACUUM (FREEZE, ANALYZE)")
        assert "transaction IDs remain" in recommendation.rationale


# -- autovacuum --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "table", "options", "expected"),
    [
        pytest.param(10_000_000, {"n_tup_upd": 8_000_000}, {}, ("0.005", "0.0025", None), id="large and churning"),
        pytest.param(1_000_000, {"n_dead_tup": 150_000}, {}, ("0.05", "0.025", None), id="many dead rows now"),
        pytest.param(10_000_000, {"n_tup_upd": 1_000}, {}, None, id="large but quiet"),
        pytest.param(500_000, {"n_tup_upd": 5_000_000}, {}, None, id="churning but small"),
        pytest.param(
            10_000_000,
            {"n_tup_del": 9_000_000},
            {"autovacuum_vacuum_scale_factor": "0.001"},
            None,
            id="already tuned",
        ),
        pytest.param(
            10_000_000,
            {"n_tup_del": 9_000_000},
            {"autovacuum_vacuum_scale_factor": "0.1"},
            ("0.005", "0.0025", "0.1"),
            id="own value kept for the undo",
        ),
    ],
)
def test_autovacuum_findings(
    rows: float, table: dict[str, Any], options: dict[str, str], expected: tuple[str, str, str | None] | None
) -> None:
    facts = snapshot(rows=rows, table=table, vitals={"options": options, "autovacuum_count": 3})
    found = findings.autovacuum_findings(facts, NOW)
    if expected is None:
        assert found == []
        return
    assert len(found) == 1
    advice = found[0].change.maintenance
    assert advice is not None
    vacuum, analyze, current = expected
    assert [(p.name, p.value) for p in advice.parameters] == [
        ("autovacuum_vacuum_scale_factor", vacuum),
        ("autovacuum_analyze_scale_factor", analyze),
    ]
    assert found[0].sql == (
        'ALTER TABLE "public"."events" SET ("autovacuum_vacuum_scale_factor" = '
        f'{vacuum}, "autovacuum_analyze_scale_factor" = {analyze})'
    )
    undo = found[0].rollback_sql or ""
    if current is None:
        assert undo == (
            'ALTER TABLE "public"."events" RESET ("autovacuum_vacuum_scale_factor", "autovacuum_analyze_scale_factor")'
        )
    else:
        assert undo.startswith(f'ALTER TABLE "public"."events" SET ("autovacuum_vacuum_scale_factor" = {current})')
    evidence = found[0].evidence.maintenance
    assert evidence is not None
    assert evidence.autovacuum_count == 3
    assert "Formula" in found[0].rationale


# -- rendering the advice ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("advice", "sql"),
    [
        pytest.param(MaintenanceAdvice(topic="freeze"), "VACUUM (FREEZE, ANALYZE)", id="database-wide freeze"),
        pytest.param(
            MaintenanceAdvice(topic="freeze", schema_="Sales Data", table="select"),
            'VACUUM (FREEZE, ANALYZE) "Sales Data"."select"',
            id="names quoted",
        ),
    ],
)
def test_render_maintenance(advice: MaintenanceAdvice, sql: str) -> None:
    assert render_maintenance(advice) == sql
    assert render_maintenance_undo(advice) is None


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        pytest.param(
            StorageParameter.model_construct(name="autovacuum_enabled", value="0"),
            "not among the parameters",
            id="not allowed",
        ),
        pytest.param(
            StorageParameter.model_construct(name="autovacuum_vacuum_threshold", value="1); DROP TABLE t; --"),
            "is not a number",
            id="not a number",
        ),
    ],
)
def test_render_maintenance_refuses(parameter: StorageParameter, message: str) -> None:
    advice = MaintenanceAdvice.model_construct(topic="autovacuum", schema_="public", table="t", parameters=[parameter])
    with pytest.raises(UnsafeDefinition, match=message):
        render_maintenance(advice)


def test_the_api_refuses_a_value_that_is_not_a_number() -> None:
    with pytest.raises(ValidationError):
        StorageParameter(name="autovacuum_vacuum_threshold", value="1); DROP TABLE t; --")


def test_a_table_whose_name_the_api_cannot_carry_is_skipped_not_the_analysis() -> None:
    facts = snapshot(vitals={"xid_age": 250_000_000}, database_xid_age=250_000_000)
    table = facts.tables.pop(("public", "events"))
    odd = ("public", 'ev"ents')
    facts.tables[odd] = Table(odd[0], odd[1], table.rows, table.size_bytes, table.columns, n_tup_upd=5_000_000)
    facts.maintenance.tables[odd] = facts.maintenance.tables.pop(("public", "events"))
    # the table is skipped; the database's own age is still reported (VACUUM (FREEZE) of the whole database)
    assert [(r.table, r.sql) for r in findings.freeze_findings(facts)] == [(None, "VACUUM (FREEZE, ANALYZE)")]
    assert findings.autovacuum_findings(facts, NOW) == []


BLOAT_ADVICE = {"maintenance": {"topic": "tableBloat", "schema": "public", "table": "t"}}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        pytest.param(
            {
                "kind": "reindex",
                "change": {"index": {"table": "t", "name": "i", "columns": [{"name": "c"}]}},
                "sql": 'REINDEX INDEX CONCURRENTLY "public"."i"',
            },
            None,
            id="reindex",
        ),
        pytest.param(
            {"kind": "reindex", "change": {"index": {"table": "t", "columns": [{"name": "c"}]}}, "sql": "REINDEX x"},
            "index.name is required to reindex",
            id="reindex without a name",
        ),
        pytest.param(
            {"kind": "maintenance", "change": BLOAT_ADVICE, "sql": 'VACUUM (FULL, ANALYZE) "public"."t"'},
            None,
            id="maintenance advice",
        ),
        pytest.param(
            {"kind": "maintenance", "change": BLOAT_ADVICE, "sql": "VACUUM FULL"},
            "spec.sql: is not what spec.change renders",
            id="maintenance with other SQL",
        ),
    ],
)
def test_admission_renders_the_new_kinds(spec: dict[str, Any], problem: str | None) -> None:
    found = check_sql(None, {"targetRef": {"name": "db"}, **spec})
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found
        assert TuningRecommendationSpec.model_fields["kind"] is not None


# -- plans before and after --------------------------------------------------------------------------------------

HYPOTHETICAL = IndexDefinition(schema_="public", table="accounts", columns=[IndexColumn(name="email")])
SEQ_SCAN = {
    "Node Type": "Seq Scan",
    "Relation Name": "accounts",
    "Plan Rows": 1,
    "Startup Cost": 0.0,
    "Total Cost": 2181.0,
    "Filter": "(email = $1)",
}
INDEX_SCAN = {
    "Node Type": "Index Scan",
    "Index Name": definition_key(HYPOTHETICAL),
    "Relation Name": "accounts",
    "Plan Rows": 1,
    "Startup Cost": 0.04,
    "Total Cost": 8.06,
    "Index Cond": "(email = $1)",
}


@pytest.mark.parametrize(
    ("node", "pii_safe", "expected"),
    [
        pytest.param(SEQ_SCAN, True, "Seq Scan on accounts  rows=1 cost=0.0..2181.0  filter: (email = $1)", id="seq"),
        pytest.param(
            INDEX_SCAN,
            True,
            "Index Scan using accounts_email_idx (hypothetical) on accounts  rows=1 cost=0.04..8.06  "
            "index cond: (email = $1)",
            id="hypothetical index named as recommended",
        ),
        pytest.param(
            {**SEQ_SCAN, "Filter": "(email = 'a@b.c'::text)"},
            True,
            "Seq Scan on accounts  rows=1 cost=0.0..2181.0  filter: (email = '…'::text)",
            id="a literal is redacted when piiSafe",
        ),
        pytest.param(
            {**SEQ_SCAN, "Filter": "(email = 'a@b.c'::text)"},
            False,
            "Seq Scan on accounts  rows=1 cost=0.0..2181.0  filter: (email = 'a@b.c'::text)",
            id="kept when not piiSafe",
        ),
        pytest.param(
            {"Node Type": "Limit", "Plan Rows": 10, "Startup Cost": 0, "Total Cost": 1, "Plans": [SEQ_SCAN]},
            True,
            "Limit  rows=10 cost=0..1\n  -> Seq Scan on accounts  rows=1 cost=0.0..2181.0  filter: (email = $1)",
            id="children indented",
        ),
    ],
)
def test_render_plan(node: dict[str, Any], pii_safe: bool, expected: str) -> None:
    assert render_plan(node, {definition_key(HYPOTHETICAL): "accounts_email_idx"}, pii_safe=pii_safe) == expected


def test_a_plan_is_capped() -> None:
    deep: dict[str, Any] = dict(SEQ_SCAN)
    for _ in range(200):
        deep = {"Node Type": "Nested Loop", "Plan Rows": 1, "Startup Cost": 0, "Total Cost": 1, "Plans": [deep]}
    text = render_plan(deep, {})
    assert len(text) <= 2048
    assert text.endswith("…") or len(text.splitlines()) <= 25


def create(index: IndexDefinition) -> Recommendation:
    named = index.model_copy(update={"name": "accounts_email_idx"})
    statement = StatementEvidence(query_id="42", fingerprint="f", query="SELECT id FROM accounts WHERE email = $1")
    return make(
        "createIndex",
        RecommendedChange(index=named),
        sql=render_create(named),
        rollback_sql=render_drop(named),
        table="public.accounts",
        evidence=Evidence(statements=[statement]),
        rationale="",
        source="whatif",
        risk="low",
    )


def test_attach_plans_names_the_hypothetical_index() -> None:
    recommendation = create(HYPOTHETICAL)
    attach_plans([recommendation], {"42": PlanPair(SEQ_SCAN, INDEX_SCAN)})
    statement = recommendation.evidence.statements[0]
    assert (statement.plan_before or "").startswith("Seq Scan on accounts")
    assert (statement.plan_after or "").startswith("Index Scan using accounts_email_idx (hypothetical)")


def test_an_index_hypopg_cannot_simulate_gets_its_after_plan_from_the_sandbox_hook() -> None:
    gin = HYPOTHETICAL.model_copy(update={"method": "gin", "columns": [IndexColumn(name="tags")]})
    recommendation = create(gin)
    attach_plans([recommendation], {"42": PlanPair(SEQ_SCAN, SEQ_SCAN)})
    assert recommendation.evidence.statements[0].plan_after is None  # not a plan without the index
    measured = {(definition_key(gin), "42"): "Bitmap Heap Scan on accounts (measured)"}
    attach_plans([recommendation], {"42": PlanPair(SEQ_SCAN, SEQ_SCAN)}, measured_after=measured)
    assert recommendation.evidence.statements[0].plan_after == "Bitmap Heap Scan on accounts (measured)"


def test_show_prints_the_plans_and_the_maintenance_figures() -> None:
    recommendation = create(HYPOTHETICAL)
    attach_plans([recommendation], {"42": PlanPair(SEQ_SCAN, INDEX_SCAN)})
    shown = render_show(recommendation.to_custom_resource("db", "default").to_wire())
    assert "            plan before:\n              Seq Scan on accounts  rows=1" in shown
    assert "            plan after:\n              Index Scan using accounts_email_idx (hypothetical)" in shown

    advice = findings.bloat_findings(snapshot(measured=measure("events_handle", 100 * MB, 60 * MB)))[0]
    shown = render_show(advice.to_custom_resource("db", "default").to_wire())
    figures = "figures:\n  sizeBytes: 104857600\n  wastedBytes: 62914560\n  wastedPercent: 60.0\n  method: pgstattuple"
    assert figures in shown
