"""The chart's RBAC and admission policy on the real API server: `helm template` with the defaults (the release's
namespace watched), applied, then the `kubectl auth can-i` matrix of every identity the chart makes — the operator,
its runner, the analysis Jobs', the sandbox pods' — and of the people roles (alice as viewer, bob as approver, with
their own tokens), printed (`pytest -s`) and asserted cell by cell: whatever is not granted on purpose is denied.
Then the attacks a taken-over operator would try through its runner, refused by the ValidatingAdmissionPolicy.

Only the identities are applied (ServiceAccounts, roles, bindings, policies), not the Deployment: no operator runs
here. The operator running as the chart's identity end to end is tests/k8s/test_chart_install.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from devcluster.cluster import Cluster
from optischema.kube import jobs, sandboxes
from optischema.kube.runner import Runner
from optischema.kube.sandboxes import Pods, SandboxError

from .conftest import get, wait_for
from .test_chart_install import helm_binary

ROOT = Path(__file__).resolve().parents[2]
IDENTITY_KINDS = {
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
CLUSTER_KINDS = "clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding"
IMAGE = "ghcr.io/optischema/optischema-operator:0.1.0"  # the chart's default image (appVersion)


class Release:
    """The chart's identities applied for release ``name`` in ``namespace``."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, f"m{namespace.replace('-', '')}"

    def sa(self, suffix: str = "") -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}{suffix}"

    def kubectl(self, *args: str, user: str = "admin", check: bool = False) -> str:
        return self.cluster.plane.kubectl(*args, user=user, check=check)


@contextmanager
def applied(cluster: Cluster, namespace: str, *sets: str) -> Iterator[Release]:
    """The chart's identities rendered with ``sets`` and applied; the cluster-scoped ones deleted afterwards."""
    chart = Release(cluster, namespace)
    command = [
        helm_binary(),
        "template",
        chart.name,
        str(ROOT / "charts/optischema"),
        "-n",
        namespace,
        "--kube-version",
        "1.36.3",
        "--set",
        "rbac.userRoles=false",
    ]  # the cluster has them (manifests/rbac)
    for value in sets:
        command += ["--set", value]
    rendered = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # fmt: skip
    documents = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in IDENTITY_KINDS]
    assert {d["kind"] for d in documents} == IDENTITY_KINDS
    try:
        cluster.plane.kubectl("apply", "--server-side", "-f", "-",
                              input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))  # fmt: skip
        yield chart
    finally:
        cluster.plane.kubectl("delete", CLUSTER_KINDS, "-l", f"app.kubernetes.io/instance={chart.name}",
                              "--ignore-not-found")  # fmt: skip


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[Release]:
    with applied(cluster, namespace) as chart:
        for user, role in (("alice", "optischema-viewer"), ("bob", "optischema-approver")):
            cluster.plane.kubectl("create", "rolebinding", f"{user}-{role}", "-n", namespace,
                                  f"--clusterrole={role}", f"--user={user}")  # fmt: skip
        # A Secret and a ConfigMap of the application's, which nobody of ours may read or delete.
        cluster.plane.kubectl("create", "secret", "generic", "precious", "-n", namespace, "--from-literal=k=v")
        cluster.plane.kubectl("create", "configmap", "app-config", "-n", namespace, "--from-literal=k=v")
        yield chart


def can_i(release: Release, subject: str, verb: str, resource: str, where: str) -> str:
    """``kubectl auth can-i`` for ``subject``: alice and bob with their own tokens, ServiceAccounts impersonated by the
    administrator. ``resource``: ``kind``, ``kind/name`` or ``kind#subresource``; ``where``: a namespace, ``*``
    for every namespace, empty for a cluster-scoped resource."""
    scope = ["--all-namespaces"] if where == "*" else (["-n", where] if where else [])
    resource, _, subresource = resource.partition("#")  # kind/name is a name: a subresource needs its flag
    scope += [f"--subresource={subresource}"] if subresource else []
    if subject in ("alice", "bob"):
        answer = release.kubectl("auth", "can-i", verb, resource, *scope, user=subject)
    else:
        answer = release.kubectl("auth", "can-i", verb, resource, *scope, f"--as={subject}")
    return answer.strip().splitlines()[0]  # then maybe a warning


