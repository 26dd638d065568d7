"""Sandbox pods and analysis Jobs in a namespace that enforces Pod Security "restricted".

The embedded API server runs the PodSecurity admission plugin (on by default): a namespace labelled
``pod-security.kubernetes.io/enforce=restricted`` refuses any Pod that could run as root, keeps a capability, may
escalate or has no seccomp profile. The control comes first: such a pod — the sandbox pod as it was — is refused
there. Then a real sandbox benchmark runs end to end in that namespace (the process kubelet serves the pod), from an
image pinned cluster-wide by digest, and the analysis Job's pod is admitted (server-side dry run).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from devcluster.cluster import Cluster
from optischema.kube.jobs import analysis_job

from . import objects
from .conftest import apply, get, operators, secret, target, wait_for
from .test_sandbox import SANDBOX, benchmarked, sandbox_objects

pytestmark = pytest.mark.k8s

#: The sandbox image pinned cluster-wide for PostgreSQL 15 (a private registry, by digest).
PINNED = "registry.example/mirror/postgres@sha256:" + "5" * 64


@pytest.fixture
def restricted(cluster: Cluster, namespace: str) -> Iterator[str]:
    name = f"{namespace}-restricted"
    cluster.plane.kubectl("create", "namespace", name)
    cluster.plane.kubectl(
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    yield name
    cluster.plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def create(cluster: Cluster, doc: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
    """``kubectl create`` that does not raise: the test reads the API server's answer."""
    return subprocess.run(
        [
            str(cluster.plane.bin / "kubectl"),
            "--kubeconfig",
            str(cluster.plane.kubeconfig()),
            "create",
            *flags,
            "-f",
            "-",
        ],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        check=False,
    )


def former_sandbox_pod(namespace: str) -> dict[str, Any]:
    """The sandbox pod before: runAsUser 999 and no escalation, but no runAsNonRoot, seccomp profile or dropped
    capabilities."""
    pod = objects.postgres_pod("former-sandbox", namespace, "pw")
    pod["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False, "runAsUser": 999}
    pod["spec"]["automountServiceAccountToken"] = False
    return pod


def pod_of(job: dict[str, Any], name: str) -> dict[str, Any]:
    """The Pod the Job controller would make from ``job``'s template."""
    template = job["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": job["metadata"]["namespace"], "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


@contextmanager
def sandbox_pods_seen(cluster: Cluster, namespace: str) -> Iterator[dict[str, dict[str, Any]]]:
    """Every sandbox pod seen while the block runs, by name (polled: they are removed after their benchmark)."""
    seen: dict[str, dict[str, Any]] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            pods = json.loads(cluster.plane.kubectl("get", "pods", "-n", namespace, "-l", SANDBOX, "-o", "json"))
            for pod in pods["items"]:
                seen.setdefault(pod["metadata"]["name"], pod)
            stop.wait(0.3)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=10)


def test_the_namespace_refuses_a_pod_that_is_not_restricted(cluster: Cluster, restricted: str) -> None:
    """The control: the label is enforced here, so what passes below passes because it is restricted."""
    for pod in (objects.postgres_pod("plain", restricted, "pw"), former_sandbox_pod(restricted)):
        answer = create(cluster, pod)
        assert answer.returncode != 0
        assert 'violates PodSecurity "restricted:latest"' in answer.stderr, answer.stderr
        assert "seccompProfile" in answer.stderr, answer.stderr
        assert "capabilities" in answer.stderr, answer.stderr
    assert get(cluster, "pods", "-n", restricted)["items"] == []  # nothing was created


def test_the_analysis_jobs_pod_is_admitted_under_restricted(cluster: Cluster, restricted: str) -> None:
    owner = {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "PostgresTarget",
        "metadata": {"name": "shop", "namespace": restricted, "uid": "00000000-0000-0000-0000-000000000001"},
        "spec": {"analysis": {"runner": "job"}},
    }
    job = analysis_job(
        owner, image="ghcr.io/example/optischema:dev", service_account="default", sample_seconds=0, token="t"
    )
    answer = create(cluster, pod_of(job, "analysis-dry-run"), "--dry-run=server")
    assert answer.returncode == 0, answer.stderr
    # The Job object too (PodSecurity only warns on workload objects: no warning is printed).
    job["metadata"].pop("ownerReferences")
    answer = create(cluster, job, "--dry-run=server")
    assert answer.returncode == 0, answer.stderr
    assert "violate" not in answer.stderr, answer.stderr
    assert get(cluster, "jobs,pods", "-n", restricted)["items"] == []  # a dry run: nothing was made


def test_a_sandbox_benchmark_runs_in_a_restricted_namespace(
    cluster: Cluster, namespace: str, restricted: str, database: str
) -> None:
    with (
        operators(cluster, restricted, "restricted", OPTISCHEMA_SANDBOX_IMAGES=json.dumps({"15": PINNED})) as start,
        sandbox_pods_seen(cluster, restricted) as seen,
    ):
        apply(cluster, secret(restricted, "pw"))
        apply(cluster, target(restricted, database, sandbox={"dataMode": "sample", "samplePercent": 20}))
        start()
        found = benchmarked(cluster, restricted)
        bench = found[0]["status"]["benchmark"]
        assert bench["speedup"] > 3, json.dumps(bench)
        assert bench["serverVersion"].startswith("15"), bench
        wait_for(lambda: not sandbox_objects(cluster, restricted), timeout=60, what="sandboxes removed")
    assert seen, "a sandbox pod ran"
    for pod in seen.values():
        spec = pod["spec"]
        assert spec["containers"][0]["image"] == PINNED  # the cluster-wide pin, not postgres:15
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        assert all(v["emptyDir"].get("sizeLimit") for v in spec["volumes"])
