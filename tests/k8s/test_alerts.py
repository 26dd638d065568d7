"""Every alert of the chart fires, judged by Prometheus's own evaluator (`promtool test rules`), on the metrics a real
operator served while the alert's condition really held, and stays silent on the scrapes of a healthy run.

Each test drives one operator process (metrics on a port) through a healthy state and then the failures, scraping
/metrics at each; tests/promql.py lays the scrapes on a timeline (a state held as long as the alert needs) and hands
it to promtool with the PrometheusRule as Helm renders it.
"""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devcluster.cluster import Cluster
from optischema.postgres.local import free_port
from tests.promql import ROOT, Held, alert, evaluate, fired, silent, value
from tests.receiver import receiver

from .conftest import allow_secrets, apply, get, operators, secret, target, wait_for
from .test_apply import Traffic, change, sql, wait_phase, writer_target
from .test_report import analysed


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def scraped(port: int, needle: str, what: str) -> str:
    """The first scrape that shows ``needle`` (the operator increments right after it writes the status)."""

    def attempt() -> str:
        try:
            text = scrape(port)
        except OSError:
            return ""
        return text if needle in text else ""

    return str(wait_for(attempt, timeout=60, what=what))


def expected(name: str, **labels: str) -> tuple[dict[str, str], dict[str, str]]:
    """The alert's labels and its annotations rendered for ``labels`` (as Prometheus renders `$labels.x`)."""
    rule = alert(name)
    annotations = {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        for key, text in rule["annotations"].items()
    }
    return {**rule["labels"], **labels}, annotations


def panel(title: str) -> str:
    board = json.loads((ROOT / "charts/optischema/dashboards/optischema.json").read_text())
    (expr,) = [t["expr"] for p in board["panels"] if p["title"] == title for t in p["targets"]]
    return str(expr)


def at(minutes: int) -> str:
    return f"{minutes}m"


