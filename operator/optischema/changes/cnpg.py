"""A setting change for a CloudNativePG ``Cluster``, as data (pure): the merge patch of its
``spec.postgresql.parameters``, the patch that undoes it, the same change as a Git edit of the manifest, and whether
the server shows the value yet (CloudNativePG writes the parameters into its own configuration file and reloads or
restarts the instances; ``ALTER SYSTEM`` is off there, and would be overwritten).
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import yaml

#: Where PostgreSQL's defaults come from: a rollback of a setting that had no value of its own removes the parameter
#: from the Cluster instead of pinning the old default.
UNSET_SOURCES = frozenset({"default", "configuration file"})
#: PostgreSQL's memory units, in bytes, and time units, in milliseconds (``SHOW`` prints the largest exact one).
_MEMORY = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_TIME = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_QUANTITY = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parameters_patch(name: str, value: str | None) -> dict[str, Any]:
    """The merge patch setting (or, with None, removing) one parameter; nothing else of the Cluster is sent."""
    return {"spec": {"postgresql": {"parameters": {name: value}}}}


def undo_value(replaced_value: str, replaced_source: str) -> str | None:
    """What the rollback writes back: the value the server had, or None (the parameter removed) when that value was
    PostgreSQL's default or its configuration file's — as ``ALTER SYSTEM RESET`` would."""
    return None if replaced_source in UNSET_SOURCES else replaced_value


def describe(cluster: str, name: str, value: str | None) -> str:
    """One line for the change's history and events: what was patched, where."""
    shown = "removed" if value is None else json.dumps(value)
    return f"merge patch of Cluster {cluster}: spec.postgresql.parameters.{name} {shown}"


def git_change(namespace: str, cluster: str, name: str, value: str) -> str:
    """The same change as a Git edit: a patch file of the Cluster's manifest (kustomize's ``patches:``, or to copy
    into the manifest), applied by whoever owns the manifest in Git."""
    manifest = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": cluster, "namespace": namespace},
        "spec": {"postgresql": {"parameters": {name: value}}},
    }
    return str(yaml.safe_dump(manifest, sort_keys=False))


def shows(shown: str, wanted: str) -> bool:
    """Whether ``SHOW``'s ``shown`` is the value ``wanted`` (as written in the change): the same text, or the same
    quantity in another unit (``24MB`` and ``24576kB``; ``1min`` and ``60s``), units compared as PostgreSQL reads
    them (case-insensitive)."""
    if shown.strip().lower() == wanted.strip().lower():
        return True
    a, b = _quantity(shown), _quantity(wanted)
    return a is not None and b is not None and a[1] == b[1] and abs(a[0] - b[0]) < 1e-9


def _quantity(text: str) -> tuple[float, str] | None:
    found = _QUANTITY.match(text)
    if found is None:
        return None
    number, unit = float(found.group(1)), found.group(2).lower()
    if unit in _MEMORY:
        return number * _MEMORY[unit], "memory"
    if unit in _TIME:
        return number * _TIME[unit], "time"
    return (number, "") if unit == "" else None


def kubectl_patch(cluster: str, name: str, value: str | None) -> str:
    """``kubectl patch`` making :func:`parameters_patch`, quoted for a POSIX shell."""
    body = json.dumps(parameters_patch(name, value), separators=(",", ":"))
    return f"kubectl patch clusters.postgresql.cnpg.io {shlex.quote(cluster)} --type merge -p {shlex.quote(body)}"
