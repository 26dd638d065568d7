"""The chart's alerts for the operator itself, judged by Prometheus's own rule tester (`promtool test rules`): the
operator down (its `up` series 0 or gone) and a target not Ready (the operator's own `optischema_target_ready` gauge,
exposed as the operator's registry exposes it). Every alert carries a description and a runbook_url whose anchor
exists in the chart's README. (tests/k8s/test_alerts.py fires the others from a real operator's scrapes.)"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from optischema.telemetry import TARGET_READY
from tests.promql import CHART, alert, fired, promtool, rule_groups, samples, silent

NAMESPACE = "optischema-system"  # as tests/promql.py renders the chart: release rel in this namespace
JOB = "rel-metrics"  # the metrics Service's name: the job a ServiceMonitor gives the operator's series


def exposition(ready: dict[str, int]) -> str:
    """What the operator's /metrics shows of the target gauge: the same metric (name, help, labels) in a registry of
    its own, so that this test does not depend on what other tests of the process set."""
    registry = CollectorRegistry()
    gauge = Gauge(TARGET_READY._name, TARGET_READY._documentation, TARGET_READY._labelnames, registry=registry)
    for target, value in ready.items():
        gauge.labels("shop", target).set(value)
    return generate_latest(registry).decode()


def series(states: Sequence[tuple[Mapping[str, float], int]]) -> list[dict[str, str]]:
    """Input series for promtool: each state (series -> value, absent = no sample) held for some steps."""
    names = sorted({name for state, _ in states for name in state})
    return [
        {"series": name, "values": " ".join(" ".join([_v(state.get(name))] * steps) for state, steps in states)}
        for name in names
    ]


def _v(value: float | None) -> str:
    return "_" if value is None else repr(int(value))


def expected_annotations(name: str, **labels: str) -> dict[str, str]:
    return {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        for key, text in alert(name)["annotations"].items()
    }


def evaluate(tmp: Path, tests: list[dict[str, Any]]) -> None:
    rules = tmp / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    file = tmp / "tests.yaml"
    file.write_text(
        yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}, width=1 << 30)
    )
    done = subprocess.run([tool, "test", "rules", str(file)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]


def test_operator_down_fires_when_no_replica_is_up_and_not_for_another_release(tmp_path: Path) -> None:
    mine = f'up{{instance="10.0.0.7:8080",job="{JOB}",namespace="{NAMESPACE}"}}'
    standby = f'up{{instance="10.0.0.8:8080",job="{JOB}",namespace="{NAMESPACE}"}}'
    other = 'up{instance="10.0.0.9:8080",job="rel-metrics",namespace="team-b"}'  # another release, elsewhere
    labels = {"severity": "critical", "namespace": NAMESPACE, "job": JOB}
    text = expected_annotations("OptiSchemaOperatorDown")
    timeline = [
        ({mine: 1, standby: 1, other: 1}, 30),  # two replicas up
        ({mine: 0, standby: 1, other: 1}, 30),  # one crashed: the other still serves
        ({mine: 0, standby: 0, other: 1}, 30),  # both down (scraped, up 0)
        ({other: 1}, 30),  # gone: no series at all (the Deployment scaled to 0, or the pods unschedulable)
    ]
    evaluate(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": series(timeline),
                "alert_rule_test": [
                    silent("OptiSchemaOperatorDown", "29m"),
                    silent("OptiSchemaOperatorDown", "59m"),
                    silent("OptiSchemaOperatorDown", "65m"),  # pending: `for: 10m`
                    fired("OptiSchemaOperatorDown", "75m", labels, text),
                    fired("OptiSchemaOperatorDown", "115m", labels, text),
                ],
            }
        ],
    )


def test_target_not_ready_fires_after_a_quarter_of_an_hour_for_that_target_only(tmp_path: Path) -> None:
    healthy = samples(exposition({"orders": 1, "billing": 1}))
    broken = samples(exposition({"orders": 0, "billing": 1}))
    assert any(name.startswith("optischema_target_ready{") for name in healthy)  # the operator's own metric name
    labels = {"severity": "warning", "namespace": "shop", "target": "orders"}
    text = expected_annotations("OptiSchemaTargetNotReady", namespace="shop", target="orders")
    evaluate(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": series([(healthy, 30), (broken, 30), (healthy, 30)]),
                "alert_rule_test": [
                    silent("OptiSchemaTargetNotReady", "29m"),
                    silent("OptiSchemaTargetNotReady", "40m"),  # pending: `for: 15m`
                    fired("OptiSchemaTargetNotReady", "50m", labels, text),
                    silent("OptiSchemaTargetNotReady", "65m"),  # Ready again
                ],
            }
        ],
    )


def test_every_alert_has_a_description_and_a_runbook_in_the_readme() -> None:
    readme = (CHART / "README.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", readme, flags=re.M)
    }
    rules = [r for g in rule_groups() for r in g["rules"]]
    assert len(rules) >= 8
    for rule in rules:
        notes = rule["annotations"]
        for key in ("summary", "description", "runbook"):
            assert notes[key], (rule["alert"], key)
        base, _, anchor = notes["runbook_url"].partition("#")
        assert base == "https://github.com/optischema/optischema-operator/blob/main/charts/optischema/README.md"
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"{rule['alert']}: no README section {anchor}"
