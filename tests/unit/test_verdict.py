"""Verification verdicts and build-time fitting (table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from optischema.changes.verdict import Counters, build_estimate, discontinuity, fits, inconclusive, judge

BASE = {"1": Counters(100, 1000.0), "2": Counters(10, 10.0)}  # means: 10 ms and 1 ms


@pytest.mark.parametrize(
    ("after", "verdict", "percent", "why"),
    [
        pytest.param({"1": Counters(200, 1500.0), "2": Counters(10, 10.0)}, "Improved", -50.0, "", id="faster"),
        pytest.param({"1": Counters(200, 2050.0)}, "Neutral", 5.0, "", id="within threshold"),
        pytest.param({"1": Counters(200, 3000.0)}, "Regressed", 100.0, "", id="twice as slow"),
        pytest.param({"1": Counters(103, 1100.0)}, "Inconclusive", None, "only 3 call(s)", id="too few calls"),
        pytest.param({"1": Counters(5, 10.0)}, "Inconclusive", None, "reset", id="statistics reset"),
        pytest.param({}, "Inconclusive", None, "only 0 call(s)", id="statement gone"),
        # weighted by calls after: statement 2 (1 → 3 ms, 100 new calls) outweighs statement 1 (10 → 5 ms, 10)
        pytest.param(
            {"1": Counters(110, 1050.0), "2": Counters(110, 310.0)}, "Regressed", 75.0, "", id="weighted by calls"
        ),
    ],
)
def test_judge(after: dict[str, Counters], verdict: str, percent: float | None, why: str) -> None:
    result = judge(BASE, after, max_regression_percent=10, min_calls=5)
    assert result.verdict == verdict
    assert result.regression_percent == percent
    assert why in result.message


@pytest.mark.parametrize(
    ("table_bytes", "rate", "remaining", "ok"),
    [
        pytest.param(1 << 30, None, timedelta(hours=1), True, id="1 GiB at the default rate fits an hour"),
        pytest.param(100 << 30, None, timedelta(hours=1), False, id="100 GiB does not"),
        pytest.param(100 << 30, 200 << 20, timedelta(hours=1), True, id="measured faster builds do"),
        pytest.param(0, None, timedelta(minutes=2), False, id="the margin is kept"),
    ],
)
def test_build_fits(table_bytes: int, rate: float | None, remaining: timedelta, ok: bool) -> None:
    assert fits(build_estimate(table_bytes, rate), remaining) is ok


_T0 = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("before", "after", "why"),
    [
        pytest.param((_T0, _T0), (_T0, _T0), None, id="same server, same statistics"),
        pytest.param((_T0, _T0), (_T0 + timedelta(hours=1), _T0), "the server restarted", id="restart (failover)"),
        pytest.param((_T0, _T0), (_T0, _T0 + timedelta(minutes=3)), "was reset", id="statistics reset"),
        pytest.param((_T0, None), (_T0, None), None, id="no pg_stat_statements_info (PostgreSQL 13)"),
        pytest.param((None, None), (_T0, _T0), None, id="a baseline taken before these were recorded"),
    ],
)
def test_a_baseline_across_a_restart_or_reset_is_not_comparable(
    before: tuple[datetime | None, datetime | None], after: tuple[datetime, datetime | None], why: str | None
) -> None:
    found = discontinuity(before[0], before[1], after[0], after[1])
    if why is None:
        assert found is None
    else:
        assert found is not None
        assert why in found
        assert inconclusive(found).verdict == "Inconclusive"  # never "Regressed": nothing is rolled back
