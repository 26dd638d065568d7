"""Rows made from a table's statistics, for targets whose data may not leave production.

Each column is generated to match what ``pg_stats`` says of it: the fraction of NULLs, the number of distinct
values, the most common values with their frequencies, and the spread given by the histogram. The planner then
sees a table shaped like the real one, which is what an index benchmark needs.

With ``pii_safe`` (the default), no value of the target is ever written: most common values become stand-ins with
the same frequencies, text becomes tokens of the column's average width, and numbers and times are drawn from the
range the histogram spans (its ends set the range; the values are new). Without it, the most common values and
histogram bounds are used as they are, which keeps ``LIKE 'prefix%'`` and equality on real values realistic.

Values come out as COPY text (None for NULL), generated lazily, so a table of any size streams in flat memory.
Columns in a unique index get a distinct value per row so that the index can be built.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

Value = str | None

_INTEGER = re.compile(r"^(smallint|integer|bigint|int[248]?|serial|bigserial)$")
_DECIMAL = re.compile(r"^(numeric|decimal|real|double precision|float[48]?)(\(.*\))?$")
_TEXT = re.compile(r"^(text|character varying|varchar|character|char|bpchar|citext|name)(\(\d+\))?$")
_TIME = re.compile(r"^(timestamp|date)")
_LENGTH = re.compile(r"\((\d+)\)$")


class CannotGenerate(ValueError):
    """A NOT NULL column of a type this module cannot invent values for without copying real ones."""


@dataclass(frozen=True, slots=True)
class ColumnStats:
    name: str
    type: str  # format_type(): "integer", "character varying(64)", "timestamp with time zone", …
    not_null: bool = False
    unique: bool = False
    null_frac: float = 0.0
    n_distinct: float = 0.0  # as pg_stats: negative is a fraction of the rows, 0 unknown
    avg_width: int = 8
    most_common_vals: tuple[str, ...] = ()
    most_common_freqs: tuple[float, ...] = ()
    histogram_bounds: tuple[str, ...] = ()


@dataclass(slots=True)
class _Column:
    stats: ColumnStats
    rows: int
    pii_safe: bool
    rng: random.Random
    salt: str
    family: str = field(init=False)
    distinct: int = field(init=False)

    def __post_init__(self) -> None:
        kind = self.stats.type.lower()
        if kind.endswith("[]"):
            self.family = "array"
        elif _INTEGER.match(kind):
            self.family = "integer"
        elif _DECIMAL.match(kind):
            self.family = "decimal"
        elif _TEXT.match(kind):
            self.family = "text"
        elif _TIME.match(kind):
            self.family = "date" if kind == "date" else "timestamp"
        elif kind in ("boolean", "bool"):
            self.family = "boolean"
        elif kind == "uuid":
            self.family = "uuid"
        elif kind in ("json", "jsonb"):
            self.family = "json"
        else:
            self.family = "other"
        n = self.stats.n_distinct
        estimate = -n * self.rows if n < 0 else (n if n > 0 else max(1.0, self.rows**0.5))
        self.distinct = max(1, min(self.rows, round(estimate)))

    # -- values ------------------------------------------------------------------------------------------------

    def value(self, row: int) -> Value:
        stats = self.stats
        if self.stats.unique:
            return self._nth(row, self.rows)
        draw = self.rng.random()
        if not stats.not_null and draw < stats.null_frac:
            return None
        draw = (draw - stats.null_frac) / max(1e-9, 1 - stats.null_frac) if not stats.not_null else draw
        cumulative = 0.0
        for position, (value, frequency) in enumerate(
            zip(stats.most_common_vals, stats.most_common_freqs, strict=False)
        ):
            cumulative += frequency / max(1e-9, 1 - stats.null_frac)
            if draw < cumulative:
                return self._common(position, value)
        rest = max(1, self.distinct - len(stats.most_common_vals))
        return self._nth(self.rng.randrange(rest), rest)

    def _common(self, position: int, value: str) -> Value:
        if not self.pii_safe or self.family == "boolean":
            return value
        return self._nth(position, max(len(self.stats.most_common_vals), 1), common=True)

    def _nth(self, k: int, of: int, *, common: bool = False) -> Value:
        """The ``k``-th of ``of`` distinct values, spread over the column's range in order."""
        bounds = self.stats.histogram_bounds or self.stats.most_common_vals
        fraction = (k + 0.5) / of
        if self.family in ("integer", "decimal", "date", "timestamp"):
            low, high = self._range(bounds)
            if low is not None and high is not None:
                if self.family == "integer":  # distinct integers spread over the range
                    return self._number(low + k * max(1.0, (high - low) / max(of, 1)))
                return self._number(low + (high - low) * fraction)
        if self.family == "text":
            if not self.pii_safe and bounds and not common:
                bound = bounds[min(len(bounds) - 1, int(fraction * len(bounds)))]
                return bound if of <= len(bounds) else f"{bound}{k}"
            return self._token(k, "c" if common else "v")
        if self.family == "uuid":
            digest = hashlib.sha256(f"{self.salt}/{k}/{common}".encode()).hexdigest()
            return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"
        if self.family == "boolean":
            return "t" if k % 2 else "f"
        if self.family == "json":
            return "{}" if self.pii_safe else (bounds[k % len(bounds)] if bounds else "{}")
        if self.family == "array":
            return "{}"
        if not self.pii_safe and bounds:
            return bounds[k % len(bounds)]
        return None

    def check(self) -> None:
        """Refuse up front a NOT NULL column that :meth:`value` could only fill with NULL."""
        if not self.stats.not_null or self.family != "other":
            return
        if self.pii_safe or not (self.stats.histogram_bounds or self.stats.most_common_vals):
            raise CannotGenerate(
                f"column {self.stats.name} ({self.stats.type}) is NOT NULL and has no synthetic generator"
                + (" that copies no real value" if self.pii_safe else "")
            )

    def _token(self, k: int, tag: str) -> str:
        width = max(4, min(self.stats.avg_width, 64))
        limit = _LENGTH.search(self.stats.type)
        if limit:
            width = min(width, int(limit.group(1)))
        digest = hashlib.sha256(f"{self.salt}/{tag}/{k}".encode()).hexdigest()
        token = f"{tag}{k:x}{digest}"
        while len(token) < width:
            token += hashlib.sha256(token.encode()).hexdigest()
        return token[:width] if width >= len(f"{tag}{k:x}") else f"{tag}{k:x}"

    def _range(self, bounds: Sequence[str]) -> tuple[float | None, float | None]:
        parsed = [p for p in (self._parse(b) for b in bounds) if p is not None]
        if not parsed:
            return None, None
        return min(parsed), max(parsed)

    def _parse(self, text: str) -> float | None:
        try:
            if self.family in ("integer", "decimal"):
                return float(text)
            moment = datetime.fromisoformat(text if self.family == "timestamp" else f"{text}T00:00:00")
            if moment.tzinfo is not None:
                moment = moment.replace(tzinfo=None) - (moment.utcoffset() or timedelta(0))
            return (moment - datetime(1970, 1, 1)).total_seconds()
        except (ValueError, OverflowError):
            return None

    def _number(self, value: float) -> str:
        if self.family == "integer":
            return str(round(value))
        if self.family == "decimal":
            return repr(round(value, 6))
        moment = datetime(1970, 1, 1) + timedelta(seconds=value)
        return moment.date().isoformat() if self.family == "date" else f"{moment.isoformat(sep=' ')}+00"


def rows(
    columns: Sequence[ColumnStats], count: int, *, pii_safe: bool = True, seed: str = "optischema"
) -> Iterator[tuple[Value, ...]]:
    """``count`` rows as COPY text values, repeatable for the same ``seed``. Raises :class:`CannotGenerate` up
    front when a column cannot be generated."""
    makers = [
        _Column(c, max(count, 1), pii_safe, random.Random(f"{seed}/{c.name}"), f"{seed}/{c.name}") for c in columns
    ]
    for maker in makers:
        maker.check()
    return (tuple(maker.value(row) for maker in makers) for row in range(count))
