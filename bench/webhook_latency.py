"""The admission webhook's latency while the same operator process analyses 10,000 statements.

The operator answers admission requests on its event loop; an analysis that parsed and selected on that loop would
hold every answer until it yields (the API server gives a webhook 10 s, then refuses the request). The analysis
runs in a thread of its own (``flows.analyze.analyze_off_loop``); this measures what a person's ``kubectl``
meets meanwhile.

Set-up: the embedded control plane, one local PostgreSQL with the synthetic workload of ``bench speed`` (50
tables, 10,000 statements in pg_stat_statements), the real operator process with its webhook on loopback. Figures:
p50/p99/max of server-side dry-run creates of a TuningRecommendation (each goes through the operator's mutating
webhook), first with the operator idle, then while the target's 10,000-statement analysis runs. Goal: p99 < 1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from devcluster import LocalPostgres
from devcluster.cluster import Cluster
from optischema.api.index import IndexDefinition
from optischema.changes.ddl import render_create, render_drop
from optischema.postgres.local import free_port

NAMESPACE = "latency"
GROUP, VERSION = "optischema.io", "v1alpha1"
#: Pause between two timed admission requests.
PAUSE = 0.1


def _recommendation(number: int) -> dict[str, Any]:
    index = IndexDefinition.model_validate({"schema": "public", "table": "s00", "columns": [{"name": "a"}]})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TuningRecommendation",
        "metadata": {"name": f"probe-{number:05d}", "labels": {"optischema.io/target": "synth"}},
        "spec": {
            "targetRef": {"name": "synth"},
            "kind": "createIndex",
            "change": {"index": index.model_dump(mode="json", by_alias=True, exclude_none=True)},
            "sql": render_create(index),
            "rollbackSql": render_drop(index),
            "rationale": "a latency probe (server-side dry run: never stored)",
            "risk": "low",
        },
    }


def _probe(api: Any, number: int) -> tuple[float, str]:
    """One dry-run create through the webhook: (seconds, outcome)."""
    started = time.monotonic()
    try:
        api.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "tuningrecommendations", _recommendation(number), dry_run="All"
        )
        outcome = "admitted"
    except ApiException as error:
        outcome = f"refused {error.status}"
    return time.monotonic() - started, outcome


def _figures(label: str, samples: list[tuple[float, str]]) -> dict[str, float]:
    times = sorted(s for s, _ in samples)
    if not times:
        print(f"  {label}: no request", flush=True)
        return {}
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    outcomes: dict[str, int] = {}
    for _, outcome in samples:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(
        f"  {label:<22} {len(times):>5} requests  p50 {statistics.median(times) * 1000:7.1f} ms  "
        f"p99 {p99 * 1000:7.1f} ms  max {times[-1] * 1000:7.1f} ms  "
        f"({', '.join(f'{n} {o}' for o, n in outcomes.items())})",
        flush=True,
    )
    return {"p50": statistics.median(times), "p99": p99, "max": times[-1], "requests": float(len(times))}


def bench(statements: int = 10_000, tables: int = 50, rows: int = 5000, baseline: int = 100) -> dict[str, Any]:
    from run import load_synthetic, synthetic_statements  # bench/ is on sys.path when run as a script

    work = Path(tempfile.mkdtemp(prefix="optischema-latency-"))
    work.chmod(0o755)
    with Cluster(work / "cluster") as cluster, LocalPostgres(base_dir=work / "pg") as server:
        kubectl = cluster.plane.kubectl
        server.psql("CREATE DATABASE synth")
        server.psql("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;", database="synth")
        server.psql("ALTER ROLE postgres PASSWORD 'pw'")
        started = time.monotonic()
        asyncio.run(load_synthetic(server.dsn("synth"), tables, rows, synthetic_statements(tables, statements)))
        print(f"  loaded {statements} statements over {tables} tables in {time.monotonic() - started:.0f}s", flush=True)
        kubectl("create", "namespace", NAMESPACE)
        kubectl("create", "secret", "generic", "db", "-n", NAMESPACE, "--from-literal=username=postgres",
                "--from-literal=password=pw")  # fmt: skip
        kubectl("label", "secret", "-n", NAMESPACE, "db", "optischema.io/allow=true")  # the operator reads no other
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.plane.kubeconfig()),
            "OPTISCHEMA_CHECK_SECONDS": "2",
            "OPTISCHEMA_SAMPLE_SECONDS": "0",
            "OPTISCHEMA_LOG_FORMAT": "json",
            "OPTISCHEMA_WEBHOOK_PORT": str(free_port()),
            "OPTISCHEMA_OPERATOR_IDENTITY": "admin",  # the kubeconfig's user: the operator writes recommendations as it
        }
        log = work / "operator.log"
        operator = subprocess.Popen(
            [sys.executable, "-m", "optischema.cli.main", "run", "-n", NAMESPACE],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            config.load_kube_config(str(cluster.plane.kubeconfig()))
            api = client.CustomObjectsApi()
            deadline = time.monotonic() + 120
            while True:  # the webhook is registered and answers
                _, outcome = _probe(api, 0)
                if outcome == "admitted" or time.monotonic() > deadline:
                    break
                time.sleep(1)
            idle = []
            for number in range(baseline):
                idle.append(_probe(api, number))
                time.sleep(PAUSE)
            target = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "PostgresTarget",
                "metadata": {"name": "synth", "namespace": NAMESPACE},
                "spec": {
                    "connection": {
                        "host": "127.0.0.1",
                        "port": server.port,
                        "database": "synth",
                        "sslmode": "disable",
                        "credentialsSecret": {"name": "db"},
                    },
                    "analysis": {"minCalls": 1, "topStatements": statements},
                    "sandbox": {"enabled": False},
                },
            }
            kubectl("apply", "-f", "-", input=json.dumps(target))
            busy: list[tuple[float, str]] = []
            last: dict[str, Any] = {}
            analysis_started = time.monotonic()
            number = baseline
            while time.monotonic() - analysis_started < 1800:
                busy.append(_probe(api, number))
                number += 1
                if number % 20 == 0:
                    status = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "postgrestargets", "synth")
                    last = (status.get("status") or {}).get("lastAnalysis") or {}
                    if last.get("completionTime"):
                        break
                time.sleep(PAUSE)
            print(
                f"  analysis: {last.get('outcome')} in {last.get('durationSeconds')}s, "
                f"{last.get('statementsAnalysed')} of {last.get('statementsSeen')} statements analysed",
                flush=True,
            )
            figures = {"idle": _figures("operator idle", idle), "busy": _figures("during the analysis", busy)}
            p99 = figures["busy"].get("p99")
            print(f"  goal: p99 < 1 s during the analysis: {'met' if p99 is not None and p99 < 1 else 'NOT met'}")
            return {**figures, "analysis": last}
        finally:
            kubectl("delete", "postgrestargets", "--all", "-n", NAMESPACE, "--timeout=60s")
            operator.terminate()
            operator.wait(timeout=60)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print("\n## webhook: admission latency while a 10,000-statement analysis runs in the operator", flush=True)
    bench(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
