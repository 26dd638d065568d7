"""One analysis, end to end: connect read-only, collect, choose indexes with what-if planning, add the other
findings. The CLI, the analysis Job and the operator's inline runner all call :func:`analyze`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from optischema.analysis import advice, findings, platform
from optischema.analysis.candidates import Candidate, generate, search_notes
from optischema.analysis.consult import Consultation, digest, prompt_for, settle
from optischema.analysis.errors import AnalysisError, ExitCode
from optischema.analysis.pricing import partitions_of
from optischema.analysis.prompt import Prompt
from optischema.analysis.report import Recommendation
from optischema.analysis.selection import Limits, Selection, requests_for, select_indexes
from optischema.analysis.snapshot import Snapshot
from optischema.analysis.suggestions import Rejection
from optischema.analysis.usage import (
    DEFAULT_MIN_AGE,
    InstanceUsage,
    UsageEvidence,
    instance_notes,
    primary_usage,
)
from optischema.analysis.whatif import PlanCache
from optischema.analysis.workload import Skipped, Workload, build_workload, compile_pattern
from optischema.api.target import Sandbox as SandboxSpec
from optischema.flows.measuring import SandboxOpener, confirm, mark_measured, measured_plans, measuring
from optischema.postgres.collect import collect
from optischema.postgres.connect import DATABASE_ERRORS, ConnectTarget, connect
from optischema.postgres.planner import ExplainPlanner, HypoPGPlanner
from optischema.postgres.plans import before_after
from optischema.postgres.platform import read_signals
from optischema.postgres.replicas import instance_name, read_replicas

# sqlglot logs a warning for every statement it reads as an opaque command (CREATE FUNCTION ... in extension
# scripts that pg_stat_statements recorded); we report skipped statements ourselves.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

Progress = Callable[[str, int, int], None]
#: More statements than this is refused unless ``top_statements`` says otherwise: planning is the expensive part.
MAX_STATEMENTS = 10_000


def statement_limit(top: int) -> int:
    """Statements read from ``pg_stat_statements`` (the most total time first) to find ``top`` analysable ones:
    twice as many and a hundred more, since some are skipped (utility statements, ignored, unreadable)."""
    return top * 2 + 100


@dataclass(frozen=True, slots=True)
class AdvisorReply:
    """What asking the LLM gave: its text (None when there was no answer, and ``note`` says why)."""

    text: str | None
    model: str | None = None
    cached: bool = False
    tokens: int = 0
    note: str | None = None
    budget_spent: str | None = None  # "target" or "cluster" when a daily token budget stopped the call
    rejected: str | None = None  # why an answer that came was turned down as a whole (it was not cached)


Advisor = Callable[[Prompt], Awaitable[AdvisorReply]]


@dataclass(slots=True)
class AnalyzeOptions:
    min_calls: int = 2
    top_statements: int = 500
    ignore_schemas: Sequence[str] = ()
    ignore_statements: Sequence[str] = ()
    budget_bytes: int | None = None
    max_indexes_per_table: int = 10
    sample_seconds: float = 5.0
    connect_timeout: float = 10.0
    advisor: Advisor | None = None
    pii_safe: bool = True
    measure: SandboxOpener | None = None
    """Opens a sandbox of the target's major in which candidates HypoPG cannot simulate (GIN, GiST) are built and
    their statements timed (see :mod:`optischema.flows.measuring`); None leaves them out, with a note."""
    measure_copy: SandboxSpec | None = None
    """How that sandbox is filled (the target's ``spec.sandbox``); None: a sample of the real rows (the CLI's)."""
    replicas: Sequence[ConnectTarget] = ()
    """Read replicas whose index usage counts too (``spec.connection.replicas``, see :mod:`optischema.analysis.usage`):
    an index is dropped as unused only when none of them (nor the primary) scanned it."""
    cluster: str | None = None
    """The CloudNativePG Cluster the target names: settings findings become patches of it."""
    unreadable_instances: Sequence[tuple[str, str]] = ()
    """(name, why) of instances known and not reachable at all (a CloudNativePG instance whose Pod has no IP):
    counted as unreadable, so every index they may use stays."""
    unused_min_statistics_age: timedelta = DEFAULT_MIN_AGE
    """How old every instance's statistics must be before an index no scan used is proposed for dropping."""


