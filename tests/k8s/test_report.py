"""Reports from a real run (analyse, benchmark, approve, apply, verify, analyse again), in all three formats, the HTML
opened in headless Chromium; the scheduled report; and the target's own events (analyses failing, the LLM budget
spent), sent once each across re-analyses and an operator restart, to the cluster's default sink. The statement
history and the scheduled report are custom resources (StatementHistory, TuningReport) that a user bound only to
optischema-viewer reads, while reading no ConfigMap."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import config

from devcluster.cluster import Cluster
from optischema.flows import reports
from optischema.kube import history
from optischema.kube.client import Kube
from optischema.notify.deliver import Notifier
from optischema.reports.history import point_of
from tests.browser import dom, screenshot
from tests.png import pixels
from tests.receiver import receiver

from .conftest import allow_secrets, apply, get, operators, secret, target, wait_for
from .test_apply import Traffic
from .test_sandbox import benchmarked

# with a constant, as the database fixture ran it: a $1 parameter would be another statement to pg_stat_statements
STATEMENT = "SELECT sum(amount) FROM invoices WHERE customer_id = 42"
# the charts' colours (reports/charts.py): "before" bars, "after" bars, lines
GREY, GREEN, BLUE = (0x9A, 0xA5, 0xB1), (0x1F, 0x9D, 0x55), (0x2F, 0x6F, 0xDE)


def plugin(cluster: Cluster, *args: str, user: str = "admin") -> str:
    result = subprocess.run(
        [sys.executable, "-m", "optischema.cli.plugin", *args],
        env={**os.environ, "KUBECONFIG": str(cluster.plane.kubeconfig(user))},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def analysed(cluster: Cluster, namespace: str, token: str) -> dict[str, Any]:
    cluster.plane.kubectl(
        "annotate", "pgt", "shop", "-n", namespace, f"optischema.io/analyze-requested={token}", "--overwrite"
    )
    return wait_for(
        lambda: (
            (last := get(cluster, "pgt", "shop", "-n", namespace)["status"].get("lastAnalysis") or {}).get("requested")
            == token
            and last.get("completionTime")
            and last
        ),
        timeout=120,
        what=f"analysis {token}",
    )


def test_a_report_of_a_real_run_in_three_formats_renders_in_a_browser(
    cluster: Cluster, namespace: str, database: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    with receiver() as sink, operators(cluster, namespace, "report") as start:
        apply(cluster, secret(namespace, "pw"))
        cluster.plane.kubectl(
            "create", "secret", "generic", "hook", "-n", namespace, f"--from-literal=url={sink.url('/hook')}"
        )
        allow_secrets(cluster, namespace, "hook")
        doc = target(namespace, database, sandbox={"dataMode": "sample", "samplePercent": 20})
        doc["spec"]["connection"]["writeCredentialsSecret"] = {"name": "shop-db"}
        doc["spec"]["analysis"]["interval"] = "168h"
        doc["spec"]["policy"] = {"verification": {"observeSeconds": 4, "minCalls": 5}}
        doc["spec"]["oneOffWindows"] = [
            {"start": (now - timedelta(minutes=1)).isoformat(), "end": (now + timedelta(hours=1)).isoformat()}
        ]
        doc["spec"]["reports"] = {"schedule": "* * * * *", "period": "1d"}
        doc["spec"]["notifications"] = {
            "sinks": [{"type": "webhook", "urlSecret": {"name": "hook", "key": "url"}, "events": ["reportReady"]}]
        }
        apply(cluster, doc)
        start()

        # analyse → a createIndex recommendation, measured in a sandbox pod
        found = benchmarked(cluster, namespace)
        name = found[0]["metadata"]["name"]
        # approve → applied in the open window, verified against live traffic
        plugin(cluster, "-n", namespace, "approve", name, "--reason", "report test")
        with Traffic(database, STATEMENT):
            change = wait_for(
                lambda: next(
                    (
                        c
                        for c in get(cluster, "indexchanges", "-n", namespace)["items"]
                        if (c.get("status") or {}).get("phase") in ("Applied", "RolledBack", "Failed")
                    ),
                    None,
                ),
                timeout=180,
                what="the change applied and verified",
            )
        assert change["status"]["phase"] == "Applied", change["status"].get("conditions")
        analysed(cluster, namespace, "after")  # the history's second point, with the faster statement

        files = {}
        for fmt in ("md", "html", "json"):
            out = tmp_path / f"report.{fmt}"
            said = plugin(cluster, "-n", namespace, "report", "shop", "--since", "1d", "--format", fmt, "-o", str(out))
            assert f"wrote {out}" in said
            files[fmt] = out

        report = json.loads(files["json"].read_text())
        assert report["snapshots"] >= 2, report
        (applied,) = report["applied"]
        assert applied["name"] == change["metadata"]["name"]
        assert applied["sandboxSpeedup"] > 1, applied
        assert applied["productionAfterMs"] < applied["productionBeforeMs"], applied
        assert applied["storageBytes"] > 0
        top = next(s for s in report["topStatements"] if "invoices" in s["query"])
        assert top["lastMeanMs"] < top["firstMeanMs"], top
        assert report["timeSavedSeries"], report
        assert report["timeSavedSeries"][-1]["value"] > 0
        assert report["timeSavedPerDaySeconds"] > 0
        assert report["recommendationsByPhase"].get("Applied") == 1, report["recommendationsByPhase"]

        markdown = files["md"].read_text()
        assert "## Top statements by total time" in markdown
        assert applied["name"] in markdown
        assert "| Q1 |" in markdown

        # The HTML opens without a network and draws its charts.
        parsed = dom(files["html"])
        assert parsed.count("<svg") == 4
        assert parsed.count('class="bar"') >= 4  # before and after, statements and changes
        assert 'class="series"' in parsed
        width, height, colours = pixels(screenshot(files["html"], tmp_path / "report.png"))
        assert (width, height) == (1000, 2600)
        assert colours[GREY] > 3000, "the 'before' bars are drawn"
        assert colours[GREEN] > 100, "the 'after' bars are drawn"
        assert colours[BLUE] > 500, "the time-saved and storage lines are drawn"

        # The scheduled report: a TuningReport and one summary to the sink.
        last = wait_for(
            lambda: get(cluster, "pgt", "shop", "-n", namespace)["status"].get("lastReport"),
            timeout=120,
            what="the scheduled report",
        )
        scheduled = get(cluster, "tuningreport", last["configMap"], "-n", namespace)
        assert scheduled["metadata"]["ownerReferences"][0]["kind"] == "PostgresTarget"
        stored = scheduled["report"]
        assert stored["html"].startswith("<!DOCTYPE html>")
        assert {"html", "md", "json"} <= set(stored)
        assert last["sizeBytes"] == stored["sizeBytes"] == len(stored["html"].encode())
        legacy = "app.kubernetes.io/component in (report,history)"  # what earlier versions wrote
        assert not get(cluster, "configmaps", "-n", namespace, "-l", legacy)["items"]
        wait_for(lambda: sink.received, timeout=30, what="the report's notification")
        told = plugin(cluster, "-n", namespace, "status", "shop")
        assert f"last scheduled report: {last['time']} in TuningReport {last['configMap']}" in told
        assert f"kubectl get tuningreport {last['configMap']} -n {namespace} -o jsonpath='{{.report.html}}'" in told
        assert "notifications: " in told
        sent = json.loads(sink.received[0]["body"])
        assert sent["event"] == "reportReady"
        assert "kubectl optischema report shop" in sent["summary"]

        # The statement history: one StatementHistory for the day, owned by the target, compact.
        days = get(cluster, "statementhistories", "-n", namespace)["items"]
        assert len(days) == 1
        assert days[0]["metadata"]["ownerReferences"][0]["kind"] == "PostgresTarget"
        data = base64.b64decode(days[0]["history"]["data"])
        assert len(data) == days[0]["history"]["sizeBytes"] < 20_000
        assert len(json.loads(gzip.decompress(data))["p"]) == days[0]["history"]["points"] >= 2


def test_failing_analyses_and_a_spent_budget_are_announced_once_to_the_default_sink(
    cluster: Cluster, namespace: str, database: str
) -> None:
    with receiver() as sink:
        cluster.plane.kubectl(
            "create", "secret", "generic", "default-hook", "-n", namespace, f"--from-literal=url={sink.url('/d')}"
        )
        allow_secrets(cluster, namespace, "default-hook")
        default = [{"type": "webhook", "urlSecret": {"name": "default-hook", "key": "url"}}]
        env = {"OPTISCHEMA_NOTIFICATION_SINKS": json.dumps(default), "OPTISCHEMA_OPERATOR_NAMESPACE": namespace}
        with operators(cluster, namespace, "events", **env) as start:
            apply(cluster, secret(namespace, "wrong"))
            doc = target(namespace, database)
            doc["spec"]["notifications"] = {"analysisFailures": 2}
            apply(cluster, doc)
            first = start()
            # A target it cannot log in to: each due analysis fails (the first is due at once).
            wait_for(
                lambda: (get(cluster, "pgt", "shop", "-n", namespace).get("status") or {}).get("lastAnalysis"),
                timeout=60,
                what="the first failed analysis",
            )
            failed = analysed(cluster, namespace, "1")
            assert failed["outcome"] == "Failed"
            assert failed["consecutiveFailures"] == 2
            assert "not ready" in failed["message"]
            wait_for(lambda: sink.received, timeout=30, what="analysisFailing")
            analysed(cluster, namespace, "2")
            first.terminate()
            first.wait(timeout=30)
            start()  # a new operator process: it must not announce the same run of failures again
            assert analysed(cluster, namespace, "3")["consecutiveFailures"] == 4
            events = [json.loads(r["body"]) for r in sink.received]
            assert [e["event"] for e in events] == ["analysisFailing"], events
            assert events[0]["details"] == {"consecutiveFailures": 2}
            assert "AuthenticationFailed" in events[0]["summary"]
            notified = get(cluster, "pgt", "shop", "-n", namespace)["status"]["notifications"]["notified"]
            assert len(notified) == 1
            assert "4 failed in a row since" in plugin(cluster, "-n", namespace, "status", "shop")

            # The password fixed: the run of failures ends. The LLM on with no budget: announced once a day.
            apply(cluster, secret(namespace, "pw"))
            doc["spec"]["llm"] = {
                "enabled": True,
                "dailyTokenBudget": 0,
                "providers": [{"provider": "openaiCompatible", "model": "m", "baseURL": "http://127.0.0.1:9/v1"}],
            }
            apply(cluster, doc)
            wait_for(
                lambda: any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in get(cluster, "pgt", "shop", "-n", namespace)["status"]["conditions"]
                ),
                timeout=60,
                what="Ready with the right password",
            )
            ok = analysed(cluster, namespace, "4")
            assert (ok["outcome"], ok["consecutiveFailures"]) == ("Succeeded", 0), ok
            assert get(cluster, "pgt", "shop", "-n", namespace)["status"]["llm"]["budgetSpent"] == "target"
            wait_for(lambda: len(sink.received) == 2, timeout=60, what="llmBudgetSpent")
            analysed(cluster, namespace, "5")
            analysed(cluster, namespace, "6")
            events = [json.loads(r["body"]) for r in sink.received]
            assert [e["event"] for e in events] == ["analysisFailing", "llmBudgetSpent"], events
            assert "budget is spent" in events[1]["summary"]


def _written(cluster: Cluster, doc: dict[str, Any], now: datetime) -> None:
    """What the operator writes after analyses and at a scheduled time, by its own code against the real API
    server: two history points of the same day written at once (one must read the other's and retry), a third, and
    the scheduled report."""
    config.load_kube_config(config_file=str(cluster.plane.kubeconfig()))  # type: ignore[no-untyped-call]

    async def write() -> None:
        kube = Kube()
        points = [
            point_of(now - timedelta(minutes=m), [("q1", STATEMENT, 10 * (5 - m), 3.0 * (5 - m), 5 - m)], keep=10)
            for m in (3, 2, 1)
        ]
        await asyncio.gather(*(history.add(kube, doc, point, texts) for point, texts in points[:2]))
        await history.add(kube, doc, *points[2])
        assert await reports.scheduled(kube, Notifier(), doc, now)

    asyncio.run(write())


def test_a_viewer_reads_the_report_and_history_but_no_configmap(cluster: Cluster, namespace: str) -> None:
    """optischema-viewer reads statement history and scheduled reports as custom resources, and nothing of a
    namespace's ConfigMaps (application configuration included), which RBAC could only grant whole."""
    now = datetime.now(UTC)
    doc = target(namespace, "127.0.0.1")
    doc["spec"]["reports"] = {"schedule": "* * * * *", "period": "1d"}
    apply(cluster, doc)
    live = get(cluster, "pgt", "shop", "-n", namespace)
    live["metadata"]["creationTimestamp"] = (now - timedelta(hours=1)).isoformat()  # a report is due
    cluster.plane.kubectl(
        "create", "configmap", "app-config", "-n", namespace, "--from-literal=DATABASE_URL=postgres://app:s3cret@db/app"
    )
    cluster.plane.kubectl(  # what earlier versions wrote: left in place, never read
        "create", "configmap", "shop-report", "-n", namespace, "--from-literal=report.html=<p>old</p>"
    )
    _written(cluster, live, now)
    cluster.plane.kubectl(
        "create", "rolebinding", "alice-viewer", "-n", namespace, "--clusterrole=optischema-viewer", "--user=alice"
    )

    # the three points landed in one day's object, the concurrent writers having retried on conflict
    (day,) = get(cluster, "statementhistories", "-n", namespace)["items"]
    assert day["metadata"]["name"] == f"shop-history-{now:%Y%m%d}"
    assert day["history"]["points"] == 3
    assert day["metadata"]["labels"]["optischema.io/target-uid"] == live["metadata"]["uid"]
    assert get(cluster, "pgt", "shop", "-n", namespace)["status"]["lastReport"]["configMap"] == "shop-report"

    # the viewer reads both kinds, with kubectl and with the plugin
    html = cluster.plane.kubectl(
        "get", "tuningreport", "shop-report", "-n", namespace, "-o", "jsonpath={.report.html}", user="alice"
    )
    assert html.startswith("<!DOCTYPE html>")
    said = plugin(cluster, "-n", namespace, "report", "shop", "--since", "1d", "--format", "json", user="alice")
    assert json.loads(said)["snapshots"] == 3
    scheduled = plugin(cluster, "-n", namespace, "report", "shop", "--scheduled", "--format", "html", user="alice")
    assert scheduled.strip() == html.strip()
    shown = plugin(cluster, "-n", namespace, "status", "shop", user="alice")
    assert "in TuningReport shop-report" in shown

    # ...and no ConfigMap: not the application's, not the report an earlier version wrote, not a list of them
    for args in (("configmap", "app-config"), ("configmap", "shop-report"), ("configmaps",)):
        said = cluster.plane.kubectl("get", *args, "-n", namespace, user="alice", check=False)
        assert "Forbidden" in said, said
        assert "s3cret" not in said
    for verb in ("get", "list", "watch"):
        can = cluster.plane.kubectl("auth", "can-i", verb, "configmaps", "-n", namespace, user="alice", check=False)
        assert can.strip() == "no", f"viewer may {verb} configmaps"
    # nor may the viewer forge or remove what the operator writes
    for verb in ("create", "update", "patch", "delete"):
        for kind in ("tuningreports", "statementhistories"):
            can = cluster.plane.kubectl(
                "auth", "can-i", verb, f"{kind}.optischema.io", "-n", namespace, user="alice", check=False
            )
            assert can.strip() == "no", f"viewer may {verb} {kind}"
    assert get(cluster, "tuningreport", "shop-report", "-n", namespace)["report"]["html"] == html

    # deleted with their target (the garbage collector follows the owner references)
    cluster.plane.kubectl("delete", "pgt", "shop", "-n", namespace)
    wait_for(
        lambda: not get(cluster, "statementhistories,tuningreports", "-n", namespace)["items"],
        timeout=60,
        what="the history and report garbage-collected with their target",
    )
