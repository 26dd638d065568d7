"""GitOps that passes review and sync: an IndexChange its target would refuse is refused by the validating webhook
before it is stored, so ``kubectl apply --dry-run=server`` in CI (and Argo CD's or Flux's sync) fails on it with the
reason naming the field; a good one is accepted. Real API server, the operator's webhook on loopback, a real
PostgreSQL pod; changes are applied as ``alice`` (a GitOps identity, not the operator's)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devcluster.cluster import Cluster
from tests.gitops import argocd, flux

from .conftest import apply, get, secret, target, wait_for

pytestmark = pytest.mark.k8s

#: A role a GitOps tool (here alice) holds in the namespace: write IndexChanges, nothing else.
ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "gitops"},
    "rules": [
        {
            "apiGroups": ["optischema.io"],
            "resources": ["indexchanges"],
            "verbs": ["get", "list", "watch", "create", "update", "patch"],
        }
    ],
}


def change(namespace: str, name: str, target_name: str = "shop", **spec: Any) -> dict[str, Any]:
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


def kubectl_apply(
    cluster: Cluster, doc: dict[str, Any], *options: str, user: str = "alice"
) -> subprocess.CompletedProcess[str]:
    """``kubectl apply -f -`` exactly as CI runs it, with its exit code, standard output and error."""
    plane = cluster.plane
    return subprocess.run(
        [str(plane.bin / "kubectl"), "--kubeconfig", str(plane.kubeconfig(user)), "apply", *options, "-f", "-"],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stored(cluster: Cluster, namespace: str, name: str) -> bool:
    return "NotFound" not in cluster.plane.kubectl("get", "ixc", name, "-n", namespace, check=False)


@pytest.fixture
def gitops(cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]) -> str:
    """The shop target (3Mi index budget, default kinds: createIndex and analyze) Ready, the operator's webhooks
    registered, and alice allowed to write IndexChanges; the target's database identity."""
    apply(cluster, {**ROLE, "metadata": {"name": "gitops", "namespace": namespace}})
    cluster.plane.kubectl("create", "rolebinding", "alice-gitops", "-n", namespace, "--role=gitops", "--user=alice")
    apply(cluster, secret(namespace, "pw"))
    doc = target(namespace, database)
    doc["spec"]["policy"] = {"indexStorageBudget": "3Mi"}
    apply(cluster, doc)
    identity: str = wait_for(
        lambda: ((get(cluster, "pgt", "shop", "-n", namespace).get("status") or {}).get("database") or {}).get(
            "systemIdentifier"
        ),
        what="the database identity",
    )
    wait_for(
        lambda: (
            "policy.optischema.io"
            in cluster.plane.kubectl(
                "get", "validatingwebhookconfiguration", "optischema.io", "-o", "json", check=False
            )
        ),
        what="the validating webhook",
    )
    return identity


REFUSED = [
    (
        "a kind the policy does not allow",
        {"operation": "drop", "index": {"table": "invoices", "name": "invoices_pkey", "columns": [{"name": "id"}]}},
        ["spec.operation: the target's policy does not allow dropIndex", "(PolicyViolation)"],
    ),
    (
        "immediate, which the policy does not allow",
        {"schedule": "immediate"},
        ["spec.schedule: immediate is not allowed by the target's policy (allowImmediate)", "(PolicyViolation)"],
    ),
    (
        "a table the database does not have",
        {"index": {"table": "nope", "columns": [{"name": "id"}]}},
        ['spec.index: relation "public.nope" does not exist', "(TableNotFound)"],
    ),
    (
        "a column the table does not have",
        {"index": {"table": "invoices", "columns": [{"name": "nope"}]}},
        ["spec.index: ", 'column "nope" does not exist', "(TableNotFound)"],
    ),
    (
        "an unsafe definition",
        {"index": {"table": "invoices", "columns": [{"name": "id"}], "where": "id IN (SELECT 1)"}},
        ["index.where: must not contain a query or a statement", "(InvalidSpec)"],
    ),
    (
        "a database other than the one the change was written for",
        {"systemIdentifier": "12345"},
        ["spec.systemIdentifier: the change was written for database 12345", "(DatabaseMismatch)"],
    ),
]