@dataclass(slots=True)
class AnalysisResult:
    recommendations: list[Recommendation]
    mode: str  # "whatif", "measured" (no HypoPG: every candidate measured on a sandbox) or "heuristic"
    notes: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    statements_seen: int = 0
    statements_analysed: int = 0
    unplannable: dict[str, str] = field(default_factory=dict)  # query id -> planner error
    planner_calls: int = 0
    duration_seconds: float = 0.0
    server_version: str = ""
    system_identifier: str | None = None
    """The database's ``system_identifier`` as the analysis saw it: each recommendation records it."""
    started_at: datetime | None = None
    consultation: Consultation | None = None
    statements: list[tuple[str, str, int, float, int]] = field(default_factory=list)
    """Every statement read (query id, text, calls, total ms, rows): the statement history's point."""
    index_bytes: int = 0
    index_count: int = 0


async def analyze_off_loop(dsn: ConnectTarget, options: AnalyzeOptions) -> AnalysisResult:
    """:func:`analyze` in a thread of its own, with its own event loop and connection, so that parsing and the
    selection's bookkeeping (seconds of CPU on a large workload) never hold up the caller's loop — in the operator,
    the one that answers admission requests and runs every other target's daemon.

    A daemon thread rather than ``asyncio.to_thread``: an operator asked to stop is not held until a long analysis
    ends (the executor's threads are joined at exit; a daemon thread is not). Its result or error is handed back
    to the caller's loop; a caller that was cancelled meanwhile just never reads it.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[AnalysisResult] = loop.create_future()

    def hand_back(outcome: AnalysisResult | BaseException) -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def work() -> None:
        outcome: AnalysisResult | BaseException
        try:
            outcome = asyncio.run(analyze(dsn, options))
        except BaseException as error:  # handed to the caller, which decides
            outcome = error
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(hand_back, outcome)

    threading.Thread(target=work, name="optischema-analysis", daemon=True).start()
    return await future


async def analyze(dsn: ConnectTarget, options: AnalyzeOptions, progress: Progress | None = None) -> AnalysisResult:
    """Analyse the database at ``dsn``; raises :class:`AnalysisError` when it cannot."""
    started, clock = datetime.now(UTC), time.monotonic()
    say = progress or (lambda *_: None)
    try:
        return await _analyze(dsn, options, say, started, clock)
    except DATABASE_ERRORS as error:  # the server went away (or failed) mid-analysis
        raise AnalysisError(
            "ConnectionLost", f"the database failed during the analysis: {error}", ExitCode.UNREACHABLE
        ) from error


async def _analyze(
    dsn: ConnectTarget, options: AnalyzeOptions, say: Progress, started: datetime, clock: float
) -> AnalysisResult:
    conn = await connect(dsn, timeout=options.connect_timeout)
    try:
        say("collecting statistics and catalogs", 0, 0)
        snapshot = await collect(
            conn,
            ignore_schemas=options.ignore_schemas,
            sample_seconds=options.sample_seconds,
            min_calls=options.min_calls,
            statement_limit=statement_limit(options.top_statements),
        )
        workload = _workload(snapshot, options)
        notes = _notes(snapshot, workload, options)
        detection = platform.classify(await read_signals(conn))  # a managed service: settings become advice
        if detection.managed:
            notes.append(platform.describe(detection))
        usages = [(s.key, u) for s in workload.statements for u in s.parsed.usages.values()]
        candidates = generate(usages, snapshot.tables, snapshot.indexes, snapshot.server)
        notes += search_notes(usages, snapshot.server)
        selection: Selection | None = None
        consultation: Consultation | None = None
        hypopg = "hypopg" in snapshot.server.extensions
        if hypopg or options.measure is not None:
            # Without HypoPG, with a sandbox: every candidate is measured there, each statement's cost on the target
            # (its plan as it is) scaled by the measured ratio; the same selection, nothing left to shapes alone.
            planner = await (HypoPGPlanner if hypopg else ExplainPlanner)(conn, partitions_of(snapshot)).start()
            measure = contextlib.AsyncExitStack()  # a sandbox, when candidates are priced by measuring
            try:
                copy = options.measure_copy
                measured = await measure.enter_async_context(
                    measuring(
                        options.measure, planner, conn, dsn, snapshot, workload.statements, candidates, copy=copy,
                        measure_all=not hypopg,
                    )
                )  # fmt: skip
                if not hypopg:
                    notes.append(
                        "HypoPG is not installed in this database: every index candidate was priced by building it "
                        "on a sandbox copy and planning the statements there with each set of candidates in place "
                        "(GIN/GiST and the indexes chosen also timed there; source: measured)."
                    )
                candidates = measured.candidates
                cache = PlanCache(measured.planner, requests_for(workload.statements))
                limits = Limits(options.budget_bytes, options.max_indexes_per_table)
                selection = await select_indexes(workload.statements, candidates, cache, snapshot.indexes, limits, say)
                if options.advisor is not None:
                    engine = advice.index_recommendations(selection, workload.statements, snapshot)
                    consultation = await _consult(options, snapshot, workload, candidates, engine, say)
                    if consultation.candidates:  # the LLM's indexes compete with the engine's on equal terms
                        selection = await select_indexes(
                            workload.statements, candidates + consultation.candidates, cache, snapshot.indexes,
                            limits, say,
                        )  # fmt: skip
                chosen_indexes = [c.candidate.index for c in selection.chosen]
                # Without HypoPG the plans before and after are the sandbox copy's, the chosen indexes built there
                explainer = measured.sandbox_planner or planner
                simulated = chosen_indexes if hypopg or measured.sandbox_planner else []
                plans = await before_after(explainer, advice.plan_targets(selection, workload.statements), simulated)
                recommendations = advice.index_recommendations(selection, workload.statements, snapshot)
                await confirm(measured, recommendations, workload.statements)  # no HypoPG: chosen ones timed too
            finally:
                try:
                    await measure.aclose()
                finally:
                    await planner.close()
            mark_measured(recommendations, measured)
            advice.attach_plans(
                recommendations,
                plans,
                pii_safe=options.pii_safe,
                measured_after=measured_plans(recommendations, measured, pii_safe=options.pii_safe),
            )
            notes += measured.notes
            if consultation is not None:
                settle(consultation, selection, recommendations)
            used = {name for plan in selection.final.values() for name in plan.uses}
            chosen = [c.candidate.index for c in selection.chosen]
        else:
            notes.append(
                "HypoPG is not installed in this database: index proposals come from statement shapes only and are "
                "not costed (marked source: heuristic). Run CREATE EXTENSION hypopg for what-if planning, or let "
                "the analysis measure candidates on a sandbox copy (optischema analyze --measure; the operator does "
                "when the target's sandbox is enabled)."
            )
            recommendations = advice.heuristic_recommendations(
                workload.statements, candidates, snapshot, options.max_indexes_per_table
            )
            if options.advisor is not None:
                consultation = await _consult(options, snapshot, workload, candidates, recommendations, say)
                for candidate in consultation.candidates:
                    consultation.rejections.append(
                        Rejection("index", candidate.key, "no what-if planner (HypoPG) here to prove it")
                    )
                consultation.candidates = []
            used, chosen = None, [r.change.index for r in recommendations if r.change.index is not None]
        usage = await _usage(snapshot, dsn, options, started)
        drops = findings.index_findings(snapshot, chosen, used, usage)
        notes[:0] = instance_notes(usage)  # first: status.lastAnalysis.message is cut at 4,000 characters
        notes += findings.kept_unused_notes(snapshot, used, usage, drops)
        recommendations += drops
        recommendations += findings.maintenance_findings(snapshot, started)
        recommendations += findings.table_health_findings(snapshot, started, recommendations)
        recommendations += findings.setting_findings(snapshot, workload.statements)
        if consultation is not None:
            taken = {r.change.setting.name for r in recommendations if r.change.setting is not None}
            recommendations += [
                r
                for r in consultation.recommendations
                if r.change.setting is None or r.change.setting.name not in taken
            ]
        recommendations = platform.as_advice(recommendations, detection)
        recommendations = platform.on_cluster(recommendations, options.cluster)
    finally:
        await conn.close()
    unplannable = {k: p.error or "" for k, p in (selection.base.items() if selection else []) if p.cost is None}
    if unplannable:
        notes.append(
            f"{len(unplannable)} statement(s) could not be planned and were left out of the what-if costing "
            "(see unplannable)."
        )
    return AnalysisResult(
        recommendations=recommendations,
        mode=("whatif" if hypopg else "measured") if selection is not None else "heuristic",
        notes=notes,
        skipped=workload.skipped,
        statements_seen=workload.seen,
        statements_analysed=len(workload.statements),
        unplannable=unplannable,
        planner_calls=selection.planner_calls if selection else 0,
        duration_seconds=round(time.monotonic() - clock, 3),
        server_version=snapshot.server.version,
        system_identifier=snapshot.server.system_identifier,
        started_at=started,
        consultation=consultation,
        statements=[(str(s.query_id), s.query, s.calls, s.total_time_ms, s.rows) for s in snapshot.statements],
        index_bytes=sum(i.size_bytes for i in snapshot.indexes),
        index_count=len(snapshot.indexes),
    )


async def _consult(
    options: AnalyzeOptions,
    snapshot: Snapshot,
    workload: Workload,
    candidates: list[Candidate],
    engine: list[Recommendation],
    say: Progress,
) -> Consultation:
    """Ask the advisor (cache, budget and failover are its business) and sort its answer."""
    assert options.advisor is not None
    say("asking the LLM advisor", 0, 0)
    prompt = prompt_for(snapshot, workload.statements, engine, pii_safe=options.pii_safe)
    reply = await options.advisor(prompt)
    if reply.text is None:
        rejections = [Rejection("reply", "the whole answer", reply.rejected)] if reply.rejected else []
        return Consultation(
            model=reply.model,
            note=reply.note,
            tokens=reply.tokens,
            budget_spent=reply.budget_spent,
            rejections=rejections,
        )
    engine_settings = {r.change.setting.name for r in engine if r.change.setting is not None}
    result = digest(
        reply.text, reply.model or "llm", snapshot, workload.statements, {c.key for c in candidates}, engine_settings
    )
    result.cached, result.tokens, result.note = reply.cached, reply.tokens, reply.note
    return result


async def _usage(snapshot: Snapshot, dsn: ConnectTarget, options: AnalyzeOptions, now: datetime) -> UsageEvidence:
    """Index usage on the primary (its snapshot) and on every replica (read now, concurrently): what decides
    whether an index no scan used may be dropped."""
    replicas = await read_replicas(
        options.replicas, timeout=options.connect_timeout, system_identifier=snapshot.server.system_identifier
    )
    unreadable = (InstanceUsage.unreachable(name, why) for name, why in options.unreadable_instances)
    instances = (primary_usage(snapshot, instance_name(dsn)), *replicas, *unreadable)
    return UsageEvidence(instances, now=now, min_age=options.unused_min_statistics_age)


def _workload(snapshot: Snapshot, options: AnalyzeOptions) -> Workload:
    if len(snapshot.statements) > MAX_STATEMENTS and options.top_statements > MAX_STATEMENTS:
        raise AnalysisError(
            "TooManyStatements",
            f"pg_stat_statements holds {len(snapshot.statements)} statements; analysing more than {MAX_STATEMENTS} "
            "at once is refused. Lower --top (the statements with the most total time are kept).",
            ExitCode.BAD_INPUT,
        )
    for number, pattern in enumerate(options.ignore_statements):
        try:
            compile_pattern(pattern)
        except ValueError as error:
            raise AnalysisError(
                "InvalidIgnorePattern",
                f"spec.analysis.ignoreStatements[{number}] ({pattern!r}): {error}",
                ExitCode.BAD_INPUT,
            ) from error
    return build_workload(
        snapshot, min_calls=options.min_calls, top=options.top_statements, ignore_patterns=options.ignore_statements
    )


def nothing_analysed(snapshot: Snapshot, workload: Workload, options: AnalyzeOptions) -> str | None:
    """Why no statement was analysed, when none was. Not an error: a database whose queries read only catalogs,
    or whose statements are all skipped, needs no index, and the analysis says so (exit 0, no index proposed)."""
    if workload.statements:
        return None
    hidden = (
        f" {snapshot.hidden_statements} statement(s) of other users are hidden from this role: grant it "
        "pg_read_all_stats (GRANT pg_read_all_stats TO <role>) to analyse them."
        if snapshot.hidden_statements
        else ""
    )
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(workload.skip_summary().items()))
    return (
        f"nothing to analyse: pg_stat_statements holds {len(snapshot.statements)} visible statement(s) for database "
        f"{snapshot.server.database!r}, none of them an analysable query on the analysed schemas called at least "
        f"{options.min_calls} times{f' (skipped: {kinds})' if kinds else ''}, so no index is proposed.{hidden} If "
        "the application has not run yet, let it run (or lower --min-calls) and analyse again."
    )


def _notes(snapshot: Snapshot, workload: Workload, options: AnalyzeOptions) -> list[str]:
    empty = nothing_analysed(snapshot, workload, options)
    notes = [empty] if empty else []
    outside = sum(1 for s in workload.skipped if s.reason.startswith("outside the top"))
    if len(snapshot.statements) >= statement_limit(options.top_statements):
        notes.append(
            f"only the {len(snapshot.statements)} statements with the most total time (called at least "
            f"{options.min_calls} times) were read from pg_stat_statements; the top {options.top_statements} "
            "analysable ones among them were analysed (raise --top to read more)."
        )
    elif outside:
        notes.append(
            f"{len(snapshot.statements)} statements in pg_stat_statements: the top {options.top_statements} by total "
            f"time were analysed, {outside} others left out (raise --top to include them)."
        )
    if snapshot.hidden_statements and not empty:  # the note on an empty workload says it already
        notes.append(
            f"{snapshot.hidden_statements} statement(s) of other users are hidden from this role: grant it "
            "pg_read_all_stats (GRANT pg_read_all_stats TO <role>) to analyse them."
        )
    return notes
