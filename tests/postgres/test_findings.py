"""Findings other than new indexes, each on a schema built to show it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import timedelta

import asyncpg

from optischema.analysis import findings
from optischema.analysis.report import Recommendation
from optischema.api.recommendation import MaintenanceEvidence
from optischema.cli.plugin import render_show
from optischema.flows.analyze import AnalysisResult, AnalyzeOptions, analyze
from optischema.postgres.collect import collect
from optischema.postgres.local import LocalPostgres

from .conftest import run_sql
from .test_engine import of_kind, setup

NO_SAMPLES = AnalyzeOptions(sample_seconds=0)
ACCOUNTS = """
CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, region text NOT NULL, plan text NOT NULL,
                       created_at timestamptz NOT NULL);
INSERT INTO accounts SELECT g, 'a' || g || '@example.org', 'r' || (g % 30), 'p' || (g % 3),
                            now() - g * interval '1 hour' FROM generate_series(1, 100000) g;
VACUUM ANALYZE;
"""


def dropped(result: object) -> list[str]:
    return sorted(r.change.index.name or "" for r in of_kind(result, "dropIndex") if r.change.index)  # type: ignore[arg-type]


async def test_unused_index_is_dropped_with_its_definition_as_rollback(pg_database: str) -> None:
    await setup(
        pg_database,
        ACCOUNTS + "CREATE INDEX accounts_plan ON accounts (plan);\nCREATE INDEX accounts_email ON accounts (email);\n",
        [f"SELECT id FROM accounts WHERE email = 'a{n}@example.org'" for n in (1, 2, 3)],
    )
    # The test server's statistics are minutes old: no minimum age here (test_replicas covers the default's).
    result = await analyze(pg_database, AnalyzeOptions(sample_seconds=0, unused_min_statistics_age=timedelta(0)))
    assert dropped(result) == ["accounts_plan"]
    drop = of_kind(result, "dropIndex")[0]
    assert drop.sql == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."accounts_plan"'
    assert drop.rollback_sql == 'CREATE INDEX CONCURRENTLY "accounts_plan" ON "public"."accounts" ("plan")'
    assert drop.evidence.index_scans == 0
    assert "no scan has used it" in drop.rationale


async def test_duplicate_index_is_dropped_and_its_twin_kept(pg_database: str) -> None:
    await setup(
        pg_database,
        ACCOUNTS
        + "CREATE INDEX accounts_email_a ON accounts (email);\nCREATE INDEX accounts_email_b ON accounts (email);\n",
        [f"SELECT id FROM accounts WHERE email = 'a{n}@example.org'" for n in (1, 2, 3)],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    drops = of_kind(result, "dropIndex")
    assert len(drops) == 1
    assert "duplicates accounts_email_" in drops[0].rationale
    assert of_kind(result, "createIndex") == []


async def test_index_made_redundant_by_a_proposed_composite_is_dropped(pg_database: str) -> None:
    await setup(
        pg_database,
        ACCOUNTS + "CREATE INDEX accounts_region ON accounts (region);\nANALYZE accounts;\n",
        [
            f"SELECT id FROM accounts WHERE region = 'r{n}' AND created_at > now() - interval '2 days'"
            for n in (1, 2, 3)
        ],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    created = [r.sql for r in of_kind(result, "createIndex")]
    assert len(created) == 1
    proposed = re.match(
        r'CREATE INDEX CONCURRENTLY "(accounts_region_created_at_[0-9a-f]{8}_idx)" ON "public"."accounts" '
        r'\("region", "created_at"\)',
        created[0],
    )
    assert proposed, created[0]
    assert dropped(result) == ["accounts_region"]
    assert f"prefix of the proposed {proposed.group(1)}" in of_kind(result, "dropIndex")[0].rationale


async def test_unique_and_constraint_indexes_are_never_dropped(pg_database: str) -> None:
    await setup(
        pg_database,
        ACCOUNTS + "CREATE UNIQUE INDEX accounts_email_unique ON accounts (email);\n"
        "ALTER TABLE accounts ADD CONSTRAINT accounts_plan_region UNIQUE (plan, region, id);\n",
        ["SELECT count(*) FROM accounts"],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    assert dropped(result) == []


async def test_invalid_index_left_by_a_failed_concurrent_build_is_dropped(pg_database: str) -> None:
    await setup(pg_database, ACCOUNTS, ["SELECT count(*) FROM accounts"])
    conn = await asyncpg.connect(pg_database)
    try:
        with contextlib.suppress(asyncpg.UniqueViolationError):
            await conn.execute("CREATE UNIQUE INDEX CONCURRENTLY accounts_region_unique ON accounts (region)")
        assert await conn.fetchval(
            "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = 'accounts_region_unique'::regclass"
        )
    finally:
        await conn.close()
    result = await analyze(pg_database, NO_SAMPLES)
    invalid = [
        r for r in of_kind(result, "dropIndex") if r.change.index and r.change.index.name == "accounts_region_unique"
    ]
    assert len(invalid) == 1
    assert "INVALID" in invalid[0].rationale
    assert invalid[0].risk == "low"


async def test_stale_statistics_get_analyze(pg_database: str) -> None:
    await setup(
        pg_database,
        ACCOUNTS + "ALTER TABLE accounts SET (autovacuum_enabled = off);\n"
        "INSERT INTO accounts SELECT g, 'b' || g, 'r1', 'p1', now() FROM generate_series(100001, 400000) g;\n",
        ["SELECT count(*) FROM accounts"],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    analyses = [r for r in of_kind(result, "analyze") if r.table == "public.accounts"]
    assert [r.sql for r in analyses] == ['ANALYZE "public"."accounts"']
    assert analyses[0].rollback_sql is None
    changed = int(analyses[0].rationale.split(" rows changed since the last ANALYZE")[0])
    assert changed >= 300000  # (the load's own inserts may be counted too: statistics are flushed lazily)


async def test_heavy_dead_rows_get_vacuum_analyze(pg_database: str) -> None:
    await setup(
        pg_database,
        ACCOUNTS + "ALTER TABLE accounts SET (autovacuum_enabled = off);\n"
        "UPDATE accounts SET plan = 'p9' WHERE id % 2 = 0;\n",
        ["SELECT count(*) FROM accounts"],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    vacuums = [r for r in of_kind(result, "analyze") if r.table == "public.accounts"]
    assert [r.sql for r in vacuums] == ['VACUUM (ANALYZE) "public"."accounts"']
    assert "dead rows" in vacuums[0].rationale


async def test_statements_spilling_to_disk_get_more_work_mem(pg_database: str) -> None:
    database = pg_database.rsplit("/", 1)[-1]
    await setup(pg_database, ACCOUNTS + f"ALTER DATABASE {database} SET work_mem = '1MB';\n", [])
    await run_sql(pg_database, ["SELECT * FROM accounts ORDER BY email DESC"], times=3)
    result = await analyze(pg_database, NO_SAMPLES)
    settings = {r.change.setting.name: r for r in of_kind(result, "setting") if r.change.setting}
    work_mem = settings["work_mem"]
    assert work_mem.change.setting is not None
    assert work_mem.change.setting.current_value == "1MB"
    assert work_mem.change.setting.value in {"8MB", "16MB"}
    assert (
        work_mem.sql
        == 'ALTER SYSTEM SET "work_mem" = \'' + work_mem.change.setting.value + "';\nSELECT pg_reload_conf()"
    )
    assert work_mem.rollback_sql == "ALTER SYSTEM SET \"work_mem\" = '1MB';\nSELECT pg_reload_conf()"
    assert "Formula" in work_mem.rationale


async def test_cached_workload_gets_random_page_cost_and_small_cache_size_gets_raised(pg_database: str) -> None:
    database = pg_database.rsplit("/", 1)[-1]
    await setup(pg_database, ACCOUNTS + f"ALTER DATABASE {database} SET effective_cache_size = '64MB';\n", [])
    await run_sql(pg_database, [f"SELECT id FROM accounts WHERE email = 'a{n}@example.org'" for n in (1, 2)], times=5)
    result = await analyze(pg_database, NO_SAMPLES)
    settings = {r.change.setting.name: r.change.setting.value for r in of_kind(result, "setting") if r.change.setting}
    assert settings["random_page_cost"] == "1.1"
    assert settings["effective_cache_size"] == "384MB"  # 3 × shared_buffers (128MB)


async def test_a_value_someone_set_with_alter_system_is_set_back_not_reset(conn: asyncpg.Connection) -> None:
    """pg_settings says ``configuration file`` for a value from ``postgresql.auto.conf`` too: the rollback of our
    change must put a DBA's own ``ALTER SYSTEM`` value back, where ``ALTER SYSTEM RESET`` would drop it."""
    from optischema.api.operations import SettingChange
    from optischema.changes.ddl import render_setting_rollback
    from optischema.postgres.collect import read_settings

    async def settled(source: str) -> tuple[str, str]:
        """The setting once the reload has reached this backend (at one of its next commands)."""
        for _ in range(50):
            seen = (await read_settings(conn))["effective_io_concurrency"]
            if (seen.source == "ALTER SYSTEM") == (source == "ALTER SYSTEM"):
                break
            await asyncio.sleep(0.05)
        return seen.value, seen.source

    await conn.execute("ALTER SYSTEM SET effective_io_concurrency = 7")
    await conn.execute("SELECT pg_reload_conf()")
    try:
        value, source = await settled("ALTER SYSTEM")
        assert (value, source) == ("7", "ALTER SYSTEM")
        change = SettingChange(name="effective_io_concurrency", value="200", current_value=value, current_source=source)
        assert render_setting_rollback(change).startswith("ALTER SYSTEM SET \"effective_io_concurrency\" = '7'")
    finally:
        await conn.execute("ALTER SYSTEM RESET effective_io_concurrency")
        await conn.execute("SELECT pg_reload_conf()")
    assert (await settled("default"))[1] in ("default", "configuration file")