SUBJECTS = ("operator", "runner", "analysis", "sandbox", "alice", "bob")
NS = "{ns}"
#: (verb, resource, where) -> who is allowed; every other subject must get "no". NS is the watched namespace.
MATRIX: list[tuple[str, str, str, set[str]]] = [
    # The operator's own resources and the records people read.
    ("get", "postgrestargets.optischema.io", NS, {"operator", "analysis", "alice", "bob"}),
    ("patch", "tuningrecommendations.optischema.io", NS, {"operator", "analysis", "bob"}),
    ("delete", "tuningrecommendations.optischema.io", NS, set()),
    ("patch", "postgrestargets.optischema.io#status", NS, {"operator", "analysis"}),
    ("list", "statementhistories.optischema.io", NS, {"operator", "analysis", "alice", "bob"}),
    ("create", "statementhistories.optischema.io", NS, {"operator", "analysis"}),
    ("get", "tuningreports.optischema.io", NS, {"operator", "alice", "bob"}),
    ("create", "tuningreports.optischema.io", NS, {"operator"}),
    # Pods, Jobs, NetworkPolicies: the runner only, never the operator itself.
    ("create", "pods", NS, {"runner"}),
    ("delete", "pods", NS, {"runner"}),
    ("create", "pods", "kube-system", set()),
    ("create", "pods#exec", NS, set()),
    ("create", "jobs.batch", NS, {"runner"}),
    ("create", "networkpolicies.networking.k8s.io", NS, {"runner"}),
    ("create", "deployments.apps", NS, set()),
    # Impersonation: the runner of the watched namespace, by name, and nobody else.
    ("impersonate", "serviceaccounts/{release}-runner", NS, {"operator"}),
    ("impersonate", "serviceaccounts/default", NS, set()),
    ("impersonate", "serviceaccounts/{release}-analysis", NS, set()),
    ("impersonate", "serviceaccounts/{release}-runner", "default", set()),
    ("impersonate", "users", "", set()),
    ("impersonate", "groups", "", set()),
    # Secrets: in the watched namespace only, where specs name them (read as a list filtered by the opt-in label
    # and the name: RBAC cannot grant by label); never watched, never another namespace, never the whole cluster.
    ("get", "secrets", NS, {"operator", "analysis"}),
    ("list", "secrets", NS, {"operator", "analysis"}),
    ("watch", "secrets", NS, set()),
    ("create", "secrets", NS, {"operator", "runner"}),  # operator: the webhook CA Secret (create has no name)
    ("get", "secrets/{release}-webhook-ca", NS, {"operator", "analysis"}),
    ("get", "secrets", "*", set()),
    ("list", "secrets", "*", set()),
    ("get", "secrets", "kube-system", set()),
    ("get", "secrets", "default", set()),
    # ConfigMaps: the LLM cache by name, no listing; people read none (reports are kinds of their own).
    ("get", "configmaps", NS, {"operator", "analysis"}),
    ("list", "configmaps", NS, set()),
    ("get", "configmaps/app-config", NS, {"operator", "analysis"}),
    ("get", "configmaps/aws-auth", "kube-system", set()),
    ("update", "configmaps/aws-auth", "kube-system", set()),
    # Cluster scope: our two webhook configurations by name, nothing else.
    ("patch", "mutatingwebhookconfigurations/{release}.optischema.io", "", {"operator"}),
    ("patch", "validatingwebhookconfigurations/{release}.optischema.io", "", {"operator"}),
    ("patch", "mutatingwebhookconfigurations/other.example.com", "", set()),
    ("patch", "validatingwebhookconfigurations/other.example.com", "", set()),
    ("create", "validatingwebhookconfigurations", "", set()),
    ("list", "mutatingwebhookconfigurations", "", set()),
    ("delete", "validatingwebhookconfigurations/{release}.optischema.io", "", set()),
    ("patch", "validatingadmissionpolicies/{release}-runner-pods.optischema.io", "", set()),
    ("list", "namespaces", "", set()),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", "", set()),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", set()),
    ("create", "rolebindings.rbac.authorization.k8s.io", NS, set()),
    ("get", "postgrestargets.optischema.io", "default", set()),
    ("create", "pods", "default", set()),
    # The live endpoint (kubectl optischema top): the operator asks the API server the two reviews (they read
    # nothing); people reach the live Service's port through the proxy (the cluster's roles are manifests/rbac, for
    # the release "optischema"), read-only, and no other Service.
    ("create", "tokenreviews.authentication.k8s.io", "", {"operator"}),
    ("create", "subjectaccessreviews.authorization.k8s.io", "", {"operator"}),
    ("get", "services/optischema-live:live#proxy", NS, {"alice", "bob"}),
    ("create", "services/optischema-live:live#proxy", NS, set()),
    ("get", "services/optischema-metrics:metrics#proxy", NS, set()),
    ("get", "services/optischema-live#proxy", NS, set()),
]


