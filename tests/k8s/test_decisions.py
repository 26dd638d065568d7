"""Decisions and audit cannot be laundered: each attack on the real API server with the operator's webhook, and
what did not happen (the object unchanged or never created, no IndexChange, the database untouched).

``admin`` is the operator's identity here (as in the other k8s tests); ``alice`` and ``bob`` are ordinary users
who may write recommendations and IndexChanges in the namespace (RBAC lets them: the webhook is what refuses),
``bob`` is also the approver, and only ``bob`` is among the allowed creators of IndexChanges.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from devcluster.cluster import Cluster
from optischema.postgres.local import free_port

from .conftest import LOGS, apply, get, operator_env, secret, target, wait_for
from .test_alerts import scraped

INDEX = {"table": "invoices", "columns": [{"name": "customer_id"}], "name": "invoices_customer_id_idx"}
CREATE_SQL = 'CREATE INDEX CONCURRENTLY "invoices_customer_id_idx" ON "public"."invoices" ("customer_id")'


@pytest.fixture
def guarded(cluster: Cluster, namespace: str) -> Iterator[int]:
    """The operator with its webhook and an allow-list of IndexChange creators (``bob``), and the users' rights;
    yields the operator's metrics port."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "writer", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["optischema.io"],
                "resources": ["tuningrecommendations", "indexchanges"],
                "verbs": ["get", "list", "create", "update", "patch"],
            }
        ],
    }
    apply(cluster, role)
    for user in ("alice", "bob"):
        cluster.plane.kubectl(
            "create", "rolebinding", f"{user}-writer", "-n", namespace, "--role=writer", f"--user={user}"
        )
    cluster.plane.kubectl(
        "create", "rolebinding", "bob-approver", "-n", namespace, "--clusterrole=optischema-approver", "--user=bob"
    )
    env = operator_env(
        cluster,
        OPTISCHEMA_WEBHOOK_PORT=str(free_port()),
        OPTISCHEMA_OPERATOR_IDENTITY="admin",
        OPTISCHEMA_INDEX_CHANGE_CREATORS='["bob"]',
        OPTISCHEMA_METRICS_PORT=str(metrics := free_port()),
    )
    LOGS.mkdir(exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "optischema.cli.main", "run", "-n", namespace],
        env=env,
        stdout=(LOGS / f"decisions-{namespace}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: (
                "creator"
                in cluster.plane.kubectl(
                    "get", "mutatingwebhookconfiguration", "optischema.io", "-o", "yaml", check=False
                )
            ),
            what="the webhook",
        )
        yield metrics
    finally:
        cluster.plane.kubectl("delete", "indexchanges,postgrestargets", "--all", "-n", namespace, "--timeout=60s")
        process.terminate()
        process.wait(timeout=30)
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            cluster.plane.kubectl("delete", kind, "optischema.io", "--ignore-not-found")


def recommendation(namespace: str, name: str = "shop-createindex-1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "TuningRecommendation",
        "metadata": {"name": name, "namespace": namespace, "labels": {"optischema.io/target": "shop"}},
        "spec": {
            "targetRef": {"name": "shop"},
            "kind": "createIndex",
            "change": {"index": INDEX},
            "sql": CREATE_SQL,
            "rollbackSql": 'DROP INDEX CONCURRENTLY IF EXISTS "public"."invoices_customer_id_idx"',
            "risk": "high",
            "rationale": "as the analysis wrote it",
            **spec,
        },
    }


def create(cluster: Cluster, doc: dict[str, Any], user: str) -> str:
    """Create ``doc`` as ``user``; kubectl's answer (the refusal, when refused)."""
    return cluster.plane.kubectl("create", "-f", "-", input=json.dumps(doc), user=user, check=False)


def patch(cluster: Cluster, plural: str, name: str, namespace: str, body: dict[str, Any], user: str) -> str:
    return cluster.plane.kubectl(
        "patch", plural, name, "-n", namespace, "--type", "merge", "-p", json.dumps(body), user=user, check=False
    )


