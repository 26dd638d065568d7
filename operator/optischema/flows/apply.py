"""Applying an admitted IndexChange: wait for a window, re-check, execute, verify, roll back on regression.

Each call of :func:`step` reads the change and its target afresh, does the next thing its phase calls for, records it
(status, ``status.history``, an Event, a log line and a metric per statement) and says how long to wait before the
next call — so a restarted operator simply calls it again and resumes where the status says it was. Phases move only
through ``optischema.lifecycle.indexchange``:

``WaitingForWindow`` → (window open, pre-checks pass, baseline taken) → ``Applying`` → (marker written, statement
done) → ``Verifying`` → (observed long enough) → ``Applied`` or, on regression, ``RolledBack``.

What holds it to the database it was meant for and to what it owns:

- Right before *every* statement (create, drop, setting, cleanup, rollback; each lock-timeout retry too) the target
  is read again and the policy (kinds, ``immediate``, budget), the window and blackouts (by the operator's clock and
  the database's, see ``changes.windows.time_left``) and the database's ``system_identifier`` are checked; the
  statement's ``statement_timeout`` is what is left of the window. A closed window sends the change back to
  ``WaitingForWindow``; another database behind the target stalls it (``Stalled``, Warning Event).
- An index found under the name a create uses is treated as this change's own build only when the change had written
  its marker (``status.execution``, the rendered SQL) *before* executing and the catalog shows that definition on
  that table; otherwise the change fails and touches nothing. A drop checks the index is the one described and not
  protected (``flows.changes.drop_problem``), and captures its ``pg_get_indexdef`` first: the rollback re-creates
  exactly that.
- A connection lost mid-statement (``pg_terminate_backend``, a failover) is not a failure: back to waiting, and the
  next attempt drops the INVALID leftover of *our* build before building again. A verification whose baseline
  straddles a server restart or a statistics reset is ``Inconclusive``, never a rollback.

Anything that needs a person ends in ``Failed`` with ``Stalled`` and is not retried (see the README: to retry,
delete the IndexChange and create it again, or re-approve from a new recommendation).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from optischema.api import describe
from optischema.api.conditions import Reason
from optischema.api.indexchange import (
    Baseline,
    Execution,
    IndexChangeSpec,
    IndexChangeStatus,
    ReplacedSetting,
    StatementCounters,
    TimeWindow,
)
from optischema.api.operations import SettingChange
from optischema.api.target import PostgresTargetSpec
from optischema.changes.ddl import (
    index_name,
    recreate,
    render_drop,
    render_setting_rollback,
    statements_for,
    table_of,
    undo_for,
)
from optischema.changes.verdict import Counters, build_estimate, discontinuity, fits, inconclusive, judge
from optischema.changes.windows import CLOCK_SKEW_TOLERANCE, current_or_next, time_left
from optischema.flows.changes import committed_bytes, drop_problem, policy_problem, resume_problem
from optischema.flows.target import Check, connect_params, read_ca
from optischema.kube.client import secret_refused
from optischema.lifecycle import indexchange as lifecycle
from optischema.lifecycle import recommendation as recommendation_lifecycle
from optischema.postgres import catalog, execute
from optischema.postgres.connect import DATABASE_ERRORS
from optischema.telemetry import STATEMENTS_EXECUTED

FINAL = lifecycle.FINAL
#: Longest sleep while waiting: the target's windows may be edited meanwhile.
MAX_WAIT_SECONDS = 300.0
CONNECT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *DATABASE_ERRORS)
#: Also a host the connection refuses (a spec that reached us without the API server's validation).
WRITER_ERRORS: tuple[type[BaseException], ...] = (ValueError, *CONNECT_ERRORS)
Emit = Callable[[str, str, str], None]  # (type Normal|Warning, reason, message)


@dataclass(slots=True)
class Context:
    """What a step needs besides the change: the API, the clock, the operator's identity and its settings."""

    kube: Any
    now: Callable[[], datetime]
    actor: str
    emit: Emit
    log: Any
    lock_timeout_ms: int = 5000
    retry_backoff: float = 2.0
    immediate_budget: timedelta = timedelta(hours=1)
    check_seconds: float = 30.0
    on_final: Callable[[str, str], Awaitable[None]] | None = None


@dataclass(slots=True)
class Change:
    """The change as read at the start of a step, with the status patch being built."""

    namespace: str
    name: str
    uid: str
    spec: IndexChangeSpec
    status: dict[str, Any]
    generation: int | None
    created: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    patch: dict[str, Any] = field(default_factory=dict)

    @property
    def typed(self) -> IndexChangeStatus:
        """The status as last written, typed (``IndexChangeStatus``), for the lifecycle."""
        return lifecycle.parse(self.status)