def test_the_can_i_matrix_grants_what_the_chart_says_and_denies_the_rest(release: Release) -> None:
    subjects = {
        "operator": release.sa(),
        "runner": release.sa("-runner"),
        "analysis": release.sa("-analysis"),
        "sandbox": release.sa("-sandbox"),
        "alice": "alice",
        "bob": "bob",
    }
    rows, wrong = [], []
    for verb, resource, where, allowed in MATRIX:
        resource = resource.format(release=release.name)
        where = where.format(ns=release.namespace)
        answers = {s: can_i(release, subjects[s], verb, resource, where) for s in SUBJECTS}
        rows.append((f"{verb} {resource}", where or "(cluster)", answers))
        wrong += [(s, verb, resource, where, a) for s, a in answers.items() if a != ("yes" if s in allowed else "no")]
    width = max(len(r[0]) for r in rows)
    print(f"\nkubectl auth can-i, release {release.name} watching {release.namespace}")
    print(f"{'':{width}}  {'namespace':14}" + "".join(f"{s:>10}" for s in SUBJECTS))
    for what, where, answers in rows:
        print(f"{what:{width}}  {where[:14]:14}" + "".join(f"{answers[s]:>10}" for s in SUBJECTS))
    assert not wrong, "\n".join(f"{s} {v} {r} in {w or 'the cluster'}: {a}" for s, v, r, w, a in wrong)


def test_impersonating_the_runner_gives_it_its_service_account_groups(release: Release) -> None:
    """What kube/runner.py relies on: one Impersonate-User header is enough; the API server adds the groups."""
    review = json.loads(release.kubectl("auth", "whoami", f"--as={release.sa('-runner')}", "-o", "json", check=True))
    info = review["status"]["userInfo"]
    assert info["username"] == release.sa("-runner")
    assert set(info["groups"]) == {
        "system:serviceaccounts",
        f"system:serviceaccounts:{release.namespace}",
        "system:authenticated",
    }


# -- the admission policy: what the runner may create, tried as the operator would (its token, impersonating) ------


def sandbox_pod(namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "attack", "namespace": namespace, "labels": {"app.kubernetes.io/component": "sandbox"}},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": "postgres:15"}],
            **spec,
        },
    }


def analysis_job(namespace: str, service_account: str, image: str = IMAGE, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "attack", "namespace": namespace},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": service_account,
                    "containers": [{"name": "analyze", "image": image, "command": ["optischema", "analyze-target"]}],
                    **spec,
                }
            }
        },
    }


def as_operator(release: Release, *args: str, impersonate: str | None = None, body: Any = None) -> str:
    """kubectl with the operator ServiceAccount's own token (as its pod has it), impersonating ``impersonate``."""
    token = release.kubectl("create", "token", release.name, "-n", release.namespace, check=True).strip()
    kubectl = release.cluster.plane.bin / "kubectl"
    command = [str(kubectl), "--kubeconfig", str(release.cluster.plane.kubeconfig()), "--token", token, *args]
    if impersonate:
        command.append(f"--as={impersonate}")
    done = subprocess.run(command, input=None if body is None else json.dumps(body), capture_output=True, text=True)
    return (done.stdout + done.stderr).strip()


