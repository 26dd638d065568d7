"""``-o json|yaml|name`` and tables, the way kubectl prints them: one object as itself, several as a ``List``,
``name`` as ``kind/name`` lines, tables with upper-case headers and columns padded to their widest cell."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml


def objects(items: Sequence[dict[str, Any]], output: str, kind: str, *, single: bool = False) -> str:
    """``items`` in ``output`` (``json``, ``yaml`` or ``name``); ``single``: the one object itself, not a List."""
    if output == "name":
        return "\n".join(f"{kind}/{item['metadata']['name']}" for item in items)
    document: Any = (
        items[0] if single and len(items) == 1 else {"apiVersion": "v1", "kind": "List", "items": list(items)}
    )
    if output == "json":
        return json.dumps(document, indent=4)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True).rstrip("\n")


def table(rows: Sequence[Sequence[object]]) -> str:
    """Columns left-aligned to their widest cell, two spaces apart, trailing blanks trimmed."""
    if not rows:
        return ""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows)
