"""Measured pricing in an analysis: candidates HypoPG cannot simulate (GIN, GiST...) built on a sandbox copy.

An analysis asked to measure (``AnalyzeOptions.measure``, the CLI's ``--measure``) opens a sandbox of the
target's major only when some candidate needs it, composes the what-if planner with a
:class:`~optischema.postgres.measure.SandboxMeasurer` (:class:`~optischema.analysis.pricing.MeasuredPlanner`), and
marks what it chose that way ``source: measured``, with the measured milliseconds in the evidence. An analysis not
asked leaves those candidates out and says so in a note: an unpriced index is never proposed as if it were.

Without HypoPG (``measure_all``) the sandbox also stands in for it: every candidate is built on the copy and the
selection's configuration questions are answered there by the planner (:class:`~optischema.postgres.sandbox_planner.
SandboxPlanner`), so sets of indexes (both sides of a join, a covering index beside a partial one) are priced
together as HypoPG prices them; GIN and GiST are timed as with HypoPG, and the indexes chosen are timed on their
top statements for the evidence (:func:`confirm`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from optischema.analysis import advice
from optischema.analysis.candidates import Candidate
from optischema.analysis.pricing import Measured, MeasuredPlanner, needs_measuring, unpriceable, unpriced_note
from optischema.analysis.report import Recommendation
from optischema.analysis.selection import WorkloadStatement
from optischema.analysis.snapshot import Snapshot
from optischema.analysis.whatif import Planner
from optischema.api.target import Sandbox as SandboxSpec
from optischema.changes.ddl import definition_key
from optischema.flows.sandbox import LocalProvider, Provider
from optischema.postgres import clone
from optischema.postgres.connect import ConnectTarget
from optischema.postgres.measure import BUDGET_SECONDS, SandboxMeasurer, Statement
from optischema.postgres.measure import INDEX_NAME as MEASURED_INDEX_NAME
from optischema.postgres.sandbox_planner import SandboxPlanner

#: Given the target's major version, a context that yields the superuser DSN of a fresh, empty sandbox database
#: of that major and removes the sandbox on exit.
SandboxOpener = Callable[[int], AbstractAsyncContextManager[str]]

_WRITES = ("insert", "update", "delete")


@asynccontextmanager
async def local_sandbox(major: int) -> AsyncIterator[str]:
    """A temporary PostgreSQL of ``major`` on loopback (the local provider's), removed afterwards."""
    provider = LocalProvider()
    started = await provider.start({}, SandboxSpec(data_mode="sample"), major)
    try:
        yield started.dsn
    finally:
        await provider.stop(started)


def on_loop(opener: SandboxOpener, loop: asyncio.AbstractEventLoop) -> SandboxOpener:
    """``opener`` with its work done on ``loop``, for an analysis that runs on a loop of its own in another thread
    (``analyze_off_loop``): the operator's Kubernetes client, which starts and removes sandbox pods, belongs to the
    operator's loop, and used from another one it fails (or, worse, shares connections between two loops)."""

    async def there(work: Awaitable[Any]) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_awaited(work), loop))

    @asynccontextmanager
    async def opened(major: int) -> AsyncIterator[str]:
        manager = opener(major)
        dsn = await there(manager.__aenter__())
        try:
            yield dsn
        finally:
            await there(manager.__aexit__(None, None, None))

    return opened


async def _awaited(work: Awaitable[Any]) -> Any:
    return await work


def provider_sandbox(provider: Provider, target: dict[str, Any], spec: SandboxSpec) -> SandboxOpener:
    """A sandbox from the operator's provider (a pod, or a local server), owned by the target: deleting the target
    deletes it, as a recommendation's benchmark sandbox goes with its recommendation. The pod is named
    ``<target>-measure-sbx-…``; its owner reference names the target itself (one naming an object that does not
    exist makes the garbage collector delete the pod as an orphan before it is ready)."""
    meta = target["metadata"]
    named = {
        "apiVersion": target["apiVersion"],
        "kind": target["kind"],
        "metadata": {"name": f"{meta['name'][:40]}-measure", "namespace": meta["namespace"], "uid": meta["uid"]},
        "spec": {"targetRef": {"name": meta["name"]}},
    }

    @asynccontextmanager
    async def opened(major: int) -> AsyncIterator[str]:
        started = await provider.start(named, spec, major, owner=target)
        try:
            yield started.dsn
        finally:
            await provider.stop(started)

    return opened