def names(cluster: Cluster, plural: str, namespace: str) -> list[str]:
    return [i["metadata"]["name"] for i in get(cluster, plural, "-n", namespace)["items"]]


def test_a_recommendation_created_already_approved_by_a_user_is_refused(
    cluster: Cluster, namespace: str, guarded: int
) -> None:
    # The reproduced attack: created Approved with decidedBy: ceo, then applied in the next window.
    ceo = {"state": "Approved", "reason": "ship it", "decidedBy": "ceo", "decidedAt": "2026-11-30T09:00:00Z"}
    answer = create(cluster, recommendation(namespace, approval=ceo), "alice")
    assert "spec.approval.decidedBy is filled in by the operator from the authenticated user" in answer
    answer = create(cluster, recommendation(namespace, approval={"state": "Approved", "reason": "ship it"}), "alice")
    assert "spec.approval.state: a recommendation is created Pending and decided afterwards; user alice" in answer
    # Even undecided, the proposal (risk, evidence, SQL) is the analysis's to write.
    answer = create(cluster, recommendation(namespace, risk="low"), "alice")
    assert "spec.change: TuningRecommendations are written by the operator's analysis; user alice" in answer
    assert names(cluster, "trec", namespace) == []
    assert names(cluster, "ixc", namespace) == []  # nothing to apply in any window


def test_an_approval_reason_edited_after_the_decision_is_refused(
    cluster: Cluster, namespace: str, guarded: int
) -> None:
    assert "created" in create(cluster, recommendation(namespace), "admin")  # as the analysis does
    approve = {"spec": {"approval": {"state": "Approved", "reason": "reviewed with the DBA"}}}
    assert "patched" in patch(cluster, "trec", "shop-createindex-1", namespace, approve, "bob")
    decided = get(cluster, "trec", "shop-createindex-1", "-n", namespace)
    assert decided["spec"]["approval"]["decidedBy"] == "bob"

    for user, edit in (
        ("bob", {"reason": "the ceo said so"}),
        ("bob", {"when": "immediate"}),
        ("alice", {"reason": "laundered"}),
        ("admin", {"reason": "not even the operator"}),
    ):
        answer = patch(cluster, "trec", "shop-createindex-1", namespace, {"spec": {"approval": edit}}, user)
        field = next(iter(edit))
        assert f"spec.approval.{field}: the recommendation was decided once (Approved by bob)" in answer, answer
    after = get(cluster, "trec", "shop-createindex-1", "-n", namespace)
    assert after["spec"] == decided["spec"]


def test_a_user_lowering_the_risk_is_refused(cluster: Cluster, namespace: str, guarded: int) -> None:
    assert "created" in create(cluster, recommendation(namespace), "admin")
    before = get(cluster, "trec", "shop-createindex-1", "-n", namespace)
    for field, value in (
        ("risk", "low"),
        ("evidence", {"costBefore": 1e9, "costAfter": 1.0, "estimatedImprovementPercent": 99.9}),
        ("rationale", "trust me"),
        ("source", "heuristic"),
        ("model", "gpt-9"),
    ):
        answer = patch(cluster, "trec", "shop-createindex-1", namespace, {"spec": {field: value}}, "bob")
        assert f"spec.{field}: is written by the operator's analysis only (user bob changed it" in answer, answer
    after = get(cluster, "trec", "shop-createindex-1", "-n", namespace)
    assert after["spec"] == before["spec"]
    assert after["spec"]["risk"] == "high"


