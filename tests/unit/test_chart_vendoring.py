"""The chart as platform teams vendor it, with the pinned Helm: a dependency of a parent chart (global values, its
values under the dependency's name), and `make chart-package`'s versioned archive and repository index."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_chart import CHART, ROOT, by_kind

VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]


@pytest.fixture(scope="module")
def helm() -> str:
    """The pinned Helm (make helm), as tests/unit/test_chart.py finds it."""
    found = subprocess.run([str(ROOT / "hack/helm/build.sh"), "--print"], capture_output=True, text=True)
    if found.returncode == 0:
        return found.stdout.strip()
    if shutil.which("go") is None:
        pytest.skip("SKIPPED LOUDLY: Helm is not built and Go is not installed to build it (make helm)")
    return subprocess.run([str(ROOT / "hack/helm/build.sh")], capture_output=True, text=True, check=True).stdout.strip()


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd)


def parent_chart(helm: str, tmp_path: Path, values: dict[str, Any]) -> Path:
    """A tiny umbrella chart depending on ours by file://, its dependency vendored by `helm dependency update`."""
    parent = tmp_path / "platform"
    parent.mkdir()
    (parent / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [
                    {"name": "optischema", "version": VERSION, "repository": f"file://{CHART}",
                     "condition": "optischema.enabled"},
                ],
            }
        )
    )  # fmt: skip
    (parent / "values.yaml").write_text(yaml.safe_dump(values))
    done = run(helm, "dependency", "update", str(parent))
    assert done.returncode == 0, done.stderr
    assert (parent / "charts" / f"optischema-{VERSION}.tgz").exists()
    return parent


def test_a_parent_chart_s_global_values_and_its_values_for_us_are_accepted(helm: str, tmp_path: Path) -> None:
    parent = parent_chart(
        helm,
        tmp_path,
        {
            "global": {"imagePullSecrets": [{"name": "platform-cred"}], "imageRegistry": "reg.example",
                       "storageClass": "fast"},
            "optischema": {"enabled": True, "watchNamespaces": ["shop"], "nameOverride": "optischema",
                           "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "monitoring"}}}},
        },
    )  # fmt: skip
    linted = run(helm, "lint", str(parent), "--strict", "--kube-version", "1.36.3")
    assert linted.returncode == 0, linted.stdout + linted.stderr
    done = run(helm, "template", "platform", str(parent), "-n", "infra", "--kube-version", "1.36.3")
    assert done.returncode == 0, done.stderr
    kinds = by_kind([d for d in yaml.safe_load_all(done.stdout) if d])
    deployment = kinds["Deployment"][0]
    # the parent's release name with nameOverride: no clash with the parent's own objects named after its release
    assert deployment["metadata"]["name"] == "platform-optischema"
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "platform-cred"}]
    assert kinds["ServiceMonitor"][0]["metadata"]["labels"]["release"] == "monitoring"
    assert {c["metadata"]["name"] for c in kinds["CustomResourceDefinition"]} >= {"postgrestargets.optischema.io"}
    assert {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in kinds["Role"]} >= {
        ("shop", "platform-optischema"),
        ("shop", "platform-optischema-analysis"),
    }


def test_our_schema_still_judges_our_values_inside_a_parent(helm: str, tmp_path: Path) -> None:
    parent = parent_chart(helm, tmp_path, {"optischema": {"enabled": True, "replicaCount": "two"}})
    done = run(helm, "template", "platform", str(parent), "--kube-version", "1.36.3")
    assert done.returncode != 0
    assert "optischema" in done.stderr, done.stderr
    assert "/replicaCount" in done.stderr, done.stderr


def test_global_values_alone_lint_and_render(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"global": {"imageRegistry": "reg.example", "anything": {"nested": [1]}}}))
    linted = run(helm, "lint", str(CHART), "--strict", "-f", str(values))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    done = run(helm, "template", "rel", str(CHART), "--kube-version", "1.36.3", "-f", str(values))
    assert done.returncode == 0, done.stderr


def test_make_chart_package_writes_a_versioned_archive_and_an_index(helm: str, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    env_url = {"CHART_REPO_URL": "https://charts.example/optischema"}
    done = subprocess.run([str(ROOT / "hack/helm/package.sh"), str(out)], capture_output=True, text=True,
                          env={**os.environ, **env_url})  # fmt: skip
    assert done.returncode == 0, done.stderr
    archive = out / f"optischema-{VERSION}.tgz"
    assert done.stdout.split() == [str(archive), str(out / "index.yaml")]
    index = yaml.safe_load((out / "index.yaml").read_text())
    (entry,) = index["entries"]["optischema"]
    assert entry["version"] == VERSION
    assert entry["digest"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert entry["urls"] == [f"https://charts.example/optischema/optischema-{VERSION}.tgz"]
    # the archive is a whole chart: it renders with its CRDs (files/crds travels inside) and its board
    rendered = run(
        helm, "template", "rel", str(archive), "--kube-version", "1.36.3", "--set", "dashboards.enabled=true"
    )
    assert rendered.returncode == 0, rendered.stderr
    kinds = by_kind([d for d in yaml.safe_load_all(rendered.stdout) if d])
    assert len(kinds["CustomResourceDefinition"]) == len(list((ROOT / "crds").glob("*.yaml")))
    assert "ConfigMap" in kinds
    # a later version is added beside the earlier one (helm repo index --merge)
    later = tmp_path / "later"
    shutil.copytree(CHART, later / "optischema")
    chart_yaml = later / "optischema" / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace(f"version: {VERSION}", "version: 99.0.0", 1))
    packaged = run(helm, "package", str(later / "optischema"), "--destination", str(out))
    assert packaged.returncode == 0, packaged.stderr
    again = subprocess.run([str(ROOT / "hack/helm/package.sh"), str(out)], capture_output=True, text=True,
                           env={**os.environ, **env_url})  # fmt: skip
    assert again.returncode == 0, again.stderr
    versions = {e["version"] for e in yaml.safe_load((out / "index.yaml").read_text())["entries"]["optischema"]}
    assert versions == {VERSION, "99.0.0"}


def test_the_kustomize_base_has_no_helm_test_pod_and_each_crd_once() -> None:
    """manifests/base is applied without Helm: a test hook would run as a plain pod on every apply, and a CRD both in
    crds.yaml and operator.yaml would be two resources of one name for kustomize."""
    operator = [d for d in yaml.safe_load_all((ROOT / "manifests/base/operator.yaml").read_text()) if d]
    assert not [d for d in operator if "helm.sh/hook" in (d["metadata"].get("annotations") or {})]
    assert "CustomResourceDefinition" not in {d["kind"] for d in operator}
    crds = [d["metadata"]["name"] for d in yaml.safe_load_all((ROOT / "manifests/base/crds.yaml").read_text()) if d]
    assert sorted(crds) == sorted(set(crds))
    assert len(crds) == len(list((ROOT / "crds").glob("*.yaml"))) + 2  # ours, kopf's KopfPeering and ClusterKopfPeering
