"""Applying IndexChanges for real: windows, pre-checks, CONCURRENTLY, verification, rollback, audit, restarts.

The operator is a real process, the database a PostgreSQL pod served by the process kubelet.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from devcluster.cluster import Cluster
from optischema.api.index import IndexDefinition
from optischema.changes.ddl import index_name
from tests.gitops import argocd, flux
from tests.receiver import receiver

from .conftest import allow_secrets, apply, get, operators, secret, target, wait_for


def sql(host: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(f"postgresql://postgres:pw@{host}:5432/shop")
        try:
            return list(await conn.fetch(statement, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def writer_target(namespace: str, host: str, **policy: Any) -> dict[str, Any]:
    doc = target(namespace, host)
    doc["spec"]["connection"]["writeCredentialsSecret"] = {"name": "shop-db"}
    doc["spec"]["policy"] = {"allowImmediate": True, **policy}
    doc["spec"]["analysis"]["interval"] = "168h"
    return doc


def change(namespace: str, name: str, index: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "IndexChange",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"name": "shop"},
            "operation": "create",
            "index": index,
            "verification": {"observeSeconds": 4, "minCalls": 5, "maxRegressionPercent": 10},
            **spec,
        },
    }


def phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    return (get(cluster, "ixc", name, "-n", namespace).get("status") or {}).get("phase")


def wait_phase(cluster: Cluster, namespace: str, name: str, *phases: str, timeout: float = 90) -> dict[str, Any]:
    try:
        wait_for(lambda: phase(cluster, namespace, name) in phases, timeout=timeout, what=f"{name} in {phases}")
    except AssertionError as error:
        conditions = (get(cluster, "ixc", name, "-n", namespace).get("status") or {}).get("conditions")
        raise AssertionError(f"{error}; conditions: {conditions}") from None
    status: dict[str, Any] = get(cluster, "ixc", name, "-n", namespace)["status"]
    return status


def generated(index: dict[str, Any]) -> str:
    """The name the operator gives an index defined without one (table, keys and the definition's hash)."""
    return index_name(IndexDefinition.model_validate(index))


def indexes(host: str, name: str) -> list[tuple[str, bool]]:
    rows = sql(
        host,
        "SELECT c.relname, x.indisvalid FROM pg_class c JOIN pg_index x ON x.indexrelid = c.oid WHERE c.relname = $1",
        name,
    )
    return [(r["relname"], r["indisvalid"]) for r in rows]


class Traffic:
    """A statement run in a loop on its own connection while a test waits (the workload verification sees)."""

    def __init__(self, host: str, statement: str, *args: Any) -> None:
        self.stop = threading.Event()
        self.calls = 0

        async def loop() -> None:
            conn = await asyncpg.connect(f"postgresql://postgres:pw@{host}:5432/shop")
            try:
                while not self.stop.is_set():
                    await conn.fetch(statement, *args)
                    self.calls += 1
                    await asyncio.sleep(0.02)
            finally:
                await conn.close()

        self.thread = threading.Thread(target=lambda: asyncio.run(loop()), daemon=True)
        self.thread.start()

    def __enter__(self) -> Traffic:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_nothing_runs_outside_a_window_then_the_window_applies_and_verifies(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    apply(cluster, secret(namespace, "pw"))
    doc = writer_target(namespace, database)
    later = datetime.now(UTC) + timedelta(days=3)
    doc["spec"]["oneOffWindows"] = [{"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()}]
    doc["spec"]["maintenanceWindows"] = []
    apply(cluster, doc)
    wait_for(lambda: get(cluster, "pgt", "shop", "-n", namespace).get("status", {}).get("database"), what="Ready")
    by_customer = {"table": "invoices", "columns": [{"name": "customer_id"}]}
    name = generated(by_customer)
    apply(cluster, change(namespace, "by-customer", by_customer))

    waiting = wait_for(
        lambda: (s := get(cluster, "ixc", "by-customer", "-n", namespace).get("status") or {}).get("window") and s,
        what="the awaited window",
    )
    assert waiting["phase"] == "WaitingForWindow"
    assert datetime.fromisoformat(waiting["window"]["start"]) == later
    time.sleep(4)  # two check periods
    assert phase(cluster, namespace, "by-customer") == "WaitingForWindow"
    assert indexes(database, name) == [], "nothing ran outside the window"

    # A window opens now: the change runs, then is verified against the workload.
    now = datetime.now(UTC)
    doc["spec"]["oneOffWindows"].append(
        {"start": (now - timedelta(minutes=1)).isoformat(), "end": (now + timedelta(minutes=30)).isoformat()}
    )
    apply(cluster, doc)
    with Traffic(database, "SELECT sum(amount) FROM invoices WHERE customer_id = $1", 42):
        status = wait_phase(cluster, namespace, "by-customer", "Applied", "RolledBack", "Failed", timeout=120)
    assert status["phase"] == "Applied", status["conditions"]
    assert indexes(database, name) == [(name, True)]
    assert [h["action"] for h in status["history"]] == ["Precheck", "Execute", "Verify"]
    live = get(cluster, "ixc", "by-customer", "-n", namespace)
    assert (argocd(live), flux(live)) == ("Healthy", "Healthy")  # the GitOps health checks on the real object
    execute = status["history"][1]
    assert execute["sql"] == f'CREATE INDEX CONCURRENTLY "{name}" ON "public"."invoices" ("customer_id")'
    assert name.startswith("invoices_customer_id_")
    assert execute["actor"] == "admin"
    assert execute["outcome"] == "Succeeded"
    assert status["verification"]["verdict"] == "Improved"
    assert status["verification"]["afterMeanMs"] < status["verification"]["baselineMeanMs"]
    assert status["baseline"]["reads"], "the baseline names the statements it judged"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    events = cluster.plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=by-customer"
    )
    assert "Applied" in events
    assert get(cluster, "pgt", "shop", "-n", namespace)["status"]["indexBuildBytesPerSecond"] > 0


def test_a_change_that_makes_a_query_slower_is_rolled_back(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    # The classic trap: the planner walks an index on ts for ORDER BY ... LIMIT 1 expecting to meet a flag = 1 row
    # soon, but all of them sit at the end of the index — the query gets twice as slow.
    sql(database, "CREATE TABLE r (id int, ts int, flag int)")
    sql(database, "INSERT INTO r SELECT g, g, (g > 998000)::int FROM generate_series(1, 1000000) g")
    sql(database, "VACUUM ANALYZE r")
    query = "SELECT id FROM r WHERE flag = $1 ORDER BY ts LIMIT 1"
    for _ in range(10):
        sql(database, query, 1)
    apply(cluster, secret(namespace, "pw"))
    with receiver() as sink:
        cluster.plane.kubectl("create", "secret", "generic", "hook", "-n", namespace,
                              f"--from-literal=url={sink.url('/hook')}", "--from-literal=key=k3y")  # fmt: skip
        allow_secrets(cluster, namespace, "hook")  # the operator reads only Secrets that opt in
        doc = writer_target(namespace, database)
        doc["spec"]["notifications"] = {
            "sinks": [{"type": "webhook", "urlSecret": {"name": "hook", "key": "url"},
                       "hmacSecret": {"name": "hook", "key": "key"}}]
        }  # fmt: skip
        apply(cluster, doc)
        wait_for(lambda: get(cluster, "pgt", "shop", "-n", namespace).get("status", {}).get("database"), what="Ready")
        with Traffic(database, query, 1):
            apply(
                cluster, change(namespace, "by-ts", {"table": "r", "columns": [{"name": "ts"}]}, schedule="immediate")
            )
            status = wait_phase(cluster, namespace, "by-ts", "Applied", "RolledBack", "Failed", timeout=120)
        # Exactly one notification of the rollback, signed, with the change and the reason.
        wait_for(lambda: sink.received, timeout=30, what="the rollback's notification")
        time.sleep(3)
        assert len(sink.received) == 1, [json.loads(r["body"])["event"] for r in sink.received]
        sent = json.loads(sink.received[0]["body"])
        assert (sent["event"], sent["object"]["name"], sent["severity"]) == ("changeRolledBack", "by-ts", "warning")
        assert "rolled back" in sent["summary"]
        assert sink.received[0]["headers"]["X-OptiSchema-Signature"].startswith("sha256=")
        delivered = wait_for(
            lambda: (get(cluster, "pgt", "shop", "-n", namespace)["status"].get("notifications") or {}).get(
                "delivered"
            ),
            timeout=30,
            what="the delivery counted",
        )
        assert delivered == 1
    assert status["phase"] == "RolledBack", status["conditions"]
    live = get(cluster, "ixc", "by-ts", "-n", namespace)
    assert (argocd(live), flux(live)) == ("Degraded", "Degraded")
    assert status["verification"]["verdict"] == "Regressed"
    assert status["verification"]["regressionPercent"] > 10
    assert [h["action"] for h in status["history"]] == ["Precheck", "Execute", "Verify", "Rollback"]
    by_ts = generated({"table": "r", "columns": [{"name": "ts"}]})
    assert status["history"][-1]["sql"] == f'DROP INDEX CONCURRENTLY IF EXISTS "public"."{by_ts}"'
    assert indexes(database, by_ts) == [], "the index is gone again"
    stalled = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert stalled["reason"] == "Regression"
    assert "rolled back" in stalled["message"]


def test_without_write_credentials_the_change_waits_stalled(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    apply(cluster, secret(namespace, "pw"))
    doc = writer_target(namespace, database)
    del doc["spec"]["connection"]["writeCredentialsSecret"]
    with receiver() as sink:
        cluster.plane.kubectl("create", "secret", "generic", "hook", "-n", namespace,
                              f"--from-literal=url={sink.url('/hook')}")  # fmt: skip
        allow_secrets(cluster, namespace, "hook")  # the operator reads only Secrets that opt in
        doc["spec"]["notifications"] = {"sinks": [{"type": "slack", "urlSecret": {"name": "hook", "key": "url"}}]}
        apply(cluster, doc)
        apply(
            cluster,
            change(namespace, "nowrite", {"table": "invoices", "columns": [{"name": "amount"}]}, schedule="immediate"),
        )
        # A person must act: told once (not at every re-check while it waits).
        wait_for(lambda: sink.received, timeout=60, what="the stalled change's notification")
        time.sleep(6)  # three check periods
        assert len(sink.received) == 1, [json.loads(r["body"])["text"] for r in sink.received]
        told = json.dumps(json.loads(sink.received[0]["body"])["blocks"])
        assert "NoWriteCredentials" in told
        assert "A change is stalled" in json.loads(sink.received[0]["body"])["text"]
    stalled = wait_for(
        lambda: next(
            (
                c
                for c in (get(cluster, "ixc", "nowrite", "-n", namespace).get("status") or {}).get("conditions", [])
                if c["type"] == "Stalled"
            ),
            None,
        ),
        what="Stalled",
    )
    assert stalled["reason"] == "NoWriteCredentials"
    assert phase(cluster, namespace, "nowrite") == "WaitingForWindow"  # not failed: adding the Secret resumes it
    live = get(cluster, "ixc", "nowrite", "-n", namespace)
    assert (argocd(live), flux(live)) == ("Degraded", "Degraded")  # a person must act
    doc["spec"]["connection"]["writeCredentialsSecret"] = {"name": "shop-db"}
    apply(cluster, doc)
    wait_phase(cluster, namespace, "nowrite", "Verifying", "Applied")


def big_table(host: str, rows: int = 3_000_000) -> None:
    sql(host, "CREATE TABLE big (id bigint, a bigint, b bigint, c text)")
    sql(host, f"INSERT INTO big SELECT g, g % 1000, g % 7919, md5(g::text) FROM generate_series(1, {rows}) g")
    sql(host, "VACUUM ANALYZE big")


def building(host: str) -> bool:
    rows = sql(
        host,
        "SELECT 1 FROM pg_stat_activity WHERE application_name = 'optischema-apply' AND query ILIKE 'CREATE INDEX%'",
    )
    return bool(rows)


def test_a_build_killed_midway_leaves_no_invalid_index_and_fails_stalled(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    big_table(database)
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, writer_target(namespace, database))
    index = {"table": "big", "columns": [{"name": "c"}, {"name": "b"}]}
    apply(cluster, change(namespace, "killed", index, schedule="immediate"))
    wait_for(lambda: building(database), timeout=60, what="the build to start")
    sql(
        database,
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'optischema-apply' "
        "AND query ILIKE 'CREATE INDEX%'",
    )
    status = wait_phase(cluster, namespace, "killed", "Failed", "Applied")
    assert status["phase"] == "Failed"
    assert indexes(database, generated(index)) == [], "the INVALID index was dropped"
    actions = [(h["action"], h["outcome"]) for h in status["history"]]
    assert ("Execute", "Failed") in actions
    assert ("Cleanup", "Succeeded") in actions
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "ApplyFailed"
    assert "canceling statement due to user request" in stalled["message"]


def test_an_operator_killed_during_apply_resumes_without_a_duplicate(
    cluster: Cluster, namespace: str, database: str
) -> None:
    big_table(database)
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, writer_target(namespace, database))
    with operators(cluster, namespace, "apply-killed", OPTISCHEMA_OPERATOR_IDENTITY="admin") as start:
        first = start()
        index = {"table": "big", "columns": [{"name": "c"}, {"name": "a"}]}
        apply(cluster, change(namespace, "resumed", index, schedule="immediate"))
        wait_for(lambda: building(database), timeout=60, what="the build to start")
        first.kill()  # SIGKILL in the middle of CREATE INDEX CONCURRENTLY
        first.wait(timeout=10)
        # The server notices the operator is gone (client_connection_check_interval) and aborts the build.
        wait_for(lambda: not building(database), timeout=30, what="the orphaned build to stop")
        name = generated(index)
        assert indexes(database, name) == [(name, False)], "an INVALID index is left behind"
        assert phase(cluster, namespace, "resumed") == "Applying"
        start()
        status = wait_phase(cluster, namespace, "resumed", "Applied", "RolledBack", "Failed", timeout=180)
        assert status["phase"] == "Applied", status["conditions"]
        assert indexes(database, name) == [(name, True)], "one valid index, no duplicate"
        actions = [h["action"] for h in status["history"]]
        assert actions == ["Precheck", "Cleanup", "Execute", "Verify"], actions


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ({"table": "invoices", "columns": [{"expression": "(SELECT 1)"}]}, "must not contain a query"),
        (
            {"table": "invoices", "columns": [{"name": "id"}], "where": "pg_terminate_backend(1) IS NULL"},
            "is not known to be free of side effects",
        ),
    ],
    ids=["subquery", "function that acts"],
)
def test_crafted_definitions_are_refused_before_any_sql(
    cluster: Cluster,
    namespace: str,
    database: str,
    operator: subprocess.Popen[bytes],
    index: dict[str, Any],
    message: str,
) -> None:
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, writer_target(namespace, database))
    sql(database, "SELECT pg_stat_statements_reset()")
    apply(cluster, change(namespace, "crafted", index, schedule="immediate"))
    status = wait_phase(cluster, namespace, "crafted", "Failed", "Applied", "WaitingForWindow")
    assert status["phase"] == "Failed"
    assert message in next(c for c in status["conditions"] if c["type"] == "Stalled")["message"]
    ran = sql(
        database,
        "SELECT query FROM pg_stat_statements WHERE query ILIKE '%pg_terminate%' OR query ILIKE 'CREATE INDEX%'",
    )
    assert ran == [], "nothing reached the database"


def operation(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "IndexChange",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"targetRef": {"name": "shop"}, "schedule": "immediate", "verification": {"observeSeconds": 2}, **spec},
    }


