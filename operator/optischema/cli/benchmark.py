"""``optischema benchmark``: analyse a database, then measure its index recommendations in local sandboxes.

The same preparation and timing as the operator's sandbox pods, with a temporary local PostgreSQL instead of a
pod: the way to see what a recommendation buys before a cluster is involved. Nothing is written to the database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from pydantic import ValidationError

from optischema.analysis.errors import AnalysisError, ExitCode
from optischema.api.errors import describe
from optischema.api.target import Sandbox
from optischema.flows.analyze import AnalyzeOptions, analyze
from optischema.flows.benchmark import BENCHMARKED_KINDS, DEFAULT_RUNS, Outcome, benchmark
from optischema.flows.sandbox import LocalProvider

from .analyze import _positive


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "benchmark",
        help="measure index recommendations in a local sandbox copy of a database",
        description="Analyse the database, copy its schema and data (a sample, everything, or synthetic rows) into "
        "a temporary local PostgreSQL per recommendation, and time the statements each one affects before and "
        "after applying it there. The database itself is only read.",
    )
    parser.add_argument("--dsn", required=True, help="postgresql://user[:password]@host:port/database")
    parser.add_argument("--recommendation", metavar="ID", help="only this recommendation (its id from analyze)")
    parser.add_argument(
        "--data-mode",
        choices=("sample", "full", "synthetic"),
        default=None,
        help="default: synthetic (no real row copied), or sample with --copy-real-values, as a target's spec",
    )
    parser.add_argument("--sample-percent", type=_percent, default=10.0, metavar="P", help="percent of each table")
    parser.add_argument("--max-rows", type=_positive, default=1_000_000, metavar="N", help="rows per table at most")
    parser.add_argument("--copy-real-values", action="store_true", help="synthetic mode may use real common values")
    parser.add_argument("--runs", type=_positive, default=DEFAULT_RUNS, metavar="N", help="timed runs per statement")
    parser.add_argument("--min-calls", type=_positive, default=2, metavar="N", help="ignore rarer statements")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=run)


def _percent(text: str) -> float:
    value = float(text)
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError("must be above 0 and at most 100")
    return value


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    def say(message: str) -> None:
        if not args.quiet:
            print(f"  {message}", file=err, flush=True)

    try:
        spec = Sandbox(
            data_mode=args.data_mode,
            sample_percent=args.sample_percent,
            max_rows_per_table=args.max_rows,
            pii_safe=not args.copy_real_values,
        )
    except ValidationError as error:
        print(f"optischema benchmark: {'; '.join(describe(error, 'options'))}", file=err)
        return int(ExitCode.BAD_INPUT)
    try:
        results = asyncio.run(_run(args, spec, say))
    except AnalysisError as error:
        print(f"optischema benchmark: {error.message}", file=err)
        return int(error.exit_code)
    if args.format == "json":
        json.dump(
            [
                {"id": rid, **o.benchmark.model_dump(mode="json", by_alias=True, exclude_none=True)}
                for rid, _, o in results
            ],
            out,
            indent=2,
        )
        out.write("\n")
    else:
        out.write(table(results))
    return int(ExitCode.OK)


async def _run(args: argparse.Namespace, spec: Sandbox, say: Any) -> list[tuple[str, str, Outcome]]:
    say("analysing the workload")
    result = await analyze(args.dsn, AnalyzeOptions(min_calls=args.min_calls, sample_seconds=0.0))
    chosen = [r for r in result.recommendations if r.kind in BENCHMARKED_KINDS]
    if args.recommendation:
        chosen = [r for r in result.recommendations if r.id == args.recommendation]
        if not chosen:
            known = ", ".join(r.id for r in result.recommendations) or "none"
            raise AnalysisError(
                "UnknownRecommendation",
                f"--recommendation: no recommendation {args.recommendation} (this analysis found: {known})",
                ExitCode.BAD_INPUT,
            )
        if chosen[0].kind not in BENCHMARKED_KINDS:
            raise AnalysisError(
                "NotBenchmarked",
                f"--recommendation: {args.recommendation} is a {chosen[0].kind}; only index changes are benchmarked",
                ExitCode.BAD_INPUT,
            )
    results = []
    provider = LocalProvider()
    for number, recommendation in enumerate(chosen, 1):
        say(f"[{number}/{len(chosen)}] {recommendation.sql}")
        body = recommendation.to_custom_resource("cli").model_dump(mode="json", by_alias=True, exclude_none=True)
        outcome = await benchmark(provider, args.dsn, body, spec, runs=args.runs, progress=say)
        results.append((recommendation.id, recommendation.sql, outcome))
    return results


def table(results: list[tuple[str, str, Outcome]]) -> str:
    if not results:
        return "No index recommendations to benchmark.\n"
    lines = [f"{'recommendation':<18} {'p50 before':>11} {'p50 after':>10} {'speed-up':>9} {'writes':>8}  sql"]
    for rid, sql, outcome in results:
        bench = outcome.benchmark
        if bench.error:
            lines.append(f"{rid:<18} failed: {bench.error}")
            continue
        overhead = "" if bench.write_overhead_percent is None else f"{bench.write_overhead_percent:+.0f}%"
        lines.append(
            f"{rid:<18} {bench.p50_before_ms or 0:>9.3f}ms {bench.p50_after_ms or 0:>8.3f}ms "
            f"{bench.speedup or 0:>8.2f}x {overhead:>8}  {sql}"
        )
        for statement in bench.statements:
            if statement.error:
                lines.append(f"{'':<18} statement {statement.query_id}: {statement.error}")
    mode = results[0][2].benchmark.data_mode
    rows = sum(o.benchmark.rows or 0 for _, _, o in results)
    lines.append(f"({mode} data, {rows} rows loaded in all; p50 weighted by calls; writes = overhead on the table)")
    return "\n".join(lines) + "\n"
