"""What ``approve --target``, ``retry`` and ``rollback`` act on, decided from the objects alone (pure).

- A bulk decision takes the target's recommendations still waiting for one (approval ``Pending``, not
  ``Superseded``) whose gain is at least ``--min-gain``: the improvement measured in the sandbox when there is a
  benchmark, else the estimate. Each is then patched on its own, so the admission webhook stamps each decision.
- ``retry`` asks the operator to admit a ``Failed`` change again (the ``optischema.io/retry`` annotation,
  ``flows/retry.py``); a change that got as far as being applied is not retried: its outcome stands.
- ``rollback`` of an ``Applied`` change is its inverse, a new ``IndexChange`` that goes through admission, the
  target's policy, its window, the guard and verification like any other (and, from Git, through review): the
  created index dropped, the dropped one created again with the definition the change described, the setting set
  back to the value the server had before. ``reindex`` and ``analyze`` change no definition: nothing to undo.
"""

from __future__ import annotations

import copy
from typing import Any

#: The annotation a person sets to have a Failed change admitted again; its value is any new token (a time).
RETRY_ANNOTATION = "optischema.io/retry"
#: The label a rollback carries: the change it undoes.
ROLLBACK_OF = "optischema.io/rollback-of"


def gain(item: dict[str, Any]) -> float | None:
    """The recommendation's improvement in percent: measured when benchmarked, else estimated."""
    measured = ((item.get("status") or {}).get("benchmark") or {}).get("improvementPercent")
    if isinstance(measured, int | float):
        return float(measured)
    estimated = (item.get("spec", {}).get("evidence") or {}).get("estimatedImprovementPercent")
    return float(estimated) if isinstance(estimated, int | float) else None


def undecided(items: list[dict[str, Any]], min_gain: float | None) -> list[dict[str, Any]]:
    """The recommendations a bulk decision takes, by name (see the module docstring)."""
    chosen = []
    for item in items:
        state = (item["spec"].get("approval") or {}).get("state", "Pending")
        phase = (item.get("status") or {}).get("phase")
        if state != "Pending" or phase == "Superseded":
            continue
        found = gain(item)
        if min_gain is not None and (found is None or found < min_gain):
            continue
        chosen.append(item)
    return sorted(chosen, key=lambda i: i["metadata"]["name"])


def retry_problem(change: dict[str, Any]) -> str | None:
    """Why ``change`` cannot be retried, or None."""
    status = change.get("status") or {}
    phase = status.get("phase") or "(not admitted yet)"
    if phase != "Failed":
        return f"indexchange {change['metadata']['name']} is {phase}: only a Failed change is retried"
    if status.get("appliedAt"):
        return (
            f"indexchange {change['metadata']['name']} was applied before it failed: its outcome stands "
            "(roll it back, or write a new change)"
        )
    return None


def inverse(change: dict[str, Any]) -> dict[str, Any]:
    """The IndexChange that undoes the Applied ``change``; ``ValueError`` (one line) when there is none."""
    meta, spec, status = change["metadata"], change["spec"], change.get("status") or {}
    name = meta["name"]
    if status.get("phase") != "Applied":
        raise ValueError(f"indexchange {name} is {status.get('phase') or 'not admitted yet'}: only Applied is undone")
    operation = spec["operation"]
    undo: dict[str, Any]
    if operation == "create":
        index = copy.deepcopy(spec["index"])
        index["name"] = (status.get("execution") or {}).get("indexName") or index.get("name")
        if not index.get("name"):
            raise ValueError(f"indexchange {name}: the created index's name is not recorded (status.execution)")
        undo = {"operation": "drop", "index": index}
    elif operation == "drop":
        undo = {"operation": "create", "index": copy.deepcopy(spec["index"])}
    elif operation == "setting":
        replaced = status.get("replacedSetting") or {}
        if not replaced.get("value"):
            raise ValueError(f"indexchange {name}: the setting's earlier value is not recorded (replacedSetting)")
        setting = spec["setting"]
        undo = {
            "operation": "setting",
            "setting": {"name": setting["name"], "value": replaced["value"], "currentValue": setting["value"]},
        }
    else:
        raise ValueError(f"indexchange {name} is a {operation}: it changed no definition, there is nothing to undo")
    return {
        "apiVersion": change["apiVersion"],
        "kind": "IndexChange",
        "metadata": {
            "name": f"{name[:244]}-rollback",
            "namespace": meta["namespace"],
            "labels": {ROLLBACK_OF: name[:63]},
        },
        "spec": {
            "targetRef": spec["targetRef"],
            **undo,
            "schedule": "nextWindow",
            **({"systemIdentifier": status["systemIdentifier"]} if status.get("systemIdentifier") else {}),
            # judged as the change it undoes was (its verification thresholds and automatic rollback)
            **{key: copy.deepcopy(spec[key]) for key in ("verification", "rollback") if key in spec},
        },
    }
