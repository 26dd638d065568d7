"""Sandbox timings summarised: per statement p50/p95, and for the change as a whole a speed-up weighted by calls.

Weighting by ``calls`` (from pg_stat_statements) makes the figure mean what an on-call engineer cares about: how
much less time the database spends on these statements, not how much faster the rarest of them got. A statement
that failed in the sandbox is recorded with its error and left out of the totals, never fatal to the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class Timing:
    """One statement's executions (milliseconds) without and with the change."""

    query_id: str
    calls: int
    write: bool = False
    before: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def measured(self) -> bool:
        return self.error is None and bool(self.before) and bool(self.after)


@dataclass(frozen=True, slots=True)
class Summary:
    p50_before_ms: float | None
    p50_after_ms: float | None
    p95_before_ms: float | None
    p95_after_ms: float | None
    speedup: float | None
    improvement_percent: float | None
    write_overhead_percent: float | None
    measured: int
    failed: int


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100): a value that was really observed, no interpolation."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _weighted(timings: Sequence[Timing], pick: str, q: float) -> float | None:
    weights = [max(t.calls, 1) for t in timings]
    if not timings:
        return None
    total = sum(w * percentile(getattr(t, pick), q) for t, w in zip(timings, weights, strict=True))
    return total / sum(weights)


def summarise(timings: Sequence[Timing]) -> Summary:
    """Call-weighted p50/p95 of the read statements, their speed-up, and the write statements' overhead."""
    reads = [t for t in timings if t.measured and not t.write]
    writes = [t for t in timings if t.measured and t.write]
    before, after = _weighted(reads, "before", 50), _weighted(reads, "after", 50)
    speedup = improvement = overhead = None
    if before is not None and after is not None and after > 0:
        speedup = round(before / after, 3)
        improvement = round(max(-1e6, 100 * (1 - after / before)), 2) if before > 0 else None
    write_before, write_after = _weighted(writes, "before", 50), _weighted(writes, "after", 50)
    if write_before and write_after is not None:
        overhead = round(100 * (write_after / write_before - 1), 2)
    return Summary(
        p50_before_ms=_round(before),
        p50_after_ms=_round(after),
        p95_before_ms=_round(_weighted(reads, "before", 95)),
        p95_after_ms=_round(_weighted(reads, "after", 95)),
        speedup=speedup,
        improvement_percent=improvement,
        write_overhead_percent=overhead,
        measured=len(reads) + len(writes),
        failed=sum(1 for t in timings if t.error is not None),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