# -- bloat, freeze, plans before and after (issue 20, item 5) ----------------------------------------------------

EVENTS = """
CREATE TABLE events (id bigint PRIMARY KEY, handle text NOT NULL) WITH (autovacuum_enabled = off);
INSERT INTO events SELECT g, md5(g::text) FROM generate_series(1, 400000) g;
CREATE INDEX events_handle ON events (handle);
DELETE FROM events WHERE id % 10 <> 0;
VACUUM ANALYZE events;
"""
LOOKUPS = [f"SELECT id FROM events WHERE handle = md5('{n}')" for n in (10, 20, 30)]


def reindex_of(result: AnalysisResult, name: str) -> Recommendation:
    found = [r for r in of_kind(result, "reindex") if r.change.index and r.change.index.name == name]
    assert len(found) == 1, [r.sql for r in of_kind(result, "reindex")]
    return found[0]


def figures_of(recommendation: Recommendation) -> MaintenanceEvidence:
    figures = recommendation.evidence.maintenance
    assert figures is not None
    return figures


async def test_a_bloated_index_gets_reindex_estimated_then_measured_with_pgstattuple(pg_database: str) -> None:
    """Nine rows in ten deleted (autovacuum off for the table), then VACUUM: the index keeps its pages. Without
    pgstattuple the finding is the statistical estimate; with it, pgstatindex's measurement, the estimate beside."""
    await setup(pg_database, EVENTS, LOOKUPS)
    first = await analyze(pg_database, NO_SAMPLES)
    estimated = reindex_of(first, "events_handle")
    assert estimated.sql == 'REINDEX INDEX CONCURRENTLY "public"."events_handle"'
    assert estimated.rollback_sql is None
    figures = figures_of(estimated)
    assert figures.method == "estimate"
    assert (figures.wasted_bytes or 0) >= 10 << 20
    assert (figures.wasted_percent or 0) >= 80
    assert "estimated from pg_class and pg_stats" in estimated.rationale
    assert "CREATE EXTENSION pgstattuple" in estimated.rationale
    assert dropped(first) == []  # it serves the workload: rebuilt, not dropped

    await run_sql(pg_database, ["CREATE EXTENSION pgstattuple"])
    measured = reindex_of(await analyze(pg_database, NO_SAMPLES), "events_handle")
    figures = figures_of(measured)
    assert figures.method == "pgstattuple"
    assert (figures.estimated_wasted_bytes or 0) >= 10 << 20  # the estimate is kept beside the measurement
    assert (figures.wasted_bytes or 0) >= 10 << 20
    assert (figures.wasted_percent or 0) >= 80
    assert "measured with pgstatindex" in measured.rationale
    assert measured.id == estimated.id  # the same change found again: the operator updates, never duplicates

    await run_sql(pg_database, [measured.sql])  # what the apply path runs (outside a transaction)
    assert [r for r in of_kind(await analyze(pg_database, NO_SAMPLES), "reindex") if r.table == "public.events"] == []


