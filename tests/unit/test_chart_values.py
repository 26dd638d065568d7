"""The chart's values for platform teams, each rendered by the pinned Helm (table-driven): what each value puts
where, the values the schema refuses naming the field, and the CRDs templated from the generated files."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.settings import Settings

from .test_chart import CHART, ROOT, by_kind

Kinds = dict[str, list[dict[str, Any]]]
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def helm() -> str:
    """The pinned Helm (make helm), as tests/unit/test_chart.py finds it."""
    found = subprocess.run([str(ROOT / "hack/helm/build.sh"), "--print"], capture_output=True, text=True)
    if found.returncode == 0:
        return found.stdout.strip()
    if shutil.which("go") is None:
        pytest.skip("SKIPPED LOUDLY: Helm is not built and Go is not installed to build it (make helm)")
    return subprocess.run([str(ROOT / "hack/helm/build.sh")], capture_output=True, text=True, check=True).stdout.strip()


def render(helm: str, tmp_path: Path, values: dict[str, Any], *args: str) -> Kinds:
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    done = subprocess.run(
        [helm, "template", "rel", str(CHART), "-n", "optischema-system", "--kube-version", "1.36.3", "-f", str(file),
         *args],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return by_kind([d for d in yaml.safe_load_all(done.stdout) if d])


def refused(helm: str, tmp_path: Path, values: dict[str, Any]) -> str:
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    done = subprocess.run(
        [helm, "template", "rel", str(CHART), "--kube-version", "1.36.3", "-f", str(file)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0, "rendered, but should have been refused"
    return done.stderr


def pod(kinds: Kinds) -> dict[str, Any]:
    spec: dict[str, Any] = kinds["Deployment"][0]["spec"]["template"]
    return spec


def container(kinds: Kinds) -> dict[str, Any]:
    found: dict[str, Any] = pod(kinds)["spec"]["containers"][0]
    return found


def env(kinds: Kinds) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(kinds)["env"]}


def named(kinds: Kinds, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    (found,) = [
        d
        for d in kinds.get(kind, [])
        if d["metadata"]["name"] == name and namespace in (None, d["metadata"].get("namespace"))
    ]
    return found


def settings(kinds: Kinds) -> Settings:
    """The operator's settings as it parses the chart's environment (it refuses one it cannot)."""
    given = {k.removeprefix("OPTISCHEMA_").lower(): v for k, v in env(kinds).items() if k.startswith("OPTISCHEMA_")}
    parsed = {"operator_pod_labels", "sandbox_images"}  # JSON in the environment, as pydantic-settings reads it
    return Settings.model_validate({k: json.loads(v) if k in parsed else v for k, v in given.items()})


def job_policy_image(kinds: Kinds) -> str:
    policy = named(kinds, "ValidatingAdmissionPolicy", "rel-runner-jobs.optischema.io")
    (expression,) = [v["expression"] for v in policy["spec"]["validations"] if "c.image ==" in v["expression"]]
    found = re.search(r"c\.image == '([^']+)'", expression)
    assert found, expression
    return found.group(1)


def sandbox_image_pattern(kinds: Kinds) -> str:
    policy = next(
        p for p in kinds["ValidatingAdmissionPolicy"] if p["metadata"]["name"].endswith("runner-pods.optischema.io")
    )
    (expression,) = [v["expression"] for v in policy["spec"]["validations"] if "c.image.matches" in v["expression"]]
    found = re.search(r"c\.image\.matches\(r'([^']+)'\)", expression)
    assert found, expression
    return found.group(1)


def helm_test_pod(kinds: Kinds) -> dict[str, Any]:
    (found,) = kinds["Pod"]
    return found


@dataclass(frozen=True)
class Case:
    id: str
    values: dict[str, Any]
    check: Callable[[Kinds], None]


def _digest(kinds: Kinds) -> None:
    image = f"ghcr.io/optischema/optischema-operator@{DIGEST}"
    assert container(kinds)["image"] == image  # the digest wins over the tag
    assert env(kinds)["OPTISCHEMA_IMAGE"] == image  # analysis Jobs run the same image...
    assert job_policy_image(kinds) == image  # ...which is the one the runner's policy lets Jobs run
    assert helm_test_pod(kinds)["spec"]["containers"][0]["image"] == image


def _pull_secrets(kinds: Kinds) -> None:
    wanted = [{"name": "parent-cred"}, {"name": "regcred"}]
    assert pod(kinds)["spec"]["imagePullSecrets"] == wanted
    assert helm_test_pod(kinds)["spec"]["imagePullSecrets"] == wanted
    # sandbox pods and analysis Jobs get them from their ServiceAccounts, in each watched namespace
    for namespace in ("shop", "billing"):
        for account in ("rel-sandbox", "rel-analysis"):
            assert named(kinds, "ServiceAccount", account, namespace)["imagePullSecrets"] == wanted
    assert "imagePullSecrets" not in named(kinds, "ServiceAccount", "rel-runner", "shop")  # never runs a pod


def _pod_metadata(kinds: Kinds) -> None:
    meta = pod(kinds)["metadata"]
    assert meta["annotations"] == {"backup.velero.io/backup-volumes-excludes": "tmp", "team.example/owner": "dba"}
    assert meta["labels"]["team"] == "dba"
    # the selector's labels win: the Deployment (and the sandboxes' NetworkPolicies) still find the operator
    assert meta["labels"]["app.kubernetes.io/component"] == "operator"
    assert settings(kinds).operator_pod_labels.items() <= meta["labels"].items()
    assert pod(kinds)["spec"]["priorityClassName"] == "system-cluster-critical"


def _name_override(kinds: Kinds) -> None:
    deployment = kinds["Deployment"][0]
    assert deployment["metadata"]["name"] == "rel-tuner"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == "tuner"
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "tuner"
    parsed = settings(kinds)
    assert (parsed.runner_service_account, parsed.job_service_account) == ("rel-tuner-runner", "rel-tuner-analysis")
    assert parsed.operator_pod_labels["app.kubernetes.io/name"] == "tuner"
    named(kinds, "Service", "rel-tuner-metrics")
    named(kinds, "MutatingWebhookConfiguration", "rel-tuner.optischema.io")


def _fullname_override(kinds: Kinds) -> None:
    assert kinds["Deployment"][0]["metadata"]["name"] == "opt"
    assert {a["metadata"]["name"] for a in kinds["ServiceAccount"]} == {
        "opt",
        "opt-runner",
        "opt-sandbox",
        "opt-analysis",
    }
    assert env(kinds)["OPTISCHEMA_OPERATOR_IDENTITY"] == "system:serviceaccount:optischema-system:opt"
    assert env(kinds)["OPTISCHEMA_WEBHOOK_CONFIGURATION"] == "opt.optischema.io"
    # names are fullnameOverride alone; nameOverride is still the app.kubernetes.io/name label
    assert kinds["Deployment"][0]["metadata"]["labels"]["app.kubernetes.io/name"] == "tuner"


def _extra_env_and_volumes(kinds: Kinds) -> None:
    given = env(kinds)
    assert given["HTTPS_PROXY"] == "http://proxy.example:3128"
    assert given["NO_PROXY"] == {"configMapKeyRef": {"name": "proxy", "key": "no-proxy"}}
    assert given["OPTISCHEMA_LOG_FORMAT"] == "json"  # the chart's own settings stay
    assert {"name": "corp-ca", "configMap": {"name": "corp-ca"}} in pod(kinds)["spec"]["volumes"]
    assert {"name": "tmp", "emptyDir": {}} in pod(kinds)["spec"]["volumes"]
    assert {"name": "corp-ca", "mountPath": "/etc/ssl/corp", "readOnly": True} in container(kinds)["volumeMounts"]


def _monitoring_labels(kinds: Kinds) -> None:
    monitor = kinds["ServiceMonitor"][0]["metadata"]["labels"]
    assert monitor["release"] == "kube-prometheus-stack"
    assert monitor["app.kubernetes.io/instance"] == "rel"
    rule = kinds["PrometheusRule"][0]["metadata"]["labels"]
    assert (rule["release"], rule["role"]) == ("kube-prometheus-stack", "alert-rules")


def _dashboard(kinds: Kinds) -> None:
    (board,) = kinds["ConfigMap"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["namespace"] == "optischema-system"
    assert json.loads(board["data"]["optischema.json"]) == json.loads(
        (CHART / "dashboards" / "optischema.json").read_text()
    )


def _dashboard_elsewhere(kinds: Kinds) -> None:
    (board,) = kinds["ConfigMap"]
    assert board["metadata"]["namespace"] == "monitoring"
    assert board["metadata"]["labels"]["dashboards"] == "platform"
    assert "grafana_dashboard" not in board["metadata"]["labels"]
    assert board["metadata"]["annotations"] == {"grafana_folder": "Databases"}


def _no_dashboard(kinds: Kinds) -> None:
    assert "ConfigMap" not in kinds


def _sandbox_registry(kinds: Kinds) -> None:
    template = "registry.example/mirror/postgres:{major}"
    assert env(kinds)["OPTISCHEMA_SANDBOX_IMAGE"] == template
    assert settings(kinds).sandbox_image == template  # the operator accepts it
    pattern = sandbox_image_pattern(kinds)  # the runner's pod policy pins the same image, any major
    assert re.fullmatch(pattern, "registry.example/mirror/postgres:15")
    assert not re.fullmatch(pattern, "postgres:15")
    assert not re.fullmatch(pattern, "registry.example/mirror/postgres:15-evil")


def _analysis_in_watched_namespaces(kinds: Kinds) -> None:
    for namespace in ("shop", "billing"):
        named(kinds, "ServiceAccount", "rel-analysis", namespace)
        named(kinds, "Role", "rel-analysis", namespace)
        binding = named(kinds, "RoleBinding", "rel-analysis", namespace)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-analysis", "namespace": namespace}]


def _analysis_cluster_wide(kinds: Kinds) -> None:
    for namespace in ("shop", "billing"):
        named(kinds, "ServiceAccount", "rel-analysis", namespace)
        binding = named(kinds, "RoleBinding", "rel-analysis", namespace)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                      "name": "rel-analysis"}  # fmt: skip
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-analysis", "namespace": namespace}]
    named(kinds, "ClusterRole", "rel-analysis")
    assert settings(kinds).job_service_account == "rel-analysis"


def _crds(kinds: Kinds) -> None:
    rendered = {c["metadata"]["name"]: c for c in kinds["CustomResourceDefinition"]}
    generated = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    assert set(rendered) == {g["metadata"]["name"] for g in generated}
    for crd in generated:
        mine = rendered[crd["metadata"]["name"]]
        assert mine["spec"] == crd["spec"], crd["metadata"]["name"]  # exactly what the models generate
        assert mine["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}  # uninstall leaves them
        assert crd["metadata"]["labels"].items() <= mine["metadata"]["labels"].items()
        assert mine["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def _no_crds(kinds: Kinds) -> None:
    assert "CustomResourceDefinition" not in kinds


def _pdb_one_replica(kinds: Kinds) -> None:
    assert "PodDisruptionBudget" not in kinds  # with one replica a budget could only block drains


def _pdb_replicas(kinds: Kinds) -> None:
    (budget,) = kinds["PodDisruptionBudget"]
    assert budget["spec"]["minAvailable"] == 1  # of 3: two may be evicted at once, never blocking a drain
    assert budget["spec"]["selector"]["matchLabels"] == kinds["Deployment"][0]["spec"]["selector"]["matchLabels"]


def _helm_test(kinds: Kinds) -> None:
    test = helm_test_pod(kinds)
    assert test["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = test["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    (check,) = spec["containers"]
    assert check["securityContext"]["readOnlyRootFilesystem"] is True
    assert check["env"] == [{"name": "METRICS_URL", "value": "http://rel-metrics.optischema-system.svc:8080/metrics"}]
    assert check["command"][:2] == ["python", "-c"]
    compile(check["command"][2], "helm-test", "exec")  # the check itself is valid Python


def _helm_test_host(kinds: Kinds) -> None:
    assert helm_test_pod(kinds)["spec"]["containers"][0]["env"][0]["value"] == "http://127.0.0.1:9999/metrics"


def _no_helm_test(kinds: Kinds) -> None:
    assert "Pod" not in kinds


def _global(kinds: Kinds) -> None:
    assert kinds["Deployment"][0]["metadata"]["name"] == "rel"
    assert pod(kinds)["spec"]["imagePullSecrets"] == [{"name": "parent-cred"}]


def sandbox_pins(kinds: Kinds) -> list[str]:
    policy = next(
        p for p in kinds["ValidatingAdmissionPolicy"] if p["metadata"]["name"].endswith("runner-pods.optischema.io")
    )
    (expression,) = [v["expression"] for v in policy["spec"]["validations"] if "c.image.matches" in v["expression"]]
    found = re.search(r"c\.image in (\[[^\]]*\])", expression)
    assert found, expression
    pins: list[str] = json.loads(found.group(1))
    return pins


def _global_registry(kinds: Kinds) -> None:
    """global.imageRegistry: every image the chart names without a registry of its own comes from the mirror."""
    image = "mirror.example:5000/platform/optischema/optischema-operator:0.1.0"
    assert container(kinds)["image"] == image
    assert env(kinds)["OPTISCHEMA_IMAGE"] == image  # the analysis Jobs' image
    assert job_policy_image(kinds) == image  # and the only one the runner may start Jobs of
    assert helm_test_pod(kinds)["spec"]["containers"][0]["image"] == image
    template = "mirror.example:5000/platform/postgres:{major}"
    assert env(kinds)["OPTISCHEMA_SANDBOX_IMAGE"] == template
    assert settings(kinds).sandbox_image == template
    assert settings(kinds).sandbox_images == {"16": "mirror.example:5000/platform/postgres@" + DIGEST}
    pattern = sandbox_image_pattern(kinds)
    assert re.fullmatch(pattern, "mirror.example:5000/platform/postgres:15")
    assert not re.fullmatch(pattern, "postgres:15")  # the public image is not allowed past the mirror
    assert sandbox_pins(kinds) == ["mirror.example:5000/platform/postgres@" + DIGEST]


def _global_registry_own_registries(kinds: Kinds) -> None:
    """A reference naming its own registry is used as it is; sandbox.imageRegistry wins for the sandboxes."""
    assert container(kinds)["image"] == "registry.example/team/optischema@" + DIGEST
    assert env(kinds)["OPTISCHEMA_SANDBOX_IMAGE"] == "sandboxes.example/postgres:{major}"
    assert settings(kinds).sandbox_images == {"15": "localhost/pg15:latest", "16": "quay.example/pg@" + DIGEST}
    assert sandbox_pins(kinds) == ["localhost/pg15:latest", "quay.example/pg@" + DIGEST]


def _image_registry(kinds: Kinds) -> None:
    assert container(kinds)["image"] == "registry.example/optischema/optischema-operator:0.1.0"
    assert env(kinds)["OPTISCHEMA_SANDBOX_IMAGE"] == "postgres:{major}"  # image.registry is the operator's only


def _no_registry(kinds: Kinds) -> None:
    """image.registry empty: the repository as given (a local image, as hack/e2e-kind.sh loads into kind)."""
    assert container(kinds)["image"] == "optischema-operator:e2e"


def _live(kinds: Kinds) -> None:
    """The live endpoint (kubectl optischema top): the operator listens, the Service exposes the port by name, the
    operator may ask the API server the two reviews, and the people roles reach that Service's port alone."""
    assert env(kinds)["OPTISCHEMA_LIVE_PORT"] == "8082"
    assert settings(kinds).live_port == 8082
    assert {"name": "live", "containerPort": 8082} in container(kinds)["ports"]
    service = named(kinds, "Service", "rel-live", "optischema-system")
    assert service["spec"]["ports"] == [{"name": "live", "port": 8082, "targetPort": "live"}]
    binding = named(kinds, "ClusterRoleBinding", "rel-auth-delegator")
    assert binding["roleRef"]["name"] == "system:auth-delegator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel", "namespace": "optischema-system"}]
    for role in ("optischema-viewer", "optischema-approver"):
        rules = named(kinds, "ClusterRole", role)["rules"]
        proxy = [r for r in rules if "services/proxy" in r["resources"]]
        assert proxy == [{"apiGroups": [""], "resources": ["services/proxy"], "resourceNames": ["rel-live:live"],
                          "verbs": ["get"]}]  # fmt: skip


