"""False reverts: how often verification would roll back a change that does nothing to the workload.

On real PostgreSQL with the demo's shop mix running as live traffic (pgbench at a steady rate), an index on a column
no statement filters, joins or sorts on is built and dropped again, over and over (CONCURRENTLY, as the operator
builds). Around each build the bench reads the counters exactly as the operator's verification does
(``postgres.execute.statements_on`` picks a Git change's statements, ``postgres.execute.counters`` reads them) and
judges them with ``changes.verdict.judge``: every ``Regressed`` is a false revert, since nothing the workload runs
can be slower because of such an index (its only cost is one more index to maintain on inserts).

Because ``judge`` is pure, each trial's counters are judged under several thresholds at once, and with two
baselines: the operator's (the statements' cumulative mean since the statistics began, read just before the change)
and a window of the same length just before the change. Observation windows are shorter than the operator's default
(300 s) so that enough trials fit in a run: a shorter window is noisier, so the rates are an upper bound for the
default. The machine's other load adds noise too; the figures say what happened here, not a law.

A control trial per run builds an index that really makes a statement slower (test_apply's trap: the planner walks an
index on ``ts`` for ``ORDER BY ts LIMIT 1`` hoping to meet ``flag = 1`` soon) and shows whether each threshold still
catches it.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from devcluster import LocalPostgres
from devcluster.workload import Workload
from optischema.api.indexchange import Verification
from optischema.changes.verdict import NOISE_MS, Counters, Judgement, judge
from optischema.postgres import execute

ROOT = Path(__file__).resolve().parent.parent
#: Indexes on columns the shop mix never filters, joins or sorts on (demo/shop/q): (table, column). Three of the four
#: tables take inserts, so the write side is judged too.
UNRELATED = [("customers", "country"), ("reviews", "rating"), ("order_items", "qty"), ("products", "name")]
#: (max_regression_percent, max_write_regression_percent) judged for every trial, besides the shipped default: the
#: default before this bench (10, 25) and its neighbours.
THRESHOLDS = [(10.0, 25.0), (25.0, 50.0), (50.0, 50.0), (50.0, 100.0)]
GOAL_PERCENT = 5.0


def say(text: str) -> None:
    print(text, flush=True)


def _spread(values: list[float]) -> str:
    """Median, 90th and 95th percentile and largest of the measured changes (%), the noise a threshold must clear."""
    if not values:
        return "none measured"

    def at(q: float) -> float:
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    return (
        f"p50 {at(0.5):+.1f} %, p90 {at(0.9):+.1f} %, p95 {at(0.95):+.1f} %, max {values[-1]:+.1f} % (n={len(values)})"
    )


@dataclass(frozen=True)
class Trial:
    """One build's counters: a window before the change, just before it, and after the observation."""

    table: str
    earlier: dict[str, Counters]  # reads and writes, ``observe`` seconds before the change
    before: dict[str, Counters]
    after: dict[str, Counters]
    reads: list[str]
    writes: list[str]


def window(earlier: dict[str, Counters], before: dict[str, Counters]) -> dict[str, Counters]:
    """The statements' counters over the window between ``earlier`` and ``before``, as a cumulative baseline whose
    mean is the window's (what a baseline of recent traffic would compare with)."""
    out = {}
    for query_id, now in before.items():
        then = earlier.get(query_id, Counters(0, 0.0))
        if now.calls > then.calls:
            out[query_id] = Counters(now.calls - then.calls, now.total_ms - then.total_ms)
    return out


def shifted(
    baseline: dict[str, Counters], before: dict[str, Counters], after: dict[str, Counters]
) -> dict[str, Counters]:
    """``after`` re-based onto a window baseline: the window's counters plus what happened since ``before``."""
    out = {}
    for query_id, base in baseline.items():
        if query_id in after and query_id in before:
            out[query_id] = Counters(
                base.calls + after[query_id].calls - before[query_id].calls,
                base.total_ms + after[query_id].total_ms - before[query_id].total_ms,
            )
    return out


def verdicts(
    trial: Trial, read_limit: float, write_limit: float, *, recent: bool, noise_ms: float = NOISE_MS
) -> tuple[Judgement, Judgement]:
    """The operator's two judgements of a trial (reads, writes), with the cumulative or the recent baseline."""
    rules = Verification()

    def one(ids: list[str], limit: float) -> Judgement:
        before = {q: trial.before[q] for q in ids if q in trial.before}
        if recent:
            base = window({q: trial.earlier[q] for q in ids if q in trial.earlier}, before)
            return judge(base, shifted(base, before, trial.after), max_regression_percent=limit,
                         min_calls=rules.min_calls, noise_ms=noise_ms)  # fmt: skip
        return judge(before, trial.after, max_regression_percent=limit, min_calls=rules.min_calls, noise_ms=noise_ms)

    return one(trial.reads, read_limit), one(trial.writes, write_limit)


