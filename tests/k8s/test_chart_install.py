"""`helm install` onto the embedded control plane: the operator's Pod (served by the process kubelet with our entry
points and the service account's token) reconciles a target with exactly the RBAC the chart grants; `helm test`
passes on it; `helm upgrade` updates the CRDs the chart templates, and `helm uninstall` leaves them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from devcluster.cluster import Cluster
from optischema.postgres.local import free_port
from tests.gitops import argocd, flux

from .conftest import apply, get, secret, target, wait_for

ROOT = Path(__file__).resolve().parents[2]


def helm_binary() -> str:
    found = subprocess.run([str(ROOT / "hack/helm/build.sh")], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: Helm could not be built: {found.stderr[-500:]}")
    return found.stdout.strip()


def kopf_managed_pointing_at(cluster: Cluster, port: int) -> list[str]:
    """kopf's managed configurations (``optischema.io``) that send to this release's webhook port. Other tests of
    the session run operators in development mode, whose kopf writes that configuration (cluster-scoped) with their
    own URL: only one pointing at this release's port would be this operator's doing."""
    found = []
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        done = cluster.plane.kubectl("get", kind, "optischema.io", "-o", "json", check=False)
        if "NotFound" in done:
            continue
        urls = [w["clientConfig"].get("url", "") for w in json.loads(done).get("webhooks") or []]
        found += [f"{kind}: {url}" for url in urls if f":{port}/" in url]
    return found


def chart_0_1(tmp: Path) -> Path:
    """The chart laid out as 0.1.0 shipped it: the CRDs in Helm's crds/ (created on the first install when missing,
    never updated, not owned by the release), none templated."""
    chart = tmp / "optischema"
    shutil.copytree(ROOT / "charts/optischema", chart)
    for crd in (chart / "files/crds").glob("*.yaml"):
        crd.rename(chart / "crds" / crd.name)
    (chart / "templates/crds.yaml").unlink()
    chart_yaml = chart / "Chart.yaml"
    chart_yaml.write_text(re.sub(r"(?m)^version: .*$", "version: 0.1.0", chart_yaml.read_text()))
    return chart


def short_names(cluster: Cluster) -> list[str]:
    crd = get(cluster, "crd", "indexchanges.optischema.io")
    return list(crd["spec"]["names"].get("shortNames") or [])


def make_crd_older(cluster: Cluster) -> None:
    """IndexChange's live CRD without its short name `idxchange`, as an earlier version's CRD would differ."""
    index = short_names(cluster).index("idxchange")
    patch = json.dumps([{"op": "remove", "path": f"/spec/names/shortNames/{index}"}])
    cluster.plane.kubectl("patch", "crd", "indexchanges.optischema.io", "--type=json", "-p", patch)
    assert "idxchange" not in short_names(cluster)


def test_helm_install_runs_an_operator_that_reconciles_a_target_with_least_privilege(
    cluster: Cluster, namespace: str, database: str, tmp_path: Path
) -> None:
    helm = helm_binary()
    env = {**os.environ, "KUBECONFIG": str(cluster.plane.kubeconfig())}
    release = f"opt-{namespace}"
    port = free_port()
    values = [
        f"watchNamespaces={{{namespace}}}",
        "rbac.userRoles=false",  # the embedded cluster has them already (from manifests/rbac)
        "webhook.host=127.0.0.1",  # no Service routes here: URL mode on loopback
        f"webhook.port={port}",
        f"metrics.port={free_port()}",
        f"healthPort={free_port()}",
        f"live.port={free_port()}",
        "operator.checkSeconds=2",
        "operator.sampleSeconds=0",
        "operator.logFormat=console",
        "tests.host=127.0.0.1",  # `helm test` asks the operator there: no Service routes here
    ]
    # Installed first as chart 0.1.0 was (its CRDs in crds/: the cluster has them, older, so Helm leaves them), then
    # upgraded to this chart, which templates them: the upgrade adopts them (--take-ownership, as the README's
    # upgrade note says) and updates them.
    make_crd_older(cluster)
    install = [helm, "install", release, str(chart_0_1(tmp_path)), "-n", namespace, "--wait=false"]
    for value in values:
        install += ["--set", value]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "OptiSchema 0.1.0 is installed" in done.stdout  # NOTES.txt
    try:
        assert "idxchange" not in short_names(cluster)  # Helm's crds/ never updates a CRD
        upgrade = [helm, "upgrade", release, str(ROOT / "charts/optischema"), "-n", namespace, "--reuse-values",
                   "--wait=false", "--take-ownership"]  # fmt: skip
        done = subprocess.run(upgrade, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "idxchange" in short_names(cluster)  # the upgrade updated the CRD
        crd = get(cluster, "crd", "indexchanges.optischema.io")["metadata"]
        assert crd["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["annotations"]["meta.helm.sh/release-name"] == release
        pod = wait_for(
            lambda: [
                p
                for p in get(cluster, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")["items"]
                if p["status"].get("phase") == "Running"
            ],
            timeout=90,
            what="the operator's Pod running",
        )[0]
        assert pod["spec"]["serviceAccountName"] == release

        apply(cluster, secret(namespace, "pw"))
        apply(cluster, target(namespace, database))
        log = cluster.plane.dir / "kubelet" / f"{namespace}_{pod['metadata']['name']}" / "container.log"
        try:
            wait_for(
                lambda: any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (get(cluster, "pgt", "shop", "-n", namespace).get("status") or {}).get("conditions", [])
                ),
                timeout=120,
                what="the target reconciled by the installed operator",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}; the operator's log:\n{log.read_text()[-6000:]}") from error
        live = get(cluster, "pgt", "shop", "-n", namespace)
        assert (argocd(live), flux(live)) == ("Healthy", "Healthy")  # the GitOps health checks on the real object
        try:
            # each with the status the operator writes right after creating it (before that, Argo CD and Flux rightly
            # call a recommendation the operator has not seen yet Progressing)
            items = wait_for(
                lambda: (
                    (found := get(cluster, "trec", "-n", namespace)["items"])
                    and all((i.get("status") or {}).get("phase") not in (None, "Proposed") for i in found)
                    and found
                ),
                timeout=120,
                what="recommendations with a phase",
            )
        except AssertionError as error:
            shown = [line for line in log.read_text().splitlines() if "checked" not in line]
            raise AssertionError(f"{error}; the operator's log:\n" + "\n".join(shown)[-6000:]) from error
        assert {(argocd(i), flux(i)) for i in items} == {("Healthy", "Healthy")}  # awaiting a decision is healthy
        # the chart's webhook configurations carry the CA the operator keeps in its Secret (and none of kopf's own)
        held = get(cluster, "secret", f"{release}-webhook-ca", "-n", namespace)["data"]
        hooks = get(cluster, "mutatingwebhookconfiguration", f"{release}.optischema.io")["webhooks"]
        assert {w["clientConfig"]["caBundle"] for w in hooks} == {held["ca-bundle.crt"]}
        assert not kopf_managed_pointing_at(cluster, port)  # kopf's managed mode is off: nothing written by it
        # the chart's role lets the operator keep the statement history (a StatementHistory per day, listed for
        # retention)
        history = get(cluster, "statementhistories", "-n", namespace)["items"]
        assert len(history) == 1, "no statement history: see the operator's log for a forbidden statementhistories call"
        # the chart's RBAC is all it needed: nothing refused, kopf not even asking for namespaces or CRDs
        refused = [
            line for line in log.read_text().splitlines() if "Forbidden" in line or "Not enough permissions" in line
        ]
        assert not refused, "\n".join(refused[:10])

        account = f"system:serviceaccount:{namespace}:{release}"
        allowed = [
            ("create", "tuningrecommendations.optischema.io", namespace),
            ("patch", "postgrestargets.optischema.io/status", namespace),
            ("get", "secrets", namespace),
            ("list", "secrets", namespace),  # opted-in Secrets are read as a list filtered by label and name
            ("update", "configmaps", namespace),  # the LLM cache
            ("delete", "statementhistories.optischema.io", namespace),  # statement history past its retention
            ("patch", f"mutatingwebhookconfigurations.admissionregistration.k8s.io/{release}.optischema.io", ""),
            ("impersonate", f"serviceaccounts/{release}-runner", namespace),  # sandboxes and Jobs, as the runner
        ]
        denied = [
            ("delete", "postgrestargets.optischema.io", namespace),
            ("create", "pods", namespace),  # the runner creates sandbox pods; the operator cannot
            ("delete", "pods", namespace),
            ("create", "networkpolicies.networking.k8s.io", namespace),
            ("create", "jobs.batch", namespace),
            ("delete", "configmaps", namespace),
            ("list", "configmaps", namespace),
            ("impersonate", "serviceaccounts/default", namespace),
            ("create", "deployments.apps", namespace),
            ("get", "secrets", "default"),  # namespaced mode: nothing outside the watched namespace
            ("create", "pods", "kube-system"),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
            ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/other.example.com", ""),
        ]
        for verb, resource, where in allowed + denied:
            args = ["auth", "can-i", verb, resource, "--as", account] + (["-n", where] if where else [])
            answer = cluster.plane.kubectl(*args, check=False).strip().splitlines()[0]  # then maybe a warning
            assert answer == ("yes" if (verb, resource, where) in allowed else "no"), (verb, resource, where, answer)

        # helm test: its pod (the operator's image, run by the process kubelet) finds the operator's metrics
        tested = subprocess.run([helm, "test", release, "-n", namespace, "--timeout", "150s"], env=env,
                                capture_output=True, text=True, timeout=200)  # fmt: skip
        check_log = cluster.plane.dir / "kubelet" / f"{namespace}_{release}-test-metrics" / "container.log"
        check_output = check_log.read_text() if check_log.exists() else "(no log)"
        assert tested.returncode == 0, tested.stdout + tested.stderr + check_output
        assert f"{release}-test-metrics" in tested.stdout
        assert "Succeeded" in tested.stdout, tested.stdout
        assert "the operator serves its metrics" in check_output, check_output
    finally:
        cluster.plane.kubectl("delete", "indexchanges,postgrestargets", "--all", "-n", namespace, "--timeout=60s",
                              check=False)  # fmt: skip
        subprocess.run([helm, "uninstall", release, "-n", namespace, "--wait"], env=env, capture_output=True,
                       timeout=120)  # fmt: skip
    # Uninstalling removes the webhook configurations (kopf's managed one stayed behind, refusing every later edit)
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        left = [c["metadata"]["name"] for c in get(cluster, kind)["items"]]
        assert f"{release}.optischema.io" not in left, (kind, left)
    assert not kopf_managed_pointing_at(cluster, port)
    # Uninstalling leaves the CRDs (helm.sh/resource-policy: keep) and so every custom resource of every other team.
    crds = json.loads(cluster.plane.kubectl("get", "crd", "-o", "json"))["items"]
    assert {"postgrestargets.optischema.io", "tuningrecommendations.optischema.io"} <= {
        c["metadata"]["name"] for c in crds
    }
    wait_for(
        lambda: not get(cluster, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")["items"],
        timeout=60,
        what="the operator's Pod gone after uninstall",
    )
