"""The real control-plane tier: one embedded cluster (etcd, kube-apiserver, kube-controller-manager, the process
kubelet, our CRDs and roles) per session; every test gets a namespace of its own, really deleted afterwards."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from devcluster.cluster import Cluster
from devcluster.controlplane import ControlPlaneError, find_binaries
from optischema.postgres.local import free_port

from . import objects

_names = itertools.count()
#: Operator logs of the k8s tests, kept after the session for a post-mortem.
LOGS = Path(tempfile.gettempdir()) / "optischema-test-logs"


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    try:
        find_binaries(build=shutil.which("go") is not None)
    except ControlPlaneError as error:
        if shutil.which("go") is None:
            pytest.skip(f"SKIPPED LOUDLY: the k8s tier needs the control-plane binaries: {error}")
        raise
    with Cluster() as running:
        yield running
        # Each test's namespace was deleted without waiting; all of them must really be gone now.
        wait_for(lambda: not _test_namespaces(running), timeout=180, what=f"namespaces {_test_namespaces(running)}")


def _test_namespaces(cluster: Cluster) -> list[str]:
    names = cluster.plane.kubectl("get", "namespaces", "-o", "name").split()
    return [n for n in names if n.startswith("namespace/t") and "-" in n]


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t{next(_names)}-{int(time.time()) % 100000}"
    cluster.plane.kubectl("create", "namespace", name)
    yield name
    cluster.plane.kubectl("delete", "namespace", name, "--wait=false")


def get(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.plane.kubectl("get", *args, "-o", "json"))


def wait_for(condition: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# -- the operator and its database, shared by test_operator and test_apply ----------------------------------

WORKLOAD = """
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE EXTENSION IF NOT EXISTS hypopg;
CREATE TABLE invoices (id bigint PRIMARY KEY, customer_id bigint NOT NULL, amount numeric NOT NULL);
INSERT INTO invoices SELECT g, g % 5000, g % 100 FROM generate_series(1, 100000) g;
VACUUM ANALYZE invoices;
"""


def apply(cluster: Cluster, doc: dict[str, Any]) -> None:
    cluster.plane.kubectl("apply", "-f", "-", input=json.dumps(doc))


@pytest.fixture
def database(cluster: Cluster, namespace: str) -> str:
    """A PostgreSQL pod with a small workload recorded in pg_stat_statements; its pod IP."""
    apply(cluster, objects.postgres_pod("db", namespace, "pw", "shop"))
    cluster.plane.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/db", "--timeout=60s")
    ip: str = get(cluster, "pod", "db", "-n", namespace)["status"]["podIP"]

    async def load() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres:pw@{ip}:5432/shop")
        try:
            for statement in WORKLOAD.split(";\n"):
                if statement.strip():
                    await conn.execute(statement)
            for customer in range(30):
                await conn.execute(f"SELECT sum(amount) FROM invoices WHERE customer_id = {customer}")
        finally:
            await conn.close()

    asyncio.run(load())
    return ip


def operator_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    """The environment of an operator process under test: admin credentials, no sampling, quick checks. Without a
    webhook port the operator refuses to start unless told it may run insecurely: tests that do not exercise
    admission say so explicitly."""
    return {
        **os.environ,
        "KUBECONFIG": str(cluster.plane.kubeconfig()),
        "OPTISCHEMA_SAMPLE_SECONDS": "0",
        "OPTISCHEMA_CHECK_SECONDS": "2",
        "OPTISCHEMA_LOG_FORMAT": "console",
        **({} if extra.get("OPTISCHEMA_WEBHOOK_PORT") else {"OPTISCHEMA_INSECURE_NO_WEBHOOK": "true"}),
        **extra,
    }


@pytest.fixture
def operator(cluster: Cluster, namespace: str) -> Iterator[subprocess.Popen[bytes]]:
    # The admission webhook on loopback (URL mode; the API server calls it back on 127.0.0.1).
    env = operator_env(cluster, OPTISCHEMA_WEBHOOK_PORT=str(free_port()), OPTISCHEMA_OPERATOR_IDENTITY="admin")
    LOGS.mkdir(exist_ok=True)
    log = (LOGS / f"operator-{namespace}.log").open("wb")
    process = subprocess.Popen(
        # Its own namespace and any "<namespace>-*" a test makes (a glob, as kopf reads them).
        [sys.executable, "-m", "optischema.cli.main", "run", "-n", namespace, "-n", f"{namespace}-*"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process
    # Delete targets and changes while it runs, so that their daemons stop cleanly (no finalizer needs it).
    cluster.plane.kubectl("delete", "indexchanges,postgrestargets", "--all", "-n", namespace, "--timeout=60s")
    process.terminate()
    process.wait(timeout=30)
    # kopf leaves its webhook configuration behind; with the server gone it would refuse every later edit.
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        cluster.plane.kubectl("delete", kind, "optischema.io", "--ignore-not-found")


def target(
    namespace: str, host: str, secret: str = "shop-db", *, sandbox: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The shop target; sandbox benchmarks are off unless asked for (test_sandbox), so that the other tests' timing
    does not depend on sandbox pods."""
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "PostgresTarget",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {
            "connection": {
                "host": host,
                "database": "shop",
                "sslmode": "disable",
                "connectTimeoutSeconds": 3,
                "credentialsSecret": {"name": secret},
            },
            "analysis": {"minCalls": 2},
            "maintenanceWindows": [{"days": ["Sun"], "start": "02:00", "duration": "2h", "timeZone": "Europe/Berlin"}],
            "sandbox": sandbox or {"enabled": False},
        },
    }


def secret(namespace: str, password: str, name: str = "shop-db", *, allow: bool = True) -> dict[str, Any]:
    """The credentials Secret, labelled ``optischema.io/allow: "true"`` (the operator reads no other) unless
    ``allow`` is false (the opt-in tests)."""
    labels = {"optischema.io/allow": "true"} if allow else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "stringData": {"username": "postgres", "password": password},
    }


def allow_secrets(cluster: Cluster, namespace: str, *names: str) -> None:
    """Label Secrets made with ``kubectl create secret`` so that the operator may read them."""
    cluster.plane.kubectl("label", "secret", "-n", namespace, *names, "optischema.io/allow=true", "--overwrite")


@contextmanager
def operators(cluster: Cluster, namespace: str, log_name: str, **env: str) -> Iterator[Callable[[], Any]]:
    """A way to start operator processes one after another (killing them is the test's business), all logging to
    one file; at the end changes and targets are deleted while one still runs (their daemons stop), then all stop."""
    LOGS.mkdir(exist_ok=True)
    log = LOGS / f"{log_name}-{namespace}.log"
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "optischema.cli.main", "run", "-n", namespace],
            env=operator_env(cluster, **env),
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        return process

    start.log = log  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        # Delete IndexChanges and targets while one still runs, so that their daemons stop cleanly.
        cluster.plane.kubectl(
            "delete", "indexchanges,postgrestargets", "--all", "-n", namespace, "--timeout=60s", check=False
        )
        for process in started:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
