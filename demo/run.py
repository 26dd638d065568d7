"""`make demo`: the operator end to end, on this machine, with no Docker.

1. start the embedded control plane (etcd, kube-apiserver, kube-controller-manager: the one the tests use) and a
   local PostgreSQL 15 with the shop workload; 2. run the shop's mix to fill pg_stat_statements and measure it;
3. start the operator (`optischema run`, with its admission webhook) and create the Secret and a PostgresTarget;
4. wait for the TuningRecommendations and print `kubectl get`; 5. approve the best one as user `bob` with the
kubectl plugin (`kubectl optischema approve`), and show the IndexChange waiting for the target's window;
6. approve the other index recommendations, open a one-off maintenance window now, and watch the operator apply
them (CREATE INDEX CONCURRENTLY, verification against pg_stat_statements); 7. measure the mix again; 8. analyse
once more (the statement history's point after the changes) and write the report (`kubectl optischema report`) as
HTML, Markdown and JSON, printing the HTML's path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from localmodel import MODEL, local_model  # demo/ is on sys.path when run as a script

from devcluster import LocalPostgres
from devcluster.cluster import Cluster
from devcluster.workload import Workload
from optischema.postgres.local import free_port

HERE = Path(__file__).resolve().parent
NAMESPACE = "demo"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float = 180, on_timeout: Callable[[], None] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(1)
    if on_timeout is not None:
        on_timeout()
    raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")


def target(port: int, llm_url: str | None) -> dict[str, Any]:
    llm = (
        {"enabled": True, "providers": [{"provider": "openaiCompatible", "model": MODEL, "baseURL": llm_url}]}
        if llm_url
        else {"enabled": False}
    )
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "PostgresTarget",
        "metadata": {"name": "shop", "namespace": NAMESPACE},
        "spec": {
            "connection": {
                "host": "127.0.0.1",
                "port": port,
                "database": "shop",
                "sslmode": "disable",
                "credentialsSecret": {"name": "shop-analysis"},
                "writeCredentialsSecret": {"name": "shop-apply"},
            },
            "policy": {"verification": {"observeSeconds": 10, "minCalls": 5}},
            "analysis": {"interval": "6h", "minCalls": 5},
            "maintenanceWindows": [{"days": ["Sun"], "start": "02:00", "duration": "2h", "timeZone": "Europe/Berlin"}],
            "llm": llm,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=10, help="length of the throughput run")
    parser.add_argument("--no-llm", action="store_true", help="leave the LLM advisor off (the engine alone)")
    parser.add_argument(
        "--report", default=str(HERE.parent / "build" / "demo" / "optischema-report.html"), help="where the HTML goes"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="optischema-demo-"))
    work.chmod(0o755)  # PostgreSQL runs as the postgres user below it

    step("starting the embedded control plane and a local PostgreSQL 15 (pg_stat_statements, HypoPG)")
    with (
        Cluster(work / "cluster") as cluster,
        LocalPostgres(base_dir=work / "pg") as server,
        contextlib.nullcontext() if args.no_llm else local_model(free_port()) as model,
    ):
        kubectl = cluster.plane.kubectl
        print(f"    export KUBECONFIG={cluster.plane.kubeconfig()}")
        shop = Workload(HERE / "shop", server, scale=args.scale)
        shop.load()
        # The operator's analysis role: reads statistics, cannot write.
        server.psql(
            "CREATE ROLE optischema LOGIN PASSWORD 'demo-analysis' IN ROLE pg_read_all_stats;"
            "GRANT pg_read_all_data TO optischema;",
            database="shop",
        )
        step(f"running the shop's mix for {args.seconds:g}s (2 clients)")
        before = shop.run(args.seconds)
        print(f"    {before:.0f} transactions/s")

        step("starting the operator (optischema run -n demo, admission webhook on 127.0.0.1)")
        kubectl("create", "namespace", NAMESPACE)
        kubectl(
            "create", "rolebinding", "bob-approver", "-n", NAMESPACE, "--clusterrole=optischema-approver", "--user=bob"
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.plane.kubeconfig()),
            "OPTISCHEMA_WEBHOOK_PORT": str(free_port()),
            "OPTISCHEMA_OPERATOR_IDENTITY": "admin",
            "OPTISCHEMA_SAMPLE_SECONDS": "5",
            "OPTISCHEMA_CHECK_SECONDS": "3",
            "OPTISCHEMA_LOG_FORMAT": "json",
        }
        log = work / "operator.log"
        operator = subprocess.Popen(
            [sys.executable, "-m", "optischema.cli.main", "run", "-n", NAMESPACE],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        traffic = shop.live(300, rate=100)  # live traffic, so the operator samples real parameter values
        try:
            step("creating the Secret and the PostgresTarget")
            kubectl(
                "create",
                "secret",
                "generic",
                "shop-analysis",
                "-n",
                NAMESPACE,
                "--from-literal=username=optischema",
                "--from-literal=password=demo-analysis",
            )
            # Applying needs its own credentials (an index owner); analysis stays read-only.
            server.psql("ALTER ROLE postgres PASSWORD 'demo-apply'")
            kubectl(
                "create", "secret", "generic", "shop-apply", "-n", NAMESPACE,
                "--from-literal=username=postgres", "--from-literal=password=demo-apply",
            )  # fmt: skip
            # The operator reads only Secrets that opt in (whoever writes a target names them).
            kubectl("label", "secret", "-n", NAMESPACE, "shop-analysis", "shop-apply", "optischema.io/allow=true")
            if model is not None:
                print(f"    LLM advisor on: {MODEL} at {model.url}")
                print("    (a stand-in for a local model server: no network here; --no-llm turns the advisor off)")
            kubectl("apply", "-f", "-", input=json.dumps(target(server.port, model.url if model else None)))
            wait_for(
                "the target to be Ready",
                lambda: (
                    "True"
                    in kubectl(
                        "get",
                        "pgt",
                        "shop",
                        "-n",
                        NAMESPACE,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                    )
                ),
            )
            print(kubectl("get", "pgt", "-n", NAMESPACE))

            step("waiting for the analysis (pg_stat_statements + catalogs + HypoPG what-if)")
            items = wait_for(
                "recommendations", lambda: json.loads(kubectl("get", "trec", "-n", NAMESPACE, "-o", "json"))["items"]
            )
            print(kubectl("get", "trec", "-n", NAMESPACE))
            if not [i for i in items if i["spec"]["kind"] == "createIndex"]:
                raise SystemExit("no index recommendation was made; see " + str(log))

            step("benchmarking each index recommendation in a sandbox pod (a 10% sample of the shop)")
            wait_for(
                "a sandbox pod",
                lambda: kubectl(
                    "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=sandbox", "-o", "name"
                ),
                timeout=60,
            )
            print(kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=sandbox", "-o", "wide"))
            creates = wait_for(
                "the benchmarks",
                lambda: (lambda found: found if all((i.get("status") or {}).get("benchmark") for i in found) else None)(
                    [
                        i
                        for i in json.loads(kubectl("get", "trec", "-n", NAMESPACE, "-o", "json"))["items"]
                        if i["spec"]["kind"] == "createIndex"
                    ]
                ),
                timeout=600,
            )
            print(kubectl("get", "trec", "-n", NAMESPACE))
            for item in creates:
                bench = item["status"]["benchmark"]
                failed = f" — {bench['error']}" if bench.get("error") else ""
                print(
                    f"    {item['metadata']['name']}: p50 {bench.get('p50BeforeMs')} → {bench.get('p50AfterMs')} ms, "
                    f"{bench.get('speedup')}x, writes {bench.get('writeOverheadPercent')}%, "
                    f"{bench.get('rows')} rows, {bench.get('durationSeconds')}s{failed}"
                )
            best = max(creates, key=lambda i: i["status"]["benchmark"].get("improvementPercent") or 0)
            name = best["metadata"]["name"]

            step(f"kubectl optischema show {name}")
            print(plugin(cluster, "bob", "show", name))
            wait_for(
                "the webhook",
                lambda: (
                    "decision"
                    in kubectl("get", "mutatingwebhookconfiguration", "optischema.io", "-o", "yaml", check=False)
                ),
            )
            step(f"kubectl optischema approve {name} --reason 'reviewed in the demo'   (as user bob)")
            print(plugin(cluster, "bob", "approve", name, "--reason", "reviewed in the demo"))
            phase = wait_for(
                "the IndexChange",
                lambda: (  # its phase once it exists and has one (kubectl's NotFound text is not a phase)
                    kubectl("get", "ixc", name, "-n", NAMESPACE, "-o", "jsonpath={.status.phase}")
                    if f"indexchange.optischema.io/{name}" in kubectl("get", "ixc", "-n", NAMESPACE, "-o", "name")
                    else None
                ),
            )
            print(kubectl("get", "ixc", "-n", NAMESPACE))
            print(f"    IndexChange {name}: {phase}")
            step("kubectl optischema status shop")
            print(plugin(cluster, "bob", "status", "shop"))
            if model is not None:
                llm_again(cluster, model)

            step("approving the other index recommendations, and opening a maintenance window now")
            for item in creates:
                if item["metadata"]["name"] != name:
                    print(plugin(cluster, "bob", "approve", item["metadata"]["name"], "--reason", "demo"))
            now = datetime.now(UTC)
            window = {
                "start": (now - timedelta(minutes=1)).isoformat(),
                "end": (now + timedelta(minutes=30)).isoformat(),
                "reason": "agreed slot for the demo",
            }
            kubectl(
                "patch",
                "pgt",
                "shop",
                "-n",
                NAMESPACE,
                "--type",
                "merge",
                "-p",
                json.dumps({"spec": {"oneOffWindows": [window]}}),
            )
            final = {"Applied", "RolledBack", "Failed", "Superseded"}
            wait_for(
                "the changes to be applied and verified",
                on_timeout=lambda: print(
                    kubectl(
                        "get",
                        "ixc",
                        "-n",
                        NAMESPACE,
                        "-o",
                        "custom-columns=NAME:.metadata.name,PHASE:.status.phase,WHY:.status.conditions[0].message",
                    )
                ),
                probe=lambda: all(
                    i.get("status", {}).get("phase") in final
                    for i in json.loads(kubectl("get", "ixc", "-n", NAMESPACE, "-o", "json"))["items"]
                ),
                timeout=300,
            )
            print(kubectl("get", "ixc", "-n", NAMESPACE))
            change = json.loads(kubectl("get", "ixc", name, "-n", NAMESPACE, "-o", "json"))
            print(f"    history of {name}:")
            for entry in change["status"]["history"]:
                print(
                    f"      {entry['time'][11:19]} {entry['action']:<9} {entry['outcome']:<9} "
                    f"{entry.get('sql') or entry.get('message', '')}"[:160]
                )
            step(f"running the shop's mix again for {args.seconds:g}s")
            after = shop.run(args.seconds)
            print(f"    {after:.0f} transactions/s")
            step(f"throughput: {before:.0f} → {after:.0f} transactions/s ({after / before:.1f}×)")
            step("analysing again, so that the statement history has a point after the changes")
            analyse(cluster, "demo-after")
            report = write_reports(cluster, Path(args.report))
            kubectl("delete", "pgt", "shop", "-n", NAMESPACE, "--timeout=60s")
        finally:
            traffic.terminate()
            traffic.wait()
            operator.terminate()
            operator.wait(timeout=30)
            for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
                kubectl("delete", kind, "optischema.io", "--ignore-not-found", check=False)
        print(f"\n    operator log: {log}")
    print(f"\n    the report: {report}")
    return 0


def analyse(cluster: Cluster, token: str) -> dict[str, Any]:
    """Ask for an analysis now (``kubectl annotate … optischema.io/analyze-requested``) and wait for it."""
    kubectl = cluster.plane.kubectl
    kubectl("annotate", "pgt", "shop", "-n", NAMESPACE, f"optischema.io/analyze-requested={token}", "--overwrite")
    status: dict[str, Any] = wait_for(
        f"the analysis {token}",
        lambda: (
            (s := json.loads(kubectl("get", "pgt", "shop", "-n", NAMESPACE, "-o", "json"))["status"])
            .get("lastAnalysis", {})
            .get("requested")
            == token
            and s.get("lastAnalysis", {}).get("completionTime")
            and s
        ),
    )
    return status


def llm_again(cluster: Cluster, model: Any) -> None:
    """Analyse again: the same workload and schema are answered from the LLM cache, no call is made."""
    kubectl = cluster.plane.kubectl
    first = json.loads(kubectl("get", "pgt", "shop", "-n", NAMESPACE, "-o", "json"))["status"]
    step("analysing again (kubectl annotate … optischema.io/analyze-requested): the LLM's answer comes from the cache")
    again = analyse(cluster, "demo-again")
    calls = model.calls
    print(
        f"    first analysis {first['lastAnalysis']['durationSeconds']}s (one call, {first['llm']['tokens']} tokens); "
        f"again {again['lastAnalysis']['durationSeconds']}s, cached: {again['llm']['cached']}; "
        f"calls to the model: {calls} for 2 analyses (cache hit rate {100 * (2 - calls) / 2:.0f}%)"
    )


def write_reports(cluster: Cluster, html: Path) -> Path:
    """``kubectl optischema report`` in the three formats (as bob, an approver); the HTML's path."""
    html.parent.mkdir(parents=True, exist_ok=True)
    step(f"kubectl optischema report shop --since 1d --format html -o {html}")
    for fmt in ("md", "json", "html"):
        out = html.with_suffix(f".{fmt}")
        said = plugin(cluster, "bob", "report", "shop", "--since", "1d", "--format", fmt, "-o", str(out))
        print(f"    {said}")
    found = json.loads(html.with_suffix(".json").read_text())
    saved = found["timeSavedPerDaySeconds"]
    for change in found["applied"]:
        print(
            f"    {change['subject']:<40} sandbox {change['sandboxSpeedup'] or 0:>6.1f}×   production "
            f"{change['productionBeforeMs'] or 0:.3f} → {change['productionAfterMs'] or 0:.3f} ms"
        )
    per_day = "n/a" if saved is None else f"{saved / 3600:,.1f} h"
    print(f"    estimated time saved per day: {per_day} (at the call rate measured in the demo)")
    return html


def plugin(cluster: Cluster, user: str, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(cluster.plane.kubeconfig(user))}
    done = subprocess.run(
        [sys.executable, "-m", "optischema.cli.plugin", "-n", NAMESPACE, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        raise SystemExit(f"kubectl optischema {' '.join(args)} failed: {done.stderr}")
    return done.stdout.rstrip()


if __name__ == "__main__":
    raise SystemExit(main())
