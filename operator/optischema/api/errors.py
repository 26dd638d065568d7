"""Validation errors as people read them: ``spec.maintenanceWindows[0].start: must be HH:MM``.

Pydantic's messages are precise but verbose and prefixed ("Value error, ..."); the CLI, the admission webhook and
the operator's conditions all show this shorter form, which names the field path in the wire (camelCase) spelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError


def field_path(loc: Sequence[int | str]) -> str:
    """``("spec", "maintenanceWindows", 0, "start")`` → ``spec.maintenanceWindows[0].start``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-after[", "function-before[", "function-wrap[")):
            continue  # validator frames pydantic adds to the location
        else:
            path += f".{part}" if path else part
    return path or "(root)"


def _message(error: Any) -> str:
    kind, text = str(error["type"]), str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind in ("too_short", "too_long"):
        ctx = error.get("ctx", {})
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        word = "at least" if kind == "too_short" else "at most"
        return f"must have {word} {limit} item{'s' if limit != 1 else ''}"
    if kind == "literal_error":
        return text.replace("Input should be", "must be")
    for prefix in ("Value error, ", "Assertion failed, "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text.replace("Input should be", "must be").replace("String should", "must").replace("List should", "must")


def describe(exc: ValidationError, prefix: str = "") -> list[str]:
    """One ``path: message`` line per error, in the order pydantic found them."""
    lines = []
    for error in exc.errors():
        loc = ([prefix] if prefix else []) + list(error["loc"])
        lines.append(f"{field_path(loc)}: {_message(error)}")
    return lines
