"""Uninstalling never wedges a namespace: with the operator gone, deleting a namespace that holds a target, a
recommendation, an IndexChange waiting for its window and one in the middle of its build completes.

Before, every object a kopf daemon ran for carried kopf's finalizer, and nobody was left to remove it. The database
(a PostgreSQL pod in another namespace, which stays) is then inspected for what the interrupted build left, with
the SQL the README's "Uninstalling" section gives a DBA.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from devcluster.cluster import Cluster

from .conftest import LOGS, apply, get, operator_env, operators, secret, wait_for
from .test_apply import change, generated, indexes, phase, sql, writer_target

#: kopf's finalizer, as versions that held one left it on targets and unfinished changes.
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
#: How long the namespace may take to go (the controller-manager deletes its contents; ≈ 10 s seen here).
GONE_WITHIN_SECONDS = 90
#: The README's query for leftovers of interrupted builds: INVALID indexes named like ours.
LEFTOVERS_SQL = """
SELECT n.nspname AS schema, c.relname AS index, t.relname AS "table"
FROM pg_index x
JOIN pg_class c ON c.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT x.indisvalid AND c.relname ~ '_[0-9a-f]{8,16}_idx$'
ORDER BY 1, 2
"""
SAMPLE = Path(__file__).parents[2] / "manifests" / "samples" / "tuningrecommendation.yaml"


class Blocker:
    """A session that wrote to ``table`` and keeps its transaction open: ``CREATE INDEX CONCURRENTLY`` on it
    commits its INVALID catalog entry, then waits for this writer to finish (a lock wait)."""

    def __init__(self, host: str, table: str) -> None:
        self.release = threading.Event()
        self.holding = threading.Event()

        async def hold() -> None:
            conn = await asyncpg.connect(f"postgresql://postgres:pw@{host}:5432/shop")
            try:
                transaction = conn.transaction()
                await transaction.start()
                await conn.execute(f"INSERT INTO {table} VALUES (0, 0)")
                self.holding.set()
                while not self.release.is_set():
                    await asyncio.sleep(0.1)
                await transaction.rollback()
            finally:
                await conn.close()

        self.thread = threading.Thread(target=lambda: asyncio.run(hold()), daemon=True)
        self.thread.start()
        assert self.holding.wait(30), "the blocking session did not start"

    def stop(self) -> None:
        self.release.set()
        self.thread.join(timeout=30)


def build_waiting_on_lock(host: str) -> bool:
    rows = sql(
        host,
        "SELECT 1 FROM pg_stat_activity WHERE application_name = 'optischema-apply' "
        "AND query ILIKE 'CREATE INDEX%' AND wait_event_type = 'Lock'",
    )
    return bool(rows)


def build_running(host: str) -> bool:
    rows = sql(
        host, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'optischema-apply' AND query ILIKE 'CREATE%'"
    )
    return bool(rows)


def recommendation(namespace: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    doc["metadata"] = {
        "name": "shop-invoices-amount",
        "namespace": namespace,
        "labels": {"optischema.io/target": "shop"},
    }
    doc["spec"]["targetRef"] = {"name": "shop"}
    return doc


def finalizers(cluster: Cluster, namespace: str) -> dict[str, list[str]]:
    """Every object of ours in ``namespace`` with the finalizers it carries."""
    listed = get(cluster, "postgrestargets,tuningrecommendations,indexchanges", "-n", namespace)
    return {
        f"{item['kind']}/{item['metadata']['name']}": item["metadata"].get("finalizers") or []
        for item in listed["items"]
    }


def namespace_gone(cluster: Cluster, name: str) -> bool:
    return not cluster.plane.kubectl("get", "namespace", name, "--ignore-not-found", "-o", "name").strip()


def test_deleting_a_namespace_with_the_operator_gone_completes_and_leaves_a_findable_invalid_index(
    cluster: Cluster, namespace: str, database: str
) -> None:
    app = f"{namespace}-app"  # the database pod stays in `namespace`; everything of ours is in `app`
    cluster.plane.kubectl("create", "namespace", app)
    sql(database, "CREATE TABLE held (a bigint, b bigint)")
    sql(database, "INSERT INTO held SELECT g, g FROM generate_series(1, 1000) g")
    apply(cluster, secret(app, "pw"))
    # A target as a version that held finalizers left it: the operator must take kopf's finalizer off.
    shop = writer_target(app, database)
    shop["metadata"]["finalizers"] = [KOPF_FINALIZER]
    apply(cluster, shop)
    apply(cluster, recommendation(app))

    LOGS.mkdir(exist_ok=True)
    blocker: Blocker | None = None
    process = subprocess.Popen(
        [sys.executable, "-m", "optischema.cli.main", "run", "-n", app],
        # A lock wait as long as the test: the build stays waiting until the operator is killed.
        env=operator_env(cluster, OPTISCHEMA_APPLY_LOCK_TIMEOUT_MS="600000", OPTISCHEMA_OPERATOR_IDENTITY="admin"),
        stdout=(LOGS / f"namespace-deletion-{namespace}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    building = {"table": "held", "columns": [{"name": "b"}]}
    waiting = {"table": "invoices", "columns": [{"name": "amount"}]}
    try:
        blocker = Blocker(database, "held")
        apply(cluster, change(app, "building", building, schedule="immediate"))
        wait_for(lambda: build_waiting_on_lock(database), timeout=90, what="the build to wait on the writer's lock")
        apply(cluster, change(app, "waiting", waiting))  # the next window (Sunday), and behind the build
        wait_for(lambda: phase(cluster, app, "waiting") == "WaitingForWindow", timeout=60, what="waiting to wait")
        # The operator holds no finalizer on anything, and took off the one an older version left.
        wait_for(lambda: not any(finalizers(cluster, app).values()), timeout=30, what="no finalizers")
        assert {
            "PostgresTarget/shop",
            "TuningRecommendation/shop-invoices-amount",
            "IndexChange/waiting",
            "IndexChange/building",
        } <= set(finalizers(cluster, app))
        assert phase(cluster, app, "building") == "Applying"
        assert build_waiting_on_lock(database)

        process.kill()  # the operator is gone (SIGKILL: no clean-up of any kind)
        process.wait(timeout=10)
        # The server notices its client went (client_connection_check_interval) and aborts the waiting build.
        wait_for(lambda: not build_running(database), timeout=30, what="the orphaned build to stop")

        started = time.monotonic()
        cluster.plane.kubectl("delete", "namespace", app, "--wait=false")
        wait_for(lambda: namespace_gone(cluster, app), timeout=GONE_WITHIN_SECONDS, what=f"namespace {app} gone")
        took = time.monotonic() - started
        print(f"namespace {app} with a target, a recommendation and two unfinished changes gone in {took:.1f}s")
    finally:
        if blocker is not None:
            blocker.stop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        cluster.plane.kubectl("delete", "namespace", app, "--wait=false", "--ignore-not-found")

    # What the database is left with: the build's INVALID index (CREATE INDEX CONCURRENTLY commits its catalog
    # entry before it waits), under our name pattern; the waiting change never touched the database.
    name = generated(building)
    assert indexes(database, name) == [(name, False)]
    assert indexes(database, generated(waiting)) == []
    leftovers = [(r["schema"], r["index"], r["table"]) for r in sql(database, LEFTOVERS_SQL)]
    assert leftovers == [("public", name, "held")], "the README's query finds exactly the leftover"
    # The README's clean-up, run as a DBA would.
    sql(database, f'DROP INDEX CONCURRENTLY IF EXISTS "public"."{name}"')
    assert sql(database, LEFTOVERS_SQL) == []
    assert indexes(database, name) == []


def test_the_control_a_kopf_finalizer_keeps_a_namespace_terminating_until_an_operator_starts(
    cluster: Cluster, namespace: str
) -> None:
    """What the test above would meet if an object still carried kopf's finalizer (every target and unfinished
    change did, before): with no operator the namespace stays Terminating. An operator of this version, started,
    takes the finalizer off (it needs none) and the deletion completes."""
    app = f"{namespace}-stuck"
    cluster.plane.kubectl("create", "namespace", app)
    try:
        shop = writer_target(app, "db.example")
        shop["metadata"]["finalizers"] = [KOPF_FINALIZER]
        apply(cluster, shop)
        cluster.plane.kubectl("delete", "namespace", app, "--wait=false")
        time.sleep(20)  # the namespace controller deleted everything else long ago (≈ 6 s above)
        assert not namespace_gone(cluster, app)
        assert get(cluster, "namespace", app)["status"]["phase"] == "Terminating"
        assert get(cluster, "postgrestarget", "shop", "-n", app)["metadata"]["finalizers"] == [KOPF_FINALIZER]
        with operators(cluster, app, "namespace-unstuck") as start:
            start()
            wait_for(lambda: namespace_gone(cluster, app), timeout=GONE_WITHIN_SECONDS, what=f"namespace {app} gone")
    finally:  # only needed if the test failed before the operator took the finalizer off
        cluster.plane.kubectl(
            "patch",
            "postgrestarget",
            "shop",
            "-n",
            app,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