def test_the_operator_cannot_create_a_pod_itself_nor_impersonate_another_account(release: Release) -> None:
    pod = sandbox_pod(release.namespace, serviceAccountName=f"{release.name}-sandbox")
    create = ("create", "--dry-run=server", "--validate=false", "-f", "-")  # kubectl's schema download is refused too
    refused = as_operator(release, *create, body=pod)
    assert 'cannot create resource "pods"' in refused, refused
    for other in ("default", f"{release.name}-analysis", release.name):
        refused = as_operator(
            release, *create, body=pod, impersonate=f"system:serviceaccount:{release.namespace}:{other}"
        )
        # v1.36's message names the constrained-impersonation verb it checked first (impersonate-on:serviceaccount:
        # create pods), having found no legacy impersonate right on that ServiceAccount either.
        assert "Forbidden" in refused, (other, refused)
        assert "cannot impersonate" in refused, (other, refused)
    assert not get(release.cluster, "pods", "-n", release.namespace)["items"]  # nothing was created


ATTACKS = [
    # (title, manifest builder, the policy's message), each created as the runner
    ("pod as the default ServiceAccount", lambda r: sandbox_pod(r.namespace, serviceAccountName="default"),
     "creates pods only as ServiceAccount {release}-sandbox"),
    ("pod as the operator's ServiceAccount", lambda r: sandbox_pod(r.namespace, serviceAccountName=r.name),
     "creates pods only as ServiceAccount {release}-sandbox"),
    ("pod as the analysis ServiceAccount", lambda r: sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-analysis"),
     "creates pods only as ServiceAccount {release}-sandbox"),
    ("pod with a token", lambda r: sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-sandbox",
                                               automountServiceAccountToken=True),
     "only without a ServiceAccount token"),
    ("pod with a projected token of its own",
     lambda r: sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-sandbox", volumes=[
         {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]),
     "only without a ServiceAccount token"),
    ("pod on the host's network", lambda r: sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-sandbox",
                                                        hostNetwork=True),
     "only without host namespaces"),
    ("privileged pod", lambda r: sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-sandbox", containers=[
         {"name": "main", "image": "postgres:15", "securityContext": {"privileged": True}}]),
     "only without privileged containers"),
    ("pod not labelled as a sandbox",
     lambda r: {**sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-sandbox"),
                "metadata": {"name": "attack", "namespace": r.namespace}},
     "only pods labelled app.kubernetes.io/component=sandbox"),
    ("Job as the default ServiceAccount", lambda r: analysis_job(r.namespace, "default"),
     "creates Jobs only as ServiceAccount {release}-analysis"),
    ("Job as the analysis ServiceAccount with another image",
     lambda r: analysis_job(r.namespace, f"{r.name}-analysis", "attacker/tools:latest"),
     "creates Jobs only of the operator's image"),
    # A hostile review's: the host reached through a container the checks above do not look at, a capability, a
    # volume other than the sandbox's emptyDirs (another Secret, a CSI driver that is handed the pod's identity).
    ("privileged init container", lambda r: sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-sandbox",
                                                        initContainers=[{"name": "init", "image": "postgres:15",
                                                                         "securityContext": {"privileged": True}}]),
     "only without init containers, with emptyDir volumes only"),
    ("container adding CAP_SYS_ADMIN", lambda r: sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-sandbox",
                                                             containers=[{"name": "main", "image": "postgres:15",
                                                                          "securityContext": {"capabilities": {
                                                                              "add": ["SYS_ADMIN"]}}}]),
     "only without privileged containers or added capabilities"),
    ("pod mounting another Secret", lambda r: sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-sandbox", volumes=[
         {"name": "s", "secret": {"secretName": "precious"}}]),
     "only without init containers, with emptyDir volumes only"),
    ("pod with a CSI volume", lambda r: sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-sandbox", volumes=[
         {"name": "c", "csi": {"driver": "secrets-store.csi.k8s.io"}}]),
     "only without init containers, with emptyDir volumes only"),
    ("privileged Job", lambda r: analysis_job(r.namespace, f"{r.name}-analysis", containers=[
         {"name": "analyze", "image": IMAGE, "securityContext": {"privileged": True}}]),
     "creates Jobs only without privileged containers, added capabilities or host namespaces"),
    ("Job adding CAP_SYS_ADMIN", lambda r: analysis_job(r.namespace, f"{r.name}-analysis", containers=[
         {"name": "analyze", "image": IMAGE, "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]),
     "creates Jobs only without privileged containers, added capabilities or host namespaces"),
    ("Job in the host's PID namespace", lambda r: analysis_job(r.namespace, f"{r.name}-analysis", hostPID=True),
     "creates Jobs only without privileged containers, added capabilities or host namespaces"),
    ("Job mounting another Secret", lambda r: analysis_job(r.namespace, f"{r.name}-analysis", volumes=[
         {"name": "s", "secret": {"secretName": "precious"}}]),
     "with emptyDir volumes only"),
    # What Pod Security "baseline" forbids besides: an SELinux type (spc_t runs unconfined), a port of the node.
    ("pod of the SELinux type spc_t", lambda r: sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-sandbox",
                                                             securityContext={"seLinuxOptions": {"type": "spc_t"}}),
     "only without an SELinux type or a host port"),
    ("pod binding a port of the node", lambda r: sandbox_pod(r.namespace, serviceAccountName=f"{r.name}-sandbox",
                                                              containers=[{"name": "main", "image": "postgres:15",
                                                                           "ports": [{"containerPort": 5432,
                                                                                      "hostPort": 5432}]}]),
     "only without an SELinux type or a host port"),
    ("Job of the SELinux type spc_t", lambda r: analysis_job(r.namespace, f"{r.name}-analysis", containers=[
         {"name": "analyze", "image": IMAGE, "securityContext": {"seLinuxOptions": {"type": "spc_t"}}}]),
     "creates Jobs only without an SELinux type or a host port"),
    # A target's spec.sandbox.image: whoever may write a PostgresTarget would run a program of their choosing in the
    # cluster (with the target's data copied in); the chart's sandbox.image (and sandbox.images pins) only.
    ("pod of an image the cluster did not choose", lambda r: sandbox_pod(
         r.namespace, serviceAccountName=f"{r.name}-sandbox", containers=[{"name": "main", "image": "evil/pg:15"}]),
     "creates pods only of the sandbox image"),
    ("a ServiceAccount token Secret",
     lambda r: {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": "attack", "namespace": r.namespace,
                             "labels": {"app.kubernetes.io/component": "sandbox"},
                             "annotations": {"kubernetes.io/service-account.name": r.name}}},
     "creates only Opaque Secrets"),
]  # fmt: skip