@dataclass(slots=True)
class Measuring:
    """What one analysis measured: the planner to select with, and afterwards the figures and notes."""

    planner: Planner
    candidates: list[Candidate]
    notes: list[str] = field(default_factory=list)
    measured: dict[tuple[str, str], Measured] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)  # "schema.table" -> rows in the sandbox copy
    measure_all: bool = False  # no HypoPG: every candidate was priced on the sandbox copy, btree included
    sandbox_planner: SandboxPlanner | None = None  # no HypoPG: the candidates built on the copy, planned there


@asynccontextmanager
async def measuring(
    opener: SandboxOpener | None,
    whatif: Planner,
    conn: Any,  # the analysis's read-only asyncpg connection (flows never import asyncpg)
    dsn: ConnectTarget,
    snapshot: Snapshot,
    workload: Sequence[WorkloadStatement],
    candidates: list[Candidate],
    *,
    copy: SandboxSpec | None = None,
    budget_seconds: float = BUDGET_SECONDS,
    measure_all: bool = False,
) -> AsyncIterator[Measuring]:
    """The planner and candidates for the selection: ``whatif`` and only what it can price when nothing needs
    measuring or measuring is off; else a :class:`MeasuredPlanner` over a sandbox opened for the analysis, filled as
    ``copy`` says (the target's ``spec.sandbox``; a sample of the real rows when None: the CLI's local copy)."""
    must_measure = (lambda _: True) if measure_all else needs_measuring  # no HypoPG: every candidate is priced there
    measurable = [c for c in candidates if must_measure(c.index)]
    if not measurable:
        yield Measuring(whatif, candidates)
        return
    if opener is None:
        kept, unpriced = unpriceable(candidates, measuring=False)
        yield Measuring(whatif, kept, unpriced_note(unpriced))
        return
    tables = {c.table for c in measurable}
    for candidate in [c for c in measurable if needs_measuring(c.index)]:  # the writes it slows are priced with it
        # (its measured cost on them is charged); a candidate planned on the copy is charged as HypoPG's are
        candidate.statements |= {
            s.key for s in workload if s.parsed.kind in _WRITES and s.parsed.written_table == candidate.table
        }
    statements = [
        Statement(s.request, s.calls, s.parsed.kind in _WRITES)
        for s in workload
        if s.request.tables & tables or (s.parsed.kind in _WRITES and s.parsed.written_table in tables)
    ]
    real_rows = {(t.schema, t.name): t.rows for t in snapshot.tables.values()}
    major = await clone.server_major(conn)
    async with contextlib.AsyncExitStack() as stack:
        try:
            sandbox_dsn = await stack.enter_async_context(opener(major))
        except Exception as error:  # a sandbox that cannot start never fails the analysis: it goes on, what-if only
            async with measuring(None, whatif, conn, dsn, snapshot, workload, candidates) as found:
                found.notes.append(f"no sandbox to measure in ({' '.join(str(error).split())[:500]})")
                yield found
            return
        measurer = SandboxMeasurer(
            conn,
            dsn,
            sandbox_dsn,
            statements,
            real_rows,
            budget_seconds=budget_seconds,
            **_copy_settings(copy),
        )
        sandbox_planner = SandboxPlanner(measurer) if measure_all else None
        planner = MeasuredPlanner(whatif=sandbox_planner or whatif, measurer=measurer, measurable=needs_measuring)
        result = Measuring(planner, candidates, measure_all=measure_all, sandbox_planner=sandbox_planner)
        try:
            yield result
        finally:
            if sandbox_planner is not None:
                await sandbox_planner.close()
                result.notes += sandbox_planner.notes
            await measurer.close()
            result.notes += measurer.notes
            result.measured = dict(planner.measured)
            result.rows = {f"{t[0]}.{t[1]}": n for t, n in measurer.copied.items()}


