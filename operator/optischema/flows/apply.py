"""Applying an admitted IndexChange: wait for a window, re-check, execute, verify, roll back on regression.

Each call of :func:`step` reads the change and its target afresh, does the next thing its phase calls for, records it
(status, ``status.history``, an Event, a log line per statement) and says how long to wait before the next call —
so a restarted operator simply calls it again and resumes where the status says it was:

``WaitingForWindow`` → (window open, pre-checks pass, baseline taken) → ``Applying`` → (statement done, or found
already done) → ``Verifying`` → (observed long enough) → ``Applied`` or, on regression, ``RolledBack``.
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
from optischema.api.conditions import Condition, ConditionType, Reason, remove_condition, set_condition
from optischema.api.indexchange import IndexChangeSpec
from optischema.api.target import PostgresTargetSpec
from optischema.changes.ddl import index_name, render_drop, statements_for, table_of, undo_for
from optischema.changes.verdict import Counters, build_estimate, fits, judge
from optischema.changes.windows import current_or_next
from optischema.flows.target import build_dsn
from optischema.lifecycle import recommendation as recommendation_lifecycle
from optischema.postgres import catalog, execute
from optischema.postgres.connect import DATABASE_ERRORS

FINAL = {"Applied", "RolledBack", "Failed", "Superseded"}
#: Longest sleep while waiting: the target's windows may be edited meanwhile.
MAX_WAIT_SECONDS = 300.0
CONNECT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *DATABASE_ERRORS)
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
    if phase == "WaitingForWindow":
        return await _wait_or_start(ctx, change, target, target_spec)
    if phase == "Applying":
        return await _apply(ctx, change, target, target_spec)
    if phase == "Verifying":
        return await _verify(ctx, change, target, target_spec)
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
        change.patch["window"] = {"start": window.start.isoformat(), "end": window.end.isoformat()}
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
        problem = await _precheck(ctx, change, target, conn)
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
        baseline = await _baseline(ctx, change, conn)
    change.patch |= {"phase": "Applying", "startedAt": now.isoformat(), "baseline": baseline}
    _audit(ctx, change, "Precheck", "Succeeded", "window open; same database; table present; build fits")
    await _status(ctx, change, Reason.APPLYING, "applying", reconciling=True)
    ctx.emit("Normal", "Applying", f"applying {change.status.get('sql') or change.spec.operation}")
    return 0.0


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


async def _precheck(ctx: Context, change: Change, target: dict[str, Any], conn: Any) -> tuple[str, str] | None:
    identity = await catalog.system_identifier(conn)
    recorded = ((target.get("status") or {}).get("database") or {}).get("systemIdentifier")
    for expected, where in ((change.spec.system_identifier, "spec.systemIdentifier"), (recorded, "the target")):
        if expected and expected != identity:
            return (
                Reason.DATABASE_MISMATCH,
                f"{where} says database {expected}, but the write credentials reach database {identity}",
            )
    table = table_of(change.spec)
    if table is not None and await catalog.table_bytes(conn, *table) is None:
        return Reason.TABLE_NOT_FOUND, f"table {table[0]}.{table[1]} does not exist"
    return None


async def _superseded(ctx: Context, change: Change) -> bool:
    ref = change.spec.recommendation_ref
    if ref is None:
        return False
    try:
        recommendation = await ctx.kube.get("tuningrecommendations", change.namespace, ref.name)
    except LookupError:
        return False
    return bool((recommendation.get("status") or {}).get("phase") == "Superseded")


async def _baseline(ctx: Context, change: Change, conn: Any) -> dict[str, Any]:
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
    return {
        "takenAt": ctx.now().isoformat(),
        "reads": [_wire(q, c) for q, c in before_reads.items()],
        "writes": [_wire(q, c) for q, c in before_writes.items()],
    }


def _wire(query_id: str, counters: Counters) -> dict[str, Any]:
    return {"queryId": query_id, "calls": counters.calls, "totalMs": round(counters.total_ms, 4)}


# -- applying ---------------------------------------------------------------------------------------------------


#: Operations that build an index, whose time depends on the table's size.
BUILDS = {"create", "reindex"}


async def _apply(ctx: Context, change: Change, target: dict[str, Any], target_spec: PostgresTargetSpec) -> float | None:
    spec, index = change.spec, change.spec.index
    name = (index.name or index_name(index)) if index is not None else None
    window_end = (change.status.get("window") or {}).get("end")
    now = ctx.now()
    closes = datetime.fromisoformat(window_end) if window_end else now + ctx.immediate_budget
    async with _writer(ctx, change, target, target_spec) as conn:
        if conn is None:
            return ctx.check_seconds
        key = execute.lock_key(change.uid)
        if not await execute.try_lock(conn, key):
            await _status(ctx, change, Reason.APPLYING, "another session is applying this change; waiting", True)
            return 5.0
        try:
            state = await catalog.index_state(conn, index.schema_, name) if index and name else None
            if spec.operation == "create" and state is not None and state.valid:
                _audit(ctx, change, "Execute", "Skipped", f"index {name} is already present and valid (resumed)")
                return await _executed(ctx, change, target, None)
            if spec.operation == "create" and state is not None and name:
                await _cleanup(ctx, change, conn, name, "an INVALID index of that name was left by an earlier attempt")
            if spec.operation == "drop" and state is None:
                _audit(ctx, change, "Execute", "Skipped", f"index {name} is already gone (resumed)")
                return await _executed(ctx, change, target, None)
            statements = statements_for(spec)
            sql = "; ".join(statements)
            remaining_ms = int(max((closes - ctx.now()).total_seconds(), 1.0) * 1000)

            async def retried(attempt: int, error: str, delay: float) -> None:
                _audit(ctx, change, "Retry", "Failed", f"attempt {attempt}: {error}; retrying in {delay:g}s", sql=sql)
                await _status(ctx, change, Reason.LOCK_TIMEOUT, f"lock timeout; retry {attempt} in {delay:g}s", True)

            started = time.monotonic()
            table = table_of(spec)
            table_size = (await catalog.table_bytes(conn, *table) or 0) if table and spec.operation in BUILDS else 0
            try:
                done = None
                for statement in statements:
                    done = await execute.execute(
                        conn,
                        statement,
                        lock_timeout_ms=ctx.lock_timeout_ms,
                        statement_timeout_ms=remaining_ms,
                        retry_until=time.monotonic() + remaining_ms / 1000,
                        backoff=ctx.retry_backoff,
                        on_retry=retried,
                    )
                assert done is not None
            except execute.ExecuteError as error:
                ctx.log.warning("executed", sql=sql, outcome="Failed", error=error.message)
                _audit(ctx, change, "Execute", "Failed", error.message, sql=sql, seconds=time.monotonic() - started)
                if spec.operation in BUILDS and index and name and not conn.is_closed():
                    leftover = await catalog.index_state(conn, index.schema_, name)
                    if leftover is not None and not leftover.valid:
                        await _cleanup(ctx, change, conn, name, "the failed build left an INVALID index")
                reason = Reason.LOCK_TIMEOUT if error.reason == "LockTimeout" else Reason.APPLY_FAILED
                return await _fail(ctx, change, reason, f"{sql} failed: {error.message}")
            ctx.log.info(
                "executed", sql=sql, outcome="Succeeded", seconds=round(done.seconds, 3), attempts=done.attempts
            )
            _audit(ctx, change, "Execute", "Succeeded", f"{done.attempts} attempt(s)", sql=sql, seconds=done.seconds)
            change.patch["durationSeconds"] = round(done.seconds, 3)
            rate = table_size / done.seconds if done.seconds > 0 and table_size else None
            return await _executed(ctx, change, target, rate)
        finally:
            if not conn.is_closed():
                await execute.unlock(conn, key)


async def _cleanup(ctx: Context, change: Change, conn: Any, name: str, why: str) -> None:
    assert change.spec.index is not None
    sql = render_drop(change.spec.index.model_copy(update={"name": name}))
    try:
        done = await execute.execute(conn, sql, lock_timeout_ms=ctx.lock_timeout_ms, statement_timeout_ms=600_000)
    except execute.ExecuteError as error:
        _audit(ctx, change, "Cleanup", "Failed", f"{why}; dropping it failed: {error.message}", sql=sql)
        ctx.log.warning("executed", sql=sql, outcome="Failed", error=error.message)
        return
    ctx.log.info("executed", sql=sql, outcome="Succeeded", seconds=round(done.seconds, 3))
    _audit(ctx, change, "Cleanup", "Succeeded", why, sql=sql, seconds=done.seconds)
    ctx.emit("Warning", "InvalidIndexDropped", f"{why}: {sql}")


async def _executed(ctx: Context, change: Change, target: dict[str, Any], rate: float | None) -> float:
    now = ctx.now()
    change.patch |= {"phase": "Verifying", "appliedAt": now.isoformat()}
    observe = change.spec.verification.observe_seconds
    await _status(ctx, change, Reason.VERIFYING, f"applied; observing the workload for {observe}s", True)
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
    index = change.spec.index
    name = (index.name or index_name(index)) if index is not None else None
    async with _writer(ctx, change, target, target_spec) as conn:
        if conn is None:
            return ctx.check_seconds
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
        undo = undo_for(change.spec, name)
        if regressed and change.spec.rollback.automatic and undo is not None:
            _audit(ctx, change, "Verify", "Failed", summary)
            sql = "; ".join(undo)
            try:
                for statement in undo:
                    done = await execute.execute(
                        conn,
                        statement,
                        lock_timeout_ms=ctx.lock_timeout_ms,
                        statement_timeout_ms=3_600_000,
                        retry_until=time.monotonic() + 600,
                        backoff=ctx.retry_backoff,
                    )
            except execute.ExecuteError as error:
                ctx.log.warning("executed", sql=sql, outcome="Failed", error=error.message)
                _audit(ctx, change, "Rollback", "Failed", error.message, sql=sql)
                return await _fail(ctx, change, Reason.APPLY_FAILED, f"rollback after a regression failed: {error}")
            ctx.log.info("executed", sql=sql, outcome="Succeeded", seconds=round(done.seconds, 3))
            _audit(ctx, change, "Rollback", "Succeeded", "regression: " + summary, sql=sql, seconds=done.seconds)
            return await _finish(ctx, change, "RolledBack", Reason.REGRESSION, f"rolled back: {summary}")
        _audit(ctx, change, "Verify", "Succeeded", summary)
        return await _finish(ctx, change, "Applied", Reason.APPLIED, summary)


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
            await _waiting(
                self.ctx,
                self.change,
                Reason.NO_WRITE_CREDENTIALS,
                f"Secret {self.change.namespace}/{ref.name} (writeCredentialsSecret) is missing or lacks "
                f"{ref.username_key}/{ref.password_key}",
                stalled=True,
            )
            return None
        dsn = build_dsn(self.spec, secret[ref.username_key], secret[ref.password_key])
        try:
            self.conn = await execute.connect_writer(dsn, timeout=self.spec.connection.connect_timeout_seconds)
        except CONNECT_ERRORS as error:
            await _waiting(self.ctx, self.change, Reason.CONNECTION_FAILED, f"cannot connect to apply: {error}")
            return None
        return self.conn

    async def __aexit__(self, *_: object) -> None:
        if self.conn is not None and not self.conn.is_closed():
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


def _conditions(
    ctx: Context,
    change: Change,
    ready: Literal["True", "False"],
    reason: str,
    message: str,
    *,
    reconciling: bool,
    stalled: bool,
) -> None:
    """Ready (with ``ready``), Reconciling and Stalled as kstatus reads them, into the pending patch."""
    now, generation = ctx.now(), change.generation
    conditions = [Condition.model_validate(c) for c in change.status.get("conditions", [])]
    conditions = set_condition(conditions, ConditionType.READY, ready, reason, message, now=now, generation=generation)
    for kind, wanted in ((ConditionType.RECONCILING, reconciling), (ConditionType.STALLED, stalled)):
        if wanted:
            conditions = set_condition(conditions, kind, "True", reason, message, now=now, generation=generation)
        else:
            conditions = remove_condition(conditions, kind)
    change.patch["conditions"] = [c.to_wire() for c in conditions]


async def _status(ctx: Context, change: Change, reason: str, message: str, reconciling: bool) -> None:
    _conditions(ctx, change, "False", reason, message, reconciling=reconciling, stalled=False)
    await _flush(ctx, change)


async def _waiting(ctx: Context, change: Change, reason: str, message: str, *, stalled: bool = False) -> None:
    """Still waiting: only written when something changed, so a waiting change costs no API writes."""
    ready: dict[str, Any] = next((c for c in change.status.get("conditions", []) if c.get("type") == "Ready"), {})
    has_stalled = any(c.get("type") == "Stalled" for c in change.status.get("conditions", []))
    window_same = change.patch.get("window", change.status.get("window")) == change.status.get("window")
    if ready.get("reason") == reason and ready.get("message") == message and has_stalled == stalled and window_same:
        return
    _conditions(ctx, change, "False", reason, message, reconciling=False, stalled=stalled)
    await _flush(ctx, change)
    if stalled:
        ctx.emit("Warning", reason, message)


async def _fail(ctx: Context, change: Change, reason: str, message: str) -> float | None:
    """Final: ``Failed`` with ``Stalled``; never retried without a person."""
    _audit(ctx, change, "Fail", "Failed", message)
    return await _finish(ctx, change, "Failed", reason, message, stalled=True)


async def _finish(
    ctx: Context, change: Change, phase: str, reason: str, message: str, *, stalled: bool = False
) -> float | None:
    """Final phase reached: nothing more to wait for (``None``)."""
    _conditions(
        ctx, change, "True" if phase == "Applied" else "False", reason, message, reconciling=False, stalled=stalled
    )
    change.patch |= {"phase": phase, "completedAt": ctx.now().isoformat()}

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