@pytest.mark.parametrize(("title", "build", "message"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_the_runner_is_refused_what_the_policy_forbids(release: Release, title: str, build: Any, message: str) -> None:
    runner = release.sa("-runner")
    # The policy is in force once a known-bad request is refused (the API server loads it a moment after creation).
    bad = sandbox_pod(release.namespace, serviceAccountName="default")
    wait_for(lambda: "denied request" in as_operator(release, "create", "--dry-run=server", "-f", "-",
                                                     impersonate=runner, body=bad),
             timeout=30, what="the admission policy in force")  # fmt: skip
    # Each kind's policy (pods, Jobs, Secrets) is loaded on its own: a Job's may follow the pods' by a moment (CI, on a
    # loaded machine, created the Job in that moment). Asked again until refused or 30 s; the assertions are the same.
    deadline = time.monotonic() + 30
    while True:
        refused = as_operator(release, "create", "--dry-run=server", "-f", "-", impersonate=runner,
                              body=build(release))  # fmt: skip
        if "denied request" in refused or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "denied request" in refused, refused
    assert message.format(release=release.name) in refused, refused
    kinds = "pods,jobs,secrets"
    names = [o["metadata"]["name"] for o in get(release.cluster, kinds, "-n", release.namespace)["items"]]
    assert "attack" not in names  # nothing was created


def test_the_runner_may_create_what_sandboxes_and_analysis_need(release: Release) -> None:
    runner = release.sa("-runner")
    uid = "0f1e2d3c-0000-4000-8000-000000000000"
    target = {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "PostgresTarget",
        "spec": {},
        "metadata": {"name": "shop", "namespace": release.namespace, "uid": uid},
    }
    recommendation = {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "TuningRecommendation",
        "spec": {"targetRef": {"name": "shop"}},
        "metadata": {**target["metadata"], "name": "shop-idx"},
    }
    for body in (
        sandbox_pod(release.namespace, serviceAccountName=f"{release.name}-sandbox"),
        analysis_job(release.namespace, f"{release.name}-analysis"),
        # what kube/sandboxes.py and kube/jobs.py make, as they make it
        sandboxes.pod_manifest(recommendation, image="postgres:15", resources=None, deadline_seconds=60,
                               service_account=f"{release.name}-sandbox"),
        jobs.analysis_job(target, image=IMAGE, service_account=f"{release.name}-analysis", sample_seconds=1.0,
                          token="t"),
    ):  # fmt: skip
        accepted = as_operator(release, "create", "--dry-run=server", "-f", "-", impersonate=runner, body=body)
        assert "created (server dry run)" in accepted, accepted


def test_the_operator_cannot_mint_a_token_with_its_own_right_to_create_the_webhook_ca_secret(release: Release) -> None:
    """The operator creates its webhook CA Secret itself (RBAC cannot limit a create by name) and reads Secrets of the
    namespace it watches (the release's, by default): a ``kubernetes.io/service-account-token`` Secret naming any
    ServiceAccount of that namespace would be filled with its token by the controller, for the operator to read."""
    token_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": "attack",
            "namespace": release.namespace,
            "annotations": {"kubernetes.io/service-account.name": f"{release.name}-analysis"},
        },
    }
    create = ("create", "--dry-run=server", "--validate=false", "-f", "-")
    wait_for(lambda: "denied request" in as_operator(release, *create, body=token_secret),
             timeout=30, what="the admission policy in force")  # fmt: skip
    refused = as_operator(release, "create", "--validate=false", "-f", "-", body=token_secret)
    assert "the optischema operator creates only Opaque Secrets" in refused, refused
    assert "attack" not in [
        s["metadata"]["name"] for s in get(release.cluster, "secrets", "-n", release.namespace)["items"]
    ]
    ca = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
          "metadata": {"name": f"{release.name}-webhook-ca", "namespace": release.namespace}}  # fmt: skip
    accepted = as_operator(release, *create, body=ca)
    assert "created (server dry run)" in accepted, accepted