def ready(cluster: Cluster, namespace: str) -> bool:
    conditions = (get(cluster, "pgt", "shop", "-n", namespace).get("status") or {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_analysis_notification_and_llm_budget_alerts_fire_from_a_real_run(
    cluster: Cluster, namespace: str, database: str, tmp_path: Path
) -> None:
    port = free_port()
    with receiver() as sink, operators(cluster, namespace, "alerts", OPTISCHEMA_METRICS_PORT=str(port)) as start:
        cluster.plane.kubectl(
            "create", "secret", "generic", "hook", "-n", namespace, f"--from-literal=url={sink.url('/hook')}"
        )
        allow_secrets(cluster, namespace, "hook")
        apply(cluster, secret(namespace, "pw"))
        doc = target(namespace, database)
        doc["spec"]["notifications"] = {
            "analysisFailures": 1,
            "sinks": [{"type": "webhook", "urlSecret": {"name": "hook", "key": "url"}}],
        }
        apply(cluster, doc)
        start()
        wait_for(lambda: ready(cluster, namespace), timeout=60, what="Ready")
        assert analysed(cluster, namespace, "1")["outcome"] == "Succeeded"
        healthy = scraped(port, "optischema_analysis_duration_seconds_count", "a healthy scrape")

        # The password goes wrong and the sink refuses what it is sent.
        sink.script[:] = [404] * 100
        apply(cluster, secret(namespace, "wrong"))
        wait_for(lambda: not ready(cluster, namespace), timeout=60, what="not Ready")
        assert analysed(cluster, namespace, "2")["outcome"] == "Failed"
        failing = scraped(port, 'outcome="failed"', "the failed delivery counted")
        assert analysed(cluster, namespace, "3")["outcome"] == "Failed"
        failing_more = scraped(port, "optischema_analysis_failures_total", "the failures counted")

        # The password fixed, the LLM on with no budget: analyses go on without it.
        sink.script[:] = []
        apply(cluster, secret(namespace, "pw"))
        doc["spec"]["llm"] = {
            "enabled": True,
            "dailyTokenBudget": 0,
            "providers": [{"provider": "openaiCompatible", "model": "m", "baseURL": "http://127.0.0.1:9/v1"}],
        }
        apply(cluster, doc)
        wait_for(lambda: ready(cluster, namespace), timeout=60, what="Ready again")
        assert analysed(cluster, namespace, "4")["outcome"] == "Succeeded"
        spent = scraped(port, "optischema_llm_budget_exhausted_total", "the spent budget counted")

    labels = {"namespace": namespace, "target": "shop"}
    failing_labels, failing_text = expected("OptiSchemaAnalysisFailing", **labels, reason="AuthenticationFailed")
    sink_labels, sink_text = expected("OptiSchemaNotificationsFailing", **labels, sink="webhook:hook")
    budget_labels, budget_text = expected("OptiSchemaLlmBudgetSpent", **labels, scope="target")
    # 5-minute steps: an hour healthy, then the failures (the first ones the counters ever saw), held.
    evaluate(
        tmp_path,
        [
            (
                "5m",
                [Held(healthy, 12), Held(failing, 1), Held(failing_more, 30)],
                [
                    silent("OptiSchemaAnalysisFailing", at(55)),
                    silent("OptiSchemaAnalysisFailing", at(80)),  # pending: `for: 30m`
                    fired("OptiSchemaAnalysisFailing", at(95), failing_labels, failing_text),
                    silent("OptiSchemaNotificationsFailing", at(55)),
                    fired("OptiSchemaNotificationsFailing", at(80), sink_labels, sink_text),
                    silent("OptiSchemaLlmBudgetSpent", at(95)),
                ],
            ),
            (
                "5m",
                [Held(healthy, 12), Held(spent, 12)],
                [
                    silent("OptiSchemaLlmBudgetSpent", at(55)),
                    fired("OptiSchemaLlmBudgetSpent", at(65), budget_labels, budget_text),
                    silent("OptiSchemaLlmBudgetSpent", at(60 + 65)),  # an hour after the last spent budget
                ],
            ),
            (
                "5m",
                [Held(healthy, 36)],
                [silent(name, at(175)) for name in ALERTS],
            ),
        ],
    )


ALERTS = [
    "OptiSchemaAnalysisFailing",
    "OptiSchemaChangeStuck",
    "OptiSchemaNotificationsFailing",
    "OptiSchemaChangeFailed",
    "OptiSchemaRollback",
    "OptiSchemaLlmBudgetSpent",
]


def test_change_alerts_fire_from_a_real_run(cluster: Cluster, namespace: str, database: str, tmp_path: Path) -> None:
    # The table whose index makes a query slower (test_apply's trap), for the rollback.
    sql(database, "CREATE TABLE r (id int, ts int, flag int)")
    sql(database, "INSERT INTO r SELECT g, g, (g > 998000)::int FROM generate_series(1, 1000000) g")
    sql(database, "VACUUM ANALYZE r")
    slower = "SELECT id FROM r WHERE flag = $1 ORDER BY ts LIMIT 1"
    for _ in range(10):
        sql(database, slower, 1)
    sql(database, "CREATE TABLE doomed (x int)")  # its change waits for the window; the table is gone by then
    port = free_port()
    with operators(cluster, namespace, "alerts", OPTISCHEMA_METRICS_PORT=str(port)) as start:
        apply(cluster, secret(namespace, "pw"))
        doc = writer_target(namespace, database)
        later = datetime.now(UTC) + timedelta(days=3)
        doc["spec"]["oneOffWindows"] = [{"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()}]
        doc["spec"]["maintenanceWindows"] = []
        apply(cluster, doc)
        start()
        wait_for(lambda: ready(cluster, namespace), timeout=60, what="Ready")
        idle = scraped(port, "optischema_target_ready", "the target's scrape")

        apply(cluster, change(namespace, "waits", {"table": "invoices", "columns": [{"name": "customer_id"}]}))
        apply(cluster, change(namespace, "doomed", {"table": "doomed", "columns": [{"name": "x"}]}))
        for name in ("waits", "doomed"):
            assert wait_phase(cluster, namespace, name, "WaitingForWindow")["phase"] == "WaitingForWindow"
        waiting = scraped(port, "optischema_index_changes_waiting{", "the waiting change's gauge")
        sql(database, "DROP TABLE doomed")

        # A window opens: one waiting change is applied (statements run on the target), the other fails its
        # pre-check (its table is gone).
        now = datetime.now(UTC)
        doc["spec"]["oneOffWindows"].append(
            {"start": (now - timedelta(minutes=1)).isoformat(), "end": (now + timedelta(minutes=30)).isoformat()}
        )
        apply(cluster, doc)
        with Traffic(database, "SELECT sum(amount) FROM invoices WHERE customer_id = $1", 42):
            status = wait_phase(cluster, namespace, "waits", "Applied", "RolledBack", "Failed", timeout=120)
        assert status["phase"] == "Applied", status["conditions"]
        assert wait_phase(cluster, namespace, "doomed", "Failed", "Applied")["phase"] == "Failed"
        opened = scraped(port, 'phase="Failed"', "the failed change counted")
        assert 'phase="Applied"' in opened

        with Traffic(database, slower, 1):
            apply(
                cluster, change(namespace, "by-ts", {"table": "r", "columns": [{"name": "ts"}]}, schedule="immediate")
            )
            status = wait_phase(cluster, namespace, "by-ts", "Applied", "RolledBack", "Failed", timeout=120)
        assert status["phase"] == "RolledBack", status["conditions"]
        rolled_back = scraped(port, "optischema_rollbacks_total{", "the rollback counted")

    labels = {"namespace": namespace, "target": "shop"}
    stuck_labels, stuck_text = expected("OptiSchemaChangeStuck", **labels)
    failed_labels, failed_text = expected("OptiSchemaChangeFailed", **labels)
    rollback_labels, rollback_text = expected("OptiSchemaRollback", **labels)
    week = 7 * 24 * 12  # 5-minute steps (a sample further apart than the 5-minute lookback would be stale between)
    evaluate(
        tmp_path,
        [
            # A change waits a week with nothing run on its target: stuck (not before the week is over).
            (
                "5m",
                [Held(idle, 12), Held(waiting, week + 12)],
                [
                    silent("OptiSchemaChangeStuck", at(60 + 6 * 24 * 60)),
                    silent("OptiSchemaChangeStuck", at(60 + week * 5)),
                    fired("OptiSchemaChangeStuck", at(60 + week * 5 + 20), stuck_labels, stuck_text),
                ],
            ),
            # Waiting three days, then its window came (one applied, one failed): never stuck.
            (
                "5m",
                [Held(idle, 12), Held(waiting, 3 * 24 * 12), Held(opened, week + 24)],
                [silent("OptiSchemaChangeStuck", at(60 + m * 24 * 60)) for m in (4, 7, 8, 10)],
            ),
            # A change failed; later one was rolled back: each is told (the first of its kind the counters saw).
            (
                "5m",
                [Held(idle, 12), Held(waiting, 12), Held(opened, 12), Held(rolled_back, 24)],
                [
                    silent("OptiSchemaChangeFailed", at(115)),
                    fired("OptiSchemaChangeFailed", at(125), failed_labels, failed_text),
                    silent("OptiSchemaRollback", at(175)),
                    fired("OptiSchemaRollback", at(185), rollback_labels, rollback_text),
                    silent("OptiSchemaChangeFailed", at(185)),
                    # the board's Rollbacks (24h) counts the first rollback the counter ever saw
                    value(panel("Rollbacks"), at(185), "{}", 1),
                ],
            ),
            # Healthy: changes waited a little for their window.
            (
                "5m",
                [Held(idle, 12), Held(waiting, 24)],
                [silent(name, at(m)) for name in ALERTS for m in (55, 115, 175)],
            ),
        ],
    )
