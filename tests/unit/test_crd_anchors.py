"""The generated CRDs are plain YAML: no anchor (``&id001``) or alias (``*id001``), which PyYAML writes for a value
shared by two places (one ``required`` list, say) and which many GitOps tools, policy engines and reviewers do not
read. Checked on what ``make crds`` writes now and on every copy in the tree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.api.crdgen import KINDS, crd_for, render

ROOT = Path(__file__).resolve().parents[2]
COPIES = sorted(
    [*ROOT.glob("crds/*.yaml"), *ROOT.glob("charts/optischema/files/crds/*.yaml"), *ROOT.glob("manifests/base/*.yaml")]
)
ANCHOR = re.compile(r"[&*]id\d+")


def anchors_and_aliases(text: str) -> list[str]:
    """What the YAML parser itself sees: aliases, and nodes carrying an anchor."""
    found = []
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            found.append(f"{type(event).__name__} {event.anchor} at line {event.start_mark.line + 1}")
    return found


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.plural)
def test_make_crds_writes_no_anchors(info: object) -> None:
    text = render(info)  # type: ignore[arg-type]
    assert not ANCHOR.findall(text)
    assert not anchors_and_aliases(text)


def shared(node: Any, seen: set[int] | None = None) -> int:
    """How many lists and mappings of ``node`` are reached a second time (the same object in two places)."""
    seen = set() if seen is None else seen
    if not isinstance(node, dict | list):
        return 0
    if id(node) in seen:
        return 1
    seen.add(id(node))
    children = node.values() if isinstance(node, dict) else node
    return sum(shared(child, seen) for child in children)


def test_a_value_shared_by_two_places_is_written_out_twice_and_reads_back_the_same() -> None:
    """The case that produced anchors (the models share objects between places of one CRD) reads back unchanged."""
    assert any(shared(crd_for(info)) for info in KINDS)  # the case exists, so the test above means something
    for info in KINDS:
        assert yaml.safe_load(render(info)) == crd_for(info)


@pytest.mark.parametrize("path", COPIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_crd_in_the_tree_has_anchors(path: Path) -> None:
    text = path.read_text()
    assert not ANCHOR.findall(text), f"{path.relative_to(ROOT)}: run make crds"
    assert not anchors_and_aliases(text), f"{path.relative_to(ROOT)}: run make crds"
