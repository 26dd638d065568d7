"""Sandbox benchmarks: preparing a 1 GB target in ``sample`` mode, and how close a sandbox's speed-up comes to the
one measured on the whole database.

prepare   a ~1 GB table, a recommendation on it, benchmarked with the local provider (10% sample) in a child
          process: preparation time (schema, copy, indexes, ANALYZE), total time, and the child's peak RSS — the
          process that streams the rows, i.e. what the operator would hold (the sandbox server is not counted)
fidelity  the demo's shop workload: each index recommendation benchmarked on a 10% sample and on a full copy;
          the ratio of the two speed-ups per recommendation
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from devcluster import LocalPostgres
from devcluster.workload import Workload
from optischema.api.target import Sandbox
from optischema.flows.analyze import AnalyzeOptions, analyze
from optischema.flows.benchmark import BENCHMARKED_KINDS, benchmark
from optischema.flows.sandbox import LocalProvider

ROOT = Path(__file__).resolve().parent.parent
BIG = [
    "CREATE TABLE events (id bigserial PRIMARY KEY, account_id int NOT NULL, kind text NOT NULL, "
    "payload text NOT NULL, created_at timestamptz NOT NULL)",
    # 5.6M rows of ~150 bytes: about 1 GB of heap and primary key.
    "INSERT INTO events (account_id, kind, payload, created_at) SELECT (random() * 100000)::int, "
    "(ARRAY['click','view','buy','login'])[1 + g % 4], md5(g::text) || md5((g + 1)::text) || repeat('x', 40), "
    "timestamptz '2024-01-01' + g * interval '1 second' FROM generate_series(1, {rows}) g",
    "VACUUM ANALYZE events",
]


def say(text: str) -> None:
    print(text, flush=True)


def recommendation(table: str, column: str, statements: list[tuple[str, str, int]]) -> dict[str, Any]:
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "TuningRecommendation",
        "metadata": {"name": f"bench-{column}", "namespace": "bench"},
        "spec": {
            "targetRef": {"name": "bench"},
            "kind": "createIndex",
            "change": {"index": {"table": table, "columns": [{"name": column}]}},
            "sql": f'CREATE INDEX CONCURRENTLY "{table}_{column}_idx" ON "public"."{table}" ("{column}")',
            "rollbackSql": f'DROP INDEX CONCURRENTLY IF EXISTS "public"."{table}_{column}_idx"',
            "evidence": {
                "statements": [
                    {"queryId": qid, "fingerprint": "f" + qid.lstrip("-"), "query": q, "calls": calls}
                    for qid, q, calls in statements
                ]
            },
        },
    }


def child(dsn: str, spec_json: str) -> None:
    """Run in a separate process: one benchmark, then its figures and peak RSS as JSON on stdout."""
    marks: dict[str, float] = {}
    started = time.monotonic()

    def progress(step: str) -> None:
        marks.setdefault(step.split(" ")[0], time.monotonic() - started)

    async def go() -> dict[str, Any]:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT queryid::text AS id, query, calls FROM pg_stat_statements "
                "WHERE query LIKE 'SELECT * FROM events WHERE account_id%'"
            )
        finally:
            await conn.close()
        rec = recommendation("events", "account_id", [(row["id"], row["query"], row["calls"])])
        outcome = await benchmark(
            LocalProvider(), dsn, rec, Sandbox.model_validate_json(spec_json), runs=20, progress=progress
        )
        return outcome.benchmark.model_dump(mode="json", by_alias=True, exclude_none=True)

    result = asyncio.run(go())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"benchmark": result, "marks": marks, "peak_rss_mb": peak_mb}))


def bench_prepare(rows: int = 5_600_000, percent: float = 10.0) -> dict[str, Any]:
    say(f"\n## sandbox prepare: a ~1 GB table ({rows:,} rows), sample {percent:g}%, local provider")
    with LocalPostgres(settings={"shared_buffers": "256MB", "max_wal_size": "4GB"}) as server:
        server.psql("CREATE DATABASE big")
        server.psql("CREATE EXTENSION pg_stat_statements", database="big")
        clock = time.monotonic()
        for statement in BIG:
            server.psql(statement.format(rows=rows), database="big")
        size = int(server.psql("SELECT pg_database_size('big')", database="big"))
        say(f"target: {size / 2**30:.2f} GiB, loaded in {time.monotonic() - clock:.0f}s")
        for account in range(20):
            server.psql(f"SELECT * FROM events WHERE account_id = {account}", database="big")
        runs = {}
        for mode in ("sample", "full"):  # the full copy shows that memory does not grow with the rows copied
            spec = Sandbox(data_mode=mode, sample_percent=percent, max_rows_per_table=rows).model_dump_json()
            done = subprocess.run(
                [sys.executable, __file__, "child", server.dsn("big"), spec], capture_output=True, text=True, check=True
            )
            runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    for mode, figures in runs.items():
        bench, marks = figures["benchmark"], figures["marks"]
        preparation = marks.get("timing", 0.0) - marks.get("starting", 0.0)
        say(
            f"{mode:>6}: rows copied {bench.get('rows'):,}; preparation (start, schema, copy, indexes, ANALYZE) "
            f"{preparation:.1f}s; benchmark total {bench.get('durationSeconds')}s; peak RSS of the benchmarking "
            f"process {figures['peak_rss_mb']:.0f} MB; speed-up {bench.get('speedup')}x"
        )
        say(f"        steps (seconds from start): {json.dumps({k: round(v, 1) for k, v in marks.items()})}")
    return runs


def bench_fidelity(scale: float = 1.0) -> list[tuple[str, float, float, float]]:
    say("\n## sandbox fidelity: shop workload, speed-up in a 10% sample vs a full copy, per recommendation")
    results = []
    with LocalPostgres() as server:
        shop = Workload(ROOT / "demo" / "shop", server, scale=scale)
        shop.load()
        shop.run(10)
        analysis = asyncio.run(analyze(shop.dsn, AnalyzeOptions(sample_seconds=0)))
        for rec in analysis.recommendations:
            if rec.kind not in BENCHMARKED_KINDS:
                continue
            body = rec.to_custom_resource("shop").model_dump(mode="json", by_alias=True, exclude_none=True)
            sample = asyncio.run(benchmark(LocalProvider(), shop.dsn, body, Sandbox(data_mode="sample"))).benchmark
            full = asyncio.run(benchmark(LocalProvider(), shop.dsn, body, Sandbox(data_mode="full"))).benchmark
            gains = f"improvement sample {sample.improvement_percent}% full {full.improvement_percent}%"
            if sample.speedup and full.speedup:
                ratio = sample.speedup / full.speedup
                results.append((rec.sql, sample.speedup, full.speedup, ratio))
                say(f"{ratio:6.2f}  sample {sample.speedup:8.2f}x  full {full.speedup:8.2f}x  ({gains})  {rec.sql}")
            else:  # a drop: no read is helped, the writers' time is what changes
                say(
                    f"   n/a  writes {sample.write_overhead_percent}% / {full.write_overhead_percent}%  ({gains})  "
                    f"{sample.error or ''}{rec.sql}"
                )
    if results:
        ratios = sorted(r[3] for r in results)
        say(f"median ratio {ratios[len(ratios) // 2]:.2f} over {len(ratios)} recommendation(s)")
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["prepare"]:
        bench_prepare(int(sys.argv[2]) if len(sys.argv) > 2 else 5_600_000)
    else:
        bench_fidelity()
