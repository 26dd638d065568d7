"""The operator (`optischema run`, a real process) against the real control plane and a PostgreSQL pod."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from devcluster.cluster import Cluster
from optischema.postgres.local import LocalPostgres, free_port
from tests.unit.test_dashboard import exported, used

from .conftest import apply, get, operator_env, operators, secret, target, wait_for


def index_recommendations(
    cluster: Cluster, namespace: str, database: str, doc: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Create the Secret and the target (``doc`` or the default one) and wait for its createIndex findings."""
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, doc or target(namespace, database))
    return wait_for(
        lambda: [i for i in get(cluster, "trec", "-n", namespace)["items"] if i["spec"]["kind"] == "createIndex"],
        timeout=120,
        what="a recommendation",
    )


def condition(cluster: Cluster, namespace: str, kind: str = "Ready") -> dict[str, Any] | None:
    status = get(cluster, "pgt", "shop", "-n", namespace).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def test_a_missing_secret_stalls_the_target_with_its_reason(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    apply(cluster, target(namespace, database))
    stalled = wait_for(lambda: condition(cluster, namespace, "Stalled"), what="Stalled")
    # The operator cannot tell a missing Secret from one that has not opted in without reading it: it says both.
    assert stalled["reason"] == "SecretNotAllowed"
    refused = f"Secret {namespace}/shop-db does not exist or is not labelled optischema.io/allow=true"
    assert refused in stalled["message"]
    assert condition(cluster, namespace)["status"] == "False"  # type: ignore[index]
    # Creating the Secret is enough: the target recovers without a restart.
    apply(cluster, secret(namespace, "pw"))
    ready = wait_for(lambda: (c := condition(cluster, namespace)) and c["status"] == "True" and c, what="Ready")
    assert ready["reason"] == "Connected"
    assert condition(cluster, namespace, "Stalled") is None


def test_a_wrong_password_stalls_and_a_corrected_secret_recovers(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    apply(cluster, secret(namespace, "wrong"))
    apply(cluster, target(namespace, database))
    stalled = wait_for(lambda: condition(cluster, namespace, "Stalled"), what="Stalled")
    assert stalled["reason"] == "AuthenticationFailed"
    apply(cluster, secret(namespace, "pw"))
    wait_for(lambda: (c := condition(cluster, namespace)) and c["status"] == "True", what="Ready")


def test_recommendations_appear_are_stable_and_approval_creates_an_index_change(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, target(namespace, database))
    items = wait_for(lambda: get(cluster, "trec", "-n", namespace)["items"], timeout=90, what="recommendations")
    # The recommendations are written before the analysis records itself in the target's status.
    status = wait_for(
        lambda: (s := get(cluster, "pgt", "shop", "-n", namespace)["status"]).get("lastAnalysis") and s,
        timeout=30,
        what="lastAnalysis",
    )
    assert status["database"]["serverVersion"].startswith("15.")
    assert {"name": "hypopg", "version": "1.3.1"} in status["database"]["extensions"]
    assert status["lastAnalysis"]["outcome"] == "Succeeded"
    window = datetime.fromisoformat(status["nextWindowStart"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (window.strftime("%a %H:%M"), status["nextWindowEnd"] > status["nextWindowStart"]) == ("Sun 02:00", True)
    creates = [i for i in items if i["spec"]["kind"] == "createIndex"]
    assert [i["spec"]["sql"] for i in creates] == [
        'CREATE INDEX CONCURRENTLY "invoices_customer_id_fee5aa1c_idx" ON "public"."invoices" ("customer_id") '
        'INCLUDE ("amount")'
    ]
    recommendation = creates[0]
    name = recommendation["metadata"]["name"]
    assert name.startswith("shop-createindex-")
    assert recommendation["metadata"]["ownerReferences"][0]["kind"] == "PostgresTarget"
    wait_for(
        lambda: (get(cluster, "trec", name, "-n", namespace).get("status") or {}).get("phase") == "AwaitingApproval",
        what="AwaitingApproval",
    )

    # An on-demand re-analysis finds the same thing: same names, no duplicates.
    names = sorted(i["metadata"]["name"] for i in items)
    cluster.plane.kubectl("annotate", "pgt", "shop", "-n", namespace, "optischema.io/analyze-requested=1")
    wait_for(
        lambda: get(cluster, "pgt", "shop", "-n", namespace)["status"]["lastAnalysis"].get("requested") == "1",
        timeout=60,
        what="the requested analysis",
    )
    again = get(cluster, "trec", "-n", namespace)["items"]
    assert set(names) <= {i["metadata"]["name"] for i in again}  # found again under the same names
    assert len([i for i in again if i["spec"]["kind"] == "createIndex"]) == 1  # never duplicated

    approve = {"spec": {"approval": {"state": "Approved", "reason": "reviewed", "when": "nextWindow"}}}
    cluster.plane.kubectl("patch", "trec", name, "-n", namespace, "--type", "merge", "-p", json.dumps(approve))
    change = wait_for(lambda: get(cluster, "ixc", "-n", namespace)["items"], what="the IndexChange")[0]
    assert change["metadata"]["name"] == name
    assert change["metadata"]["ownerReferences"][0]["name"] == name
    assert change["spec"]["operation"] == "create"
    assert change["spec"]["recommendationRef"] == {"name": name}
    accepted = wait_for(
        lambda: (get(cluster, "ixc", name, "-n", namespace).get("status") or {}).get("phase"),
        what="the IndexChange to be admitted",
    )
    assert accepted == "WaitingForWindow"
    assert get(cluster, "ixc", name, "-n", namespace)["status"]["sql"] == recommendation["spec"]["sql"]
    assert get(cluster, "trec", name, "-n", namespace)["status"]["indexChangeRef"] == {"name": name}


def git_change(namespace: str, name: str, target_name: str = "shop", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "IndexChange",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"name": target_name},
            "operation": "create",
            "index": {"table": "invoices", "columns": [{"name": "customer_id"}]},
            **spec,
        },
    }


def verdict(cluster: Cluster, namespace: str, name: str) -> tuple[str, str, str]:
    status = wait_for(lambda: get(cluster, "ixc", name, "-n", namespace).get("status"), what=f"a verdict on {name}")
    ready = next(c for c in status["conditions"] if c["type"] in ("Stalled", "Ready"))
    return status["phase"], ready["reason"], ready["message"]


def test_git_index_changes_are_checked_against_policy_identity_budget_and_namespace(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    apply(cluster, secret(namespace, "pw"))
    doc = target(namespace, database)  # default policy: createIndex and analyze only
    doc["spec"]["policy"] = {"indexStorageBudget": "3Mi"}
    apply(cluster, doc)
    identity = wait_for(
        lambda: ((get(cluster, "pgt", "shop", "-n", namespace).get("status") or {}).get("database") or {}).get(
            "systemIdentifier"
        ),
        what="the database identity",
    )
    drop = git_change(namespace, "drop-pk", operation="drop")
    drop["spec"]["index"] = {"table": "invoices", "name": "invoices_pkey", "columns": [{"name": "id"}]}
    apply(cluster, drop)
    apply(cluster, git_change(namespace, "elsewhere", systemIdentifier="12345"))
    apply(cluster, git_change(namespace, "no-table", index={"table": "nope", "columns": [{"name": "id"}]}))
    apply(cluster, git_change(namespace, "fits", systemIdentifier=identity))

    phase, reason, message = verdict(cluster, namespace, "drop-pk")
    assert (phase, reason) == ("Failed", "PolicyViolation")
    assert "spec.operation: the target's policy does not allow dropIndex" in message
    phase, reason, message = verdict(cluster, namespace, "elsewhere")
    assert (phase, reason) == ("Failed", "DatabaseMismatch")
    assert f"written for database 12345, but target shop now points at database {identity}" in message
    phase, reason, message = verdict(cluster, namespace, "no-table")
    assert (phase, reason) == ("Failed", "TableNotFound")
    assert 'relation "public.nope" does not exist' in message
    assert verdict(cluster, namespace, "fits")[:2] == ("WaitingForWindow", "WaitingForWindow")
    fits = get(cluster, "ixc", "fits", "-n", namespace)["status"]
    assert 1_000_000 < fits["estimatedBytes"] < 3 * 1024 * 1024  # 100,000 bigint keys

    # The budget now holds "fits"; a second index of the same size does not fit.
    over = git_change(namespace, "over", index={"table": "invoices", "columns": [{"name": "amount"}]})
    apply(cluster, over)
    phase, reason, message = verdict(cluster, namespace, "over")
    assert (phase, reason) == ("Failed", "OverBudget")
    assert "of the target's indexStorageBudget (3Mi) is already committed" in message

    # A change in another namespace cannot reach this target.
    other = f"{namespace}-other"
    cluster.plane.kubectl("create", "namespace", other)
    try:
        apply(cluster, git_change(other, "reach"))
        phase, reason, message = verdict(cluster, other, "reach")
        assert (phase, reason) == ("Failed", "TargetMismatch")
        assert "spec.targetRef.name: PostgresTarget shop does not exist in this namespace" in message
    finally:
        cluster.plane.kubectl("delete", "namespace", other, "--wait=false")
    # Refusals changed nothing in the database.
    assert get(cluster, "pgt", "shop", "-n", namespace)["status"]["conditions"][0]["status"] == "True"


def plugin(cluster: Cluster, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.plane.kubeconfig(user))}
    return subprocess.run(
        [sys.executable, "-m", "optischema.cli.plugin", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_plugin_approves_as_the_authenticated_user_and_forgery_is_refused(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    for user, role in (("alice", "optischema-viewer"), ("bob", "optischema-approver")):
        cluster.plane.kubectl(
            "create", "rolebinding", f"{user}-{role}", "-n", namespace, f"--clusterrole={role}", f"--user={user}"
        )
    items = index_recommendations(cluster, namespace, database)
    name = items[0]["metadata"]["name"]
    wait_for(
        lambda: (
            "decision"
            in cluster.plane.kubectl("get", "mutatingwebhookconfiguration", "optischema.io", "-o", "yaml", check=False)
        ),
        what="the webhook",
    )

    listed = plugin(cluster, "alice", "-n", namespace, "list")
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout
    assert "Pending" in listed.stdout
    assert "CREATE INDEX CONCURRENTLY" in plugin(cluster, "alice", "-n", namespace, "show", name).stdout

    # A viewer cannot decide; a forged decider is refused by the webhook; the approver's identity is recorded.
    refused = plugin(cluster, "alice", "-n", namespace, "approve", name)
    assert refused.returncode == 1
    assert "forbidden: you may not approve" in refused.stderr
    forged = {"spec": {"approval": {"state": "Approved", "reason": "x", "decidedBy": "carol"}}}
    answer = cluster.plane.kubectl(
        "patch", "trec", name, "-n", namespace, "--type", "merge", "-p", json.dumps(forged), user="bob", check=False
    )
    assert "decidedBy is filled in by the operator" in answer
    approved = plugin(cluster, "bob", "-n", namespace, "approve", name, "--reason", "looks right")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == f"tuningrecommendation/{name} approved by bob"
    decision = get(cluster, "trec", name, "-n", namespace)["spec"]["approval"]
    assert decision["decidedBy"] == "bob"
    assert decision["reason"] == "looks right"
    assert decision["decidedAt"]
    again = plugin(cluster, "bob", "-n", namespace, "reject", name, "--reason", "changed my mind")
    assert again.returncode == 1
    assert "decided once" in again.stderr
    exported = plugin(cluster, "alice", "-n", namespace, "export", name)
    assert "kind: IndexChange" in exported.stdout
    assert "systemIdentifier:" in exported.stdout  # pinned to the database it was reviewed for
    status = plugin(cluster, "alice", "-n", namespace, "status", "shop")
    assert "Ready: True (Connected)" in status.stdout


def test_a_database_that_goes_down_and_comes_back_recovers_without_restart(
    cluster: Cluster, namespace: str, operator: subprocess.Popen[bytes]
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="optischema-downup-"))
    server = LocalPostgres(base_dir=directory).start()  # outside Kubernetes, so it keeps its address across restarts
    try:
        server.psql("CREATE DATABASE shop")
        server.psql("CREATE EXTENSION pg_stat_statements", database="shop")
        server.psql("ALTER ROLE postgres PASSWORD 'pw'")
        apply(cluster, secret(namespace, "pw"))
        doc = target(namespace, "127.0.0.1")
        doc["spec"]["connection"]["port"] = server.port
        apply(cluster, doc)
        wait_for(lambda: (c := condition(cluster, namespace)) and c["status"] == "True", what="Ready")

        server.stop()  # data kept: the directory is ours
        down = wait_for(lambda: (c := condition(cluster, namespace)) and c["status"] == "False" and c, what="down")
        assert down["reason"] == "ConnectionFailed"
        reconciling = condition(cluster, namespace, "Reconciling")
        assert reconciling is not None
        assert reconciling["status"] == "True"
        assert condition(cluster, namespace, "Stalled") is None  # a server that is down may come back by itself

        server.start()
        wait_for(lambda: (c := condition(cluster, namespace)) and c["status"] == "True", what="Ready again")
        assert operator.poll() is None  # the same operator process
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_findings_that_disappear_are_superseded_not_deleted(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    first = index_recommendations(cluster, namespace, database)[0]

    async def change_workload() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres:pw@{database}:5432/shop")
        try:
            await conn.execute("SELECT pg_stat_statements_reset()")
            for amount in range(30):
                await conn.execute(f"SELECT id FROM invoices WHERE amount = {amount} AND customer_id > 4990")
        finally:
            await conn.close()

    asyncio.run(change_workload())
    cluster.plane.kubectl("annotate", "pgt", "shop", "-n", namespace, "optischema.io/analyze-requested=again")
    name = first["metadata"]["name"]
    phase = wait_for(
        lambda: (get(cluster, "trec", name, "-n", namespace).get("status") or {}).get("phase") == "Superseded",
        timeout=60,
        what="Superseded",
    )
    assert phase
    assert get(cluster, "trec", name, "-n", namespace)["spec"]["sql"] == first["spec"]["sql"]  # kept, not deleted


def test_metrics_and_liveness_are_served(cluster: Cluster, namespace: str, database: str) -> None:
    port, health = free_port(), free_port()
    env = operator_env(
        cluster,
        OPTISCHEMA_METRICS_PORT=str(port),
        OPTISCHEMA_LIVENESS_ENDPOINT=f"http://127.0.0.1:{health}/healthz",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "optischema.cli.main", "run", "-n", namespace],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        apply(cluster, secret(namespace, "pw"))
        apply(cluster, target(namespace, database))
        wait_for(lambda: get(cluster, "trec", "-n", namespace)["items"], timeout=90, what="an analysis")

        def scrape() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    return str(response.read().decode())
            except OSError:
                return ""

        text = wait_for(lambda: "optischema_analysis_duration_seconds_count" in (t := scrape()) and t, what="metrics")
        assert f'optischema_target_ready{{namespace="{namespace}",target="shop"}} 1.0' in text
        for where, names in used().items():  # the Grafana board and the alerts query what is really served
            assert not names - exported(text), (where, sorted(names - exported(text)))
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=5) as response:
            assert response.status == 200  # kopf's probe: the operator's event loop answers
        cluster.plane.kubectl("delete", "postgrestargets", "--all", "-n", namespace, "--timeout=60s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_two_replicas_do_the_work_once_and_the_second_takes_over(
    cluster: Cluster, namespace: str, database: str
) -> None:
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": "optischema", "namespace": namespace},
    }
    cluster.plane.kubectl("apply", "-f", "-", input=json.dumps(peering))
    logs, replicas = [], []

    def start(priority: int) -> None:
        log = cluster.plane.dir / f"replica-{priority}-{namespace}.log"
        env = operator_env(cluster, OPTISCHEMA_PRIORITY=str(priority), OPTISCHEMA_PEERING_LIFETIME_SECONDS="10")
        replicas.append(
            subprocess.Popen(
                [sys.executable, "-m", "optischema.cli.main", "run", "--peering", "-n", namespace],
                env=env,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        logs.append(log)

    try:
        start(200)
        apply(cluster, secret(namespace, "pw"))
        apply(cluster, target(namespace, database))
        wait_for(lambda: get(cluster, "trec", "-n", namespace)["items"], timeout=90, what="recommendations")
        start(100)  # a second replica joins the working one (a rolling update, a scale-up)
        wait_for(lambda: "Activity 'configure' succeeded" in logs[1].read_text(), timeout=30, what="it to start")
        time.sleep(8)  # four check periods
        assert "checked" not in logs[1].read_text()  # it waits while the first works
        assert logs[0].read_text().count("checked") >= 3

        replicas[0].terminate()
        replicas[0].wait(timeout=30)
        mark = len(logs[1].read_text())
        wait_for(lambda: "checked" in logs[1].read_text()[mark:], timeout=60, what="the second replica to take over")
    finally:
        # Delete targets while a replica still runs, so that their daemons stop cleanly.
        cluster.plane.kubectl("delete", "postgrestargets", "--all", "-n", namespace, "--timeout=60s", check=False)
        for replica in replicas:
            replica.terminate()
            replica.wait(timeout=30)


def test_the_job_runner_analyses_in_a_job_owned_by_the_target(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    cluster.plane.kubectl("create", "serviceaccount", "optischema-analysis", "-n", namespace)
    cluster.plane.kubectl(
        "create",
        "rolebinding",
        "optischema-analysis",
        "-n",
        namespace,
        "--clusterrole=optischema-analysis",
        f"--serviceaccount={namespace}:optischema-analysis",
    )
    apply(cluster, secret(namespace, "pw"))
    doc = target(namespace, database)
    doc["spec"]["analysis"]["runner"] = "job"
    apply(cluster, doc)
    items = wait_for(lambda: get(cluster, "trec", "-n", namespace)["items"], timeout=120, what="recommendations")
    assert any(i["spec"]["kind"] == "createIndex" for i in items)
    # the Job writes the recommendations first, then its history point, then the outcome
    last = wait_for(
        lambda: (a := get(cluster, "pgt", "shop", "-n", namespace)["status"]["lastAnalysis"]).get("outcome") and a,
        timeout=60,
        what="the Job's outcome",
    )
    assert last["outcome"] == "Succeeded"
    assert last["job"].startswith("shop-analysis-")
    job = get(cluster, "job", last["job"], "-n", namespace)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "PostgresTarget"
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "optischema-analysis"
    cluster.plane.kubectl("wait", "-n", namespace, "--for=condition=Complete", f"job/{last['job']}", "--timeout=60s")
    # the Job's role (manifests/rbac/analysis-job.yaml) lets it keep the statement history too
    history = get(cluster, "statementhistories", "-n", namespace)["items"]
    assert len(history) == 1
    assert "could not be recorded" not in (last.get("message") or "")


def test_the_policy_auto_approves_what_it_allows_and_records_it(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    async def stale_statistics() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres:pw@{database}:5432/shop")
        try:
            await conn.execute("CREATE TABLE events (id int) WITH (autovacuum_enabled = off)")
            await conn.execute("INSERT INTO events SELECT g FROM generate_series(1, 20000) g")
        finally:
            await conn.close()

    asyncio.run(stale_statistics())
    apply(cluster, secret(namespace, "pw"))
    doc = target(namespace, database)
    doc["spec"]["policy"] = {
        "autoApprove": {
            "enabled": True,
            "kinds": ["analyze", "createIndex"],
            "maxRisk": "low",
            "minMeasuredImprovementPercent": 20,
        }
    }
    apply(cluster, doc)
    items = wait_for(
        lambda: [
            i
            for i in get(cluster, "trec", "-n", namespace)["items"]
            if i["spec"]["kind"] == "analyze" and i["spec"]["change"]["analyze"]["table"] == "events"
        ],
        timeout=90,
        what="the ANALYZE finding",
    )
    approval = items[0]["spec"]["approval"]
    assert approval["state"] == "Approved"
    assert approval["decidedBy"] == "policy:shop"
    creates = [i for i in get(cluster, "trec", "-n", namespace)["items"] if i["spec"]["kind"] == "createIndex"]
    assert creates
    assert all(i["spec"]["approval"]["state"] == "Pending" for i in creates)  # not measured yet: a person decides


def test_an_operator_killed_mid_analysis_leaves_no_duplicates(cluster: Cluster, namespace: str, database: str) -> None:
    # The analysis samples activity for 6 s: time to kill the operator in the middle of it.
    with operators(cluster, namespace, "killed", OPTISCHEMA_SAMPLE_SECONDS="6") as start:
        first = start()
        apply(cluster, secret(namespace, "pw"))
        apply(cluster, target(namespace, database))
        wait_for(lambda: "checked" in start.log.read_text(), timeout=60, what="the first check")
        time.sleep(2)  # inside the analysis's sampling
        first.kill()  # SIGKILL: no clean-up of any kind
        first.wait(timeout=10)
        assert not get(cluster, "trec", "-n", namespace)["items"], "killed before it recorded anything"
        start()
        items = wait_for(lambda: get(cluster, "trec", "-n", namespace)["items"], timeout=90, what="recommendations")
        wait_for(
            lambda: get(cluster, "pgt", "shop", "-n", namespace)["status"].get("lastAnalysis", {}).get("outcome"),
            what="the analysis to be recorded",
        )
        time.sleep(3)  # a check period: nothing more is created
        items = get(cluster, "trec", "-n", namespace)["items"]
        changes = [i["spec"].get("sql") or i["metadata"]["name"] for i in items]
        assert len(changes) == len(set(changes)), changes
        assert [i["spec"]["kind"] for i in items].count("createIndex") == 1
