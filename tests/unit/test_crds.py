"""The checked-in CRDs are exactly what the models generate, and they are structural schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.api.crdgen import KINDS as ALL_KINDS
from optischema.api.crdgen import crd_for, file_name, render
from optischema.api.reports import RECORDS
from optischema.api.resources import RESOURCES, ResourceInfo

CRDS = Path(__file__).resolve().parents[2] / "crds"
KINDS = [pytest.param(info, id=info.kind) for info in ALL_KINDS]
RECONCILED = [pytest.param(info, id=info.kind) for info in RESOURCES]
WRITTEN = [pytest.param(info, id=info.kind) for info in RECORDS]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node with its path, properties and items followed."""
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def _schema(info: ResourceInfo) -> dict[str, Any]:
    schema: dict[str, Any] = crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("info", KINDS)
def test_checked_in_crd_matches_the_models(info: ResourceInfo) -> None:
    path = CRDS / file_name(info)
    assert path.exists(), f"{path} is missing: run `make crds`"
    assert path.read_text() == render(info), f"{path} is stale: run `make crds`"


def test_no_other_files_in_crds() -> None:
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(file_name(info) for info in ALL_KINDS)


@pytest.mark.parametrize("info", KINDS)
def test_schema_is_structural(info: ResourceInfo) -> None:
    for path, node in _walk(_schema(info)):
        assert "$ref" not in node, path
        assert "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            assert "type" not in node, path
        else:
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
            assert "anyOf" not in node, path
            assert "oneOf" not in node, path


@pytest.mark.parametrize("info", KINDS)
def test_every_spec_and_status_field_is_documented(info: ResourceInfo) -> None:
    schema = _schema(info)
    for root in set(schema["properties"]) - {"apiVersion", "kind", "metadata"}:  # a record's own field too
        for path, node in _walk(schema["properties"][root], root):
            if path.endswith(("[]", "{}")):
                continue  # list items and map values are described by their field
            assert node.get("description"), f"{info.kind} {path} has no description"


@pytest.mark.parametrize("info", RECONCILED)
def test_crd_declares_status_subresource_columns_and_names(info: ResourceInfo) -> None:
    crd = yaml.safe_load(render(info))
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    names = [column["name"] for column in version["additionalPrinterColumns"]]
    assert "Age" in names
    assert {"Phase", "Ready"} & set(names)
    assert crd["spec"]["names"]["categories"] == ["optischema"]
    assert crd["spec"]["names"]["shortNames"]
    assert crd["spec"]["scope"] == "Namespaced"


@pytest.mark.parametrize("info", WRITTEN)
def test_records_have_no_status_subresource_and_show_target_and_size(info: ResourceInfo) -> None:
    """StatementHistory and TuningReport are written whole by the operator: nothing to reconcile, no status."""
    crd = yaml.safe_load(render(info))
    version = crd["spec"]["versions"][0]
    assert "subresources" not in version
    names = [column["name"] for column in version["additionalPrinterColumns"]]
    assert names[0] == "Target"
    assert {"Size", "Age"} <= set(names)
    assert {"Day", "Generated"} & set(names)
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["plural"] in ("statementhistories", "tuningreports")
    assert crd["spec"]["group"] == "optischema.io"
    assert [v["name"] for v in crd["spec"]["versions"]] == ["v1alpha1"]


def test_proposal_is_immutable_and_approval_decided_once() -> None:
    spec = _schema(next(i for i in RESOURCES if i.kind == "TuningRecommendation"))["properties"]["spec"]
    for field in ("targetRef", "kind", "change", "sql", "rollbackSql"):
        rules = [rule["rule"] for rule in spec["properties"][field]["x-kubernetes-validations"]]
        assert "self == oldSelf" in rules, field
    approval_rules = [rule["rule"] for rule in spec["properties"]["approval"]["x-kubernetes-validations"]]
    assert "oldSelf.state == 'Pending' || self.state == oldSelf.state" in approval_rules
    assert "x-kubernetes-validations" not in spec["properties"]["approval"]["properties"]["state"]
