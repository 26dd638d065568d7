"""A CloudNativePG Cluster's setting change as data: the merge patch touches only the one parameter, the undo removes
a parameter that was a default, the Git edit is the Cluster's manifest, and a value shows in any unit."""

from __future__ import annotations

import pytest
import yaml

from optischema.changes import cnpg


@pytest.mark.parametrize(
    ("shown", "wanted", "same"),
    [
        ("24MB", "24MB", True),
        ("24MB", "24mb", True),
        ("24576kB", "24MB", True),
        ("1GB", "1024MB", True),
        ("4MB", "24MB", False),
        ("1min", "60s", True),
        ("500ms", "1s", False),
        ("on", "on", True),
        ("on", "off", False),
        ("24MB", "24s", False),  # another kind of quantity
        ("0.5", "0.50", True),
        ("24MB", "24 parsecs", False),
    ],
)
def test_shows(shown: str, wanted: str, same: bool) -> None:
    assert cnpg.shows(shown, wanted) is same


def test_the_patch_names_one_parameter_only() -> None:
    assert cnpg.parameters_patch("work_mem", "24MB") == {"spec": {"postgresql": {"parameters": {"work_mem": "24MB"}}}}
    assert cnpg.parameters_patch("work_mem", None) == {"spec": {"postgresql": {"parameters": {"work_mem": None}}}}


@pytest.mark.parametrize(
    ("value", "source", "undo"),
    [("4MB", "default", None), ("4MB", "configuration file", None), ("8MB", "ALTER SYSTEM", "8MB")],
)
def test_undo_removes_a_default_and_restores_an_own_value(value: str, source: str, undo: str | None) -> None:
    assert cnpg.undo_value(value, source) == undo


def test_the_git_change_is_the_clusters_manifest_and_a_hostile_value_stays_a_value() -> None:
    hostile = "24MB\nspec:\n  instances: 0"
    doc = yaml.safe_load(cnpg.git_change("shop", "pg", "work_mem", hostile))
    assert doc == {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "pg", "namespace": "shop"},
        "spec": {"postgresql": {"parameters": {"work_mem": hostile}}},
    }


def test_describe() -> None:
    assert (
        cnpg.describe("pg", "work_mem", "24MB")
        == 'merge patch of Cluster pg: spec.postgresql.parameters.work_mem "24MB"'
    )
    assert cnpg.describe("pg", "work_mem", None).endswith("work_mem removed")