async def _build(dsn: str, table: str, column: str, observe: float, *, drop: bool = True) -> Trial:
    conn = await execute.connect_writer(dsn)
    try:
        reads = await execute.statements_on(conn, re.escape(table), writes=False)
        writes = await execute.statements_on(conn, re.escape(table), writes=True)
        earlier = await execute.counters(conn, reads + writes)
        await asyncio.sleep(observe)
        before = await execute.counters(conn, reads + writes)
        name = f"bench_unrelated_{table}_{column}"
        await conn.execute(f'CREATE INDEX CONCURRENTLY "{name}" ON "public"."{table}" ("{column}")')
        await asyncio.sleep(observe)
        after = await execute.counters(conn, reads + writes)
        if drop:
            await conn.execute(f'DROP INDEX CONCURRENTLY "public"."{name}"')
        return Trial(table, earlier, before, after, reads, writes)
    finally:
        await conn.close()


async def _trap(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE r (id int, ts int, flag int)")
        await conn.execute("INSERT INTO r SELECT g, g, (g > 998000)::int FROM generate_series(1, 1000000) g")
        await conn.execute("VACUUM ANALYZE r")
    finally:
        await conn.close()


async def _trap_traffic(dsn: str, stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            await conn.fetch("SELECT id FROM r WHERE flag = $1 ORDER BY ts LIMIT 1", 1)
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def _control(dsn: str, observe: float) -> Trial:
    stop = asyncio.Event()
    traffic = asyncio.create_task(_trap_traffic(dsn, stop))
    try:
        await asyncio.sleep(observe)  # the statement's history before the change
        return await _build(dsn, "r", "ts", observe, drop=False)
    finally:
        stop.set()
        await traffic


def bench_false_reverts(
    trials: int = 30, observe: float = 20.0, scale: float = 0.5, rate: float = 100, warm_up: float = 60.0
) -> dict:
    say(
        f"\n## false reverts: {trials} builds of an index no statement uses, under the shop mix at {rate:g} tps "
        f"(scale {scale:g}), observed {observe:g}s before and after each"
    )
    with LocalPostgres() as server:
        shop = Workload(ROOT / "demo" / "shop", server, scale=scale)
        shop.load()
        started = time.monotonic()
        traffic = shop.live(trials * (2 * observe + 10) + 600, rate=rate)
        try:
            time.sleep(warm_up)  # the statements' history before the first change, at the same rate
            done = [asyncio.run(_build(shop.dsn, *UNRELATED[i % len(UNRELATED)], observe)) for i in range(trials)]
            asyncio.run(_trap(shop.dsn))
            control = asyncio.run(_control(shop.dsn, observe))
        finally:
            traffic.terminate()
            traffic.wait()
    say(f"  {len(done)} trials in {time.monotonic() - started:.0f}s; default Verification(): {Verification()}")
    for recent in (False, True):
        reads = sorted(
            j.regression_percent
            for t in done
            if (j := verdicts(t, 0, 0, recent=recent)[0]).regression_percent is not None
        )
        writes = sorted(
            j.regression_percent
            for t in done
            if (j := verdicts(t, 0, 0, recent=recent)[1]).regression_percent is not None
        )
        say(f"  {'recent' if recent else 'cumulative'} baseline: reads' mean time change {_spread(reads)}; "
            f"writes' {_spread(writes)}")  # fmt: skip
    say("  reads% writes%  baseline     false reverts   (reads, writes)   without the noise floor   trap caught")
    default = Verification()
    figures = {}
    grid = [(default.max_regression_percent, default.max_write_regression_percent), *THRESHOLDS]
    for read_limit, write_limit in dict.fromkeys(grid):
        for recent in (False, True):
            judged = [verdicts(t, read_limit, write_limit, recent=recent) for t in done]
            reverts = sum(1 for r, w in judged if "Regressed" in (r.verdict, w.verdict))
            by_reads = sum(1 for r, _ in judged if r.verdict == "Regressed")
            by_writes = sum(1 for _, w in judged if w.verdict == "Regressed")
            bare = [verdicts(t, read_limit, write_limit, recent=recent, noise_ms=0.0) for t in done]
            unfloored = sum(1 for r, w in bare if "Regressed" in (r.verdict, w.verdict))
            trap = verdicts(control, read_limit, write_limit, recent=recent)[0]
            label = "recent" if recent else "cumulative"
            rate_percent = 100.0 * reverts / len(judged)
            figures[(read_limit, write_limit, label)] = rate_percent
            mark = "  <- the default (the operator's baseline)" if (
                (read_limit, write_limit) == grid[0] and not recent
            ) else ""  # fmt: skip
            say(
                f"  {read_limit:5g} {write_limit:6g}   {label:<10} {reverts:3d}/{len(judged)} = {rate_percent:5.1f}%"
                f"   ({by_reads}, {by_writes})          {100.0 * unfloored / len(bare):5.1f}%"
                f"                    {trap.verdict} ({trap.regression_percent}%){mark}"
            )
    rate = figures[(grid[0][0], grid[0][1], "cumulative")]
    say(
        f"  false reverts with the defaults: {rate:.1f}% "
        f"(goal < {GOAL_PERCENT:g}%: {'met' if rate < GOAL_PERCENT else 'NOT met'})"
    )
    return figures
