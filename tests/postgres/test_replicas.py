"""Unused-index drops judged over the primary and its replicas, with statistics old enough: a real streaming replica
(``pg_basebackup -R`` of the test server) whose queries use an index the primary never used keeps that index; a
replica that cannot be reached keeps every index and is named; statistics just reset keep them, with the reason."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest

from devcluster import LocalPostgres
from optischema.cli.main import main
from optischema.flows.analyze import AnalysisResult, AnalyzeOptions, analyze
from optischema.postgres.local import free_port

from .replica import StreamingReplica
from .test_engine import of_kind, setup

ACCOUNTS = """
CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, region text NOT NULL, plan text NOT NULL);
INSERT INTO accounts SELECT g, 'a' || g || '@example.org', 'r' || (g % 30), 'p' || (g % 50)
                     FROM generate_series(1, 50000) g;
CREATE INDEX accounts_email ON accounts (email);
CREATE INDEX accounts_plan ON accounts (plan);
CREATE INDEX accounts_region ON accounts (region);
VACUUM ANALYZE accounts;
"""
#: The primary's workload reads by email only: accounts_plan and accounts_region are idle there.
PRIMARY_WORKLOAD = [f"SELECT id FROM accounts WHERE email = 'a{n}@example.org'" for n in (1, 2, 3)]
NO_AGE = timedelta(0)


def dropped(result: AnalysisResult) -> dict[str, str]:
    return {r.change.index.name or "": r.rationale for r in of_kind(result, "dropIndex") if r.change.index}


def on(replica: StreamingReplica, primary_dsn: str) -> str:
    """The same database's DSN on the replica."""
    return replica.dsn(urlsplit(primary_dsn).path.lstrip("/"))


