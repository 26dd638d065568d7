"""`make demo-engine`: the engine alone end to end on a local PostgreSQL with the shop workload.

1. start a throwaway PostgreSQL 15 (pg_stat_statements, HypoPG) on 127.0.0.1 and load the shop (PKs and a few
   "legacy" indexes only); 2. run the shop's pgbench mix to fill pg_stat_statements and measure throughput;
3. with live traffic going on, run `optischema analyze` and print its report; 4. apply the index changes it
recommends (CONCURRENTLY, as the operator will); 5. measure throughput again and print before and after.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from devcluster import LocalPostgres
from devcluster.workload import Workload

HERE = Path(__file__).resolve().parent


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=15, help="length of each throughput run")
    args = parser.parse_args()

    step("starting a local PostgreSQL 15 with pg_stat_statements and HypoPG")
    with LocalPostgres() as server:
        print(f"    {server.dsn('shop')}")
        shop = Workload(HERE / "shop", server, scale=args.scale)
        started = time.monotonic()
        shop.load()
        print(f"    shop loaded (scale {args.scale:g}) in {time.monotonic() - started:.0f}s")

        step(f"running the shop's mix for {args.seconds:g}s (2 clients) as it is")
        before = shop.run(args.seconds)
        print(f"    {before:.0f} transactions/s")

        step("analysing with live traffic: optischema analyze --emit-crs")
        crs = Path(tempfile.mkdtemp(prefix="optischema-demo-"))
        traffic = shop.live(120, rate=100)
        try:
            report = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "optischema.cli.main",
                    "analyze",
                    "--dsn",
                    shop.dsn,
                    "--quiet",
                    "--emit-crs",
                    str(crs),
                    "--target",
                    "shop",
                    "--namespace",
                    "demo",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            traffic.terminate()
            traffic.wait()
        if report.returncode != 0:
            print(report.stderr, file=sys.stderr)
            return report.returncode
        print(report.stdout)
        print(f"    TuningRecommendation resources written to {crs} (kubectl apply -f {crs})")
        resources = [yaml.safe_load(path.read_text()) for path in sorted(crs.glob("*.yaml"))]

        step("applying the recommended index changes (CREATE/DROP INDEX CONCURRENTLY)")
        changes = [r["spec"]["sql"] for r in resources if r["spec"]["kind"] in ("createIndex", "dropIndex")]
        for sql in changes:
            print(f"    {sql}")
        shop.apply(";\n".join(changes) + ";\n")

        step(f"running the mix again for {args.seconds:g}s")
        after = shop.run(args.seconds)
        print(f"    {after:.0f} transactions/s")
        step(f"throughput: {before:.0f} → {after:.0f} transactions/s ({after / before:.1f}×)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