class Stop(Exception):
    """A re-check before a statement said no: ``wait`` (window closed: back to waiting), ``stall`` (a person
    must act, e.g. another database behind the target) or ``fail``."""

    def __init__(self, kind: Literal["wait", "stall", "fail"], reason: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.reason, self.message = kind, reason, message


async def step(ctx: Context, namespace: str, name: str) -> float | None:
    """Do the next thing for this change; the seconds to wait before calling again, ``None`` when it is final."""
    try:
        body = await ctx.kube.get("indexchanges", namespace, name)
    except LookupError:
        return None
    status = dict(body.get("status") or {})
    phase = status.get("phase")
    if phase in FINAL:
        return None
    if phase in (None, "Pending"):
        return 1.0  # admission has not decided yet
    try:
        spec = IndexChangeSpec.model_validate(body["spec"])
    except ValidationError as error:
        return await _fail(ctx, _change(body, None), Reason.INVALID_SPEC, "; ".join(describe(error, "spec")))
    change = _change(body, spec)
    try:
        target = await ctx.kube.get("postgrestargets", namespace, spec.target_ref.name)
    except LookupError:
        return await _fail(ctx, change, Reason.TARGET_MISMATCH, f"PostgresTarget {spec.target_ref.name} is gone")
    target_spec = PostgresTargetSpec.model_validate(target["spec"])
    if target_spec.suspend:
        await _waiting(ctx, change, Reason.SUSPENDED, "the target is suspended (spec.suspend)")
        return ctx.check_seconds
    try:
        if phase == "WaitingForWindow":
            return await _wait_or_start(ctx, change, target, target_spec)
        if phase == "Applying":
            return await _apply(ctx, change, target, target_spec)
        if phase == "Verifying":
            return await _verify(ctx, change, target, target_spec)
    except execute.CONNECTION_LOST as error:  # between statements (a catalog question): nothing ran half-way
        await _waiting(ctx, change, Reason.CONNECTION_LOST, f"the connection to the database was lost: {error}")
        return ctx.check_seconds
    return None


def _change(body: dict[str, Any], spec: IndexChangeSpec | None) -> Change:
    meta = body["metadata"]
    status = dict(body.get("status") or {})
    return Change(
        meta["namespace"],
        meta["name"],
        meta.get("uid", meta["name"]),
        spec,  # type: ignore[arg-type]
        status,
        meta.get("generation"),
        created=meta.get("creationTimestamp", ""),
        history=list(status.get("history") or []),
    )


def _name(change: Change) -> str | None:
    index = change.spec.index
    return (index.name or index_name(index)) if index is not None else None


# -- the re-check before every statement -------------------------------------------------------------------------


class Guard:
    """Called right before every statement (and every retry of one): re-reads the target, checks the policy, the
    database's identity and the window by both clocks; raises :class:`Stop`, or returns the milliseconds the
    statement may take (what is left of the window)."""

    def __init__(self, ctx: Context, change: Change, conn: Any, *, policy: bool = True) -> None:
        self.ctx, self.change, self.conn, self.policy = ctx, change, conn, policy
        self.server: catalog.Server | None = None

    async def __call__(self) -> int:
        ctx, change = self.ctx, self.change
        try:
            target = await ctx.kube.get("postgrestargets", change.namespace, change.spec.target_ref.name)
        except LookupError:
            gone = f"PostgresTarget {change.spec.target_ref.name} is gone"
            raise Stop("fail", Reason.TARGET_MISMATCH, gone) from None
        spec = PostgresTargetSpec.model_validate(target["spec"])
        if spec.suspend:
            raise Stop("wait", Reason.SUSPENDED, "the target was suspended (spec.suspend) before the statement")
        if self.policy:
            others = await ctx.kube.list("indexchanges", change.namespace) if change.spec.operation == "create" else []
            problem = policy_problem(
                change.spec,
                spec,
                estimated_bytes=change.status.get("estimatedBytes"),
                committed_bytes=committed_bytes(others, change.name, change.spec.target_ref.name),
            )
            if problem is not None:
                raise Stop("fail", problem[0], f"re-checked before the statement: {problem[1]}")
        self.server = server = await catalog.server(self.conn)
        mismatch = _identity_problem(change, target, server.system_identifier)
        if mismatch is not None:
            raise Stop("stall", Reason.DATABASE_MISMATCH, mismatch)
        immediate_until = None
        if change.spec.schedule == "immediate":
            # An immediate change has its time budget from the start; its rollback (``policy=False``) a fresh one,
            # since verification may observe longer than the budget: only a blackout holds a rollback back then.
            started = change.status.get("startedAt")
            since = datetime.fromisoformat(started) if started and self.policy else ctx.now()
            immediate_until = since + ctx.immediate_budget
        left = time_left(
            spec.maintenance_windows,
            spec.one_off_windows,
            spec.blackouts,
            [ctx.now(), server.now],
            immediate_until=immediate_until,
        )
        if left <= timedelta(0):
            raise Stop(
                "wait",
                Reason.WINDOW_CLOSED,
                "the maintenance window closed (or a blackout began) before the statement could start, by the "
                "operator's clock or the database's; nothing ran",
            )
        return int(left.total_seconds() * 1000)


def _identity_problem(change: Change, target: dict[str, Any], identity: str) -> str | None:
    """The database behind the write credentials must be the one the change was written, recorded and
    pre-checked for."""
    recorded = ((target.get("status") or {}).get("database") or {}).get("systemIdentifier")
    for expected, where in (
        (change.spec.system_identifier, "spec.systemIdentifier"),
        (change.status.get("systemIdentifier"), "status.systemIdentifier (the database admitted and pre-checked)"),
        (recorded, "the target's status.database.systemIdentifier"),
    ):
        if expected and expected != identity:
            return (
                f"{where} says database {expected}, but the write credentials now reach database {identity}: "
                "the target was repointed; nothing runs until it points back (or a new change is written)"
            )
    return None


async def _stopped(ctx: Context, change: Change, stop: Stop) -> float | None:
    """What a re-check that said no does: back to waiting, stalled, or failed — and nothing ran. Only a statement
    that was about to run is written to the history; a pre-check that keeps saying "not yet" (or "not this
    database") is in the conditions, once, so a long stall does not grow the status."""
    if stop.kind == "fail":
        _audit(ctx, change, "Recheck", "Failed", stop.message)
        return await _fail(ctx, change, stop.reason, stop.message)
    stalled = stop.kind == "stall"
    if change.status.get("phase") == "Applying":
        _audit(ctx, change, "Recheck", "Skipped", stop.message)
        change.patch |= lifecycle.waiting(
            change.typed, stop.reason, stop.message, now=ctx.now(), generation=change.generation, stalled=stalled
        )
        await _flush(ctx, change)
        ctx.emit("Warning", stop.reason, stop.message)
        return 1.0 if not stalled else ctx.check_seconds
    await _waiting(ctx, change, stop.reason, stop.message, stalled=stalled)
    return ctx.check_seconds


# -- waiting for a window ---------------------------------------------------------------------------------------


async def _wait_or_start(
    ctx: Context, change: Change, target: dict[str, Any], target_spec: PostgresTargetSpec
) -> float | None:
    now = ctx.now()
    if change.spec.schedule == "immediate":
        if not target_spec.policy.allow_immediate:
            return await _fail(
                ctx, change, Reason.POLICY_VIOLATION, "schedule immediate is no longer allowed by the target's policy"
            )
        closes = now + ctx.immediate_budget
        change.patch["window"] = None
    else:
        window = current_or_next(
            target_spec.maintenance_windows, target_spec.one_off_windows, target_spec.blackouts, now
        )
        if window is None:
            change.patch["window"] = None
            await _waiting(ctx, change, Reason.WAITING_FOR_WINDOW, "the target has no maintenance window ahead")
            return MAX_WAIT_SECONDS
        change.patch["window"] = TimeWindow(start=window.start, end=window.end).to_wire()
        if not window.contains(now):
            await _waiting(
                ctx,
                change,
                Reason.WAITING_FOR_WINDOW,
                f"waiting for the maintenance window {window.start.isoformat()} – {window.end.isoformat()}",
            )
            return min(max((window.start - now).total_seconds(), 1.0), MAX_WAIT_SECONDS)
        closes = window.end
    busy = await _turn(ctx, change)
    if busy:
        await _waiting(ctx, change, Reason.WAITING_FOR_WINDOW, busy)
        return ctx.check_seconds
    async with _writer(ctx, change, target, target_spec) as conn:
        if conn is None:
            return ctx.check_seconds
        guard = Guard(ctx, change, conn)
        try:
            await guard()
        except Stop as stop:
            if guard.server is not None:  # a skewed clock explains a window that looks open but is not
                stop.message += _skew(ctx, guard.server)
            return await _stopped(ctx, change, stop)
        assert guard.server is not None
        skew = _skew(ctx, guard.server)
        if skew:
            ctx.emit("Warning", Reason.CLOCK_SKEW, skew.removeprefix("; "))
        problem = await _precheck(ctx, change, conn)
        if problem is not None:
            return await _fail(ctx, change, *problem)
        if await _superseded(ctx, change):
            return await _finish(ctx, change, "Superseded", Reason.SUPERSEDED, "its recommendation no longer holds")
        table = table_of(change.spec)
        if change.spec.operation in BUILDS and table is not None:
            size = await catalog.table_bytes(conn, *table) or 0
            estimate = build_estimate(size, (target.get("status") or {}).get("indexBuildBytesPerSecond"))
            if not fits(estimate, closes - now):
                await _waiting(
                    ctx,
                    change,
                    Reason.WINDOW_TOO_SHORT,
                    f"the build is estimated at {estimate} for {size} bytes of table, more than the "
                    f"{closes - now} left in this window; waiting for the next one",
                )
                return min(max((closes - now).total_seconds(), 1.0), MAX_WAIT_SECONDS)
        baseline = await _baseline(ctx, change, conn, guard.server)
    _audit(ctx, change, "Precheck", "Succeeded", "window open; same database; table present; build fits" + skew)
    message = "applying" + skew
    change.patch |= lifecycle.applying(
        change.typed,
        message,
        baseline=baseline,
        system_identifier=guard.server.system_identifier,
        now=now,
        generation=change.generation,
    )
    await _flush(ctx, change)
    ctx.emit("Normal", "Applying", f"applying {change.status.get('sql') or change.spec.operation}")
    return 0.0


def _skew(ctx: Context, server: catalog.Server) -> str:
    """The operator's clock against the database's, as a note for messages when beyond the tolerance (rounded to
    the minute, so that a waiting change's message stays the same from one check to the next). Windows are judged
    by both clocks (``changes.windows.time_left``): a skew only ever shortens a window, and this says why."""
    skew = ctx.now() - server.now
    if abs(skew) <= CLOCK_SKEW_TOLERANCE:
        return ""
    minutes = max(1, round(abs(skew.total_seconds()) / 60))
    side = "ahead of" if skew > timedelta(0) else "behind"
    return f"; the operator's clock is about {minutes} min {side} the database's: windows are judged by both clocks"


async def _turn(ctx: Context, change: Change) -> str | None:
    """One change at a time per database, oldest first: so that a build never competes with another and each
    verification measures its own change. Every daemon computes the same order, so only one starts."""
    others = [
        other
        for other in await ctx.kube.list("indexchanges", change.namespace)
        if other["spec"].get("targetRef", {}).get("name") == change.spec.target_ref.name
        and other["metadata"]["name"] != change.name
    ]
    for other in others:
        if (other.get("status") or {}).get("phase") in ("Applying", "Verifying"):
            return f"waiting for IndexChange {other['metadata']['name']} on the same database to finish"
    mine = (change.created, change.name)
    for other in others:
        if (other.get("status") or {}).get("phase") == "WaitingForWindow":
            theirs = (other["metadata"].get("creationTimestamp", ""), other["metadata"]["name"])
            if theirs < mine:
                return f"waiting for the older IndexChange {other['metadata']['name']} to go first"
    return None


async def _precheck(ctx: Context, change: Change, conn: Any) -> tuple[str, str] | None:
    table = table_of(change.spec)
    if table is not None and await catalog.table_bytes(conn, *table) is None:
        return Reason.TABLE_NOT_FOUND, f"table {table[0]}.{table[1]} does not exist"
    return await _ownership(change, conn)


async def _ownership(change: Change, conn: Any) -> tuple[str, str] | None:
    """A create's name is free or holds this change's own build; a drop's index is the one described and may go."""
    try:
        return await _owned(change, conn)
    except execute.CONNECTION_LOST:
        raise
    except DATABASE_ERRORS as error:  # the probe could not render it there: a column or the table is gone
        return Reason.TABLE_NOT_FOUND, f"spec.index: {str(error).splitlines()[0]}"


async def _owned(change: Change, conn: Any) -> tuple[str, str] | None:
    spec, index, name = change.spec, change.spec.index, _name(change)
    if index is None or name is None or spec.operation not in ("create", "drop"):
        return None
    marker = change.status.get("execution") or {}
    found = await catalog.index_info(conn, index.schema_, name)
    if spec.operation == "create":
        if found is None:
            kind = await catalog.relation_exists(conn, index.schema_, name)
            if kind is not None:
                return Reason.INDEX_NAME_TAKEN, f"a {kind} named {index.schema_}.{name} already exists"
            return None
        return resume_problem(
            name,
            found,
            marker_sql=marker.get("sql"),
            sql="; ".join(statements_for(spec)),
            table=(index.schema_, index.table),
            expected_shape=await catalog.rendered_shape(conn, index),
        )
    if found is None:
        return None if marker else (Reason.INDEX_NOT_FOUND, f"index {index.schema_}.{name} does not exist")
    kept_by = await catalog.same_uniqueness(conn, found) if found.unique else None
    return drop_problem(index, found, other_unique=kept_by, expected_shape=await catalog.rendered_shape(conn, index))


async def _superseded(ctx: Context, change: Change) -> bool:
    ref = change.spec.recommendation_ref
    if ref is None:
        return False
    try:
        recommendation = await ctx.kube.get("tuningrecommendations", change.namespace, ref.name)
    except LookupError:
        return False
    return bool((recommendation.get("status") or {}).get("phase") == "Superseded")


async def _baseline(ctx: Context, change: Change, conn: Any, server: catalog.Server) -> Baseline:
    reads: list[str] = []
    ref = change.spec.recommendation_ref
    if ref is not None:
        try:
            recommendation = await ctx.kube.get("tuningrecommendations", change.namespace, ref.name)
            evidence = recommendation["spec"].get("evidence") or {}
            reads = [s["queryId"] for s in evidence.get("statements", [])]
        except LookupError:
            pass
    table = table_of(change.spec)
    writes: list[str] = []
    if table is not None:
        if not reads:
            reads = await execute.statements_on(conn, re.escape(table[1]), writes=False)
        writes = await execute.statements_on(conn, re.escape(table[1]), writes=True)
    before_reads = await execute.counters(conn, reads)
    before_writes = await execute.counters(conn, writes)
    return Baseline(
        taken_at=ctx.now(),
        reads=[_wire(q, c) for q, c in before_reads.items()],
        writes=[_wire(q, c) for q, c in before_writes.items()],
        postmaster_start_time=server.started,
        stats_reset=server.stats_reset,
    )


def _wire(query_id: str, counters: Counters) -> StatementCounters:
    return StatementCounters(query_id=query_id, calls=counters.calls, total_ms=round(counters.total_ms, 4))


# -- applying ---------------------------------------------------------------------------------------------------


#: Operations that build an index, whose time depends on the table's size.
BUILDS = {"create", "reindex"}


async def _apply(ctx: Context, change: Change, target: dict[str, Any], target_spec: PostgresTargetSpec) -> float | None:
    spec, index, name = change.spec, change.spec.index, _name(change)
    statements = statements_for(spec)
    sql = "; ".join(statements)
    async with _writer(ctx, change, target, target_spec) as conn:
        if conn is None:
            return ctx.check_seconds
        key = execute.lock_key(change.uid)
        if not await execute.try_lock(conn, key):
            await _status(ctx, change, Reason.APPLYING, "another session is applying this change; waiting", True)
            return 5.0
        guard = Guard(ctx, change, conn)
        try:
            problem = await _ownership(change, conn)
            if problem is not None:
                return await _fail(ctx, change, *problem)
            found = await catalog.index_info(conn, index.schema_, name) if index and name else None
            marker = change.status.get("execution")
            if spec.operation == "create" and found is not None and found.valid:
                # _ownership proved it ours: marker written before executing, same definition, same table.
                _audit(ctx, change, "Execute", "Skipped", f"index {name} is already present and valid (resumed)")
                return await _executed(ctx, change, target, None, None)
            if spec.operation == "create" and found is not None and name:
                why = "an INVALID index of this change's own build was left by an earlier attempt"
                await _cleanup(ctx, change, conn, name, why, guard)
            if spec.operation == "drop" and found is None:
                _audit(ctx, change, "Execute", "Skipped", f"index {name} is already gone (resumed)")
                return await _executed(ctx, change, target, None, None)
            if spec.operation == "drop" and found is not None and not change.status.get("droppedDefinition"):
                change.patch |= {"droppedDefinition": found.definition, "rollbackSql": recreate(found.definition)}
            if spec.setting is not None and not change.status.get("replacedSetting"):
                now_set = await catalog.setting(conn, spec.setting.name)
                if now_set is not None:
                    replaced = ReplacedSetting(value=now_set[0], source=now_set[1])
                    undo = _setting_undo(spec.setting, replaced)
                    change.patch |= {"replacedSetting": replaced.to_wire(), "rollbackSql": ";\n".join(undo)}
            if marker is None:
                execution = Execution(started_at=ctx.now(), sql=sql, index_name=name)
                change.patch |= lifecycle.executing(change.typed, execution)
            await _flush(ctx, change)  # the marker is stored before anything is sent

            async def retried(attempt: int, error: str, delay: float) -> None:
                _audit(ctx, change, "Retry", "Failed", f"attempt {attempt}: {error}; retrying in {delay:g}s", sql=sql)
                await _status(ctx, change, Reason.LOCK_TIMEOUT, f"lock timeout; retry {attempt} in {delay:g}s", True)

            started = time.monotonic()
            table = table_of(spec)
            table_size = (await catalog.table_bytes(conn, *table) or 0) if table and spec.operation in BUILDS else 0
            try:
                done = None
                for statement in statements:
                    done = await _run(ctx, change, conn, statement, guard, on_retry=retried)
                assert done is not None
            except execute.ExecuteError as error:
                _audit(ctx, change, "Execute", "Failed", error.message, sql=sql, seconds=time.monotonic() - started)
                if error.reason == "ConnectionLost":
                    message = (
                        f"the connection was lost during {sql} ({error.message}); waiting to try again — the next "
                        "attempt drops what the interrupted statement left behind"
                    )
                    change.patch |= lifecycle.waiting(
                        change.typed, Reason.CONNECTION_LOST, message, now=ctx.now(), generation=change.generation
                    )
                    await _flush(ctx, change)
                    ctx.emit("Warning", Reason.CONNECTION_LOST, message)
                    return ctx.check_seconds
                if spec.operation in BUILDS and index and name and not conn.is_closed():
                    leftover = await catalog.index_info(conn, index.schema_, name)
                    if leftover is not None and not leftover.valid and await _ownership(change, conn) is None:
                        with contextlib.suppress(Stop):
                            await _cleanup(ctx, change, conn, name, "the failed build left an INVALID index", guard)
                reason = Reason.LOCK_TIMEOUT if error.reason == "LockTimeout" else Reason.APPLY_FAILED
                return await _fail(ctx, change, reason, f"{sql} failed: {error.message}")
            _audit(ctx, change, "Execute", "Succeeded", f"{done.attempts} attempt(s)", sql=sql, seconds=done.seconds)
            rate = table_size / done.seconds if done.seconds > 0 and table_size else None
            return await _executed(ctx, change, target, rate, done.seconds)
        except Stop as stop:
            return await _stopped(ctx, change, stop)
        finally:
            if not conn.is_closed():
                with contextlib.suppress(*execute.CONNECTION_LOST):
                    await execute.unlock(conn, key)


async def _run(
    ctx: Context,
    change: Change,
    conn: Any,
    statement: str,
    guard: Guard,
    *,
    on_retry: Callable[[int, str, float], Awaitable[None]] | None = None,
) -> execute.Executed:
    """One statement on the target database: re-checked right before it is sent (and before each retry), bounded
    by what is left of the window, logged and counted (``optischema_statements_executed_total``)."""
    target = change.spec.target_ref.name
    try:
        done = await execute.execute(
            conn,
            statement,
            lock_timeout_ms=ctx.lock_timeout_ms,
            statement_timeout_ms=24 * 3_600_000,
            retry_until=time.monotonic() + 24 * 3600,  # the guard ends the retries when the window closes
            backoff=ctx.retry_backoff,
            on_retry=on_retry,
            recheck=guard,
        )
    except execute.ExecuteError as error:
        STATEMENTS_EXECUTED.labels(change.namespace, target, "Failed").inc()
        ctx.log.warning("executed", sql=statement, outcome="Failed", reason=error.reason, error=error.message)
        raise
    STATEMENTS_EXECUTED.labels(change.namespace, target, "Succeeded").inc()
    ctx.log.info("executed", sql=statement, outcome="Succeeded", seconds=round(done.seconds, 3), attempts=done.attempts)
    return done


async def _cleanup(ctx: Context, change: Change, conn: Any, name: str, why: str, guard: Guard) -> None:
    """Drop an INVALID leftover of this change's own build (the caller proved it ours)."""
    assert change.spec.index is not None
    sql = render_drop(change.spec.index.model_copy(update={"name": name}))
    try:
        done = await _run(ctx, change, conn, sql, guard)
    except execute.ExecuteError as error:
        _audit(ctx, change, "Cleanup", "Failed", f"{why}; dropping it failed: {error.message}", sql=sql)
        return
    _audit(ctx, change, "Cleanup", "Succeeded", why, sql=sql, seconds=done.seconds)
    ctx.emit("Warning", "InvalidIndexDropped", f"{why}: {sql}")


async def _executed(
    ctx: Context, change: Change, target: dict[str, Any], rate: float | None, seconds: float | None
) -> float:
    observe = change.spec.verification.observe_seconds
    change.patch |= lifecycle.verifying(
        change.typed,
        f"applied; observing the workload for {observe}s",
        now=ctx.now(),
        generation=change.generation,
        duration=seconds,
    )
    await _flush(ctx, change)
    if rate:
        meta = target["metadata"]
        await ctx.kube.patch_status(
            "postgrestargets", meta["namespace"], meta["name"], {"indexBuildBytesPerSecond": round(rate, 1)}
        )
    ctx.emit("Normal", "Applied", f"{change.status.get('sql') or change.spec.operation}; verifying for {observe}s")
    return float(observe)


# -- verifying --------------------------------------------------------------------------------------------------


async def _verify(
    ctx: Context, change: Change, target: dict[str, Any], target_spec: PostgresTargetSpec
) -> float | None:
    applied = datetime.fromisoformat(change.status["appliedAt"])
    rules = change.spec.verification
    left = rules.observe_seconds - (ctx.now() - applied).total_seconds()
    if left > 0:
        return left
    baseline = change.status.get("baseline") or {}
    before_reads = {s["queryId"]: Counters(s["calls"], s["totalMs"]) for s in baseline.get("reads", [])}
    before_writes = {s["queryId"]: Counters(s["calls"], s["totalMs"]) for s in baseline.get("writes", [])}
    index, name = change.spec.index, _name(change)
    async with _writer(ctx, change, target, target_spec) as conn:
        if conn is None:
            return ctx.check_seconds
        server = await catalog.server(conn)
        mismatch = _identity_problem(change, target, server.system_identifier)
        if mismatch is not None:  # never judge (nor roll back on) another database's counters
            await _waiting(ctx, change, Reason.DATABASE_MISMATCH, mismatch, stalled=True)
            return ctx.check_seconds
        broken = discontinuity(
            _instant(baseline.get("postmasterStartTime")),
            _instant(baseline.get("statsReset")),
            server.started,
            server.stats_reset,
        )
        if broken is not None:
            reads = writes = inconclusive(broken)
        else:
            reads = judge(
                before_reads,
                await execute.counters(conn, before_reads),
                max_regression_percent=rules.max_regression_percent,
                min_calls=rules.min_calls,
            )
            writes = judge(
                before_writes,
                await execute.counters(conn, before_writes),
                max_regression_percent=rules.max_write_regression_percent,
                min_calls=rules.min_calls,
            )
        notes = []
        if change.spec.operation in BUILDS and index is not None and name is not None:
            state = await catalog.index_state(conn, index.schema_, name)
            if state is None or not state.valid:
                notes.append(f"index {name} is missing or INVALID after the change")
            elif state.scans == 0:
                notes.append(f"index {name} has not been used yet")
        change.patch["verification"] = {
            "baselineMeanMs": reads.baseline_mean_ms,
            "afterMeanMs": reads.after_mean_ms,
            "regressionPercent": reads.regression_percent,
            "verdict": "Regressed" if "Regressed" in (reads.verdict, writes.verdict) else reads.verdict,
        }
        summary = f"reads: {reads.message}; writes: {writes.message}" + (f"; {'; '.join(notes)}" if notes else "")
        regressed = any(j.verdict == "Regressed" for j in (reads, writes))
        undo = _undo(change, name)
        if regressed and change.spec.rollback.automatic and undo is not None:
            return await _rollback(ctx, change, conn, undo, summary)
        _audit(ctx, change, "Verify", "Succeeded", summary)
        return await _finish(ctx, change, "Applied", Reason.APPLIED, summary)


def _instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _undo(change: Change, name: str | None) -> list[str] | None:
    """The rollback: a dropped index comes back exactly as captured before the drop."""
    captured = change.status.get("droppedDefinition")
    if change.spec.operation == "drop" and captured:
        return [recreate(captured)]
    replaced = change.status.get("replacedSetting")
    if change.spec.setting is not None and replaced:
        return _setting_undo(change.spec.setting, ReplacedSetting.model_validate(replaced))
    return undo_for(change.spec, name)


def _setting_undo(setting: SettingChange, replaced: ReplacedSetting) -> list[str]:
    """Back to what the server had just before our ``ALTER SYSTEM`` — not to the spec's ``currentValue``, which a
    Git change's author wrote (a value above the settings' caps would pass unchecked through a rollback)."""
    restored = setting.model_copy(update={"current_value": replaced.value, "current_source": replaced.source})
    return render_setting_rollback(restored).split(";\n")


async def _rollback(ctx: Context, change: Change, conn: Any, undo: list[str], summary: str) -> float | None:
    """Undo after a regression — in a window, on the same database, and (for a create) only our own index."""
    sql = "; ".join(undo)
    guard = Guard(ctx, change, conn, policy=False)
    try:
        if change.spec.operation == "create":
            problem = await _ownership(change, conn)
            if problem is not None:
                return await _fail(ctx, change, problem[0], f"regressed, but not rolled back: {problem[1]}")
        for statement in undo:
            done = await _run(ctx, change, conn, statement, guard)
    except Stop as stop:
        if stop.kind == "fail":
            return await _fail(ctx, change, stop.reason, stop.message)
        # Still Verifying: the regression is judged again, and rolled back, once a window is open again.
        await _waiting(
            ctx, change, stop.reason, f"regressed; the rollback waits: {stop.message}", stalled=stop.kind == "stall"
        )
        return ctx.check_seconds
    except execute.ExecuteError as error:
        _audit(ctx, change, "Rollback", "Failed", error.message, sql=sql)
        return await _fail(ctx, change, Reason.APPLY_FAILED, f"rollback after a regression failed: {error}")
    _audit(ctx, change, "Verify", "Failed", summary)
    _audit(ctx, change, "Rollback", "Succeeded", "regression: " + summary, sql=sql, seconds=done.seconds)
    return await _finish(ctx, change, "RolledBack", Reason.REGRESSION, f"rolled back: {summary}")


# -- recording --------------------------------------------------------------------------------------------------


class _writer:
    """``async with _writer(...) as conn``: the write connection, or ``None`` (status says why) when unavailable."""

    def __init__(self, ctx: Context, change: Change, target: dict[str, Any], spec: PostgresTargetSpec) -> None:
        self.ctx, self.change, self.target, self.spec = ctx, change, target, spec
        self.conn: Any = None

    async def __aenter__(self) -> Any:
        ref = self.spec.connection.write_credentials_secret
        if ref is None:
            await _waiting(
                self.ctx,
                self.change,
                Reason.NO_WRITE_CREDENTIALS,
                "the target has no connection.writeCredentialsSecret: changes cannot be applied",
                stalled=True,
            )
            return None
        secret = await self.ctx.kube.read_secret(self.change.namespace, ref.name)
        if secret is None or ref.username_key not in secret or ref.password_key not in secret:
            missing = (
                f"{secret_refused(self.change.namespace, ref.name)}"
                if secret is None
                else f"Secret {self.change.namespace}/{ref.name} lacks {ref.username_key}/{ref.password_key}"
            )
            await _waiting(
                self.ctx,
                self.change,
                Reason.NO_WRITE_CREDENTIALS,
                f"writeCredentialsSecret: {missing}",
                stalled=True,
            )
            return None
        ca = await read_ca(self.change.namespace, self.spec, self.ctx.kube.read_secret)
        if isinstance(ca, Check):
            await _waiting(self.ctx, self.change, ca.reason, ca.message, stalled=True)
            return None
        try:
            dsn = connect_params(self.spec, secret[ref.username_key], secret[ref.password_key], ca)
            self.conn = await execute.connect_writer(dsn, timeout=self.spec.connection.connect_timeout_seconds)
        except WRITER_ERRORS as error:
            await _waiting(self.ctx, self.change, Reason.CONNECTION_FAILED, f"cannot connect to apply: {error}")
            return None
        return self.conn

    async def __aexit__(self, *_: object) -> None:
        if self.conn is not None and not self.conn.is_closed():
            with contextlib.suppress(*execute.CONNECTION_LOST):
                await self.conn.close()


def _audit(
    ctx: Context,
    change: Change,
    action: str,
    outcome: str,
    message: str,
    *,
    sql: str | None = None,
    seconds: float | None = None,
) -> None:
    entry: dict[str, Any] = {"time": ctx.now().isoformat(), "actor": ctx.actor, "action": action, "outcome": outcome}
    if sql:
        entry["sql"] = sql
    if message:
        entry["message"] = message[:4096]
    if seconds is not None:
        entry["durationSeconds"] = round(seconds, 3)
    change.history.append(entry)
    change.patch["history"] = change.history


async def _status(ctx: Context, change: Change, reason: str, message: str, reconciling: bool) -> None:
    change.patch |= lifecycle.note(
        change.typed, reason, message, now=ctx.now(), generation=change.generation, reconciling=reconciling
    )
    await _flush(ctx, change)


async def _waiting(ctx: Context, change: Change, reason: str, message: str, *, stalled: bool = False) -> None:
    """Still waiting: only written when something changed, so a waiting change costs no API writes."""
    ready: dict[str, Any] = next((c for c in change.status.get("conditions", []) if c.get("type") == "Ready"), {})
    has_stalled = any(c.get("type") == "Stalled" for c in change.status.get("conditions", []))
    window_same = change.patch.get("window", change.status.get("window")) == change.status.get("window")
    same = ready.get("reason") == reason and ready.get("message") == message and has_stalled == stalled
    if same and window_same and not change.patch:
        return
    change.patch |= lifecycle.note(
        change.typed, reason, message, now=ctx.now(), generation=change.generation, stalled=stalled
    )
    await _flush(ctx, change)
    if stalled and not same:
        ctx.emit("Warning", reason, message)


async def _fail(ctx: Context, change: Change, reason: str, message: str) -> float | None:
    """Final: ``Failed`` with ``Stalled``; never retried without a person."""
    _audit(ctx, change, "Fail", "Failed", message)
    return await _finish(ctx, change, "Failed", reason, message, stalled=True)


async def _finish(
    ctx: Context, change: Change, phase: str, reason: str, message: str, *, stalled: bool = False
) -> float | None:
    """Final phase reached: nothing more to wait for (``None``)."""
    now, current = ctx.now(), change.typed
    if phase == "Failed" or stalled:
        change.patch |= lifecycle.failed(current, reason, message, now=now, generation=change.generation)
    else:
        final: Literal["Applied", "RolledBack", "Superseded"] = phase  # type: ignore[assignment]
        change.patch |= lifecycle.finished(current, final, reason, message, now=now, generation=change.generation)

    async def settle() -> None:
        await _flush(ctx, change)
        ctx.emit("Normal" if phase == "Applied" else "Warning", reason, message)
        if ctx.on_final is not None:
            await ctx.on_final(phase, reason)
        ref = change.spec.recommendation_ref if change.spec is not None else None
        if ref is not None and phase in ("Applied", "RolledBack", "Failed"):
            with contextlib.suppress(LookupError):
                await ctx.kube.patch_status(
                    "tuningrecommendations", change.namespace, ref.name, recommendation_lifecycle.outcome(phase)
                )

    # Writing the final phase makes kopf stop this change's daemon, possibly while we still wait for the write's
    # answer: what follows it (Event, metrics, notification, the recommendation's phase) must finish regardless.
    await asyncio.shield(settle())
    return None


async def _flush(ctx: Context, change: Change) -> None:
    if not change.patch:
        return
    change.patch.setdefault("observedGeneration", change.generation)
    await ctx.kube.patch_status("indexchanges", change.namespace, change.name, change.patch)
    change.status |= change.patch
    change.patch = {}
