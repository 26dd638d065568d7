"""Server setting values: the grammar PostgreSQL accepts for each allowed setting, and a range we consider sane.

``ALTER SYSTEM SET work_mem = '100TB'`` is refused by PostgreSQL only when the value is out of *its* range, and
some values inside it are still dangerous (every sort and hash of every connection may use ``work_mem``). So each
setting the operator may change (``changes.ddl.SETTINGS_ALLOWED``) is described here with:

- its type and unit, as ``pg_settings.vartype`` / ``pg_settings.unit`` report them on PostgreSQL 15 — a memory
  setting takes a number with PostgreSQL's memory units (``B``, ``kB``, ``MB``, ``GB``, ``TB``, case-sensitive, base
  1024) or a bare number in its base unit (``kB`` for ``work_mem``, ``8kB`` pages for ``effective_cache_size``); a
  time setting takes ``us``, ``ms``, ``s``, ``min``, ``h``, ``d``; a bool takes on/off/true/false/yes/no/1/0;
- PostgreSQL's own range (``pg_settings.min_val`` / ``max_val`` on 15, converted to bytes or microseconds), and
- a safety cap inside it (named per setting, with why), so that an approved value can slow a plan but never exhaust
  the server's memory.

Pure: values in, a one-line refusal naming ``setting.value`` out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["memory", "time", "integer", "real", "bool"]

KB = 1024
#: PostgreSQL's memory units (guc.c memory_unit_conversion_table), in bytes.
MEMORY_UNITS = {"B": 1, "kB": KB, "MB": KB**2, "GB": KB**3, "TB": KB**4}
#: PostgreSQL's time units (guc.c time_unit_conversion_table), in microseconds.
TIME_UNITS = {"us": 1, "ms": 1_000, "s": 1_000_000, "min": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
BOOLS = {"on", "off", "true", "false", "yes", "no", "1", "0"}
INT_MAX = 2_147_483_647

_NUMBER_WITH_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)?\s*$")
_REAL = re.compile(r"^\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*$")
_INTEGER = re.compile(r"^\s*[+-]?[0-9]+\s*$")


class InvalidSettingValue(ValueError):
    """A value PostgreSQL would not accept for the setting, or one outside the operator's safe range."""


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One setting: how its value is written and which values are allowed (in its base quantity: bytes for memory,
    microseconds for time, the number itself otherwise)."""

    kind: Kind
    minimum: float = 0
    maximum: float = math.inf
    base: int = 1
    """Bytes (memory) or microseconds (time) of one unit of a bare number: 1024 for ``work_mem`` (kB)."""
    why_cap: str = ""
    """Where ``maximum`` comes from when it is tighter than PostgreSQL's own."""


#: PostgreSQL 15's ranges (pg_settings.min_val/max_val), with a safety cap where the maximum would hurt.
SPECS: dict[str, SettingSpec] = {
    "work_mem": SettingSpec(
        "memory", minimum=64 * KB, maximum=2 * KB**3, base=KB,
        why_cap="safety cap 2GB (PostgreSQL allows 2TB): every sort and hash of every connection may use it",
    ),
    "maintenance_work_mem": SettingSpec(
        "memory", minimum=KB**2, maximum=16 * KB**3, base=KB,
        why_cap="safety cap 16GB (PostgreSQL allows 2TB): each autovacuum worker and index build may use it",
    ),
    "effective_cache_size": SettingSpec(
        # A planner estimate, not an allocation: PostgreSQL's own range (1 to INT_MAX pages of 8kB).
        "memory", minimum=8 * KB, maximum=INT_MAX * 8 * KB, base=8 * KB,
    ),
    "random_page_cost": SettingSpec(
        "real", minimum=0.01, maximum=100.0,
        why_cap="safety range 0.01-100 (PostgreSQL allows 0 to 1.8e308): beyond it every plan is distorted",
    ),
    "seq_page_cost": SettingSpec(
        "real", minimum=0.01, maximum=100.0,
        why_cap="safety range 0.01-100 (PostgreSQL allows 0 to 1.8e308): beyond it every plan is distorted",
    ),
    "effective_io_concurrency": SettingSpec("integer", minimum=0, maximum=1000),
    "default_statistics_target": SettingSpec("integer", minimum=1, maximum=10_000),
    "jit": SettingSpec("bool"),
    "jit_above_cost": SettingSpec(
        "real", minimum=-1, maximum=1e12,
        why_cap="safety cap 1e12 (PostgreSQL allows 1.8e308); -1 turns JIT off",
    ),
}  # fmt: skip


def check_value(name: str, value: str) -> None:
    """Refuse a value PostgreSQL would reject for ``name`` or one outside its safe range; ``None`` when fine.

    A setting without a description here is refused: the allow-list and the ranges grow together.
    """
    spec = SPECS.get(name)
    if spec is None:
        raise InvalidSettingValue(f"setting.value: no value range is known for {name}; it cannot be changed")
    if spec.kind == "bool":
        if value.strip().lower() not in BOOLS:
            raise InvalidSettingValue(f"setting.value: {name} is on or off (or true/false, yes/no, 1/0), not {value!r}")
        return
    if spec.kind in ("memory", "time"):
        quantity = _with_unit(name, value, spec)
        low, high = _show(spec.minimum, spec.kind), _show(spec.maximum, spec.kind)
    elif spec.kind == "integer":
        if not _INTEGER.match(value):
            raise InvalidSettingValue(f"setting.value: {name} takes a whole number, not {value!r}")
        quantity, low, high = float(int(value)), f"{spec.minimum:g}", f"{spec.maximum:g}"
    else:
        if not _REAL.match(value):
            raise InvalidSettingValue(f"setting.value: {name} takes a number, not {value!r}")
        quantity, low, high = float(value), f"{spec.minimum:g}", f"{spec.maximum:g}"
    if not math.isfinite(quantity) or not spec.minimum <= quantity <= spec.maximum:
        cap = f"; {spec.why_cap}" if spec.why_cap else ""
        raise InvalidSettingValue(f"setting.value: {name} = {value!r} is outside {low} to {high}{cap}")


def _with_unit(name: str, value: str, spec: SettingSpec) -> float:
    units = MEMORY_UNITS if spec.kind == "memory" else TIME_UNITS
    match = _NUMBER_WITH_UNIT.match(value)
    if match is None:
        raise InvalidSettingValue(
            f"setting.value: {name} takes a number with a unit ({', '.join(units)}), not {value!r}"
        )
    number, unit = float(match.group(1)), match.group(2)
    if unit is None:
        if "." in match.group(1):
            raise InvalidSettingValue(f"setting.value: {name} without a unit takes a whole number, not {value!r}")
        return number * spec.base
    if unit not in units:
        raise InvalidSettingValue(
            f"setting.value: {unit!r} is not a unit of {name} (PostgreSQL's units are case-sensitive: "
            f"{', '.join(units)})"
        )
    return number * units[unit]


def _show(quantity: float, kind: Kind) -> str:
    """A bound in the largest unit that divides it, as PostgreSQL prints values."""
    units = MEMORY_UNITS if kind == "memory" else TIME_UNITS
    for unit, size in sorted(units.items(), key=lambda item: -item[1]):
        if quantity >= size and quantity % size == 0:
            return f"{int(quantity // size)}{unit}"
    return f"{quantity:g}{'B' if kind == 'memory' else 'us'}"
