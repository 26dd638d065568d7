"""Shared test configuration: every test belongs to exactly one tier, chosen by its folder."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIERS = {"unit": "unit", "postgres": "postgres", "k8s": "k8s", "image": "image"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.path)).relative_to(ROOT / "tests").parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, TIERS[tier]))
