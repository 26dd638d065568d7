"""The roles we ship, as the unprivileged users see them (`kubectl auth can-i` with their own tokens)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devcluster.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]

VIEWER = {
    ("get", "postgrestargets"): "yes",
    ("list", "tuningrecommendations"): "yes",
    ("watch", "indexchanges"): "yes",
    ("patch", "tuningrecommendations"): "no",
    ("delete", "tuningrecommendations"): "no",
    ("create", "indexchanges"): "no",
    ("get", "secrets"): "no",
    ("list", "statementhistories"): "yes",  # kubectl optischema report
    ("get", "tuningreports"): "yes",
    ("delete", "statementhistories"): "no",
    ("get", "configmaps"): "no",  # no ConfigMap at all: the history and reports are kinds of their own
    ("list", "configmaps"): "no",
}
APPROVER = {
    ("get", "postgrestargets"): "yes",
    ("patch", "tuningrecommendations"): "yes",
    ("update", "tuningrecommendations"): "yes",
    ("patch", "tuningrecommendations/status"): "no",
    ("delete", "tuningrecommendations"): "no",
    ("patch", "postgrestargets"): "no",
    ("create", "indexchanges"): "no",
    ("get", "secrets"): "no",
    ("list", "tuningreports"): "yes",
    ("get", "configmaps"): "no",
}


@pytest.fixture
def bound(cluster: Cluster, namespace: str) -> str:
    for user, role in (("alice", "optischema-viewer"), ("bob", "optischema-approver")):
        cluster.plane.kubectl(
            "create", "rolebinding", f"{user}-{role}", "-n", namespace, f"--clusterrole={role}", f"--user={user}"
        )
    return namespace


@pytest.mark.parametrize(("user", "expected"), [("alice", VIEWER), ("bob", APPROVER)], ids=["viewer", "approver"])
def test_roles_grant_what_they_should_and_nothing_more(
    cluster: Cluster, bound: str, user: str, expected: dict[tuple[str, str], str]
) -> None:
    for (verb, resource), answer in expected.items():
        name, _, subresource = resource.partition("/")
        kind = name if name in ("secrets", "configmaps") else f"{name}.optischema.io"
        args = ["auth", "can-i", verb, kind, "-n", bound]
        if subresource:
            args.append(f"--subresource={subresource}")
        got = cluster.plane.kubectl(*args, user=user, check=False).strip()
        assert got == answer, f"{user} {verb} {resource}: {got}"


def test_the_roles_do_not_reach_other_namespaces(cluster: Cluster, bound: str) -> None:
    assert (
        cluster.plane.kubectl(
            "auth", "can-i", "get", "postgrestargets.optischema.io", "-n", "default", user="alice", check=False
        ).strip()
        == "no"
    )


def test_the_kustomize_base_builds_and_the_server_accepts_it(cluster: Cluster) -> None:
    """kubectl's own kustomize renders manifests/base, and a server-side dry run accepts every object."""
    rendered = cluster.plane.kubectl("kustomize", str(ROOT / "manifests/base"))
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered) if d)
    assert kinds.count("CustomResourceDefinition") == 7  # our five kinds (two of them records) and kopf's two
    assert "Deployment" in kinds
    # the runner's (pods, Secrets, NetworkPolicies, Jobs) and the operator's own Secrets (Opaque only)
    assert kinds.count("ValidatingAdmissionPolicy") == 5
    cluster.plane.kubectl("create", "namespace", "optischema-system", check=False)  # a dry run needs it to exist
    try:
        done = cluster.plane.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    finally:
        cluster.plane.kubectl("delete", "namespace", "optischema-system", "--wait=false", check=False)
    assert "deployment.apps/optischema created (server dry run)" in done
