"""A PostgresTarget naming a CloudNativePG ``Cluster``, on the embedded control plane with CloudNativePG's own
Cluster CRD (v1.27.1, as the project generates it with controller-gen and publishes it in its Go module:
``hack/cnpg/crd.sh``) and the operator process. CloudNativePG itself does not run here: the test writes the
Cluster's status as CloudNativePG would, and a local PostgreSQL with TLS stands in for the read-write Service
(its certificate names ``shop-rw.<namespace>.svc``, signed by the CA in the Cluster's ``-ca`` Secret; the
operator's ``hostAddresses`` maps that name to 127.0.0.1, as an operator outside the cluster needs).

What is shown: the target becomes Ready through the Cluster (host from ``status.writeService``, credentials from
``shop-app``, CA from ``shop-ca``, ``verify-full``); an instance without a Pod is named as unreadable (no drop on
partial evidence); a settings finding is a patch of the Cluster, and approving it patches
``spec.postgresql.parameters`` (never ``ALTER SYSTEM``) and waits until the server shows the value (the test then
rolls it out as CloudNativePG would); a change naming another Cluster, or asking ``ALTER SYSTEM`` of this one, is
refused and touches nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import LocalPostgres
from devcluster.cluster import Cluster
from tests.tls import tls_postgres

from .conftest import apply, get, operators, wait_for

REPO = Path(__file__).resolve().parents[2]


def cnpg_crd() -> Path:
    found = subprocess.run([str(REPO / "hack/cnpg/crd.sh")], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        pytest.fail(f"CloudNativePG's CRD could not be fetched (make install does it): {found.stderr.strip()}")
    return Path(found.stdout.strip())


class Server:
    def __init__(self, pg: LocalPostgres, ca: str) -> None:
        self.pg, self.ca = pg, ca


@pytest.fixture
def server(namespace: str) -> Iterator[Server]:
    """PostgreSQL with TLS whose certificate names the Cluster's Services (as CloudNativePG's does), the app
    database ``shop`` with a little workload, ``effective_cache_size`` low in its configuration file (a finding)."""
    base = Path(tempfile.mkdtemp(prefix="optischema-cnpg-"))
    names = [f"shop-{kind}.{namespace}.svc" for kind in ("rw", "r", "ro")]
    pg, ca = tls_postgres(
        base,
        names,
        settings={"effective_cache_size": "64MB"},
        hba=["hostssl all app,writer 127.0.0.1/32 scram-sha-256", "host all app,writer 127.0.0.1/32 reject"],
    )
    pg.start()
    pg.psql("CREATE ROLE app LOGIN PASSWORD 'app-pw'; GRANT pg_read_all_stats, pg_monitor TO app")
    pg.psql("CREATE ROLE writer LOGIN SUPERUSER PASSWORD 'writer-pw'")
    pg.psql("CREATE DATABASE shop OWNER app")
    pg.psql("CREATE EXTENSION pg_stat_statements", database="shop")
    pg.psql(
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, amount numeric);"
        "INSERT INTO orders SELECT g, g % 500, g FROM generate_series(1, 20000) g; ANALYZE orders;"
        + "".join(f"SELECT sum(amount) FROM orders WHERE customer_id = {c};" for c in range(20)),
        database="shop",
    )
    try:
        yield Server(pg, ca)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def kubectl(cluster: Cluster, *args: str, input: str | None = None) -> str:
    return str(cluster.plane.kubectl(*args, input=input))


def cnpg_cluster(cluster: Cluster, namespace: str, name: str) -> None:
    """A Cluster as a user writes it, and its status as CloudNativePG writes it once the instances run (the test
    plays CloudNativePG: nothing here runs it)."""
    doc = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"instances": 2, "storage": {"size": "1Gi"}, "postgresql": {"parameters": {"work_mem": "8MB"}}},
    }
    kubectl(cluster, "apply", "-f", "-", input=json.dumps(doc))
    status = {
        "status": {
            "instances": 2,
            "readyInstances": 2,
            "phase": "Cluster in healthy state",
            "currentPrimary": f"{name}-1",
            "targetPrimary": f"{name}-1",
            "instanceNames": [f"{name}-1", f"{name}-2"],
            "writeService": f"{name}-rw",
            "readService": f"{name}-r",
        }
    }
    kubectl(
        cluster,
        "patch",
        "clusters.postgresql.cnpg.io",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )


def opted_in(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"optischema.io/allow": "true"}},
        "stringData": data,
    }


def parameters(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found = get(cluster, "clusters.postgresql.cnpg.io", name, "-n", namespace)
    return dict(((found.get("spec") or {}).get("postgresql") or {}).get("parameters") or {})


def change_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(get(cluster, "ixc", name, "-n", namespace).get("status") or {})


def messages(status: dict[str, Any]) -> str:
    return " ".join(c.get("message", "") for c in status.get("conditions", []))


def test_a_target_naming_a_cloudnativepg_cluster_is_ready_and_its_settings_are_cluster_patches(
    cluster: Cluster, namespace: str, server: Server
) -> None:
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(cnpg_crd()))
    wait_for(
        lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (get(cluster, "crd", "clusters.postgresql.cnpg.io").get("status") or {}).get("conditions") or []
        ),
        what="CloudNativePG's Cluster CRD established",
    )
    cnpg_cluster(cluster, namespace, "shop")
    cnpg_cluster(cluster, namespace, "billing")  # another team's Cluster in the namespace
    apply(cluster, opted_in(namespace, "shop-app", {"username": "app", "password": "app-pw"}))
    apply(cluster, opted_in(namespace, "shop-ca", {"ca.crt": server.ca}))
    apply(cluster, opted_in(namespace, "shop-writer", {"username": "writer", "password": "writer-pw"}))
    target = {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "PostgresTarget",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {
            "connection": {
                "cluster": {"name": "shop"},
                "port": server.pg.port,
                "database": "shop",
                "connectTimeoutSeconds": 3,
                "writeCredentialsSecret": {"name": "shop-writer"},
            },
            "analysis": {"minCalls": 1, "unusedIndexMinStatisticsAge": "0s"},
            "policy": {
                "allowedKinds": ["createIndex", "analyze", "setting"],
                "allowImmediate": True,
                "verification": {"observeSeconds": 2, "minCalls": 1000},
            },
            "maintenanceWindows": [{"days": ["Sun"], "start": "02:00", "duration": "1h", "timeZone": "UTC"}],
            "sandbox": {"enabled": False},
        },
    }
    addresses = json.dumps({f"shop-rw.{namespace}.svc": "127.0.0.1"})
    with operators(cluster, namespace, "cnpg", OPTISCHEMA_HOST_ADDRESSES=addresses) as start:
        start()
        apply(cluster, target)
        status = wait_for(
            lambda: (
                (s := get(cluster, "pgt", "shop", "-n", namespace).get("status") or {})
                .get("lastAnalysis", {})
                .get("completionTime")
                and s
            ),
            timeout=120,
            what="the target's first analysis",
        )
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", ready
        assert "connected to PostgreSQL" in ready["message"]
        # shop-2 has no Pod (CloudNativePG does not run here): unreadable, so no index is dropped on its account.
        assert "shop-2" in status["lastAnalysis"]["message"], status["lastAnalysis"]

        recommendation = wait_for(
            lambda: next(
                (
                    i
                    for i in get(cluster, "trec", "-n", namespace)["items"]
                    if i["spec"]["kind"] == "setting"
                    and i["spec"]["change"]["setting"]["name"] == "effective_cache_size"
                ),
                None,
            ),
            timeout=60,
            what="the effective_cache_size recommendation",
        )
        setting = recommendation["spec"]["change"]["setting"]
        assert setting["cluster"] == "shop"
        sql = recommendation["spec"]["sql"]
        assert all(line.startswith("-- ") for line in sql.splitlines()), sql
        assert "kubectl patch clusters.postgresql.cnpg.io shop --type merge" in sql
        assert "ALTER SYSTEM SET" not in sql

        # Attacks first: another Cluster, ALTER SYSTEM on this one, and this one before its owners opted in (whoever
        # may write a target and an IndexChange must not get a Cluster patched): each refused, nothing touched.
        for name, forged, refusal in (
            ("other-cluster", {**setting, "cluster": "billing"}, "spec.setting.cluster"),
            ("alter-system", {k: v for k, v in setting.items() if k != "cluster"}, "spec.setting.cluster"),
            ("not-opted-in", setting, "has not opted in to having its parameters patched"),
        ):
            apply(
                cluster,
                {
                    "apiVersion": "optischema.io/v1alpha1",
                    "kind": "IndexChange",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {
                        "targetRef": {"name": "shop"},
                        "operation": "setting",
                        "setting": forged,
                        "schedule": "immediate",
                    },
                },
            )
            refused = wait_for(
                lambda name=name: (s := change_status(cluster, namespace, name)).get("phase") == "Failed" and s,
                what=f"IndexChange {name} refused",
            )
            assert refusal in messages(refused), refused
        assert parameters(cluster, namespace, "billing") == {"work_mem": "8MB"}
        assert parameters(cluster, namespace, "shop") == {"work_mem": "8MB"}
        assert server.pg.psql("SHOW effective_cache_size", database="shop").strip() == "64MB"

        kubectl(cluster, "label", "clusters.postgresql.cnpg.io", "shop", "-n", namespace, "optischema.io/allow=true")
        name = recommendation["metadata"]["name"]
        exported = subprocess.run(
            [sys.executable, "-m", "optischema.cli.plugin", "-n", namespace, "export", name],
            env={**os.environ, "KUBECONFIG": str(cluster.plane.kubeconfig())},
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        manifest = yaml.safe_load(exported.stdout)  # the Git change: a patch of the Cluster's manifest
        assert manifest["kind"] == "Cluster"
        assert manifest["metadata"] == {"name": "shop", "namespace": namespace}
        assert manifest["spec"] == {"postgresql": {"parameters": {"effective_cache_size": setting["value"]}}}

        approve = {"spec": {"approval": {"state": "Approved", "reason": "reviewed", "when": "immediate"}}}
        kubectl(cluster, "patch", "trec", name, "-n", namespace, "--type", "merge", "-p", json.dumps(approve))
        wait_for(
            lambda: parameters(cluster, namespace, "shop").get("effective_cache_size") == setting["value"],
            timeout=60,
            what="the Cluster patched",
        )
        assert parameters(cluster, namespace, "shop")["work_mem"] == "8MB"  # a merge patch: the rest is kept
        pending = wait_for(
            lambda: next(
                (
                    c
                    for c in change_status(cluster, namespace, name).get("conditions", [])
                    if c.get("reason") == "RolloutPending"
                ),
                None,
            ),
            what="the change waiting for CloudNativePG's rollout",
        )
        assert "waiting for CloudNativePG to roll out" in pending["message"]
        assert change_status(cluster, namespace, name)["phase"] == "Applying"
        # CloudNativePG's part: the parameter written to the instances' configuration and reloaded.
        server.pg.psql(f"ALTER SYSTEM SET effective_cache_size = '{setting['value']}'")
        server.pg.psql("SELECT pg_reload_conf()")
        done = wait_for(
            lambda: (s := change_status(cluster, namespace, name)).get("phase") in ("Applied", "Failed") and s,
            timeout=60,
            what="the change applied",
        )
        assert done["phase"] == "Applied", done
        assert done["replacedSetting"] == {"value": "64MB", "source": "default"}  # the Cluster had none
        assert '"effective_cache_size":null' in done["rollbackSql"]  # the undo removes it from the Cluster