def test_analyze_and_an_allowed_setting_are_applied_one_at_a_time_and_others_refused(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, writer_target(namespace, database, allowedKinds=["createIndex", "analyze", "setting"]))
    apply(cluster, operation(namespace, "stats", operation="analyze", table={"table": "invoices", "vacuum": True}))
    apply(cluster, operation(namespace, "memory", operation="setting", setting={"name": "work_mem", "value": "24MB"}))
    apply(
        cluster,
        operation(namespace, "buffers", operation="setting", setting={"name": "shared_buffers", "value": "1GB"}),
    )

    refused = wait_phase(cluster, namespace, "buffers", "Failed", "Applied")
    assert refused["phase"] == "Failed"
    assert "shared_buffers is not among the settings the operator may change" in refused["conditions"][0]["message"]
    stats = wait_phase(cluster, namespace, "stats", "Applied", "Failed")
    memory = wait_phase(cluster, namespace, "memory", "Applied", "Failed")
    assert stats["phase"] == memory["phase"] == "Applied", (stats["conditions"], memory["conditions"])
    assert stats["history"][1]["sql"] == 'VACUUM (ANALYZE) "public"."invoices"'
    assert memory["history"][1]["sql"] == "ALTER SYSTEM SET \"work_mem\" = '24MB'; SELECT pg_reload_conf()"
    assert memory["rollbackSql"] == 'ALTER SYSTEM RESET "work_mem";\nSELECT pg_reload_conf()'
    assert sql(database, "SHOW work_mem")[0][0] == "24MB"
    # One at a time: the second started only after the first had finished.
    first, second = sorted((stats, memory), key=lambda s: s["startedAt"])
    assert second["startedAt"] >= first["completedAt"]
    sql(database, "ALTER SYSTEM RESET work_mem")
    sql(database, "SELECT pg_reload_conf()")
