"""`make bench`: figures, not asserts. Each benchmark prints what it measured.

shop    throughput of the demo's shop mix with no secondary index, with the engine's indexes and with the
        hand-written expert set (bench/shop/expert.sql), back to back on one server
fleet   the public workload in ../shared/workloads with its own harness: our TPS / the expert's TPS
nohypopg  fleet with HypoPG and on a server without it (every candidate measured on a sandbox), side by side
forum   the same for the forum workload (partitioned posts, JSON containment, substring and word search, arrays):
        GIN candidates are measured in a local sandbox (optischema analyze --measure)
speed   analysis time, peak RSS, planner calls and plan-cache hits for 1,000 and 10,000 synthetic
        statements over 50 tables (goal for 10,000: < 60 s, < 300 MB)
build   client p50/p99 and failed transactions of a pgbench write load during CREATE INDEX CONCURRENTLY on
        1M rows (the operator's execute path), against the same load with no build
sandbox  preparing a ~1 GB target in a 10% sample sandbox (time, peak memory), and sample vs full speed-ups
operator  200 targets and 5,000 recommendations on the embedded control plane: operator RSS, approval → IndexChange
report  a month of statement history: its size per target, and a 30-day report's build time and size per format
reverts  false reverts: an index no statement uses, built again and again under the shop mix, judged as the
        operator's verification judges it; the rate of rollbacks per threshold (goal < 5 %)
webhook the admission webhook's p50/p99 while the operator analyses 10,000 statements (goal: p99 < 1 s)
all     all of them (the default)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import asyncpg

from devcluster import LocalPostgres
from devcluster.workload import Workload
from devcluster.writeload import LoadResult, create_ledger, write_load
from optischema.flows.analyze import AnalyzeOptions, analyze
from optischema.flows.measuring import local_sandbox

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("OPTISCHEMA_SHARED", ROOT.parent / "shared"))


def say(text: str) -> None:
    print(text, flush=True)


# -- shop ------------------------------------------------------------------------------------------------------------


def bench_shop(seconds: float, scale: float) -> dict[str, float]:
    say(f"\n## shop: throughput of the demo mix, {seconds:g}s per run, 2 clients, scale {scale:g}")
    with LocalPostgres() as server:
        shop = Workload(ROOT / "demo" / "shop", server, scale=scale)
        shop.load()
        shop.run(10)  # warm-up, and statements for pg_stat_statements
        traffic = shop.live(120, rate=100)
        try:
            # The database was loaded minutes ago: judge its idle indexes by this run's counters (no minimum age).
            options = AnalyzeOptions(sample_seconds=5, unused_min_statistics_age=timedelta(0))
            result = asyncio.run(analyze(shop.dsn, options))
        finally:
            traffic.terminate()
            traffic.wait()
        ours = ";\n".join(r.sql for r in result.recommendations if r.kind in ("createIndex", "dropIndex")) + ";\n"
        expert = (ROOT / "bench" / "shop" / "expert.sql").read_text()
        legacy = [
            line.split()[2]
            for line in (ROOT / "demo" / "shop" / "legacy.sql").read_text().splitlines()
            if line.startswith("CREATE INDEX")
        ]
        figures = {}
        for label, sql in (("none", f"DROP INDEX {', '.join(legacy)};\n"), ("engine", ours), ("expert", expert)):
            shop.reset()
            shop.apply(sql)
            figures[label] = shop.run(seconds)
            say(f"  {label:<7} {figures[label]:>9.0f} tps")
        say(
            f"  engine / expert = {figures['engine'] / figures['expert']:.3f}   "
            f"none / expert = {figures['none'] / figures['expert']:.3f}   (analysis {result.duration_seconds:.1f}s, "
            f"{len(result.recommendations)} recommendations)"
        )
        return figures


# -- public workloads (fleet, forum) ----------------------------------------------------------------------------------


def bench_workload(name: str, seconds: float, repeat: int, *, hypopg: bool = True) -> list[float]:
    """Our TPS over the expert's on a public workload, back to back with its harness. The analysis runs as the
    operator's would with a sandbox: HypoPG for what it can simulate, GIN/GiST measured on a local sandbox copy;
    with ``hypopg`` False the server has no HypoPG and every candidate is measured."""
    harness = SHARED / "workloads" / "run.sh"
    label = name if hypopg else f"{name} without HypoPG"
    say(f"\n## {label}: the public workload with its harness ({harness})")
    if not harness.exists():
        say(f"  skipped: {harness} not found (set OPTISCHEMA_SHARED to the shared/ folder)")
        return []
    env = {**os.environ, "WL": name, "DUR": str(int(seconds)), "WORKLOAD_DIR": f"/tmp/optischema-bench-{name}"}
    env["WORKLOAD_PORT"] = str(55452 + ("fleet", "forum").index(name) * 2 + (0 if hypopg else 1))
    if not hypopg:
        env["NO_HYPOPG"] = "1"

    def sh(*args: str, check: bool = True) -> str:
        done = subprocess.run([str(harness), *args], env=env, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"run.sh {' '.join(args)} failed: {done.stderr[-800:]}")
        return done.stdout

    sh("start")
    ratios = []
    try:
        dsn = sh("dsn").strip()
        for _ in range(repeat):
            subprocess.run([str(harness), "bench", "warmup"], env={**env, "DUR": "15"}, capture_output=True, check=True)
            live = subprocess.Popen(
                [str(harness), "live", "600"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                started = time.monotonic()
                fresh = timedelta(0)  # the workload's database is minutes old: no minimum statistics age
                options = AnalyzeOptions(sample_seconds=5, measure=local_sandbox, unused_min_statistics_age=fresh)
                result = asyncio.run(analyze(f"{dsn}?sslmode=disable", options))
                took = time.monotonic() - started
            finally:
                os.killpg(live.pid, 15)
                live.wait()
            chosen = [r for r in result.recommendations if r.kind in ("createIndex", "dropIndex")]
            changes = [harness_sql(r.sql) for r in chosen]
            sources = [r.source for r in chosen]
            say(f"  analysis: {took:.1f}s, {len(changes)} index changes:")
            for change, source in zip(changes, sources, strict=True):
                say(f"    {change}   [{source}]")
            with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as ours:
                ours.write(";\n".join(changes) + ";\n")
            line = sh("compare", "ours", ours.name).strip().splitlines()[-1]
            say(f"  {line}")
            ratios.append(float(line.rsplit("ratio=", 1)[1]))
    finally:
        sh("stop", check=False)
    goal = "goal >= 0.95" if hypopg else "goal: >= 0.9 of the ratio with HypoPG"
    say(f"  {label} ratio (our TPS / expert TPS): {', '.join(f'{r:.3f}' for r in ratios)}   {goal}")
    return ratios


def harness_sql(sql: str) -> str:
    """A recommendation's SQL as the harness applies sets: without CONCURRENTLY, and for a partitioned table the
    plain CREATE INDEX on the parent (which PostgreSQL cascades to every partition) instead of the operator's
    per-partition rollout."""
    first = sql.split(";")[0].strip()
    return first.replace(" CONCURRENTLY", "").replace(" ON ONLY ", " ON ")


# -- speed -----------------------------------------------------------------------------------------------------------

COLUMNS = {"a": 10, "b": 100, "c": 1000, "d": 5000, "e": 50, "f": 20000}


def synthetic_statements(tables: int, count: int, seed: int = 7) -> list[str]:
    """``count`` distinct statement shapes over ``tables`` tables: equality, range, sort, join, aggregate."""
    names = list(COLUMNS)
    shapes = []
    for t in range(tables):
        table = f"s{t:02d}"
        other = f"s{(t + 1) % tables:02d}"
        for c1 in names:
            shapes.append(f"SELECT id FROM {table} WHERE {c1} = 3")
            shapes.append(f"SELECT count(*) FROM {table} WHERE {c1} > 7")
            shapes.append(f"SELECT x.id FROM {table} x JOIN {other} y ON y.id = x.{c1} WHERE y.a = 1")
            for c2 in names:
                if c2 == c1:
                    continue
                shapes.append(f"SELECT id, {c2} FROM {table} WHERE {c1} = 5 AND {c2} > 2")
                shapes.append(f"SELECT id FROM {table} WHERE {c1} = 9 ORDER BY {c2} DESC LIMIT 10")
                shapes.append(f"SELECT sum({c2}) FROM {table} WHERE {c1} = 4")
                shapes.append(f"SELECT id FROM {table} WHERE {c1} IN (1, 2) AND {c2} < 100")
                shapes.append(f"SELECT id FROM {table} WHERE {c1} = 1 AND {c2} = 2")
                shapes.append(f"SELECT {c2}, count(*) FROM {table} WHERE {c1} < 3 GROUP BY {c2}")
                shapes.append(f"SELECT id FROM {table} WHERE {c1} BETWEEN 10 AND 20 ORDER BY {c2} LIMIT 5")
    random.Random(seed).shuffle(shapes)
    if count > len(shapes):
        raise ValueError(f"only {len(shapes)} shapes for {tables} tables")
    return shapes[:count]


async def load_synthetic(dsn: str, tables: int, rows: int, statements: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for t in range(tables):
            columns = ", ".join(f"{c} int NOT NULL" for c in COLUMNS)
            values = ", ".join(f"(g * {7 + i}) % {n}" for i, (c, n) in enumerate(COLUMNS.items()))
            await conn.execute(f"CREATE TABLE s{t:02d} (id int PRIMARY KEY, {columns})")
            await conn.execute(f"INSERT INTO s{t:02d} SELECT g, {values} FROM generate_series(1, {rows}) g")
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("SELECT pg_stat_statements_reset()")
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


#: Runs the CLI's whole analysis (collect, parse, candidates, selection, findings) in a process of its own, so that
#: its peak resident set (``ru_maxrss``: the process's, interpreter and libraries included, not only Python's heap)
#: is the analysis's alone; the plan caches it creates are observed for their hits.
SPEED_PROBE = """
import resource, sys, time
import optischema.flows.analyze as flow
from optischema.analysis.whatif import PlanCache
from optischema.cli.main import main

