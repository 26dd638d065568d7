"""Every bad spec in fixtures/bad_specs.yaml is refused, with the field path and the rule in the message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from optischema.api import describe
from optischema.api.resources import BY_KIND

from .docpaths import assign, delete

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = {path.stem: yaml.safe_load(path.read_text()) for path in (ROOT / "manifests" / "samples").glob("*.yaml")}
SAMPLE_BY_KIND = {doc["kind"]: doc for doc in SAMPLES.values()}
CASES = yaml.safe_load((Path(__file__).parent / "fixtures" / "bad_specs.yaml").read_text())


def _cases() -> list[Any]:
    return [pytest.param(kind, case, id=f"{kind}: {case['title']}") for kind, cases in CASES.items() for case in cases]


@pytest.mark.parametrize(("kind", "case"), _cases())
def test_bad_spec_is_rejected_naming_field_and_rule(kind: str, case: dict[str, Any]) -> None:
    doc = copy.deepcopy(SAMPLE_BY_KIND[kind])
    for path in case.get("delete", []):
        delete(doc, path)
    for path, value in case.get("set", {}).items():
        assign(doc, path, value)

    with pytest.raises(ValidationError) as caught:
        BY_KIND[kind].model.model_validate(doc)

    messages = describe(caught.value)
    assert any(case["error"] in message for message in messages), messages


def test_each_kind_has_at_least_ten_bad_specs() -> None:
    assert set(CASES) == set(BY_KIND)
    assert all(len(cases) >= 10 for cases in CASES.values())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_validate(name: str) -> None:
    doc = SAMPLES[name]
    model = BY_KIND[doc["kind"]].model.model_validate(doc)
    assert model.metadata.name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_round_trip_through_the_wire_form(name: str) -> None:
    doc = SAMPLES[name]
    model = BY_KIND[doc["kind"]].model.model_validate(doc)
    again = type(model).model_validate(model.to_wire())
    assert again == model
