"""Attacks on the apply path through the real API server and operator process: each test asserts what did *not*
happen (catalogs, pg_stat_statements, the objects). The same attacks, with states forced precisely, run on real
PostgreSQL in ``tests/postgres/test_apply_attacks.py``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from devcluster.cluster import Cluster

from . import objects
from .conftest import apply, get, secret, wait_for
from .test_apply import big_table, building, change, generated, indexes, sql, wait_phase, writer_target


def ready(status: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = next(c for c in status["conditions"] if c["type"] == "Ready")
    return found


def ran(host: str, pattern: str) -> list[str]:
    rows = sql(
        host,
        "SELECT query FROM pg_stat_statements WHERE query ~* $1 AND query !~ 'optischema_shape_probe' "
        "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        pattern,
    )
    return [r["query"] for r in rows]


def force_regression(cluster: Cluster, host: str, namespace: str, name: str) -> None:
    """While the change is Verifying: its baseline is edited to say a statement took a microsecond, then the
    statement runs (milliseconds each) often enough for a verdict — verification sees a regression."""
    statement = "SELECT pg_sleep(0.002), $1::int AS forced_regression"

    async def run(times: int) -> None:
        conn = await asyncpg.connect(f"postgresql://postgres:pw@{host}:5432/shop")
        try:
            for _ in range(times):
                await conn.fetch(statement, 1)
        finally:
            await conn.close()

    asyncio.run(run(3))
    query_id = sql(host, "SELECT queryid::text FROM pg_stat_statements WHERE query ~ 'AS forced_regression'")[0][0]
    baseline = {"reads": [{"queryId": query_id, "calls": 1, "totalMs": 0.0001}], "writes": []}
    cluster.plane.kubectl(
        "patch", "ixc", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"baseline": baseline}}),
    )  # fmt: skip
    asyncio.run(run(30))


def test_a_git_change_naming_an_existing_unique_index_is_refused_and_the_index_survives_a_regression(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    # The reproduced attack: someone's plain UNIQUE index under PostgreSQL's default name.
    sql(database, "CREATE TABLE members (id int, email text)")
    sql(database, "INSERT INTO members SELECT g, 'm' || g FROM generate_series(1, 20000) g")
    sql(database, "CREATE UNIQUE INDEX members_email_idx ON members (email)")
    before = sql(database, "SELECT indexdef FROM pg_indexes WHERE indexname = 'members_email_idx'")[0][0]
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, writer_target(namespace, database))
    sql(database, "SELECT pg_stat_statements_reset()")
    # 1. A Git change naming it is refused at admission.
    named = {"table": "members", "name": "members_email_idx", "columns": [{"name": "email"}]}
    apply(cluster, change(namespace, "named", named, schedule="immediate"))
    status = wait_phase(cluster, namespace, "named", "Failed", "Verifying", "Applied")
    assert status["phase"] == "Failed"
    assert ready(status)["reason"] == "IndexNameTaken"
    assert "history" not in status or not status["history"], "nothing was executed"
    # 2. The same definition without a name gets its own name, is built, regresses and is rolled back: the
    #    rollback drops its own index only.
    unnamed = {"table": "members", "columns": [{"name": "email"}]}
    apply(cluster, change(namespace, "unnamed", unnamed, schedule="immediate", verification={
        "observeSeconds": 8, "minCalls": 5, "maxRegressionPercent": 10}))  # fmt: skip
    wait_phase(cluster, namespace, "unnamed", "Verifying", "Failed")
    force_regression(cluster, database, namespace, "unnamed")
    status = wait_phase(cluster, namespace, "unnamed", "RolledBack", "Applied", "Failed", timeout=60)
    assert status["phase"] == "RolledBack", status["conditions"]
    assert status["history"][-1]["sql"] == f'DROP INDEX CONCURRENTLY IF EXISTS "public"."{generated(unnamed)}"'
    # What did not happen: the UNIQUE index is there, unchanged, still enforcing; no statement dropped it.
    assert sql(database, "SELECT indexdef FROM pg_indexes WHERE indexname = 'members_email_idx'")[0][0] == before
    with pytest.raises(asyncpg.UniqueViolationError):
        sql(database, "INSERT INTO members VALUES (0, 'm1')")
    assert [q for q in ran(database, "^drop index") if "members_email_idx" in q] == []


def test_a_drop_of_an_index_backing_a_constraint_is_refused(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    sql(database, "CREATE TABLE accounts (id int PRIMARY KEY, email text)")
    before = sql(database, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'accounts'")
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, writer_target(namespace, database, allowedKinds=["createIndex", "dropIndex"]))
    index = {"table": "accounts", "name": "accounts_pkey", "unique": True, "columns": [{"name": "id"}]}
    apply(cluster, change(namespace, "pkey", index, operation="drop", schedule="immediate"))
    status = wait_phase(cluster, namespace, "pkey", "Failed", "Verifying", "Applied")
    assert status["phase"] == "Failed"
    assert ready(status)["reason"] == "ProtectedIndex"
    assert "backs constraint accounts_pkey" in ready(status)["message"]
    assert sql(database, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'accounts'") == before
    assert ran(database, "^drop index") == []


def test_a_target_repointed_to_another_database_stalls_and_nothing_runs_there(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    apply(cluster, objects.postgres_pod("db2", namespace, "pw", "shop"))
    cluster.plane.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/db2", "--timeout=60s")
    other: str = get(cluster, "pod", "db2", "-n", namespace)["status"]["podIP"]
    sql(other, "CREATE TABLE invoices (id bigint, customer_id int, amount numeric)")
    apply(cluster, secret(namespace, "pw"))
    doc = writer_target(namespace, database)
    later = datetime.now(UTC) + timedelta(days=3)
    doc["spec"]["oneOffWindows"] = [{"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()}]
    apply(cluster, doc)
    original = wait_for(
        lambda: (get(cluster, "pgt", "shop", "-n", namespace).get("status", {}).get("database") or {}).get(
            "systemIdentifier"
        ),
        what="the target's database recorded",
    )
    index = {"table": "invoices", "columns": [{"name": "amount"}]}
    apply(cluster, change(namespace, "moved", index))
    status = wait_phase(cluster, namespace, "moved", "WaitingForWindow", "Failed")
    assert status["systemIdentifier"] == original, "admission records the database the change is for"
    # The target is repointed (another server, same database name and table), then a window opens.
    doc["spec"]["connection"]["host"] = other
    now = datetime.now(UTC)
    doc["spec"]["oneOffWindows"] = [
        {"start": (now - timedelta(minutes=1)).isoformat(), "end": (now + timedelta(minutes=30)).isoformat()}
    ]
    sql(other, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    sql(other, "SELECT pg_stat_statements_reset()")
    apply(cluster, doc)

    def stalled() -> dict[str, str] | None:
        conditions = (get(cluster, "ixc", "moved", "-n", namespace).get("status") or {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Stalled"), None)

    found = wait_for(stalled, timeout=60, what="Stalled")
    assert found["reason"] == "DatabaseMismatch"
    time.sleep(4)  # two check periods: still nothing
    assert get(cluster, "ixc", "moved", "-n", namespace)["status"]["phase"] == "WaitingForWindow"
    events = cluster.plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=moved,type=Warning"
    )
    assert "DatabaseMismatch" in events
    assert sql(other, "SELECT indexname FROM pg_indexes WHERE tablename = 'invoices'") == []
    assert ran(other, "^(create|drop|alter)") == [], "no statement reached the other database"
    assert indexes(database, generated(index)) == []


def test_a_build_whose_backend_is_terminated_goes_back_to_waiting_and_builds_again(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    big_table(database)
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, writer_target(namespace, database))
    index = {"table": "big", "columns": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}
    name = generated(index)
    apply(cluster, change(namespace, "terminated", index, schedule="immediate"))
    wait_for(lambda: building(database), timeout=60, what="the build to start")
    sql(
        database,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'optischema-apply' "
        "AND query ILIKE 'CREATE INDEX%'",
    )
    status = wait_phase(cluster, namespace, "terminated", "Applied", "RolledBack", "Failed", timeout=240)
    assert status["phase"] == "Applied", status["conditions"]
    actions = [(h["action"], h["outcome"]) for h in status["history"]]
    assert actions[:2] == [("Precheck", "Succeeded"), ("Execute", "Failed")], actions
    assert ("Cleanup", "Succeeded") in actions, "the INVALID leftover was dropped before building again"
    assert actions[-2:] == [("Execute", "Succeeded"), ("Verify", "Succeeded")], actions
    assert indexes(database, name) == [(name, True)], "one valid index"
    invalid = sql(database, "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
                            "WHERE NOT x.indisvalid")  # fmt: skip
    assert invalid == [], "no INVALID index remains"
    events = cluster.plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=terminated"
    )
    assert "ConnectionLost" in events
