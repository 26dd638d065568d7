"""The chart's alerts evaluated by Prometheus's own rule tester (`promtool test rules`, built by hack/promtool/build.sh)
over metrics the operator really served.

A test scrapes the operator's /metrics at a few moments of a real run (healthy, then with an alert's condition
holding) and lays the scrapes on a timeline: each scrape is a state held for some evaluation intervals, as a
Prometheus scraping the operator every interval would have seen it while nothing changed. Series absent from a scrape
are absent then (`_`), as they are to Prometheus: a counter created by its first increment appears at 1, which
``increase()`` alone cannot see, so the expressions must (and the tests prove they do).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts/optischema"
#: What a Prometheus scraping the operator adds to every series (the alerts must aggregate these away or keep them).
SCRAPE_LABELS = {"job": "optischema-operator", "instance": "10.0.0.7:8080"}


def _tool(script: str, what: str) -> str:
    found = subprocess.run([str(ROOT / script), "--print"], capture_output=True, text=True, check=False)
    if found.returncode == 0:
        return found.stdout.strip()
    built = subprocess.run([str(ROOT / script)], capture_output=True, text=True, check=False)
    if built.returncode == 3:
        pytest.skip(f"SKIPPED LOUDLY: {what} is not built and Go is not installed to build it ({script})")
    assert built.returncode == 0, built.stderr
    return built.stdout.strip()


def promtool() -> str:
    return _tool("hack/promtool/build.sh", "promtool")


def rule_groups() -> list[dict[str, Any]]:
    """The PrometheusRule's groups as the chart renders them (Helm's escaping of the alert templates undone by Helm)."""
    helm = _tool("hack/helm/build.sh", "Helm")
    rendered = subprocess.run(
        [helm, "template", "rel", str(CHART), "-n", "optischema-system", "--kube-version", "1.36.3",
         "--set", "prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    groups: list[dict[str, Any]] = yaml.safe_load(rendered)["spec"]["groups"]
    return groups


def alert(name: str) -> dict[str, Any]:
    return next(r for g in rule_groups() for r in g["rules"] if r.get("alert") == name)


def samples(exposition: str) -> dict[str, float]:
    """Series (in PromQL selector notation, labels sorted) and their values, as Prometheus stores a scrape."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = {**sample.labels, **SCRAPE_LABELS}
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            found[f"{sample.name}{{{inner}}}"] = sample.value
    return found


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class Held:
    """A scrape's state held for ``steps`` evaluation intervals."""

    scrape: str
    steps: int


def input_series(timeline: list[Held]) -> list[dict[str, str]]:
    states = [(samples(h.scrape), h.steps) for h in timeline]
    names = sorted({name for state, _ in states for name in state})
    series = []
    for name in names:
        values: list[str] = []
        for state, steps in states:
            values += [_number(state[name]) if name in state else "_"] * steps
        series.append({"series": name, "values": " ".join(values)})
    return series


def _number(value: float) -> str:
    return repr(int(value)) if value == int(value) else repr(value)


def fired(alert_name: str, at: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert_name,
            "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]}  # fmt: skip


def silent(alert_name: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert_name, "exp_alerts": []}


def value(expr: str, at: str, labels: str, number: float) -> dict[str, Any]:
    """A dashboard query's expected result (``labels`` in PromQL notation, ``"{}"`` for none)."""
    return {"expr": expr, "eval_time": at, "exp_samples": [{"labels": labels, "value": number}]}


Scenario = tuple[str, list[Held], list[dict[str, Any]]]
"""A test of promtool's: the interval between samples, the timeline of scrapes, the alerts (and dashboard query
results) expected at given times."""


def evaluate(tmp: Path, scenarios: list[Scenario]) -> None:
    """Runs `promtool test rules` with the chart's rules over each scenario; fails with promtool's own report.

    Samples further apart than Prometheus's 5-minute lookback are stale in between (a gauge would blink out every
    other evaluation, and no ``for:`` could ever complete): intervals are at most 5 minutes, as real scrapes are."""
    for interval, _, _ in scenarios:
        minutes = int(interval.removesuffix("m")) if interval.endswith("m") else 0
        assert 0 < minutes <= 5, f"interval {interval}: at most 5m"
    rules = tmp / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = tmp / "tests.yaml"
    tests.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rules)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": interval,
                        "input_series": input_series(timeline),
                        "alert_rule_test": [c for c in cases if "alertname" in c],
                        "promql_expr_test": [c for c in cases if "expr" in c],
                    }
                    for interval, timeline, cases in scenarios
                ],
            },
            sort_keys=False,
            width=1 << 30,
        )
    )
    done = subprocess.run([tool, "test", "rules", str(tests)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