async def test_a_compact_index_gets_no_reindex(pg_database: str) -> None:
    await setup(
        pg_database,
        EVENTS.replace("DELETE FROM events WHERE id % 10 <> 0;\n", "") + "CREATE EXTENSION pgstattuple;\n",
        LOOKUPS,
    )
    assert of_kind(await analyze(pg_database, NO_SAMPLES), "reindex") == []


async def test_transaction_id_age_past_the_threshold_is_a_freeze_finding(conn: asyncpg.Connection) -> None:
    """The server's autovacuum_freeze_max_age (200M) cannot be reached in a test: the threshold share is the
    parameter, set low, and the numbers are compared with the server's own age()."""
    await conn.execute("CREATE TABLE ledger (id bigint PRIMARY KEY, amount numeric)")
    for _ in range(30):
        await conn.execute("SELECT txid_current()")  # each call its own transaction: 30 XIDs consumed
    snapshot = await collect(conn)
    age = await conn.fetchval("SELECT age(relfrozenxid) FROM pg_class WHERE oid = 'ledger'::regclass")
    limit = int(await conn.fetchval("SHOW autovacuum_freeze_max_age"))
    assert findings.freeze_findings(snapshot) == []  # far below 90% of 200M

    found = [r for r in findings.freeze_findings(snapshot, due_share=20 / limit) if r.table == "public.ledger"]
    assert len(found) == 1
    advice = found[0]
    assert advice.kind == "maintenance"
    assert advice.change.maintenance is not None
    assert advice.change.maintenance.topic == "freeze"
    assert advice.sql == 'VACUUM (FREEZE, ANALYZE) "public"."ledger"'
    figures = figures_of(advice)
    assert figures.xid_age is not None
    assert age <= figures.xid_age <= age + 5
    assert figures.freeze_max_age == limit
    assert (figures.database_xid_age or 0) >= figures.xid_age
    assert f"{figures.xid_age:,}" in advice.rationale
    assert f"{limit:,}" in advice.rationale
    assert advice.risk == "medium"


