"""The real control-plane tier: one embedded cluster (etcd, kube-apiserver, kube-controller-manager, the process
kubelet, our CRDs and roles) per session; every test gets a namespace of its own, really deleted afterwards."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devcluster.cluster import Cluster
from devcluster.controlplane import ControlPlaneError, find_binaries

_names = itertools.count()


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