def _no_live(kinds: Kinds) -> None:
    assert "OPTISCHEMA_LIVE_PORT" not in env(kinds)
    assert not [s for s in kinds["Service"] if s["metadata"]["name"] == "rel-live"]
    assert not [b for b in kinds["ClusterRoleBinding"] if b["roleRef"]["name"] == "system:auth-delegator"]
    rules = named(kinds, "ClusterRole", "optischema-viewer")["rules"]
    assert not [r for r in rules if "services/proxy" in r["resources"]]


CASES = [
    Case("image.digest", {"image": {"tag": "9.9.9", "digest": DIGEST}}, _digest),
    Case(
        "imagePullSecrets",
        {
            "imagePullSecrets": [{"name": "regcred"}],
            "global": {"imagePullSecrets": ["parent-cred"]},
            "watchNamespaces": ["shop", "billing"],
        },
        _pull_secrets,
    ),
    Case(
        "podAnnotations, podLabels, priorityClassName",
        {
            "podAnnotations": {"team.example/owner": "dba", "backup.velero.io/backup-volumes-excludes": "tmp"},
            "podLabels": {"team": "dba", "app.kubernetes.io/component": "not-the-operator"},
            "priorityClassName": "system-cluster-critical",
        },
        _pod_metadata,
    ),
    Case("nameOverride", {"nameOverride": "tuner"}, _name_override),
    Case("fullnameOverride", {"fullnameOverride": "opt", "nameOverride": "tuner"}, _fullname_override),
    Case(
        "extraEnv, extraVolumes, extraVolumeMounts",
        {
            "extraEnv": [
                {"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"},
                {"name": "NO_PROXY", "valueFrom": {"configMapKeyRef": {"name": "proxy", "key": "no-proxy"}}},
            ],
            "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
            "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/ssl/corp", "readOnly": True}],
        },
        _extra_env_and_volumes,
    ),
    Case(
        "metrics.serviceMonitor.labels, prometheusRule.labels",
        {
            "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack", "role": "alert-rules"}},
        },
        _monitoring_labels,
    ),
    Case("dashboards.enabled", {"dashboards": {"enabled": True}}, _dashboard),
    Case(
        "dashboards.label, labelValue, namespace, annotations",
        {
            "dashboards": {
                "enabled": True,
                "label": "dashboards",
                "labelValue": "platform",
                "namespace": "monitoring",
                "annotations": {"grafana_folder": "Databases"},
            }
        },
        _dashboard_elsewhere,
    ),
    Case("dashboards off by default", {}, _no_dashboard),
    Case("sandbox.imageRegistry", {"sandbox": {"imageRegistry": "registry.example/mirror/"}}, _sandbox_registry),
    Case(
        "global.imageRegistry",
        {
            "global": {"imageRegistry": "mirror.example:5000/platform/"},
            "sandbox": {"images": {"16": "postgres@" + DIGEST}},
        },
        _global_registry,
    ),
    Case(
        "global.imageRegistry beside images with registries of their own",
        {
            "global": {"imageRegistry": "mirror.example"},
            "image": {"repository": "registry.example/team/optischema", "digest": DIGEST},
            "sandbox": {
                "imageRegistry": "sandboxes.example",
                "images": {"15": "localhost/pg15:latest", "16": "quay.example/pg@" + DIGEST},
            },
        },
        _global_registry_own_registries,
    ),
    Case("image.registry", {"image": {"registry": "registry.example"}}, _image_registry),
    Case("live (default)", {}, _live),
    Case("live.enabled false", {"live": {"enabled": False}}, _no_live),
    Case(
        "image.registry empty",
        {"image": {"registry": "", "repository": "optischema-operator", "tag": "e2e"}},
        _no_registry,
    ),
    Case(
        "analysis Jobs' account in each watched namespace",
        {"watchNamespaces": ["shop", "billing"]},
        _analysis_in_watched_namespaces,
    ),
    Case(
        "analysisJobNamespaces",
        {"watchAllNamespaces": True, "analysisJobNamespaces": ["shop", "billing"]},
        _analysis_cluster_wide,
    ),
    Case("crds.install (default)", {}, _crds),
    Case("crds.install false", {"crds": {"install": False}}, _no_crds),
    Case("podDisruptionBudget, one replica", {"podDisruptionBudget": {"enabled": True}}, _pdb_one_replica),
    Case("podDisruptionBudget, three replicas", {"replicaCount": 3}, _pdb_replicas),
    Case("helm test", {}, _helm_test),
    Case("tests.host", {"tests": {"host": "127.0.0.1"}, "metrics": {"port": 9999}}, _helm_test_host),
    Case("tests.enabled false", {"tests": {"enabled": False}}, _no_helm_test),
    Case(
        "global",
        {
            "global": {
                "imagePullSecrets": [{"name": "parent-cred"}],
                "imageRegistry": "reg.example",
                "storageClass": "fast",
                "anything": {"a parent": ["shares"]},
            }
        },
        _global,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_value_is_rendered_where_it_belongs(helm: str, tmp_path: Path, case: Case) -> None:
    case.check(render(helm, tmp_path, case.values))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image": {"repository": "r", "digest": "latest"}}, "/image/digest"),
        ({"imagePullSecrets": "regcred"}, "/imagePullSecrets"),
        ({"imagePullSecrets": [{"nom": "regcred"}]}, "/imagePullSecrets/0"),
        ({"global": {"imagePullSecrets": [7]}}, "/global/imagePullSecrets/0"),
        ({"global": "shared"}, "/global"),
        ({"podAnnotations": {"a": 1}}, "/podAnnotations/a"),
        ({"podLabels": {"team": "not a label value"}}, "/podLabels/team"),
        ({"priorityClassName": 5}, "/priorityClassName"),
        ({"nameOverride": "Not_A_Name"}, "/nameOverride"),
        ({"fullnameOverride": ["opt"]}, "/fullnameOverride"),
        ({"extraEnv": {"HTTPS_PROXY": "http://proxy"}}, "/extraEnv"),
        ({"extraVolumes": [{"configMap": {"name": "x"}}]}, "/extraVolumes/0"),
        ({"extraVolumeMounts": [{"name": "x"}]}, "/extraVolumeMounts/0"),
        ({"crds": {"install": "yes"}}, "/crds/install"),
        ({"metrics": {"serviceMonitor": {"labels": ["release"]}}}, "/metrics/serviceMonitor/labels"),
        ({"prometheusRule": {"labels": {"release": 1}}}, "/prometheusRule/labels/release"),
        ({"prometheusRule": {"runbookBaseURL": "docs/runbooks"}}, "/prometheusRule/runbookBaseURL"),
        ({"dashboards": {"enabled": "true"}}, "/dashboards/enabled"),
        ({"sandbox": {"imageRegistry": "reg.example')||true||('"}}, "/sandbox/imageRegistry"),
        ({"global": {"imageRegistry": "reg.example')||true||('"}}, "/global/imageRegistry"),
        ({"live": {"port": 80}}, "/live/port"),
        ({"image": {"registry": "reg example"}}, "/image/registry"),
        ({"analysisJobNamespaces": ["Shop"]}, "/analysisJobNamespaces/0"),
        ({"podDisruptionBudget": {"minAvailable": "50%"}}, "/podDisruptionBudget/minAvailable"),
        ({"tests": {"enabled": 1}}, "/tests/enabled"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_field(
    helm: str, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    assert message in refused(helm, tmp_path, values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 2}},
            "podDisruptionBudget.minAvailable (2) must be below replicaCount (2): such a budget blocks every drain",
        ),
        (
            {"analysisJobNamespaces": ["shop"]},
            "analysisJobNamespaces is for watchAllNamespaces: every watched namespace has the analysis ServiceAccount",
        ),
    ],
)
def test_combinations_that_cannot_work_are_refused_with_the_reason(
    helm: str, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    assert message in refused(helm, tmp_path, values)


@pytest.mark.parametrize(
    ("served", "passes"),
    [
        ("# HELP optischema_target_ready 1 when the target is Ready\n# TYPE optischema_target_ready gauge\n", True),
        ("# HELP up whatever\n# TYPE node_load1 gauge\nnode_load1 0.5\n", False),  # something else answers there
    ],
)
def test_the_helm_test_pod_s_check_passes_only_on_the_operator_s_metrics(
    helm: str, tmp_path: Path, served: str, passes: bool
) -> None:
    """The check the helm test pod runs (its command as rendered), against a local HTTP server."""

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        check = helm_test_pod(render(helm, tmp_path, {"tests": {"host": "127.0.0.1"}, "metrics": {"port": port}}))
        (container,) = check["spec"]["containers"]
        url = {e["name"]: e["value"] for e in container["env"]}["METRICS_URL"]
        done = subprocess.run(
            [sys.executable, *container["command"][1:]],
            env={"METRICS_URL": url},
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        server.shutdown()
    assert (done.returncode == 0) is passes, done.stdout + done.stderr
    assert ("not the operator" in done.stderr) is not passes, done.stderr