async def test_an_index_recommendation_carries_its_plans_before_and_after(pg_database: str) -> None:
    await setup(
        pg_database, ACCOUNTS, [f"SELECT id, region FROM accounts WHERE email = 'a{n}@example.org'" for n in (1, 2, 3)]
    )
    result = await analyze(pg_database, NO_SAMPLES)
    create = next(r for r in of_kind(result, "createIndex") if r.table == "public.accounts")
    assert create.change.index is not None
    name = create.change.index.name
    statement = create.evidence.statements[0]
    before, after = statement.plan_before or "", statement.plan_after or ""
    assert "Seq Scan on accounts" in before
    assert f"Index Scan using {name} (hypothetical) on accounts" in after, after
    assert "$1" in after  # a generic plan: the parameter, never a value
    for plan in (before, after):
        assert "example.org" not in plan
        assert len(plan) <= 2048

    shown = render_show(create.to_custom_resource("db", "default").to_wire())
    assert f"plan before:\n              {before.splitlines()[0]}" in shown
    assert f"plan after:\n              Index Scan using {name} (hypothetical)" in shown


async def test_a_large_churning_table_gets_autovacuum_thresholds_of_its_own(pg_database: str) -> None:
    await setup(
        pg_database,
        "CREATE TABLE hot (id int PRIMARY KEY, n int NOT NULL) WITH (autovacuum_enabled = off);\n"
        "INSERT INTO hot SELECT g, 0 FROM generate_series(1, 1000000) g;\n"
        "ANALYZE hot;\n"
        "UPDATE hot SET n = 1 WHERE id % 5 < 3;\n",
        ["SELECT count(*) FROM hot"],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    found = [r for r in of_kind(result, "maintenance") if r.table == "public.hot"]
    autovacuum = [r for r in found if r.change.maintenance and r.change.maintenance.topic == "autovacuum"]
    assert len(autovacuum) == 1, [r.sql for r in found]
    advice = autovacuum[0]
    assert advice.sql == (
        'ALTER TABLE "public"."hot" SET ("autovacuum_vacuum_scale_factor" = 0.05, '
        '"autovacuum_analyze_scale_factor" = 0.025)'
    )
    assert advice.rollback_sql == (
        'ALTER TABLE "public"."hot" RESET ("autovacuum_vacuum_scale_factor", "autovacuum_analyze_scale_factor")'
    )
    figures = figures_of(advice)
    assert (figures.modifications or 0) >= 600_000
    assert (figures.dead_tuples or 0) >= 600_000
    assert "autovacuum_enabled = off" in advice.rationale


async def test_without_the_right_to_run_pgstattuple_the_estimate_stands_and_says_why(
    pg_server: LocalPostgres, pg_database: str
) -> None:
    """pgstattuple's functions are granted to pg_stat_scan_tables only: an analysis role without it still gets the
    finding, from the estimate, and the rationale names the refusal."""
    await setup(pg_database, EVENTS + "CREATE EXTENSION pgstattuple;\n", LOOKUPS)
    database = pg_database.rsplit("/", 1)[-1]
    role = f"advisor_{database}"
    pg_server.psql(f"CREATE ROLE {role} LOGIN; GRANT pg_read_all_stats TO {role}")
    pg_server.psql(f"GRANT SELECT ON events TO {role}", database=database)  # pg_stats shows only readable columns
    try:
        conn = await asyncpg.connect(pg_server.dsn(database, user=role))
        try:
            snapshot = await collect(conn)
        finally:
            await conn.close()
    finally:
        pg_server.psql(f"DROP OWNED BY {role}; DROP ROLE {role}", database=database)
    assert "permission denied" in (snapshot.maintenance.measure_error or "")
    reindex = [r for r in findings.bloat_findings(snapshot) if r.kind == "reindex"]
    assert [r.table for r in reindex] == ["public.events"]
    assert figures_of(reindex[0]).method == "estimate"
    assert "permission denied" in reindex[0].rationale
