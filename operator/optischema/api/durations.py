"""Durations written the way Kubernetes writes them (``90s``, ``30m``, ``1h30m``, ``2h``), plus days (``7d``) for
report periods and retention, where ``840h`` would be unkind.

The same grammar as Go's ``time.ParseDuration`` restricted to the units people use for schedules; a small parser
beats a dependency here, and it lets errors say exactly what is wrong.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> timedelta:
    """``1h30m`` → ``timedelta(hours=1, minutes=30)``; ``ValueError`` naming the expected form otherwise."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration: use a number and a unit, e.g. 90s, 30m, 1h30m, 7d")
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text)))


def format_duration(value: timedelta) -> str:
    """The shortest ``XhYmZs`` spelling of a whole-second duration."""
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"


def duration_between(low: timedelta, high: timedelta) -> AfterValidator:
    """A validator keeping a duration within ``[low, high]``, with the limits in the message."""

    def check(text: str) -> str:
        value = parse_duration(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {format_duration(low)} and {format_duration(high)}, got {text}")
        return text

    return AfterValidator(check)


#: A duration string; combine with :func:`duration_between` for limits.
Duration = Annotated[str, Field(json_schema_extra={"pattern": DURATION_PATTERN})]
