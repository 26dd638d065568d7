"""How far a sandbox's speed-up is trusted: a sample's speed-up is a lower bound, shown as such (status, CLI, report),
with production's own speed-up beside it per change and across the period."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from optischema.analysis import scaling
from optischema.reports.build import build
from optischema.reports.render import render
from tests.unit.test_reports import T0, _history, _resources

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("title", "mode", "speedup", "lower"),
    [
        ("a sample's speed-up", "sample", 3.1, True),
        ("a sample's slowdown is no bound", "sample", 0.8, False),
        ("a full copy is as measured", "full", 3.1, False),
        ("synthetic data is as measured", "synthetic", 3.1, False),
        ("nothing measured", "sample", None, False),
    ],
)
def test_a_sample_s_speed_up_is_a_lower_bound(title: str, mode: str, speedup: float | None, lower: bool) -> None:
    assert scaling.is_lower_bound(mode, speedup) is lower, title


@pytest.mark.parametrize(
    ("title", "benchmark", "expected"),
    [
        ("10 % sample", {"speedup": 3.1, "dataMode": "sample", "samplePercent": 10.0},
         "at least 3.1× (measured on a 10 % sample: a lower bound; a statement that scanned the whole table before "
         "gains about 31× at its real size)"),
        ("a sample of unknown size (recorded before samplePercent)", {"speedup": 2.0, "dataMode": "sample"},
         "at least 2× (measured on a sample: a lower bound)"),
        ("slower on a sample", {"speedup": 0.5, "dataMode": "sample", "samplePercent": 10.0},
         "0.5× measured on a 10 % sample (slower there; production may differ either way)"),
        ("full copy", {"speedup": 8.0, "dataMode": "full"}, "8× measured on full data at the table's size"),
        ("no figure", {"dataMode": "sample", "error": "boom"}, None),
    ],
)  # fmt: skip
def test_the_cli_line_says_how_far_to_trust_it(title: str, benchmark: dict[str, Any], expected: str | None) -> None:
    assert scaling.describe(benchmark) == expected, title


@pytest.mark.parametrize(
    ("title", "before", "after", "sandbox", "production", "ratio"),
    [
        ("ten times the sandbox's", 10.0, 0.5, 2.0, 20.0, 10.0),
        ("as the sandbox said", 4.0, 1.0, 4.0, 4.0, 1.0),
        ("no after figure", 4.0, None, 4.0, None, None),
        ("no sandbox figure", 4.0, 2.0, None, 2.0, None),
    ],
)
def test_production_against_sandbox(
    title: str, before: float, after: float | None, sandbox: float | None, production: float | None, ratio: float | None
) -> None:
    assert scaling.production_speedup(before, after) == production, title
    assert scaling.production_over_sandbox(production, sandbox) == ratio, title


def test_the_trust_summary_over_changes() -> None:
    assert scaling.trust([(2.0, 20.0), (4.0, 4.0), (3.0, 9.0), (None, 5.0)]) == (3, 1.0, 3.0, 10.0)
    assert scaling.trust([]) == (0, None, None, None)


def test_the_report_shows_sandbox_against_production_and_the_lower_bound() -> None:
    target, recs, changes = _resources()
    recs[0]["status"]["benchmark"]["samplePercent"] = 10.0
    report = build(target, recs, changes, _history(), since=T0 - timedelta(days=1), now=T0 + timedelta(days=1))
    (line,) = report.applied
    # sandbox 12.5× on a 10 % sample; production 10 → 0.5 ms = 20×: 1.6 times the sandbox's
    assert (line.sandbox_lower_bound, line.sandbox_sample_percent, line.sandbox_scan_estimate) == (True, 10.0, 125.0)
    assert (line.production_speedup, line.production_over_sandbox) == (20.0, 1.6)
    assert (report.sandbox_trust_changes, report.sandbox_trust_median) == (1, 1.6)
    assert any("lower bound" in n or "at least" in n for n in report.notes)
    markdown = render(report, "md")
    assert "≥ 12.5×" in markdown
    assert "20.0×, 1.6× the sandbox's" in markdown
    assert "median 1.6×" in markdown
    html = render(report, "html")
    assert "≥ 12.5×" in html
    assert "1.6× the sandbox&#39;s" in html or "1.6× the sandbox's" in html
