"""The CRDs on a real API server: samples apply, docs show, bad resources are refused by the server itself."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.cluster import Cluster
from devcluster.controlplane import ControlPlaneError
from tests.unit.docpaths import assign, delete

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = {
    doc["kind"]: doc for doc in (yaml.safe_load(p.read_text()) for p in (ROOT / "manifests" / "samples").glob("*.yaml"))
}
CASES = yaml.safe_load((Path(__file__).parent / "invalid_resources.yaml").read_text())
PLURAL = {
    "PostgresTarget": "postgrestargets",
    "TuningRecommendation": "tuningrecommendations",
    "IndexChange": "indexchanges",
}


def sample(kind: str, namespace: str) -> dict[str, Any]:
    doc = copy.deepcopy(SAMPLES[kind])
    doc["metadata"]["namespace"] = namespace
    return doc


def apply(cluster: Cluster, doc: dict[str, Any], *extra: str) -> str:
    return cluster.plane.kubectl(
        "apply", "--server-side", "--validate=strict", *extra, "-f", "-", input=json.dumps(doc)
    )


def test_samples_are_accepted_by_server_side_apply(cluster: Cluster, namespace: str) -> None:
    for kind in SAMPLES:
        assert "serverside-applied" in apply(cluster, sample(kind, namespace))
    names = cluster.plane.kubectl("get", "optischema", "-n", namespace, "-o", "name").split()
    assert len(names) == 3
    recommendation = json.loads(cluster.plane.kubectl("get", "trec", "-n", namespace, "-o", "json"))["items"][0]
    assert recommendation["spec"]["approval"]["state"] == "Pending"


def test_kubectl_explain_shows_the_field_docs(cluster: Cluster) -> None:
    text = cluster.plane.kubectl("explain", "postgrestarget.spec.maintenanceWindows.timeZone")
    assert "IANA time zone" in text
    text = cluster.plane.kubectl("explain", "tuningrecommendation.spec.approval.decidedBy")
    assert "admission webhook" in text


@pytest.mark.parametrize("case", CASES["create"], ids=lambda c: c["title"])
def test_invalid_resources_are_refused_by_the_api_server(
    cluster: Cluster, namespace: str, case: dict[str, Any]
) -> None:
    doc = sample(case["kind"], namespace)
    for path in case.get("delete", []):
        delete(doc, path)
    for path, value in case.get("set", {}).items():
        assign(doc, path, value)
    with pytest.raises(ControlPlaneError) as refused:
        apply(cluster, doc)
    assert case["error"] in str(refused.value)
    assert cluster.plane.kubectl("get", PLURAL[case["kind"]], "-n", namespace, "-o", "name").strip() == ""


@pytest.mark.parametrize("case", CASES["update"], ids=lambda c: c["title"])
def test_invalid_updates_are_refused_by_the_api_server(cluster: Cluster, namespace: str, case: dict[str, Any]) -> None:
    doc = sample(case["kind"], namespace)
    apply(cluster, doc)
    before = cluster.plane.kubectl("get", PLURAL[case["kind"]], doc["metadata"]["name"], "-n", namespace, "-o", "json")
    with pytest.raises(ControlPlaneError) as refused:
        cluster.plane.kubectl(
            "patch",
            PLURAL[case["kind"]],
            doc["metadata"]["name"],
            "-n",
            namespace,
            "--type",
            "merge",
            "-p",
            json.dumps(case["patch"]),
        )
    assert case["error"] in str(refused.value)
    after = cluster.plane.kubectl("get", PLURAL[case["kind"]], doc["metadata"]["name"], "-n", namespace, "-o", "json")
    assert json.loads(after)["spec"] == json.loads(before)["spec"]


def test_a_decision_is_made_once(cluster: Cluster, namespace: str) -> None:
    doc = sample("TuningRecommendation", namespace)
    apply(cluster, doc)
    name = doc["metadata"]["name"]
    approve = {"spec": {"approval": {"state": "Approved", "reason": "reviewed"}}}
    cluster.plane.kubectl("patch", "trec", name, "-n", namespace, "--type", "merge", "-p", json.dumps(approve))
    for state in ("Rejected", "Pending"):
        patch = json.dumps({"spec": {"approval": {"state": state, "reason": "changed my mind"}}})
        with pytest.raises(ControlPlaneError, match="decided once"):
            cluster.plane.kubectl("patch", "trec", name, "-n", namespace, "--type", "merge", "-p", patch)


def test_kubectl_get_shows_the_printer_columns(cluster: Cluster, namespace: str) -> None:
    for kind in SAMPLES:
        apply(cluster, sample(kind, namespace))
    headers = {
        "pgt": ["NAME", "DATABASE", "READY", "PENDING", "NEXT-WINDOW", "AGE"],
        "trec": ["NAME", "TARGET", "KIND", "TABLE", "ESTIMATED", "MEASURED", "SOURCE", "APPROVAL", "PHASE", "AGE"],
        "ixc": ["NAME", "TARGET", "OPERATION", "TABLE", "PHASE", "WINDOW", "AGE"],
    }
    for short, columns in headers.items():
        header = cluster.plane.kubectl("get", short, "-n", namespace).splitlines()[0].split()
        assert header == columns
    row = cluster.plane.kubectl("get", "trec", "-n", namespace).splitlines()[1].split()
    assert row[1:5] == ["orders-db", "createIndex", "invoices", "99.9"]
