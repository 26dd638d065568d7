"""The Helm chart, rendered by the pinned Helm: lint, templates for a few value sets, values the schema refuses,
and its CRDs in sync with crds/ (which the API models generate)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "optischema"


@pytest.fixture(scope="module")
def helm() -> str:
    found = subprocess.run([str(ROOT / "hack/helm/build.sh"), "--print"], capture_output=True, text=True)
    if found.returncode == 0:
        return found.stdout.strip()
    if shutil.which("go") is None:
        pytest.skip("SKIPPED LOUDLY: Helm is not built and Go is not installed to build it (make helm)")
    return subprocess.run([str(ROOT / "hack/helm/build.sh")], capture_output=True, text=True, check=True).stdout.strip()


def render(helm: str, *sets: str) -> list[dict[str, Any]]:
    args = [helm, "template", "rel", str(CHART), "-n", "optischema-system", "--kube-version", "1.36.3"]
    for item in sets:
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(documents: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        found.setdefault(document["kind"], []).append(document)
    return found


def test_the_chart_lints(helm: str) -> None:
    done = subprocess.run([helm, "lint", str(CHART), "--strict"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_defaults_watch_the_release_namespace_with_roles_and_a_hardened_pod(helm: str) -> None:
    kinds = by_kind(render(helm))
    # Cluster-wide: the people roles, and the operator's right on its own two webhook configurations only.
    assert {d["metadata"]["name"] for d in kinds["ClusterRole"]} == {
        "rel-webhooks",
        "optischema-viewer",
        "optischema-approver",
    }
    (webhooks,) = [d for d in kinds["ClusterRole"] if d["metadata"]["name"] == "rel-webhooks"]
    assert webhooks["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
            "resourceNames": ["rel.optischema.io"],
            "verbs": ["get", "patch", "update"],
        }
    ]
    assert {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in kinds["Role"]} == {
        ("optischema-system", "rel"),  # the operator in the watched namespace
        ("optischema-system", "rel-release"),  # its webhook CA Secret
        ("optischema-system", "rel-runner"),
        ("optischema-system", "rel-analysis"),
    }
    assert {a["metadata"]["name"] for a in kinds["ServiceAccount"]} == {
        "rel",
        "rel-runner",
        "rel-sandbox",
        "rel-analysis",
    }
    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["optischema", "run", "--namespace=optischema-system"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OPTISCHEMA_WEBHOOK_HOST"] == "rel-webhook.optischema-system.svc"
    assert env["OPTISCHEMA_OPERATOR_IDENTITY"] == "system:serviceaccount:optischema-system:rel"
    assert env["OPTISCHEMA_STANDALONE"] == "true"
    # The operator accepts every setting the chart gives it (Helm renders big numbers as 2e+06 unless told not to).
    settings = {k.removeprefix("OPTISCHEMA_").lower(): v for k, v in env.items() if k.startswith("OPTISCHEMA_")}
    parsed = Settings.model_validate(
        {k: json.loads(v) if k == "operator_pod_labels" else v for k, v in settings.items()}
    )
    assert parsed.llm_cluster_daily_token_budget == 2_000_000
    assert parsed.operator_pod_labels["app.kubernetes.io/component"] == "operator"
    assert (parsed.runner_service_account, parsed.sandbox_service_account, parsed.job_service_account) == (
        "rel-runner",
        "rel-sandbox",
        "rel-analysis",
    )
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= set(kinds)


def test_namespaced_mode_replicas_and_monitoring(helm: str) -> None:
    kinds = by_kind(
        render(
            helm,
            "watchNamespaces={shop,billing}",
            "replicaCount=2",
            "prometheusRule.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "podDisruptionBudget.enabled=true",
            "webhook.enabled=false",
        )
    )
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in kinds["Role"]}
    assert roles == {
        (namespace, name) for namespace in ("shop", "billing") for name in ("rel", "rel-runner", "rel-analysis")
    } | {("optischema-system", "rel-release")}  # the webhook CA Secret stays in the release's namespace
    assert len(kinds["RoleBinding"]) == 7
    operator = next(r for r in kinds["Role"] if (r["metadata"]["namespace"], r["metadata"]["name"]) == ("shop", "rel"))
    # Peering between replicas, and the impersonation of this namespace's runner, by name.
    assert {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["get", "list", "watch", "patch"]} in (
        operator["rules"]
    )
    assert {
        "apiGroups": [""],
        "resources": ["serviceaccounts"],
        "resourceNames": ["rel-runner"],
        "verbs": ["impersonate"],
    } in operator["rules"]
    # No create on pods, Jobs or NetworkPolicies for the operator itself: its runner has them.
    granted = {(res, verb) for rule in operator["rules"] for res in rule["resources"] for verb in rule["verbs"]}
    assert not {("pods", "create"), ("jobs", "create"), ("networkpolicies", "create")} & granted
    policies = {p["metadata"]["name"]: p for p in kinds["ValidatingAdmissionPolicy"]}
    assert policies["rel-runner-pods.optischema.io"]["spec"]["matchConditions"][0]["expression"] == (
        "request.userInfo.username in "
        '["system:serviceaccount:shop:rel-runner","system:serviceaccount:billing:rel-runner"]'
    )
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in kinds["KopfPeering"]} == {
        ("shop", "optischema"),
        ("billing", "optischema"),
    }
    assert {r["metadata"]["name"] for r in kinds["ClusterRole"]} == {
        "rel-webhooks",
        "optischema-viewer",
        "optischema-approver",
    }
    container = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["optischema", "run", "--namespace=shop", "--namespace=billing", "--peering"]
    assert "OPTISCHEMA_WEBHOOK_PORT" not in {e["name"] for e in container["env"]}
    alerts = {r["alert"] for g in kinds["PrometheusRule"][0]["spec"]["groups"] for r in g["rules"]}
    assert alerts == {
        "OptiSchemaOperatorDown",
        "OptiSchemaTargetNotReady",
        "OptiSchemaAnalysisFailing",
        "OptiSchemaChangeStuck",
        "OptiSchemaChangeFailed",
        "OptiSchemaRollback",
        "OptiSchemaLlmBudgetSpent",
        "OptiSchemaNotificationsFailing",
    }
    assert all(r["annotations"]["runbook"] for g in kinds["PrometheusRule"][0]["spec"]["groups"] for r in g["rules"])
    for rule in (r for g in kinds["PrometheusRule"][0]["spec"]["groups"] for r in g["rules"]):
        assert rule["annotations"]["description"], rule["alert"]
        assert rule["annotations"]["runbook_url"].endswith(f"#{rule['alert'].lower()}"), rule["alert"]
    assert kinds["PodDisruptionBudget"][0]["spec"]["minAvailable"] == 1


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicaCount=two", "/replicaCount"),
        ("webhook.port=70000", "/webhook/port"),
        ("watchNamespaces={Not_A_Name}", "/watchNamespaces/0"),
        ("operator.logFormat=xml", "/operator/logFormat"),
        ("surprise=1", "additional properties 'surprise' not allowed"),
    ],
)
def test_bad_values_are_refused_by_the_schema_naming_the_field(helm: str, setting: str, message: str) -> None:
    done = subprocess.run(
        [helm, "template", "rel", str(CHART), "--kube-version", "1.36.3", "--set", setting],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_the_chart_s_crds_are_the_generated_ones() -> None:
    """The chart templates files/crds/ (so upgrades update them): the files make crds copies from crds/, and no
    other; Helm's own crds/ holds kopf's KopfPeering CRD only (its kind must exist before Helm renders peerings)."""
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml")) == generated, "run make crds"
    for name in generated:
        assert (CHART / "files" / "crds" / name).read_text() == (ROOT / "crds" / name).read_text(), (
            f"run make crds ({name})"
        )
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["kopf-peering.yaml"]
    assert (CHART / "crds" / "kopf-peering.yaml").read_text() == (
        ROOT / "manifests/peering/kopf-peering.yaml"
    ).read_text()


def test_the_kustomize_base_is_the_chart_rendered(helm: str, tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "hack/manifests/render.sh"), str(tmp_path)], check=True, capture_output=True)
    for name in ("operator.yaml", "crds.yaml", "namespace.yaml", "kustomization.yaml"):
        committed = (ROOT / "manifests/base" / name).read_text()
        assert committed == (tmp_path / name).read_text(), f"manifests/base/{name} is stale: run make manifests"


def test_cert_manager_issues_the_webhook_certificate_when_asked(helm: str) -> None:
    kinds = by_kind(render(helm, "webhook.certManager.enabled=true"))
    certificates = {c["metadata"]["name"]: c["spec"] for c in kinds["Certificate"]}
    certificate = certificates["rel-webhook"]
    assert certificate["dnsNames"] == ["rel-webhook.optischema-system.svc"]
    # the chart's own small CA signs it (self-signed Issuer -> CA Certificate keeping its key -> CA Issuer)
    assert certificate["issuerRef"] == {"kind": "Issuer", "name": "rel-webhook-ca"}
    assert kinds["Issuer"][0]["spec"] == {"selfSigned": {}}
    assert certificates["rel-webhook-ca"]["isCA"] is True
    assert certificates["rel-webhook-ca"]["issuerRef"] == {"kind": "Issuer", "name": "rel-selfsigned"}
    assert certificates["rel-webhook-ca"]["privateKey"]["rotationPolicy"] == "Never"
    assert kinds["Issuer"][1]["spec"] == {"ca": {"secretName": "rel-webhook-issuer"}}
    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    assert {"name": "webhook-tls", "secret": {"secretName": "rel-webhook-tls"}} in pod["volumes"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["OPTISCHEMA_WEBHOOK_CERT_DIR"] == "/etc/optischema/webhook"
    own = by_kind(render(helm, "webhook.certManager.enabled=true", "webhook.certManager.issuerRef.name=corp-ca",
                         "webhook.certManager.issuerRef.kind=ClusterIssuer"))  # fmt: skip
    assert "Issuer" not in own
    assert own["Certificate"][0]["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "corp-ca"}


def test_replicas_of_a_cluster_wide_operator_peer_cluster_wide(helm: str) -> None:
    kinds = by_kind(render(helm, "replicaCount=3", "watchAllNamespaces=true"))
    assert [p["metadata"]["name"] for p in kinds["ClusterKopfPeering"]] == ["optischema"]
    command = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["optischema", "run", "--all-namespaces", "--peering"]


def test_the_cluster_wide_mode_is_explicit_and_adds_only_what_the_readme_lists(helm: str) -> None:
    kinds = by_kind(render(helm, "watchAllNamespaces=true"))
    assert {r["metadata"]["name"] for r in kinds["ClusterRole"]} == {
        "rel",  # the operator's namespaced rules, in every namespace
        "rel-cluster",  # kopf's watch of CRDs
        "rel-runner",  # the one runner, in the release's namespace, creates sandboxes and Jobs anywhere
        "rel-analysis",  # for people to bind to the analysis ServiceAccount of each namespace with job analyses
        "rel-webhooks",
        "optischema-viewer",
        "optischema-approver",
    }
    cluster = next(r for r in kinds["ClusterRole"] if r["metadata"]["name"] == "rel-cluster")
    assert cluster["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    # The operator still impersonates only its runner, by name, in the release's namespace.
    impersonate = next(r for r in kinds["Role"] if r["metadata"]["name"] == "rel-impersonate")
    assert impersonate["metadata"]["namespace"] == "optischema-system"
    assert impersonate["rules"][0]["resourceNames"] == ["rel-runner"]
    env = {e["name"]: e["value"] for e in kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OPTISCHEMA_RUNNER_SERVICE_ACCOUNT"] == "system:serviceaccount:optischema-system:rel-runner"
    assert env["OPTISCHEMA_SANDBOX_SERVICE_ACCOUNT"] == ""  # each namespace's default, without a token
    refused = subprocess.run(
        [helm, "template", "rel", str(CHART), "--kube-version", "1.36.3", "--set", "watchAllNamespaces=true",
         "--set", "watchNamespaces={shop}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "watchNamespaces and watchAllNamespaces: set one of them, not both" in refused.stderr


def test_the_chart_s_people_roles_are_the_manifests(helm: str) -> None:
    """manifests/rbac (applied without Helm, and by the embedded cluster) grants what the chart's roles grant."""
    # as the release "optischema" the manifests are written for (the live Service's name is in the roles)
    roles = by_kind(render(helm, "fullnameOverride=optischema"))["ClusterRole"]
    rendered = {r["metadata"]["name"]: r["rules"] for r in roles}
    for name in ("viewer", "approver"):
        manifest = yaml.safe_load((ROOT / "manifests/rbac" / f"{name}.yaml").read_text())
        assert manifest["rules"] == rendered[f"optischema-{name}"], name
        granted = {res for rule in manifest["rules"] for res in rule["resources"]}
        assert not {"configmaps", "secrets"} & granted, name  # reports and history are kinds of their own


