"""Sandbox pods on the real control plane: the process kubelet serves each as a local PostgreSQL on 127.0.0.N.

The operator sees Pods that run, as on any cluster: it creates one per recommendation (owned by it, with a
Secret and a NetworkPolicy owned by the Pod), waits for it to be ready, copies the target into it, times the
statements and removes it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest

from devcluster.cluster import Cluster
from tests.receiver import receiver

from .conftest import allow_secrets, apply, get, operators, secret, target, wait_for

pytestmark = pytest.mark.k8s

SANDBOX = "app.kubernetes.io/component=sandbox"
#: A statement that takes 0.1 s a run, so that sandboxes overlap long enough to be seen.
SLOW = "SELECT pg_sleep(0.1) FROM invoices WHERE id = $1"


def query_ids(host: str) -> dict[str, tuple[str, int]]:
    """Normalised statement text → (query id, calls), from the database's pg_stat_statements."""

    async def read() -> dict[str, tuple[str, int]]:
        conn = await asyncpg.connect(f"postgresql://postgres:pw@{host}:5432/shop")
        try:
            rows = await conn.fetch("SELECT queryid::text AS id, query, calls FROM pg_stat_statements")
        finally:
            await conn.close()
        return {r["query"]: (r["id"], r["calls"]) for r in rows}

    return asyncio.run(read())


def run_sql(host: str, *statements: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres:pw@{host}:5432/shop")
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(go())


def recommendation(
    namespace: str, name: str, column: str, statements: list[tuple[str, str, int]], *, target_name: str = "shop"
) -> dict[str, Any]:
    """A createIndex recommendation made by hand (as `optischema analyze --emit-crs` would write it)."""
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "TuningRecommendation",
        "metadata": {"name": name, "namespace": namespace, "labels": {"optischema.io/target": target_name}},
        "spec": {
            "targetRef": {"name": target_name},
            "kind": "createIndex",
            "change": {"index": {"table": "invoices", "columns": [{"name": column}]}},
            "sql": f'CREATE INDEX CONCURRENTLY "invoices_{column}_idx" ON "public"."invoices" ("{column}")',
            "rollbackSql": f'DROP INDEX CONCURRENTLY IF EXISTS "public"."invoices_{column}_idx"',
            "evidence": {
                "statements": [
                    {"queryId": qid, "fingerprint": f"f{qid}".replace("-", "m")[:60], "query": q, "calls": calls}
                    for q, qid, calls in statements
                ]
            },
        },
    }


def created(cluster: Cluster, namespace: str, doc: dict[str, Any]) -> None:
    """Create it and give it the phase analysis would have given it (AwaitingApproval)."""
    apply(cluster, doc)
    cluster.plane.kubectl(
        "patch",
        "tuningrecommendation",
        doc["metadata"]["name"],
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "AwaitingApproval"}}),
    )