async def confirm(
    measuring: Measuring, recommendations: Sequence[Recommendation], workload: Sequence[WorkloadStatement]
) -> None:
    """Without HypoPG: time each chosen index on the copy, alone, on the first statements of its evidence, so
    that its recommendation carries milliseconds measured before and after (and the sandbox's plan) beside the
    planner's costs. The selection is not changed by what this finds; the measuring budget bounds it."""
    planner = measuring.planner
    if not measuring.measure_all or not isinstance(planner, MeasuredPlanner):
        return
    requests = {s.key: s.request for s in workload}
    for recommendation in recommendations:
        index = recommendation.change.index
        if recommendation.kind != "createIndex" or index is None or needs_measuring(index):
            continue  # GIN, GiST: timed already while they were priced
        unnamed = index.model_copy(update={"name": None})
        for evidence in recommendation.evidence.statements[:CONFIRM_STATEMENTS]:
            if evidence.query_id in requests:
                await planner.measure(requests[evidence.query_id], unnamed)


#: Statements each index chosen without HypoPG is timed on: those whose plans its evidence shows.
CONFIRM_STATEMENTS = advice.PLAN_STATEMENTS


def _copy_settings(copy: SandboxSpec | None) -> dict[str, Any]:
    if copy is None:
        return {}
    return {
        "mode": copy.data_mode,
        "sample_percent": 100.0 if copy.data_mode == "full" else copy.sample_percent,
        "max_rows": copy.max_rows_per_table,
        "pii_safe": copy.pii_safe,
    }


def mark_measured(recommendations: list[Recommendation], measuring: Measuring) -> None:
    """Recommendations of measured indexes say so: ``source: measured``, each evidence statement's milliseconds
    on the sandbox copy without and with the index, and a sentence in the rationale."""
    by_index: dict[str, dict[str, Measured]] = {}
    for (statement, key), measured in measuring.measured.items():
        by_index.setdefault(key, {})[statement] = measured
    for recommendation in recommendations:
        index = recommendation.change.index
        priced_so = measuring.measure_all or (index is not None and needs_measuring(index))
        if recommendation.kind != "createIndex" or index is None or not priced_so:
            continue
        figures = by_index.get(definition_key(index.model_copy(update={"name": None})), {})
        recommendation.source = "measured"
        for evidence in recommendation.evidence.statements:
            found = figures.get(evidence.query_id)
            if found is not None:
                evidence.measured_before_ms = round(found.before_ms, 4)
                evidence.measured_after_ms = round(found.after_ms, 4)
        reads = [f for f in figures.values() if not f.write and f.used]
        writes = [f for f in figures.values() if f.write]
        rows = measuring.rows.get(f"{index.schema_}.{index.table}", 0)
        planned = measuring.sandbox_planner is not None and not needs_measuring(index)
        text = (
            f" Priced on a sandbox copy: HypoPG is not installed here, so every candidate was built on a copy of "
            f"{index.schema_}.{index.table} ({rows} rows) and the planner costs come from planning the statements "
            "there with each set of candidates in place"
            if planned
            else f" Priced by measuring: HypoPG cannot simulate a {index.method} index, so it was built on a sandbox "
            f"copy of {index.schema_}.{index.table} ({rows} rows)"
        )
        if reads:
            text += ", where " + "; ".join(
                f"a statement went from {f.before_ms:.2f} ms to {f.after_ms:.2f} ms" for f in reads[:3]
            )
        if writes:
            text += ", and the writes it slows took " + "; ".join(
                f"{f.before_ms:.2f} ms → {f.after_ms:.2f} ms" for f in writes[:3]
            )
        recommendation.rationale += (
            text
            + ("." if planned and not (reads or writes) else " (server-side medians).")
            + ("" if planned else " The planner costs are what-if costs scaled by those ratios.")
        )


def measured_plans(
    recommendations: Sequence[Recommendation], measuring: Measuring, *, pii_safe: bool
) -> dict[tuple[str, str], str]:
    """The after plans of measured indexes, as the sandbox ran each statement with the index built: (the index's
    definition key without its name, statement key) → the compact plan, the sandbox's index under the name the
    recommendation gives it. ``advice.attach_plans`` takes them where HypoPG has no plan to give."""
    names = {
        definition_key(r.change.index.model_copy(update={"name": None})): r.change.index.name or ""
        for r in recommendations
        if r.kind == "createIndex" and r.change.index is not None
    }
    plans = {}
    for (statement, key), found in measuring.measured.items():
        if found.plan is None or found.write or key not in names:
            continue
        text = advice.render_plan(found.plan, {}, pii_safe=pii_safe)
        plans[(key, statement)] = text.replace(MEASURED_INDEX_NAME, f"{names[key]} (measured in the sandbox)")
    return plans