def test_the_cluster_default_sinks_reach_the_operator_as_its_setting(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "operator:\n  notificationSinks:\n"
        "    - {type: slack, urlSecret: {name: team-chat, key: url}, events: [changeRolledBack, reportReady]}\n"
    )
    done = subprocess.run(
        [helm, "template", "rel", str(CHART), "-n", "optischema-system", "--kube-version", "1.36.3", "-f", str(values)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    deployment = next(d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Deployment")
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    parsed = Settings.model_validate({"notification_sinks": json.loads(env["OPTISCHEMA_NOTIFICATION_SINKS"])})
    (sink,) = parsed.notification_sinks
    assert (sink.type, sink.url_secret.name, sink.events) == ("slack", "team-chat", ["changeRolledBack", "reportReady"])
    values.write_text("operator:\n  notificationSinks:\n    - {type: pager, urlSecret: {name: x, key: url}}\n")
    refused = subprocess.run(
        [helm, "template", "rel", str(CHART), "--kube-version", "1.36.3", "-f", str(values)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "/operator/notificationSinks/0/type" in refused.stderr, refused.stderr


def test_running_without_the_webhook_is_explicit_and_creators_reach_the_operator(helm: str) -> None:
    def env(*sets: str) -> dict[str, str]:
        deployment = by_kind(render(helm, *sets))["Deployment"][0]
        return {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert "OPTISCHEMA_INSECURE_NO_WEBHOOK" not in env()
    assert "OPTISCHEMA_INSECURE_NO_WEBHOOK" not in env("webhook.enabled=false")  # the operator then refuses to start
    assert env("webhook.enabled=false", "webhook.insecureRunWithout=true")["OPTISCHEMA_INSECURE_NO_WEBHOOK"] == "true"
    assert "OPTISCHEMA_INSECURE_NO_WEBHOOK" not in env("webhook.insecureRunWithout=true")  # the webhook runs
    given = env("operator.indexChangeCreators={alice,group:dbas}")
    parsed = Settings.model_validate({"index_change_creators": json.loads(given["OPTISCHEMA_INDEX_CHANGE_CREATORS"])})
    assert parsed.index_change_creators == ["alice", "group:dbas"]


def test_sandbox_images_pinned_by_the_runner_policy_unless_targets_may_name_theirs(helm: str) -> None:
    """A target's spec.sandbox.image is refused by the runner's pod policy (tried on the API server by
    tests/k8s/test_rbac_matrix.py) unless sandbox.allowTargetImages; a template cannot break out of the CEL string."""

    def image_rule(*sets: str) -> str | None:
        policies = by_kind(render(helm, *sets))["ValidatingAdmissionPolicy"]
        pods = next(p for p in policies if p["metadata"]["name"] == "rel-runner-pods.optischema.io")
        found = [v["expression"] for v in pods["spec"]["validations"] if "c.image.matches" in v["expression"]]
        return found[0] if found else None

    assert "c.image.matches(r'^postgres:[0-9]+$')" in (image_rule() or "")
    pinned = image_rule(
        "sandbox.image=reg.example/mirror/postgres:{major}", "sandbox.images.15=reg.example/pg@sha256:ab"
    )
    assert r"c.image.matches(r'^reg\.example/mirror/postgres:[0-9]+$')" in (pinned or "")
    assert 'c.image in ["reg.example/pg@sha256:ab"]' in (pinned or "")
    assert image_rule("sandbox.allowTargetImages=true") is None
    args = [helm, "template", "rel", str(CHART), "--set", "sandbox.image=x')||true||('"]
    refused = subprocess.run(args, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "/sandbox/image" in refused.stderr
