"""Judging an applied change from ``pg_stat_statements`` counters, and deciding whether a build fits in a window.

Pure: the counters are read by ``postgres.execute`` and passed in. A statement's mean time after the change is the
delta of its total time over the delta of its calls since the change, compared with its mean before (the counters
at the baseline). Statements are weighted by their calls after the change, so a rarely run statement cannot swing
the verdict.

How far that comparison moves when nothing changed was measured (``make bench``, bench/false_reverts.py: an index
no statement uses, built 30 times under the shop mix on real PostgreSQL): the reads' mean by up to +54 % (95th
percentile +39 %), the writes' by up to +104 %. The thresholds' defaults (``api.indexchange.Verification``) sit above
that. A baseline of the same length just before the change, instead of the statements' cumulative mean since the
statistics began, moved less (95th percentile +21 %, 1 false revert in 30 at 25 %).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Verdict = Literal["Improved", "Neutral", "Regressed", "Inconclusive"]

#: Build speed assumed before this database has shown its own (bytes of table per second, CONCURRENTLY; it
#: scans the table twice). Deliberately slow: refusing to start a change that would have fit costs a week, starting
#: one that cannot finish costs an aborted build.
DEFAULT_BUILD_BYTES_PER_SECOND = 20 * 1024 * 1024
#: A slowdown smaller than this (ms per call) is not a regression whatever its percentage: a 0.05 ms insert that
#: takes 0.07 ms while a build runs elsewhere is noise, not harm.
NOISE_MS = 0.1
#: Margin kept at the end of a window for verification start and rollback.
WINDOW_MARGIN = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class Counters:
    """One statement's cumulative ``calls`` and ``total_exec_time`` (ms)."""

    calls: int
    total_ms: float


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    baseline_mean_ms: float | None
    after_mean_ms: float | None
    regression_percent: float | None
    calls_after: int
    message: str


def judge(
    before: Mapping[str, Counters],
    after: Mapping[str, Counters],
    *,
    max_regression_percent: float,
    min_calls: int,
    improved_below_percent: float = -5.0,
    noise_ms: float = NOISE_MS,
) -> Judgement:
    """Compare the affected statements' mean time before and after; ``Regressed`` beyond the threshold."""
    weighted_before = weighted_after = 0.0
    calls_after = 0
    for query_id, base in before.items():
        now = after.get(query_id)
        if now is None or base.calls <= 0:
            continue
        delta_calls = now.calls - base.calls
        if delta_calls < 0:  # the statistics were reset in between: the baseline is gone
            return Judgement("Inconclusive", None, None, None, 0, "pg_stat_statements was reset during verification")
        if delta_calls == 0:
            continue
        mean_before = base.total_ms / base.calls
        mean_after = (now.total_ms - base.total_ms) / delta_calls
        weighted_before += mean_before * delta_calls
        weighted_after += mean_after * delta_calls
        calls_after += delta_calls
    if calls_after < min_calls:
        return Judgement(
            "Inconclusive",
            None,
            None,
            None,
            calls_after,
            f"only {calls_after} call(s) of the affected statements since the change (need {min_calls})",
        )
    mean_before = weighted_before / calls_after
    mean_after = weighted_after / calls_after
    change = 100.0 * (mean_after - mean_before) / mean_before if mean_before > 0 else 0.0
    if change > max_regression_percent and mean_after - mean_before > noise_ms:
        verdict: Verdict = "Regressed"
    elif change < improved_below_percent:
        verdict = "Improved"
    else:
        verdict = "Neutral"
    message = (
        f"mean time of the affected statements {mean_before:.3f} ms → {mean_after:.3f} ms ({change:+.1f}%) over "
        f"{calls_after} calls; threshold +{max_regression_percent:g}%"
    )
    return Judgement(verdict, round(mean_before, 4), round(mean_after, 4), round(change, 2), calls_after, message)


def discontinuity(
    before_started: datetime | None,
    before_reset: datetime | None,
    after_started: datetime,
    after_reset: datetime | None,
) -> str | None:
    """Why the counters before and after cannot be compared, or ``None``: the server restarted in between (a
    failover or a crash: ``pg_postmaster_start_time`` moved, the statistics may be gone or another server's), or
    ``pg_stat_statements`` was reset. Either makes the verdict ``Inconclusive``, never a rollback."""
    if before_started is not None and after_started != before_started:
        return (
            f"the server restarted during verification (started {before_started.isoformat()}, now "
            f"{after_started.isoformat()}): the counters are not comparable"
        )
    if before_reset is not None and after_reset != before_reset:
        at = after_reset.isoformat() if after_reset is not None else "an unknown time"
        return f"pg_stat_statements was reset during verification (at {at})"
    return None


def inconclusive(why: str) -> Judgement:
    """A verdict that cannot be reached, with its reason."""
    return Judgement("Inconclusive", None, None, None, 0, why)


def build_estimate(table_bytes: int, bytes_per_second: float | None) -> timedelta:
    """How long ``CREATE INDEX CONCURRENTLY`` on a table of ``table_bytes`` is expected to take."""
    rate = bytes_per_second if bytes_per_second and bytes_per_second > 0 else DEFAULT_BUILD_BYTES_PER_SECOND
    return timedelta(seconds=max(1.0, table_bytes / rate))


def fits(estimate: timedelta, remaining: timedelta) -> bool:
    """Start only what is expected to finish, with a margin, before the window closes."""
    return estimate + WINDOW_MARGIN <= remaining
