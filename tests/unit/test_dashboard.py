"""The Grafana board and the alerts speak of metrics the operator really exports (what /metrics serves: the
registry's exposition, with the histograms' series), so no panel is empty for a typo."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY, generate_latest

import optischema.telemetry  # noqa: F401 - registers the metrics

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\boptischema_[a-z_]+\b")


def exported(exposition: str) -> set[str]:
    """Series names of an exposition: every HELP'd name, plus a histogram's _bucket, _sum and _count."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# HELP "):
            names.add(line.split()[2])
        elif line.startswith("# TYPE ") and line.split()[3] == "histogram":
            names |= {line.split()[2] + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def used() -> dict[str, set[str]]:
    board = json.loads((ROOT / "charts/optischema/dashboards/optischema.json").read_text())
    queries = {p["title"]: {t["expr"] for t in p["targets"]} for p in board["panels"]}
    rules = (ROOT / "charts/optischema/templates/prometheusrule.yaml").read_text()
    return {
        "dashboard": {n for exprs in queries.values() for e in exprs for n in NAME.findall(e)},
        "alerts": set(NAME.findall(rules)),
    }


def test_every_metric_the_board_and_the_alerts_query_is_exported() -> None:
    available = exported(generate_latest(REGISTRY).decode())
    for where, names in used().items():
        missing = names - available
        assert not missing, f"{where} queries metrics the operator does not export: {sorted(missing)}"


def test_the_board_has_the_panels_the_platform_team_asked_for() -> None:
    board = json.loads((ROOT / "charts/optischema/dashboards/optischema.json").read_text())
    titles = {p["title"] for p in board["panels"]}
    assert {"Analysis duration p95", "Recommendations by phase", "Pending approvals", "Changes waiting for a window",
            "Rollbacks", "LLM tokens"} <= titles  # fmt: skip
