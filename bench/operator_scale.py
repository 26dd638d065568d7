"""The operator at scale on the embedded control plane: 200 targets, 5,000 recommendations.

Figures: the operator's resident memory (now and peak) once it has taken in every object, and the time from an
approval (the PATCH a person's kubectl sends) to the IndexChange the operator creates, p50/p95 over 100 approvals.
Targets: RSS under 300 MB, p95 under 2 s.

The targets are real (one local PostgreSQL; each is checked on its period) and suspended, so that no analysis
supersedes the 5,000 recommendations written here through the API as an analysis would write them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from devcluster import LocalPostgres
from devcluster.cluster import Cluster
from optischema.api.recommendation import TuningRecommendationSpec

NAMESPACE = "scale"
GROUP, VERSION = "optischema.io", "v1alpha1"


def recommendation(target: str, number: int) -> dict[str, Any]:
    column = f"c{number}"
    index = {"table": f"t{number % 40}", "columns": [{"name": column}]}
    spec = {
        "targetRef": {"name": target},
        "kind": "createIndex",
        "change": {"index": index},
        "sql": f'CREATE INDEX CONCURRENTLY "t_{column}_idx" ON "public"."t{number % 40}" ("{column}")',
        "rollbackSql": f'DROP INDEX CONCURRENTLY IF EXISTS "public"."t_{column}_idx"',
        "rationale": "synthetic, for the scale benchmark",
        "risk": "low",
    }
    TuningRecommendationSpec.model_validate(spec)  # what we write is what the CRD accepts
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TuningRecommendation",
        "metadata": {"name": f"{target}-createindex-{number:05d}", "labels": {"optischema.io/target": target}},
        "spec": spec,
    }


def memory_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def bench(targets: int = 200, per_target: int = 25, approvals: int = 100) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="optischema-scale-"))
    work.chmod(0o755)
    with (
        Cluster(work / "cluster") as cluster,
        LocalPostgres(base_dir=work / "pg", settings={"max_connections": "300"}) as server,
    ):
        kubectl = cluster.plane.kubectl
        # The embedded control plane's start (etcd, kube-apiserver, kube-controller-manager), goal: seconds, < 15.
        print(f"  control plane started in {cluster.plane.startup_seconds:.1f}s (goal < 15 s)", flush=True)
        server.psql("CREATE DATABASE shop")
        server.psql("CREATE EXTENSION pg_stat_statements", database="shop")
        server.psql("ALTER ROLE postgres PASSWORD 'pw'")
        kubectl("create", "namespace", NAMESPACE)
        kubectl(
            "create",
            "secret",
            "generic",
            "db",
            "-n",
            NAMESPACE,
            "--from-literal=username=postgres",
            "--from-literal=password=pw",
        )
        kubectl("label", "secret", "-n", NAMESPACE, "db", "optischema.io/allow=true")  # the operator reads no other
        started = time.monotonic()
        names = [f"db{i:03d}" for i in range(targets)]
        documents: list[dict[str, Any]] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "PostgresTarget",
                "metadata": {"name": name},
                "spec": {
                    "connection": {
                        "host": "127.0.0.1",
                        "port": server.port,
                        "database": "shop",
                        "sslmode": "disable",
                        "credentialsSecret": {"name": "db"},
                    },
                    "suspend": True,
                },
            }
            for name in names
        ]
        documents += [
            recommendation(name, t * per_target + n) for t, name in enumerate(names) for n in range(per_target)
        ]
        for chunk in range(0, len(documents), 250):
            batch = {"apiVersion": "v1", "kind": "List", "items": documents[chunk : chunk + 250]}
            kubectl("create", "-n", NAMESPACE, "-f", "-", input=json.dumps(batch))
        print(
            f"  created {targets} targets and {targets * per_target} recommendations in "
            f"{time.monotonic() - started:.0f}s",
            flush=True,
        )

        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.plane.kubeconfig()),
            "OPTISCHEMA_CHECK_SECONDS": "60",
            "OPTISCHEMA_LOG_FORMAT": "json",
            # This benchmark measures reconciliation at scale, not admission: the recommendations above are
            # created as the cluster's admin before the operator starts, so it runs without its webhook.
            "OPTISCHEMA_INSECURE_NO_WEBHOOK": "true",
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
            # Settled: every target checked once (its status has a Ready condition).
            started = time.monotonic()
            while True:
                items = api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "postgrestargets")["items"]
                if all((i.get("status") or {}).get("conditions") for i in items):
                    break
                if time.monotonic() - started > 600:
                    raise SystemExit(f"the operator did not check every target in 600s; see {log}")
                time.sleep(2)
            print(f"  every target checked {time.monotonic() - started:.0f}s after start", flush=True)
            # Settled: kopf has handled every recommendation once (it records that in an annotation).
            while True:
                items = api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "tuningrecommendations")["items"]
                handled = sum(
                    1
                    for i in items
                    if "optischema.io/last-handled-configuration" in i["metadata"].get("annotations", {})
                )
                if handled == len(items) or time.monotonic() - started > 900:
                    break
                time.sleep(2)
            drained = time.monotonic() - started
            print(f"  {handled}/{len(items)} recommendations taken in {drained:.0f}s after start", flush=True)
            settled_rss, _ = memory_mb(operator.pid)

            created: dict[str, float] = {}
            stop = threading.Event()

            def observe() -> None:
                stream = watch.Watch()
                try:
                    for event in stream.stream(
                        api.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        NAMESPACE,
                        "indexchanges",
                        timeout_seconds=300,
                    ):
                        if event["type"] == "ADDED":
                            created.setdefault(event["object"]["metadata"]["name"], time.monotonic())
                        if stop.is_set():
                            stream.stop()
                except Exception:
                    return

            watcher = threading.Thread(target=observe, daemon=True)
            watcher.start()
            time.sleep(1)
            sent: dict[str, float] = {}
            for number in range(approvals):
                name = (
                    f"{names[number % targets]}-createindex-{(number % targets) * per_target + number // targets:05d}"
                )
                sent[name] = time.monotonic()
                api.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    NAMESPACE,
                    "tuningrecommendations",
                    name,
                    {"spec": {"approval": {"state": "Approved", "reason": "scale benchmark"}}},
                )
                time.sleep(0.05)
            deadline = time.monotonic() + 60
            while len(created) < approvals and time.monotonic() < deadline:
                time.sleep(0.5)
            stop.set()
            latencies = sorted(created[n] - sent[n] for n in sent if n in created)
            rss, peak = memory_mb(operator.pid)
        finally:
            operator.terminate()
            operator.wait(timeout=60)
    figures = {
        "rss_settled_mb": settled_rss,
        "startup_s": drained,
        "rss_mb": rss,
        "peak_rss_mb": peak,
        "approvals": len(latencies),
        "p50_s": statistics.median(latencies) if latencies else float("nan"),
        "p95_s": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
    }
    print(
        f"  operator RSS {rss:.0f} MB (peak {peak:.0f} MB; {settled_rss:.0f} MB before approvals); "
        f"approval → IndexChange over {len(latencies)}/{approvals}: p50 {figures['p50_s']:.2f}s, "
        f"p95 {figures['p95_s']:.2f}s",
        flush=True,
    )
    print("  targets: RSS under 300 MB, p95 under 2 s", flush=True)
    return figures


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:]]
    bench(*arguments)
