"""`make demo` as a test: the demo workload (the shop) run end to end by `demo/run.py` — analyse, benchmark, approve,
apply, verify, analyse again — ends with the report it writes, which must show the demo's measured gains and render
in headless Chromium with its charts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.browser import dom, screenshot
from tests.png import pixels

ROOT = Path(__file__).resolve().parents[2]
GREY, BLUE = (0x9A, 0xA5, 0xB1), (0x2F, 0x6F, 0xDE)  # reports/charts.py: "before" bars, lines


def test_the_demo_ends_with_a_report_of_its_measured_gains(tmp_path: Path) -> None:
    html = tmp_path / "demo-report.html"
    done = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "run.py"), "--seconds", "3", "--report", str(html)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.rstrip().endswith(f"the report: {html}")

    report = json.loads(html.with_suffix(".json").read_text())
    assert len(report["applied"]) >= 3, report["applied"]
    for change in report["applied"]:
        assert change["sandboxSpeedup"], change
        assert change["productionAfterMs"] < change["productionBeforeMs"], change
    assert report["snapshots"] >= 2
    assert report["timeSavedPerDaySeconds"] > 0
    assert sum(1 for s in report["topStatements"] if s["trendPercent"] is not None and s["trendPercent"] < -50) >= 3
    assert "## Applied changes" in html.with_suffix(".md").read_text()

    parsed = dom(html)
    assert parsed.count("<svg") == 4
    assert parsed.count('class="bar"') >= 2 * len(report["applied"])
    _, _, colours = pixels(screenshot(html, tmp_path / "demo-report.png", 1000, 3200))
    assert colours[GREY] > 5000, "the 'before' bars are drawn"
    assert colours[BLUE] > 500, "the time-saved and storage lines are drawn"