def test_the_runner_cannot_delete_what_is_not_a_sandbox(release: Release) -> None:
    runner = release.sa("-runner")
    wait_for(lambda: "denied request" in as_operator(release, "delete", "secret", "precious", "-n", release.namespace,
                                                     "--dry-run=server", impersonate=runner),
             timeout=30, what="the admission policy refusing the delete")  # fmt: skip
    refused = as_operator(release, "delete", "secret", "precious", "-n", release.namespace, impersonate=runner)
    assert "only Secrets labelled app.kubernetes.io/component=sandbox" in refused, refused
    assert get(release.cluster, "secret", "precious", "-n", release.namespace)["metadata"]["name"] == "precious"


def test_a_sandbox_is_created_through_the_runner_with_the_operator_s_own_token(release: Release) -> None:
    """kube/sandboxes.py as the operator runs it from the chart: its client holds only the operator's token and
    impersonates the runner; the sandbox pod, its Secret and NetworkPolicy are created and removed."""
    namespace = release.namespace
    sample = yaml.safe_load((ROOT / "manifests/samples/tuningrecommendation.yaml").read_text())
    sample["metadata"]["namespace"] = namespace
    release.cluster.plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(sample))
    recommendation = get(release.cluster, "tuningrecommendation", sample["metadata"]["name"], "-n", namespace)
    token = release.kubectl("create", "token", release.name, "-n", namespace, check=True).strip()
    configuration = client.Configuration()
    config.load_kube_config(str(release.cluster.plane.kubeconfig()), client_configuration=configuration)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    previous = client.Configuration.get_default_copy()
    client.Configuration.set_default(configuration)
    try:
        pods = Pods(namespace, {"app.kubernetes.io/component": "operator"}, Runner(f"{release.name}-runner"))
        try:
            sandbox = asyncio.run(
                pods.start(
                    recommendation,
                    image="postgres:15",
                    resources=None,
                    deadline_seconds=300,
                    ready_timeout=90,
                    service_account=f"{release.name}-sandbox",
                )
            )
        except SandboxError as error:
            raise AssertionError(f"the sandbox did not start through the runner: {error}") from error
        made = get(release.cluster, "pod", sandbox.name, "-n", namespace)
        assert made["spec"]["serviceAccountName"] == f"{release.name}-sandbox"
        assert made["spec"]["automountServiceAccountToken"] is False
        asyncio.run(pods.remove(namespace, sandbox.name))
    finally:
        client.Configuration.set_default(previous)
    wait_for(lambda: not get(release.cluster, "pods,secrets,networkpolicies", "-n", namespace,
                             "-l", "app.kubernetes.io/component=sandbox")["items"],
             timeout=60, what="the sandbox removed")  # fmt: skip


