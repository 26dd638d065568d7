"""What the operator relies on from the cluster: garbage collection, namespace deletion, Jobs and Pods that run."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg

from devcluster.cluster import Cluster
from devcluster.controlplane import ControlPlaneError

from . import objects
from .conftest import get, wait_for


def _apply(cluster: Cluster, doc: dict) -> None:  # type: ignore[type-arg]
    cluster.plane.kubectl("apply", "-f", "-", input=json.dumps(doc))


def test_owner_references_cascade(cluster: Cluster, namespace: str) -> None:
    _apply(cluster, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner", "namespace": namespace}})
    uid = get(cluster, "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }
    _apply(cluster, child)
    cluster.plane.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(
        lambda: "NotFound" in cluster.plane.kubectl("get", "configmap", "child", "-n", namespace, check=False),
        what="the garbage collector to delete the child",
    )


def test_namespace_deletion_completes(cluster: Cluster) -> None:
    cluster.plane.kubectl("create", "namespace", "doomed")
    _apply(cluster, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "doomed"}})
    started = time.monotonic()
    cluster.plane.kubectl("delete", "namespace", "doomed", "--wait=true", "--timeout=120s")
    assert "NotFound" in cluster.plane.kubectl("get", "namespace", "doomed", check=False)
    assert time.monotonic() - started < 120


def test_a_job_of_our_image_completes(cluster: Cluster, namespace: str) -> None:
    job = objects.job("version", namespace, ["optischema", "--version"])
    _apply(cluster, job)
    cluster.plane.kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/version", "--timeout=60s")
    pod = get(cluster, "pods", "-n", namespace, "-l", "job-name=version")["items"][0]
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert pod["status"]["podIP"].startswith("127.0.0.")


def test_a_failing_job_fails(cluster: Cluster, namespace: str) -> None:
    job = objects.job("bad", namespace, ["optischema", "no-such-command"])
    _apply(cluster, job)
    cluster.plane.kubectl("wait", "-n", namespace, "--for=condition=Failed", "job/bad", "--timeout=60s")
    pod = get(cluster, "pods", "-n", namespace, "-l", "job-name=bad")["items"][0]
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 2


def test_a_postgresql_pod_accepts_connections_on_its_pod_ip(cluster: Cluster, namespace: str) -> None:
    pod = objects.postgres_pod("db", namespace, "s3cret", "app")
    _apply(cluster, pod)
    cluster.plane.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/db", "--timeout=60s")
    ip = get(cluster, "pod", "db", "-n", namespace)["status"]["podIP"]

    async def connect(password: str) -> str:
        conn = await asyncpg.connect(f"postgresql://postgres:{password}@{ip}:5432/app")
        try:
            return str(await conn.fetchval("SELECT current_database() || ' ' || current_setting('port')"))
        finally:
            await conn.close()

    assert asyncio.run(connect("s3cret")) == "app 5432"
    try:
        asyncio.run(connect("wrong"))
        raise AssertionError("a wrong password was accepted")
    except asyncpg.InvalidPasswordError:
        pass


def test_an_unsupported_image_fails_with_a_reason(cluster: Cluster, namespace: str) -> None:
    pod = objects.pod("web", namespace, "nginx:1")
    _apply(cluster, pod)
    status = wait_for(lambda: get(cluster, "pod", "web", "-n", namespace)["status"].get("reason"), what="a reason")
    assert status == "ImageNotSupported"


def test_a_deleted_pod_stops_its_process(cluster: Cluster, namespace: str) -> None:
    pod = objects.pod("sleeper", namespace, "optischema:dev", command=["sleep", "300"])
    _apply(cluster, pod)
    wait_for(
        lambda: get(cluster, "pod", "sleeper", "-n", namespace)["status"].get("phase") == "Running",
        what="the pod to run",
    )
    run = next(r for r in cluster.kubelet._runs.values() if r.name == "sleeper")
    assert run.process is not None
    assert run.process.poll() is None
    cluster.plane.kubectl("delete", "pod", "sleeper", "-n", namespace, "--timeout=60s")
    assert run.process.poll() is not None


def test_active_deadline_kills_the_pod(cluster: Cluster, namespace: str) -> None:
    pod = objects.pod("late", namespace, "optischema:dev", command=["sleep", "300"], deadline=2)
    _apply(cluster, pod)
    reason = wait_for(
        lambda: get(cluster, "pod", "late", "-n", namespace)["status"].get("reason"), timeout=30, what="the deadline"
    )
    assert reason == "DeadlineExceeded"
    assert get(cluster, "pod", "late", "-n", namespace)["status"]["phase"] == "Failed"


def test_an_analysis_job_runs_optischema_analyze_against_a_postgresql_pod(cluster: Cluster, namespace: str) -> None:
    db = objects.postgres_pod("db", namespace, "pw")
    _apply(cluster, db)
    cluster.plane.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/db", "--timeout=60s")
    ip = get(cluster, "pod", "db", "-n", namespace)["status"]["podIP"]
    dsn = f"postgresql://postgres:pw@{ip}:5432/postgres"

    async def load() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg")
            await conn.execute("CREATE TABLE t (id int PRIMARY KEY, k int NOT NULL)")
            await conn.execute("INSERT INTO t SELECT g, g % 5000 FROM generate_series(1, 100000) g")
            await conn.execute("ANALYZE t")
            for k in range(20):
                await conn.execute(f"SELECT id FROM t WHERE k = {k}")
        finally:
            await conn.close()

    asyncio.run(load())
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "target", "namespace": namespace},
        "stringData": {"dsn": dsn},
    }
    _apply(cluster, secret)
    command = ["optischema", "analyze", "--format", "json", "--quiet", "--sample-seconds", "0", "--dsn", "$(DSN)"]
    env = [{"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "target", "key": "dsn"}}}]
    job = objects.job("analyze", namespace, command, env=env)
    _apply(cluster, job)
    try:
        cluster.plane.kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/analyze", "--timeout=120s")
    except ControlPlaneError as error:
        pod = get(cluster, "pods", "-n", namespace, "-l", "job-name=analyze")["items"][0]["metadata"]["name"]
        log = (cluster.kubelet.directory / f"{namespace}_{pod}" / "container.log").read_text()
        raise AssertionError(log) from error
    pod = get(cluster, "pods", "-n", namespace, "-l", "job-name=analyze")["items"][0]["metadata"]["name"]
    report = json.loads((cluster.kubelet.directory / f"{namespace}_{pod}" / "container.log").read_text())
    assert [r["sql"] for r in report["recommendations"] if r["kind"] == "createIndex"] == [
        'CREATE INDEX CONCURRENTLY "t_k_4050c028_idx" ON "public"."t" ("k")'
    ]