def test_a_server_side_dry_run_refuses_what_the_target_would_refuse_naming_the_field(
    cluster: Cluster, namespace: str, gitops: str
) -> None:
    for title, spec, expected in REFUSED:
        done = kubectl_apply(cluster, change(namespace, "bad", **spec), "--dry-run=server")
        assert done.returncode != 0, (title, done.stdout)
        assert 'admission webhook "policy.optischema.io" denied the request' in done.stderr, (title, done.stderr)
        for part in expected:
            assert part in done.stderr, (title, done.stderr)
        assert "Traceback" not in done.stderr
        # and a real apply is refused the same way: nothing is stored, so nothing is later marked Failed
        assert kubectl_apply(cluster, change(namespace, "bad", **spec)).returncode != 0, title
        assert not stored(cluster, namespace, "bad"), title

    # A target that does not exist (yet) is a warning, not a refusal: a sync may apply the change before the target
    # (Argo CD orders custom kinds by name), and refusing would fail that whole sync.
    done = kubectl_apply(cluster, change(namespace, "early", "later-target"), "--dry-run=server")
    assert done.returncode == 0, done.stderr
    assert "Warning: spec.targetRef.name: PostgresTarget later-target does not exist in this namespace" in done.stderr

    # A good change passes the dry run (and stores nothing), then the real apply; the operator accepts it.
    good = change(namespace, "fits", systemIdentifier=gitops)
    done = kubectl_apply(cluster, good, "--dry-run=server")
    assert done.returncode == 0, done.stderr
    assert "created (server dry run)" in done.stdout
    assert "Warning" not in done.stderr
    assert not stored(cluster, namespace, "fits")
    assert kubectl_apply(cluster, good).returncode == 0
    wait_for(
        lambda: (get(cluster, "ixc", "fits", "-n", namespace).get("status") or {}).get("phase") == "WaitingForWindow",
        what="fits to be admitted by the operator",
    )
    live = get(cluster, "ixc", "fits", "-n", namespace)
    assert (argocd(live), flux(live)) == ("Healthy", "Healthy")  # scheduled for its window: healthy, not progressing

    # The budget now holds "fits"; a second index of about the same size does not fit.
    over = change(namespace, "over", index={"table": "invoices", "columns": [{"name": "amount"}]})
    done = kubectl_apply(cluster, over, "--dry-run=server")
    assert done.returncode != 0
    assert "of the target's indexStorageBudget (3Mi) is already committed (OverBudget)" in done.stderr
    assert "spec.index: the new index needs about" in done.stderr

    # Only creation is judged: once the policy no longer allows new indexes, a dry-run create is refused, but the
    # stored change can still be applied again and labelled (the operator's status updates are never judged).
    cluster.plane.kubectl(
        "patch", "pgt", "shop", "-n", namespace, "--type", "merge", "-p",
        json.dumps({"spec": {"policy": {"allowedKinds": ["analyze"]}}}),
    )  # fmt: skip
    refused = kubectl_apply(cluster, change(namespace, "later"), "--dry-run=server")
    assert "spec.operation: the target's policy does not allow createIndex" in refused.stderr
    assert kubectl_apply(cluster, good).returncode == 0
    relabelled = json.loads(json.dumps(good))
    relabelled["metadata"]["labels"] = {"team": "shop"}
    done = kubectl_apply(cluster, relabelled)
    assert done.returncode == 0, f"an update is never blocked: {done.stderr}"

    # The operator's own changes (here the operator's identity is admin) are judged when they arrive, where the
    # verdict is recorded on the change (tests/k8s/test_operator.py).
    assert kubectl_apply(cluster, over, user="admin").returncode == 0
    wait_for(
        lambda: (get(cluster, "ixc", "over", "-n", namespace).get("status") or {}).get("phase") == "Failed",
        what="over to be refused by the operator",
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a database that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_a_database_that_does_not_answer_admits_with_a_warning_within_seconds(
    cluster: Cluster, namespace: str, gitops: str, silent_port: int
) -> None:
    hanging = target(namespace, "127.0.0.1")
    hanging["metadata"]["name"] = "hanging"
    hanging["spec"]["connection"] |= {"port": silent_port, "connectTimeoutSeconds": 60}
    hanging["spec"]["policy"] = {"indexStorageBudget": "1Ki"}  # would refuse any index, if it could be asked
    apply(cluster, hanging)

    started = time.monotonic()
    done = kubectl_apply(cluster, change(namespace, "unchecked", "hanging"), "--dry-run=server")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "Warning: IndexChange admitted without its database checks" in done.stderr
    assert "the operator checks it when it arrives" in done.stderr
    assert elapsed < 10, f"the webhook took {elapsed:.1f}s; the target's own connect timeout (60s) is capped"

    # What needs no database is still decided: a kind the policy does not allow is refused at once.
    drop = change(namespace, "drop", "hanging", operation="drop")
    drop["spec"]["index"] = {"table": "invoices", "name": "invoices_pkey", "columns": [{"name": "id"}]}
    done = kubectl_apply(cluster, drop, "--dry-run=server")
    assert done.returncode != 0
    assert "spec.operation: the target's policy does not allow dropIndex" in done.stderr