def test_a_spec_sql_that_differs_from_the_rendered_change_is_refused(
    cluster: Cluster, namespace: str, guarded: int
) -> None:
    crafted = recommendation(namespace, sql=CREATE_SQL + "; DROP TABLE invoices")
    answer = create(cluster, crafted, "alice")
    assert f"spec.sql: is not what spec.change renders; expected {CREATE_SQL!r}" in answer, answer
    answer = create(cluster, crafted, "admin")  # not even from the operator's own identity
    assert "spec.sql: is not what spec.change renders" in answer, answer
    assert names(cluster, "trec", namespace) == []


def index_change(namespace: str, name: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "IndexChange",
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": {"targetRef": {"name": "shop"}, "operation": "create", "index": {"table": "invoices",
                 "columns": [{"name": "customer_id"}]}},
    }  # fmt: skip


def test_an_index_change_records_its_creator_and_the_allow_list_holds(
    cluster: Cluster, namespace: str, guarded: int
) -> None:
    assert "created" in create(cluster, index_change(namespace, "by-bob"), "bob")
    made = get(cluster, "ixc", "by-bob", "-n", namespace)
    assert made["metadata"]["annotations"]["optischema.io/created-by"] == "bob"

    answer = create(cluster, index_change(namespace, "by-alice"), "alice")
    assert "user alice may not create IndexChanges (the operator's indexChangeCreators allows: bob)" in answer
    forged = index_change(namespace, "forged", annotations={"optischema.io/created-by": "ceo"})
    answer = create(cluster, forged, "bob")
    assert "optischema.io/created-by]: is recorded by the operator from the authenticated user" in answer
    answer = patch(
        cluster, "ixc", "by-bob", namespace, {"metadata": {"annotations": {"optischema.io/created-by": "x"}}}, "bob"
    )
    assert "records who created the change and cannot be edited" in answer
    assert names(cluster, "ixc", namespace) == ["by-bob"]
    assert (
        get(cluster, "ixc", "by-bob", "-n", namespace)["metadata"]["annotations"]["optischema.io/created-by"] == "bob"
    )


def sql(ip: str, query: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(f"postgresql://postgres:pw@{ip}:5432/shop")
        try:
            return [tuple(r) for r in await conn.fetch(query)]
        finally:
            await conn.close()

    return asyncio.run(run())


def test_a_git_setting_change_out_of_range_fails_naming_the_field_and_the_database_is_untouched(
    cluster: Cluster, namespace: str, database: str, guarded: int
) -> None:
    apply(cluster, secret(namespace, "pw"))
    doc = target(namespace, database)
    doc["spec"]["policy"] = {"allowedKinds": ["createIndex", "analyze", "setting"], "allowImmediate": True}
    apply(cluster, doc)
    before = sql(database, "SHOW work_mem")
    sql(database, "SELECT pg_stat_statements_reset()")
    change = {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "IndexChange",
        "metadata": {"name": "huge-work-mem", "namespace": namespace},
        "spec": {"targetRef": {"name": "shop"}, "operation": "setting", "schedule": "immediate",
                 "setting": {"name": "work_mem", "value": "100TB"}},
    }  # fmt: skip
    apply(cluster, change)
    status = wait_for(
        lambda: (s := get(cluster, "ixc", "huge-work-mem", "-n", namespace).get("status") or {}).get("phase") and s,
        timeout=60,
        what="a verdict",
    )
    assert status["phase"] == "Failed"
    message = next(c for c in status["conditions"] if c["type"] == "Stalled")["message"]
    assert "setting.value: work_mem = '100TB' is outside 64kB to 2GB" in message
    assert sql(database, "SHOW work_mem") == before
    assert sql(database, "SELECT setting FROM pg_file_settings WHERE name = 'work_mem'") == []
    assert sql(database, "SELECT query FROM pg_stat_statements WHERE query ILIKE '%ALTER SYSTEM%'") == []
    # Refused at admission is final: counted, so that OptiSchemaChangeFailed tells someone.
    failed = f'optischema_index_changes_finished_total{{namespace="{namespace}",phase="Failed",target="shop"}} 1.0'
    scraped(guarded, failed, "the refused change counted as Failed")