# -- watchAllNamespaces: what the cluster-wide mode adds, and what it still refuses ---------------------------------

CLUSTER_WIDE: list[tuple[str, str, str, set[str]]] = [
    # Added: the operator's namespaced rules in every namespace, the one runner's in every namespace, CRDs read.
    ("list", "secrets", "{apps}", {"operator"}),
    ("get", "secrets", "*", {"operator"}),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", "", {"operator"}),
    ("create", "jobs.batch", "{apps}", {"runner"}),
    ("impersonate", "serviceaccounts/{release}-runner", "{ns}", {"operator"}),
    # Still refused: the operator creating pods, impersonating anyone else, namespaces, other webhooks, bindings.
    ("create", "pods", "{apps}", {"runner"}),  # the runner only (within the admission policy)
    ("create", "pods", "kube-system", {"runner"}),  # RBAC says yes; the admission policy says which pods
    ("impersonate", "serviceaccounts/{release}-runner", "{apps}", set()),
    ("impersonate", "serviceaccounts/default", "{ns}", set()),
    ("list", "namespaces", "", set()),
    ("patch", "validatingwebhookconfigurations/other.example.com", "", set()),
    ("create", "rolebindings.rbac.authorization.k8s.io", "{apps}", set()),
    ("get", "secrets", "{apps}", {"operator"}),
    ("watch", "secrets", "{apps}", set()),
    ("delete", "secrets", "{apps}", {"runner"}),
    ("list", "configmaps", "{apps}", set()),
]


def test_the_cluster_wide_mode_adds_what_the_readme_lists_and_the_policy_still_holds(
    cluster: Cluster, namespace: str
) -> None:
    apps = f"{namespace}-apps"
    cluster.plane.kubectl("create", "namespace", apps)
    try:
        with applied(cluster, namespace, "watchAllNamespaces=true") as chart:
            subjects = {"operator": chart.sa(), "runner": chart.sa("-runner")}
            wrong = []
            print(f"\nkubectl auth can-i, release {chart.name} watching every namespace ({apps}: an application's)")
            for verb, resource, where, allowed in CLUSTER_WIDE:
                resource = resource.format(release=chart.name)
                where = where.format(ns=namespace, apps=apps)
                answers = {s: can_i(chart, u, verb, resource, where) for s, u in subjects.items()}
                print(
                    f"{verb + ' ' + resource:70} {where or '(cluster)':20}"
                    + "".join(f"{a:>6}" for a in answers.values())
                )
                wrong += [
                    (s, verb, resource, where, a) for s, a in answers.items() if a != ("yes" if s in allowed else "no")
                ]
            assert not wrong, wrong
            runner = chart.sa("-runner")
            create = ("create", "--dry-run=server", "-f", "-")
            # Sandboxes run as each namespace's default ServiceAccount, still without a token.
            bad = sandbox_pod(apps, serviceAccountName="default", automountServiceAccountToken=True)
            wait_for(lambda: "denied request" in as_operator(chart, *create, impersonate=runner, body=bad),
                     timeout=30, what="the admission policy in force")  # fmt: skip
            refused = as_operator(chart, *create, impersonate=runner, body=bad)
            assert "only without a ServiceAccount token" in refused, refused
            # An application's ServiceAccount (with whatever rights it has there) stays out of reach.
            cluster.plane.kubectl("create", "serviceaccount", "app-admin", "-n", apps)
            app_admin = sandbox_pod(apps, serviceAccountName="app-admin")
            refused = as_operator(chart, *create, impersonate=runner, body=app_admin)
            assert "creates pods only as ServiceAccount default" in refused, refused
            accepted = as_operator(chart, *create, impersonate=runner, body=sandbox_pod(apps))
            assert "created (server dry run)" in accepted, accepted
            refused = as_operator(chart, *create, impersonate=runner, body=analysis_job(apps, "default"))
            assert f"creates Jobs only as ServiceAccount {chart.name}-analysis" in refused, refused
            assert not get(cluster, "pods,jobs", "-n", apps)["items"]  # nothing was created
    finally:
        cluster.plane.kubectl("delete", "namespace", apps, "--wait=false")