def analysed_just_now(cluster: Cluster, namespace: str, name: str) -> None:
    """Record an analysis that has just finished, so that none runs (and supersedes hand-made recommendations)
    before its interval has passed."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {"lastAnalysis": {"startTime": now, "completionTime": now, "outcome": "Succeeded"}}
    cluster.plane.kubectl(
        "patch",
        "postgrestarget",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def benchmarked(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """The createIndex recommendations analysis found, once at least one has its benchmark."""
    found: list[dict[str, Any]] = wait_for(
        lambda: [
            i
            for i in get(cluster, "tuningrecommendations", "-n", namespace)["items"]
            if i["spec"]["kind"] == "createIndex" and (i.get("status") or {}).get("benchmark")
        ],
        timeout=180,
        what="a benchmarked createIndex recommendation",
    )
    return found


def benchmark_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    status = get(cluster, "tuningrecommendation", name, "-n", namespace).get("status") or {}
    return status.get("benchmark")


def condition(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any]:
    status = get(cluster, "tuningrecommendation", name, "-n", namespace).get("status") or {}
    return next(c for c in status.get("conditions", []) if c["type"] == kind)


def sandbox_objects(cluster: Cluster, namespace: str, selector: str = SANDBOX) -> list[str]:
    kinds = "pods,secrets,networkpolicies"
    return cluster.plane.kubectl("get", kinds, "-n", namespace, "-l", selector, "-o", "name").split()


@contextmanager
def watching_pods(cluster: Cluster, namespace: str) -> Iterator[dict[str, int]]:
    """The most sandbox pods seen at once, in all and per target (polled every 0.2 s)."""
    peaks: dict[str, int] = Counter()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            pods = json.loads(cluster.plane.kubectl("get", "pods", "-n", namespace, "-l", SANDBOX, "-o", "json"))
            live = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
            per = Counter(p["metadata"]["labels"]["optischema.io/target"] for p in live)
            peaks["all"] = max(peaks["all"], len(live))
            for name, count in per.items():
                peaks[name] = max(peaks[name], count)
            stop.wait(0.2)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join(timeout=10)


def test_a_recommendation_is_benchmarked_in_a_sandbox_pod_with_a_real_speed_up(
    cluster: Cluster, namespace: str, database: str
) -> None:
    useless_statement = "SELECT sum(amount) FROM invoices WHERE customer_id = $1"
    with operators(cluster, namespace, "sandbox") as start:
        apply(cluster, secret(namespace, "pw"))
        doc = target(namespace, database, sandbox={"dataMode": "sample", "samplePercent": 20})
        # Auto-approval on the measured improvement: the index that helps is approved, the useless one is not.
        rule = {"enabled": True, "kinds": ["createIndex"], "maxRisk": "high", "minMeasuredImprovementPercent": 50}
        doc["spec"]["policy"] = {"autoApprove": rule}
        apply(cluster, doc)
        start()
        # Found by analysis: an index on customer_id, which the statement clearly needs.
        found = benchmarked(cluster, namespace)
        bench = found[0]["status"]["benchmark"]
        assert bench["dataMode"] == "sample", bench
        assert bench["rows"] > 10_000, bench
        assert bench["speedup"] > 3, json.dumps(bench)
        assert bench["improvementPercent"] > 50, bench
        assert bench["p50AfterMs"] < bench["p50BeforeMs"]
        assert bench["serverVersion"].startswith("15"), bench
        name = found[0]["metadata"]["name"]
        measured = condition(cluster, namespace, name, "Benchmarked")
        assert (measured["status"], measured["reason"]) == ("True", "Measured"), measured
        approved = wait_for(
            lambda: (
                (i := get(cluster, "tuningrecommendation", name, "-n", namespace))["spec"]["approval"]["state"]
                == "Approved"
                and i
            ),
            timeout=30,
            what="auto-approval",
        )
        assert approved["spec"]["approval"]["decidedBy"] == "policy:shop"
        assert "measured improvement" in approved["spec"]["approval"]["reason"]
        wait_for(lambda: get(cluster, "indexchange", name, "-n", namespace), timeout=30, what="its IndexChange")

        # Made by hand: an index on amount does nothing for a lookup by customer, and one of its statements is
        # broken; the broken one is recorded and the other still measured.
        ids = query_ids(database)
        qid, calls = ids[useless_statement]
        created(
            cluster,
            namespace,
            recommendation(
                namespace,
                "useless",
                "amount",
                [(useless_statement, qid, calls), ("SELECT nosuch FROM invoices WHERE id = $1", "42", 1)],
            ),
        )
        useless = wait_for(lambda: benchmark_of(cluster, namespace, "useless"), timeout=120, what="its benchmark")
        assert 0.5 < useless["speedup"] < 2.0, json.dumps(useless)
        broken = next(s for s in useless["statements"] if s["queryId"] == "42")
        assert "nosuch" in broken["error"], useless
        assert condition(cluster, namespace, "useless", "Benchmarked")["reason"] == "Measured"
        useless_rec = get(cluster, "tuningrecommendation", "useless", "-n", namespace)
        assert useless_rec["spec"]["approval"]["state"] == "Pending"  # below the rule's 50%
        assert useless_rec["status"]["phase"] == "AwaitingApproval"

        # The sandboxes are gone afterwards (pods, their Secrets and NetworkPolicies).
        wait_for(lambda: not sandbox_objects(cluster, namespace), timeout=60, what="sandboxes removed")


def test_a_measured_recommendation_waiting_for_a_person_is_announced_once(
    cluster: Cluster, namespace: str, database: str
) -> None:
    with operators(cluster, namespace, "sandbox-notify") as start, receiver() as chat:
        apply(cluster, secret(namespace, "pw"))
        cluster.plane.kubectl("create", "secret", "generic", "chat", "-n", namespace,
                              f"--from-literal=url={chat.url('/slack')}")  # fmt: skip
        allow_secrets(cluster, namespace, "chat")  # the operator reads only Secrets that opt in
        doc = target(namespace, database, sandbox={"dataMode": "sample", "samplePercent": 20})
        doc["spec"]["notifications"] = {
            "minMeasuredGainPercent": 50,
            "sinks": [{"type": "slack", "urlSecret": {"name": "chat", "key": "url"}}],
        }
        apply(cluster, doc)
        start()
        found = benchmarked(cluster, namespace)
        name = found[0]["metadata"]["name"]
        assert found[0]["status"]["benchmark"]["improvementPercent"] > 50
        wait_for(lambda: chat.received, timeout=30, what="a Slack message")
        time.sleep(2)
        assert len(chat.received) == 1
        blocks = json.dumps(json.loads(chat.received[0]["body"])["blocks"])
        assert f"kubectl optischema approve {name} -n {namespace}" in blocks
        assert "Measured in a sandbox" in blocks


def test_a_sandbox_that_never_becomes_ready_times_out_and_is_removed(
    cluster: Cluster, namespace: str, database: str
) -> None:
    with operators(cluster, namespace, "sandbox-unready", OPTISCHEMA_SANDBOX_READY_TIMEOUT_SECONDS="5") as start:
        apply(cluster, secret(namespace, "pw"))
        # No node has a terabyte of memory: the pod stays Pending (Unschedulable), as on any cluster.
        sandbox = {"resources": {"requests": {"memory": "1Ti"}}}
        doc = target(namespace, database, sandbox=sandbox)
        doc["spec"]["analysis"]["interval"] = "168h"
        apply(cluster, doc)
        analysed_just_now(cluster, namespace, "shop")
        start()
        qid, calls = query_ids(database)["SELECT sum(amount) FROM invoices WHERE customer_id = $1"]
        created(
            cluster,
            namespace,
            recommendation(
                namespace,
                "stuck",
                "customer_id",
                [("SELECT sum(amount) FROM invoices WHERE customer_id = $1", qid, calls)],
            ),
        )
        bench = wait_for(lambda: benchmark_of(cluster, namespace, "stuck"), timeout=90, what="the failed benchmark")
        assert "not ready within 5s" in bench["error"], bench
        assert "Unschedulable" in bench["error"], bench
        assert "speedup" not in bench
        failed = condition(cluster, namespace, "stuck", "Benchmarked")
        assert (failed["status"], failed["reason"]) == ("False", "SandboxNotReady"), failed
        assert get(cluster, "tuningrecommendation", "stuck", "-n", namespace)["status"]["phase"] == "AwaitingApproval"
        wait_for(lambda: not sandbox_objects(cluster, namespace), timeout=30, what="the stuck pod removed")
        events = cluster.plane.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=stuck", "-o", "json"
        )
        assert any(e["reason"] == "SandboxNotReady" for e in json.loads(events)["items"]), events


def test_concurrency_limits_hold_per_target_and_across_the_cluster(
    cluster: Cluster, namespace: str, database: str
) -> None:
    qid, calls = "7", 10  # a statement the application might run; it need not have run yet
    with operators(cluster, namespace, "sandbox-limits", OPTISCHEMA_MAX_SANDBOXES="2") as start:
        apply(cluster, secret(namespace, "pw"))
        one, two = target(namespace, database, sandbox={"maxConcurrent": 1}), target(namespace, database)
        two["metadata"]["name"], two["spec"]["sandbox"] = "shop2", {"maxConcurrent": 2}
        for doc in (one, two):
            doc["spec"]["analysis"]["interval"] = "168h"
            apply(cluster, doc)
            analysed_just_now(cluster, namespace, doc["metadata"]["name"])
        with watching_pods(cluster, namespace) as peaks:
            start()
            names = []
            for owner in ("shop", "shop2"):
                for number in range(3):
                    name = f"{owner}-slow-{number}"
                    names.append(name)
                    created(
                        cluster,
                        namespace,
                        recommendation(namespace, name, "customer_id", [(SLOW, qid, calls)], target_name=owner),
                    )
            wait_for(
                lambda: all(benchmark_of(cluster, namespace, n) for n in names), timeout=300, what="six benchmarks"
            )
        assert peaks["all"] == 2, peaks  # the cluster-wide limit was reached, never passed
        assert peaks["shop"] == 1, peaks
        assert peaks["shop2"] <= 2, peaks
        for name in names:
            assert benchmark_of(cluster, namespace, name)["speedup"] > 0


def test_deleting_the_recommendation_deletes_its_sandbox(cluster: Cluster, namespace: str, database: str) -> None:
    qid, calls = "7", 10  # a statement the application might run; it need not have run yet
    with operators(cluster, namespace, "sandbox-delete") as start:
        apply(cluster, secret(namespace, "pw"))
        doc = target(namespace, database, sandbox={"enabled": True})
        doc["spec"]["analysis"]["interval"] = "168h"
        apply(cluster, doc)
        analysed_just_now(cluster, namespace, "shop")
        start()
        created(cluster, namespace, recommendation(namespace, "doomed", "customer_id", [(SLOW, qid, calls)]))
        doomed = "optischema.io/recommendation=doomed"
        pod = wait_for(
            lambda: [
                p
                for p in get(cluster, "pods", "-n", namespace, "-l", doomed)["items"]
                if p["status"].get("phase") == "Running"
            ],
            timeout=60,
            what="a running sandbox pod",
        )[0]
        name = pod["metadata"]["name"]
        assert pod["metadata"]["ownerReferences"][0]["name"] == "doomed"
        assert pod["spec"]["activeDeadlineSeconds"] == 1800
        assert pod["status"]["podIP"].startswith("127.0.0.")
        owned = get(cluster, "secret", name, "-n", namespace)["metadata"]["ownerReferences"][0]
        assert (owned["kind"], owned["name"]) == ("Pod", name)
        policy = get(cluster, "networkpolicy", name, "-n", namespace)
        assert policy["metadata"]["ownerReferences"][0]["name"] == name
        assert (
            policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            == "operator"
        )
        cluster.plane.kubectl("delete", "tuningrecommendation", "doomed", "-n", namespace, "--wait=false")
        wait_for(lambda: not sandbox_objects(cluster, namespace, doomed), timeout=60, what="the sandbox collected")
        time.sleep(3)  # the operator notices its benchmark lost the sandbox and carries on
        log = start.log.read_text()  # type: ignore[attr-defined]
        assert "Traceback" not in log, log[-3000:]
