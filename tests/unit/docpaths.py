"""Editing nested documents by dotted paths such as ``spec.maintenanceWindows[0].start`` (for fixture cases)."""

from __future__ import annotations

import re
from typing import Any

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    return [int(index) if index else key for key, index in _PART.findall(path)]


def _parent(doc: Any, path: str) -> tuple[Any, str | int]:
    *head, last = _parts(path)
    for part in head:
        doc = doc[part]
    return doc, last


def assign(doc: Any, path: str, value: Any) -> None:
    """Set the value at ``path``; the containers on the way must exist."""
    parent, last = _parent(doc, path)
    parent[last] = value


def delete(doc: Any, path: str) -> None:
    """Remove the key or list item at ``path``."""
    parent, last = _parent(doc, path)
    del parent[last]