caches = []


class Observed(PlanCache):
    def __post_init__(self) -> None:
        PlanCache.__post_init__(self)
        caches.append(self)


flow.PlanCache = Observed
started = time.monotonic()
rc = main(sys.argv[1:])
seconds = time.monotonic() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{seconds:.2f} {peak} {sum(c.calls for c in caches)} {sum(c.hits for c in caches)}", file=sys.stderr)
sys.exit(rc)
"""


def bench_speed(sizes: list[int]) -> dict[int, tuple[float, float]]:
    """Wall time and peak RSS of one whole analysis of ``size`` synthetic statements over 50 tables (issue 20:
    10,000 statements in < 60 s and < 300 MB), with the planner calls and plan-cache hits behind it."""
    say("\n## speed: analysis of synthetic workloads over 50 tables (5,000 rows each), no live traffic")
    figures = {}
    for size in sizes:
        with LocalPostgres() as server:
            server.psql("CREATE DATABASE synth")
            server.psql("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;", database="synth")
            asyncio.run(load_synthetic(server.dsn("synth"), 50, 5000, synthetic_statements(50, size)))
            command = [
                sys.executable,
                "-c",
                SPEED_PROBE,
                "analyze",
                "--dsn",
                server.dsn("synth"),
                "--format",
                "json",
                "--quiet",
                "--sample-seconds",
                "0",
                "--min-calls",
                "1",
                "--top",
                str(size),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                say(f"  {size} statements: failed: {done.stderr[-500:]}")
                continue
            seconds, rss_kb, calls, hits = done.stderr.strip().splitlines()[-1].split()
            document = json.loads(done.stdout)
            indexes = sum(1 for r in document["recommendations"] if r.get("kind") == "createIndex")
            figures[size] = (float(seconds), int(rss_kb) / 1024)
            say(
                f"  {size:>6} statements: {float(seconds):7.1f}s, peak RSS {int(rss_kb) / 1024:6.0f} MB (ru_maxrss), "
                f"{document['statements_analysed']} analysed, {calls} planner calls, {hits} plan-cache hits, "
                f"{len(document['recommendations'])} recommendations ({indexes} indexes)"
            )
    say("  targets: 10,000 statements on 50 tables in < 60 s with peak RSS < 300 MB")
    return figures


def bench_build(seconds: float, rows: int = 1_000_000) -> dict[str, LoadResult]:
    say(f"\n## build: pgbench writes on {rows:,} rows for {seconds:g}s, without and with CREATE INDEX CONCURRENTLY")
    from optischema.postgres import execute

    figures = {}
    with LocalPostgres() as server:
        server.psql("CREATE DATABASE ledger")
        create_ledger(server, "ledger", rows)
        built: list[float] = []

        async def build() -> None:
            conn = await execute.connect_writer(server.dsn("ledger"))
            try:
                done = await execute.execute(
                    conn,
                    'CREATE INDEX CONCURRENTLY "ledger_account_note_idx" ON "public"."ledger" ("account", "note")',
                    lock_timeout_ms=5000,
                    statement_timeout_ms=600_000,
                    retry_until=time.monotonic() + 300,
                )
                built.append(done.seconds)
            finally:
                await conn.close()

        figures["no build"] = write_load(server, "ledger", seconds, rows=rows)
        figures["build"] = write_load(server, "ledger", seconds, rows=rows, during=lambda: asyncio.run(build()))
    for label, load in figures.items():
        say(
            f"  {label:>8}: {load.tps:7.0f} tps, p50 {load.p50_ms:6.2f} ms, p99 {load.p99_ms:6.2f} ms, "
            f"{load.failed} failed of {load.transactions}"
        )
    if built:
        say(f"  the build took {built[0]:.1f}s")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "which",
        nargs="?",
        default="all",
        choices=(
            "all",
            "shop",
            "fleet",
            "forum",
            "nohypopg",
            "speed",
            "build",
            "sandbox",
            "operator",
            "report",
            "reverts",
            "webhook",
        ),
    )
    parser.add_argument("--seconds", type=float, default=20, help="length of each throughput run")
    parser.add_argument("--repeat", type=int, default=1, help="fleet comparisons to run")
    parser.add_argument("--sizes", default="1000,10000", help="statement counts for the speed benchmark")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    if args.which in ("all", "shop"):
        bench_shop(args.seconds, 1.0)
    ratios: dict[str, list[float]] = {}
    for name in ("fleet", "forum"):
        if args.which in ("all", name):
            ratios[name] = bench_workload(name, args.seconds, args.repeat)
    if args.which in ("all", "nohypopg"):
        with_it = ratios.get("fleet") or bench_workload("fleet", args.seconds, args.repeat)
        without = bench_workload("fleet", args.seconds, args.repeat, hypopg=False)
        if with_it and without:
            say(f"  fleet without HypoPG / with it: {min(without) / max(with_it):.3f}   goal >= 0.9")
    if args.which in ("all", "speed"):
        bench_speed([int(s) for s in args.sizes.split(",")])
    if args.which in ("all", "build"):
        bench_build(20)
    if args.which in ("all", "sandbox"):
        from sandbox import bench_fidelity, bench_prepare  # bench/ is on sys.path when run as a script

        bench_prepare()
        bench_fidelity()
    if args.which in ("all", "reverts"):
        from false_reverts import bench_false_reverts  # bench/ is on sys.path when run as a script

        bench_false_reverts()
    if args.which in ("all", "report"):
        from report import bench as bench_report  # bench/ is on sys.path when run as a script

        bench_report()
    if args.which in ("all", "webhook"):
        say("\n## webhook: admission latency while a 10,000-statement analysis runs in the operator")
        from webhook_latency import bench as bench_webhook  # bench/ is on sys.path when run as a script

        bench_webhook()
    if args.which in ("all", "operator"):
        say("\n## operator: 200 targets and 5,000 recommendations on the embedded control plane")
        from operator_scale import bench as bench_operator  # bench/ is on sys.path when run as a script

        bench_operator()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