async def scans_on(dsn: str, index: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $1", index))
    finally:
        await conn.close()


async def use_plan_index_on(dsn: str) -> None:
    """A report that runs on the replica only: its plan scans accounts_plan; wait until the counter shows it."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET enable_seqscan = off")
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) SELECT count(*) FROM accounts WHERE plan = 'p7'")
        assert "accounts_plan" in plan
        for _ in range(5):
            await conn.fetchval("SELECT count(*) FROM accounts WHERE plan = 'p7'")
    finally:
        await conn.close()  # a backend's counters reach the shared statistics when it goes idle or ends
    for _ in range(100):
        if await scans_on(dsn, "accounts_plan") > 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the replica never counted a scan of accounts_plan")


async def test_an_index_only_a_replica_uses_is_kept_and_one_idle_everywhere_is_dropped(
    pg_database: str, pg_replica: StreamingReplica
) -> None:
    await setup(pg_database, ACCOUNTS, PRIMARY_WORKLOAD)
    pg_replica.catch_up()
    replica = on(pg_replica, pg_database)
    await use_plan_index_on(replica)
    assert await scans_on(pg_database, "accounts_plan") == 0  # the primary never saw those scans

    alone = await analyze(pg_database, AnalyzeOptions(sample_seconds=0, unused_min_statistics_age=NO_AGE))
    assert sorted(dropped(alone)) == ["accounts_plan", "accounts_region"]  # the primary's counters alone

    both = AnalyzeOptions(sample_seconds=0, replicas=[replica], unused_min_statistics_age=NO_AGE)
    result = await analyze(pg_database, both)
    drops = dropped(result)
    assert sorted(drops) == ["accounts_region"]
    where = f"{pg_replica.host}:{pg_replica.port}"
    assert f"no scan has used it: none on the primary and 1 replica ({where}) in " in drops["accounts_region"]
    assert "of statistics" in drops["accounts_region"]
    kept = [n for n in result.notes if "public.accounts_plan" in n]
    assert len(kept) == 1, result.notes
    assert f"scans on replica {where}" in kept[0]


async def test_an_unreachable_replica_keeps_every_idle_index_and_is_named(pg_database: str) -> None:
    await setup(pg_database, ACCOUNTS, PRIMARY_WORKLOAD)
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nobody listens there
    options = AnalyzeOptions(sample_seconds=0, replicas=[nowhere], unused_min_statistics_age=NO_AGE, connect_timeout=3)
    result = await analyze(pg_database, options)
    assert dropped(result) == {}
    name = nowhere.split("@")[1].split("/")[0]
    # first of the notes, so that the status message (cut at 4,000 characters) always carries it
    assert result.notes[0].startswith(f"replica {name} could not be read for index usage"), result.notes
    kept = [n for n in result.notes if "public.accounts_plan" in n]
    assert len(kept) == 1, result.notes
    assert f"replica {name} could not be read" in kept[0]


async def test_a_replica_of_another_database_counts_as_unreadable(pg_database: str) -> None:
    """A replica entry that names a server of another cluster (its own system identifier): its zero counters say
    nothing about this database's indexes."""
    await setup(pg_database, ACCOUNTS, PRIMARY_WORKLOAD)
    with LocalPostgres(host="127.0.0.4") as stranger:
        stranger.psql("CREATE TABLE accounts (id int); CREATE INDEX accounts_plan ON accounts (id)")
        options = AnalyzeOptions(sample_seconds=0, replicas=[stranger.dsn()], unused_min_statistics_age=NO_AGE)
        result = await analyze(pg_database, options)
    assert dropped(result) == {}
    assert any("it is another database (system identifier" in n for n in result.notes), result.notes


async def test_statistics_just_reset_keep_an_idle_index_with_the_reason(pg_database: str) -> None:
    await setup(pg_database, ACCOUNTS, PRIMARY_WORKLOAD)
    conn = await asyncpg.connect(pg_database)
    try:
        started = await conn.fetchval("SELECT pg_postmaster_start_time()")
        up = datetime.now(UTC) - started
        if up < timedelta(seconds=30):  # the session's server is fresh: let its statistics age a little
            await asyncio.sleep((timedelta(seconds=30) - up).total_seconds())
            up = datetime.now(UTC) - started
        min_age = up - timedelta(seconds=10)  # the server's age passes it; an age just reset does not
        options = AnalyzeOptions(sample_seconds=0, unused_min_statistics_age=min_age)

        before = await analyze(pg_database, options)
        assert sorted(dropped(before)) == ["accounts_plan", "accounts_region"]

        await conn.execute("SELECT pg_stat_reset()")  # this database's counters start again now
        await asyncio.sleep(0.5)
        after = await analyze(pg_database, options)
    finally:
        await conn.close()
    assert dropped(after) == {}
    (note,) = [n for n in after.notes if "public.accounts_region" in n]
    assert "statistics on the primary" in note
    assert "cover only" in note
    assert "required" in note
    assert "public.accounts_plan" in note  # the same reason keeps both


async def test_the_default_age_keeps_idle_indexes_of_a_server_started_minutes_ago(pg_database: str) -> None:
    await setup(pg_database, ACCOUNTS, PRIMARY_WORKLOAD)
    result = await analyze(pg_database, AnalyzeOptions(sample_seconds=0))
    assert dropped(result) == {}
    (note,) = [n for n in result.notes if "public.accounts_plan" in n]
    assert "less than the 14 days required" in note


def test_optischema_analyze_reads_replicas_given_on_the_command_line(
    pg_database: str, pg_replica: StreamingReplica, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(setup(pg_database, ACCOUNTS, PRIMARY_WORKLOAD))
    pg_replica.catch_up()
    replica = on(pg_replica, pg_database)
    asyncio.run(use_plan_index_on(replica))
    argv = ["analyze", "--dsn", pg_database, "--replica", replica, "--unused-min-age", "0s", "--sample-seconds", "0"]
    assert main([*argv, "--quiet", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    drops = [r["change"]["index"]["name"] for r in document["recommendations"] if r["kind"] == "dropIndex"]
    assert drops == ["accounts_region"]
    assert any("public.accounts_plan" in n and "scans on replica" in n for n in document["notes"])
