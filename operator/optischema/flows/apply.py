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
from optischema.api.index import IndexDefinition
from optischema.api.indexchange import (
    Baseline,
    Execution,
    IndexChangeSpec,
    IndexChangeStatus,
    ReplacedSetting,
    RolloutStep,
    StatementCounters,
    TimeWindow,
)
from optischema.api.operations import SettingChange
from optischema.api.target import PostgresTargetSpec
from optischema.changes import cnpg, partitioned
from optischema.changes.ddl import (
    UnsafeDefinition,
    index_name,
    recreate,
    render_cluster_setting_rollback,
    render_drop,
    render_drop_partitioned,
    render_setting_rollback,
    table_of,
)
from optischema.changes.quoting import qualified
from optischema.changes.verdict import Counters, build_estimate, discontinuity, fits, inconclusive, judge
from optischema.changes.windows import CLOCK_SKEW_TOLERANCE, current_or_next, time_left
from optischema.flows.changes import committed_bytes, drop_problem, policy_problem, resume_problem
from optischema.flows.target import Check, connect_params, locate, read_ca
from optischema.kube.client import secret_refused
from optischema.kube.cnpg import ALLOW_LABEL, ClusterProblem, allows_patches
from optischema.lifecycle import indexchange as lifecycle
from optischema.lifecycle import recommendation as recommendation_lifecycle
from optischema.postgres import catalog, execute, partitions
from optischema.postgres.connect import DATABASE_ERRORS
from optischema.telemetry import STATEMENTS_EXECUTED

FINAL = lifecycle.FINAL
#: Longest sleep while waiting: the target's windows may be edited meanwhile.
MAX_WAIT_SECONDS = 300.0
#: How long a CloudNativePG Cluster's setting may take to show on the server after the patch (a rolling restart of
#: a few instances fits), and how often the server is asked meanwhile.
ROLLOUT_TIMEOUT = timedelta(minutes=15)
ROLLOUT_POLL_SECONDS = 5.0
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
    except ClusterProblem as problem:  # a CloudNativePG Cluster gone, unreadable or refusing the patch: retried
        await _waiting(ctx, change, Reason.CLUSTER_NOT_READY, str(problem))
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
            name = _name(change)
            if name is not None and change.spec.operation == "create" and await partitions.partition_tree(conn, *table):
                # A rollout builds one partition at a time: a window must fit the largest build still to do (else
                # it would start, stop before that partition and start again at once).
                size = await partitions.largest_unindexed(conn, table[0], table[1], name)
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
        existing = change.status.get("baseline")
        if change.status.get("execution") and existing:  # a resumed rollout is judged against its first baseline
            baseline = Baseline.model_validate(existing)
        else:
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
        root, statements = await _statements(change, conn)
        return resume_problem(
            name,
            found,
            marker_sql=marker.get("sql"),
            sql=_marker_sql(root, statements),
            table=(index.schema_, index.table),
            expected_shape=await catalog.rendered_shape(conn, index),
        )
    if found is None:
        return None if marker else (Reason.INDEX_NOT_FOUND, f"index {index.schema_}.{name} does not exist")
    kept_by = await catalog.same_uniqueness(conn, found) if found.unique else None
    return drop_problem(index, found, other_unique=kept_by, expected_shape=await catalog.rendered_shape(conn, index))


async def _statements(change: Change, conn: Any) -> tuple[partitioned.Partition | None, list[str]]:
    """The partition tree of the change's table when it is partitioned (read from the catalog now, never from the
    analysis), and the statements the change runs there."""
    table = table_of(change.spec)
    root = await partitions.partition_tree(conn, *table) if change.spec.index is not None and table else None
    return root, partitioned.statements(change.spec, root)


def _marker_sql(root: partitioned.Partition | None, statements: list[str]) -> str:
    """What ``status.execution.sql`` holds: the statements, or for a partitioned index's rollout the parent's
    ``CREATE INDEX … ON ONLY`` alone (its partitions are recorded step by step, ``status.execution.steps``, and
    may change between two attempts)."""
    return statements[0] if root is not None and statements[0].startswith("CREATE") else "; ".join(statements)


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
            root, statements = await _statements(change, conn)
            sql = "; ".join(statements)
            if spec.operation == "create" and root is not None and index is not None and name is not None:
                return await _rollout(ctx, change, target, conn, guard, root, index, name)
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
                undo = partitioned.undo(spec, name, root) if root is not None else [recreate(found.definition)]
                change.patch |= {"droppedDefinition": found.definition, "rollbackSql": ";\n".join(undo or [])}
            if spec.setting is not None and not change.status.get("replacedSetting"):
                now_set = await catalog.setting(conn, spec.setting.name)
                if now_set is not None:
                    replaced = ReplacedSetting(value=now_set[0], source=now_set[1])
                    try:
                        if spec.setting.cluster is not None:
                            replaced = await _cluster_replaced(
                                ctx, change.namespace, target_spec, spec.setting.name, replaced
                            )
                        undo = _setting_undo(spec.setting, replaced)
                    except (ValidationError, UnsafeDefinition) as error:
                        return await _fail(ctx, change, Reason.INVALID_SPEC,
                                           f"the value to restore cannot be recorded: {error}")  # fmt: skip
                    change.patch |= {"replacedSetting": replaced.to_wire(), "rollbackSql": ";\n".join(undo)}
            if marker is None:
                execution = Execution(started_at=ctx.now(), sql=sql, index_name=name)
                change.patch |= lifecycle.executing(change.typed, execution)
            await _flush(ctx, change)  # the marker is stored before anything is sent
            if spec.setting is not None and (spec.setting.cluster or target_spec.connection.cluster):
                return await _patch_cluster(ctx, change, target, target_spec, conn, guard)

            async def retried(attempt: int, error: str, delay: float) -> None:
                _audit(ctx, change, "Retry", "Failed", f"attempt {attempt}: {error}; retrying in {delay:g}s", sql=sql)
                await _status(ctx, change, Reason.LOCK_TIMEOUT, f"lock timeout; retry {attempt} in {delay:g}s", True)
                if spec.operation == "create" and index is not None and name is not None:
                    # A concurrent build times out on its lock also while waiting for older writers, after its
                    # catalog entry exists: the retry would find the name taken ("already exists").
                    leftover = await catalog.index_info(conn, index.schema_, name)
                    if leftover is not None and not leftover.valid and await _ownership(change, conn) is None:
                        why = "a build that timed out on a lock left an INVALID index"
                        await _cleanup(ctx, change, conn, name, why, guard)

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


async def _cluster_replaced(
    ctx: Context, namespace: str, target_spec: PostgresTargetSpec, name: str, shown: ReplacedSetting
) -> ReplacedSetting:
    """What a Cluster's setting is before the patch, as the rollback must restore it: the Cluster's own parameter
    when it has one (source ``Cluster``), else none (source ``default``: the rollback removes the parameter and
    CloudNativePG's default applies). The server's source cannot tell: all CloudNativePG sets is its
    configuration file."""
    own = target_spec.connection.cluster
    if own is None:
        return shown
    cluster = await ctx.kube.clusters.get(namespace, own.name)
    value = _cluster_parameters(cluster).get(name)
    if value is None:
        return ReplacedSetting(value=shown.value, source="default")
    return ReplacedSetting(value=str(value), source="Cluster")


def _cluster_parameters(cluster: dict[str, Any]) -> dict[str, Any]:
    return dict(((cluster.get("spec") or {}).get("postgresql") or {}).get("parameters") or {})


async def _patch_cluster(
    ctx: Context, change: Change, target: dict[str, Any], target_spec: PostgresTargetSpec, conn: Any, guard: Guard
) -> float | None:
    """A CloudNativePG Cluster's setting: the merge patch of its ``spec.postgresql.parameters`` (never ``ALTER
    SYSTEM``, which CloudNativePG turns off), made once — right after the re-check, and only when the Cluster does
    not carry the value yet, so a resumed step never patches twice — then waited for: CloudNativePG reloads or
    restarts the instances, and verification starts only once the server shows the value. Only the target's own
    Cluster is ever patched, whatever ``spec.setting.cluster`` an IndexChange's author wrote; a rollout that has
    not shown the value within :data:`ROLLOUT_TIMEOUT` is patched back and the change fails."""
    setting = change.spec.setting
    assert setting is not None
    own = target_spec.connection.cluster
    if own is None or own.name != setting.cluster:
        named = own.name if own is not None else "none: the target names a host"
        return await _fail(
            ctx, change, Reason.TARGET_MISMATCH,
            f"spec.setting.cluster: {setting.cluster} is not the target's Cluster (spec.connection.cluster.name: "
            f"{named}); nothing was patched",
        )  # fmt: skip
    shown = await catalog.setting(conn, setting.name)
    execution = change.typed.execution
    patched_at = execution.cluster_patched_at if execution is not None else None
    if shown is not None and cnpg.shows(shown[0], setting.value):
        _audit(ctx, change, "Execute", "Succeeded", f"CloudNativePG rolled out {setting.name} = {shown[0]}")
        return await _executed(ctx, change, target, None, None)
    cluster = await ctx.kube.clusters.get(change.namespace, own.name)
    if not allows_patches(cluster):
        return await _fail(ctx, change, Reason.POLICY_VIOLATION, _not_opted_in(change.namespace, own.name))
    value = _cluster_parameters(cluster).get(setting.name)
    if patched_at is None:
        await guard()  # policy, database identity and window, right before the patch
        await ctx.kube.clusters.patch_parameters(
            change.namespace, own.name, cnpg.parameters_patch(setting.name, setting.value)
        )
        patched_at = ctx.now()
        assert execution is not None  # the marker was written before this step
        change.patch |= lifecycle.executing(
            change.typed, execution.model_copy(update={"cluster_patched_at": patched_at})
        )
        await _flush(ctx, change)
        _audit(ctx, change, "Execute", "Succeeded", cnpg.describe(own.name, setting.name, setting.value))
        ctx.emit("Normal", Reason.ROLLOUT_PENDING, cnpg.describe(own.name, setting.name, setting.value))
    elif value != setting.value:  # patched once; someone (GitOps syncing the manifest?) set it otherwise since
        return await _fail(
            ctx, change, Reason.APPLY_FAILED,
            f"Cluster {own.name}'s spec.postgresql.parameters.{setting.name} was changed to {value!r} after the "
            "operator patched it (is the Cluster synced from Git? export the change into its manifest instead); "
            "the Cluster is left as it is now",
        )  # fmt: skip
    if ctx.now() - patched_at > ROLLOUT_TIMEOUT:
        replaced = change.status.get("replacedSetting")
        undo = cnpg.undo_value(replaced["value"], replaced["source"]) if replaced else None
        await ctx.kube.clusters.patch_parameters(change.namespace, own.name, cnpg.parameters_patch(setting.name, undo))
        message = (
            f"CloudNativePG did not roll out {setting.name} = {setting.value} within {ROLLOUT_TIMEOUT} (SHOW says "
            f"{shown[0] if shown else 'nothing'}): patched back ({cnpg.describe(own.name, setting.name, undo)})"
        )
        _audit(ctx, change, "Rollback", "Succeeded", message)
        return await _fail(ctx, change, Reason.APPLY_FAILED, message)
    message = (
        f"patched Cluster {own.name}; waiting for CloudNativePG to roll out {setting.name} = {setting.value} "
        f"(the server shows {shown[0] if shown else 'nothing'})"
    )
    await _status(ctx, change, Reason.ROLLOUT_PENDING, message, True)
    return ROLLOUT_POLL_SECONDS


def _not_opted_in(namespace: str, cluster: str) -> str:
    return (
        f"CloudNativePG Cluster {namespace}/{cluster} has not opted in to having its parameters patched: its owners "
        f"label it (kubectl label clusters.postgresql.cnpg.io -n {namespace} {cluster} {ALLOW_LABEL}=true); "
        "nothing was patched"
    )


async def _rollout(
    ctx: Context,
    change: Change,
    target: dict[str, Any],
    conn: Any,
    guard: Guard,
    root: partitioned.Partition,
    index: IndexDefinition,
    name: str,
) -> float | None:
    """An index on a partitioned table, one step at a time (``changes.partitioned``): the parent's index ``ON
    ONLY``, then per partition a concurrent build and an attach. Each step is judged against the catalog before
    it runs, so a resumed rollout (after a crash, a lost connection or a closed window) carries on where it was:

    - a partition whose index is already attached and valid is skipped (whoever built it: PostgreSQL builds one
      itself for a partition created after the parent's index existed); a partitioned partition so covered is
      skipped with everything under it;
    - an index found under a step's name is this change's own only when the step was recorded ``Started``
      (``status.execution.steps``) before its statement was sent, on that table with the definition rendered;
      otherwise the change fails and touches nothing. Ours and INVALID (an interrupted concurrent build) is
      dropped and built again; ours, valid and not attached is attached;
    - every statement goes through the same re-check as any other (:class:`Guard`: policy, database identity,
      window, ``lock_timeout``/``statement_timeout``), and a build starts only when its estimate fits in what is
      left of the window: otherwise the rollout stops between partitions and waits for the next window. A build
      cut short anyway (the window's ``statement_timeout``) has its INVALID leftover dropped before waiting.

    The parent's index becomes valid by itself when the last partition's index is attached; that is checked
    before verification starts."""
    steps = partitioned.rollout(index, root, name)
    marker = change.status.get("execution")
    execution = Execution.model_validate(marker) if marker else Execution(started_at=ctx.now(), sql=steps[0].sql,
                                                                          index_name=name)  # fmt: skip
    if marker is None:  # the marker, and the rollout as rendered for these partitions, before anything is sent
        undo = partitioned.undo(change.spec, name, root) or []
        change.patch |= {"sql": partitioned.shown(s.sql for s in steps), "rollbackSql": ";\n".join(undo)}
        change.patch |= lifecycle.executing(change.typed, execution)
        await _flush(ctx, change)
    progress: dict[str, str] = {s.step: s.state for s in execution.steps}
    expected = await catalog.rendered_shape(conn, index)
    rate = (target.get("status") or {}).get("indexBuildBytesPerSecond")
    covered: set[str] = set()  # partitioned partitions whose whole subtree already has its index
    built_bytes, build_seconds, spent, ran_steps = 0, 0.0, 0.0, 0

    async def record(key: str, state: Literal["Started", "Done"]) -> None:
        nonlocal execution
        kept = [s for s in execution.steps if s.step != key]
        execution = execution.model_copy(update={"steps": [*kept, RolloutStep(step=key, state=state)]})
        progress[key] = state
        change.patch |= lifecycle.executing(change.typed, execution)
        await _flush(ctx, change)

    async def run(step: partitioned.Step, sql: str, key: str) -> execute.Executed:
        nonlocal spent, ran_steps

        async def retried(attempt: int, error: str, delay: float) -> None:
            _audit(ctx, change, "Retry", "Failed", f"attempt {attempt}: {error}; retrying in {delay:g}s", sql=sql)
            await _status(ctx, change, Reason.LOCK_TIMEOUT, f"lock timeout; retry {attempt} in {delay:g}s", True)
            if step.kind == "build":  # a concurrent build that timed out waiting for old transactions left one
                await _leftover(
                    ctx, change, conn, step, "a build that timed out on a lock left an INVALID index", guard
                )

        await record(key, "Started")
        done = await _run(ctx, change, conn, sql, guard, on_retry=retried)
        await record(key, "Done")
        _audit(ctx, change, "Execute", "Succeeded", f"{done.attempts} attempt(s)", sql=sql, seconds=done.seconds)
        spent += done.seconds
        ran_steps += 1
        return done

    for step in steps[1:]:  # every name the rollout will build under is free or its own, before anything runs
        found = await catalog.index_info(conn, step.schema, step.index) if step.kind != "attach" else None
        problem = _step_owned(step, found, progress, expected) if found is not None else None
        if problem is not None:
            return await _fail(ctx, change, Reason.INDEX_NAME_TAKEN, problem)
    try:
        for step in steps:
            if covered.intersection(step.under):
                continue
            partition = f"{step.schema}.{step.table}"
            there = None
            if step.parent_schema is not None and step.parent_index is not None:
                there = await partitions.attached_on(
                    conn, step.parent_schema, step.parent_index, step.schema, step.table
                )
            if step.kind == "attach":
                if there is None:
                    child = await catalog.index_info(conn, step.schema, step.index)
                    if child is None or not child.valid:
                        return await _incomplete(ctx, change, conn, step.schema, step.index, "before attaching it")
                    await run(step, step.sql, step.key)
                continue
            if there is not None and (there.valid or there.name != step.index):
                if step.kind == "only":
                    covered.add(partition)
                if not there.valid:
                    return await _fail(ctx, change, Reason.APPLY_FAILED,
                                       f"partition {partition} has an INVALID index {there.schema}.{there.name} "
                                       "attached that this change did not build; nothing was touched")  # fmt: skip
                continue
            if there is not None:  # ours, attached, INVALID
                if step.kind == "build":
                    await run(step, f"REINDEX INDEX CONCURRENTLY {qualified(step.schema, step.index)}",
                              f"reindex:{step.schema}.{step.index}")  # fmt: skip
                continue
            found = await catalog.index_info(conn, step.schema, step.index)
            if found is not None and step.parent_index is not None:  # the root's own index was judged already
                problem = _step_owned(step, found, progress, expected)
                if problem is not None:
                    return await _fail(ctx, change, Reason.INDEX_NAME_TAKEN, problem)
            if step.kind == "only":
                if found is None:
                    await run(step, step.sql, step.key)
                continue
            if found is not None and found.valid:
                continue  # built before the interruption; its attach follows
            if found is not None:
                await _leftover(ctx, change, conn, step, "an interrupted build left an INVALID index", guard)
            size = await catalog.table_bytes(conn, step.schema, step.table) or 0
            estimate = build_estimate(size, rate)
            left = timedelta(milliseconds=await guard())
            if not fits(estimate, left):
                raise Stop(
                    "wait",
                    Reason.WINDOW_TOO_SHORT,
                    f"the build on partition {partition} is estimated at {estimate} for {size} bytes, more than the "
                    f"{left} left in this window: the rollout stops between partitions and resumes in the next one",
                )
            done = await run(step, step.sql, step.key)
            built_bytes, build_seconds = built_bytes + size, build_seconds + done.seconds
    except execute.ExecuteError as error:
        return await _step_failed(ctx, change, conn, steps, progress, error, guard)
    parent = await catalog.index_info(conn, index.schema_, name)
    if parent is None or not parent.valid:
        return await _incomplete(ctx, change, conn, index.schema_, name, "after every step")
    message = f"rolled out: {ran_steps} step(s) run now, the rest done before or by PostgreSQL"
    _audit(ctx, change, "Execute", "Succeeded", message, sql=steps[0].sql, seconds=spent)
    rate_now = built_bytes / build_seconds if build_seconds > 0 and built_bytes else None
    return await _executed(ctx, change, target, rate_now, spent)


def _step_owned(
    step: partitioned.Step, found: catalog.IndexInfo, progress: dict[str, str], expected: str
) -> str | None:
    """An index under a step's name is this change's only when the step was recorded before its statement was
    sent, and it is that definition on that partition (``flows.changes.resume_problem``, per partition)."""
    where = f"{step.schema}.{step.index}"
    if step.key not in progress:
        return (
            f"index {where} exists but this change never started building it: it is someone else's; nothing was touched"
        )
    if (found.table_schema, found.table) != (step.schema, step.table) or found.shape != expected:
        return (
            f"index {where} is {found.definition!r}, not the definition this change builds ({expected!r} on "
            f"{step.schema}.{step.table}); nothing was touched"
        )
    return None


async def _leftover(
    ctx: Context, change: Change, conn: Any, step: partitioned.Step, why: str, guard: Guard, *, valid: bool = False
) -> None:
    """Drop the INVALID index a step of this change left (``DROP INDEX CONCURRENTLY``), if it is there (``valid``:
    a valid one too, never attached, after the rollout failed)."""
    found = await catalog.index_info(conn, step.schema, step.index)
    if found is None or (found.valid and not valid) or step.key not in (_steps(change)):
        return
    assert change.spec.index is not None
    sql = render_drop(change.spec.index.model_copy(update={"schema_": step.schema, "name": step.index}))
    done = await _run(ctx, change, conn, sql, guard)
    _audit(ctx, change, "Cleanup", "Succeeded", why, sql=sql, seconds=done.seconds)
    ctx.emit("Warning", "InvalidIndexDropped", f"{why}: {sql}")


def _steps(change: Change) -> set[str]:
    """The rollout steps this change recorded as started (status as last written, the pending patch included)."""
    execution = change.patch.get("execution") or change.status.get("execution") or {}
    return {s["step"] for s in execution.get("steps", [])}


async def _step_failed(
    ctx: Context,
    change: Change,
    conn: Any,
    steps: list[partitioned.Step],
    progress: dict[str, str],
    error: execute.ExecuteError,
    guard: Guard,
) -> float | None:
    """A rollout statement failed: a lost connection waits (the next attempt resumes), a build cut short by the
    window's end drops its leftover and waits for the next window; anything else drops the leftover and fails."""
    _audit(ctx, change, "Execute", "Failed", error.message)
    if error.reason == "ConnectionLost":
        message = (
            f"the connection was lost during the rollout ({error.message}); waiting to try again — the next attempt "
            "resumes with the partition it was on, dropping what the interrupted statement left behind"
        )
        change.patch |= lifecycle.waiting(
            change.typed, Reason.CONNECTION_LOST, message, now=ctx.now(), generation=change.generation
        )
        await _flush(ctx, change)
        ctx.emit("Warning", Reason.CONNECTION_LOST, message)
        return ctx.check_seconds
    started = [s for s in steps if s.kind == "build" and progress.get(s.key) == "Started"]
    if not conn.is_closed():
        for step in started:
            with contextlib.suppress(Stop, execute.ExecuteError):
                await _leftover(ctx, change, conn, step, "the interrupted build left an INVALID index", guard)
    if error.reason == "StatementTimeout":
        message = (
            f"the window ran out during the rollout ({error.message}); the interrupted partition's INVALID index "
            "was dropped, and the rollout resumes there in the next window"
        )
        change.patch |= lifecycle.waiting(
            change.typed, Reason.WINDOW_CLOSED, message, now=ctx.now(), generation=change.generation
        )
        await _flush(ctx, change)
        ctx.emit("Warning", Reason.WINDOW_CLOSED, message)
        return ctx.check_seconds
    reason = Reason.LOCK_TIMEOUT if error.reason == "LockTimeout" else Reason.APPLY_FAILED
    message = f"the rollout failed: {error.message}"
    index, name = change.spec.index, _name(change)
    try:
        adopted = None if conn.is_closed() else await _adopted(change, conn)
    except execute.CONNECTION_LOST:
        adopted = "the connection was lost before the indexes attached to it could be read"
    if adopted is not None:
        message += f"; its partial index is left INVALID: {adopted}"
    elif index is not None and name is not None and not conn.is_closed():
        # Nothing half-built stays: the parent's INVALID index goes, with the partitions' indexes attached to it.
        sql = render_drop_partitioned(index, name=name)
        try:
            done = await _run(ctx, change, conn, sql, guard)
            _audit(ctx, change, "Cleanup", "Succeeded", "the failed rollout's index", sql=sql, seconds=done.seconds)
            message += f"; its partial index was dropped ({sql})"
            for step in steps:  # a partition's index built but not attached yet did not go with it
                if step.kind == "build":
                    await _leftover(ctx, change, conn, step, "built by the failed rollout", guard, valid=True)
        except (Stop, execute.ExecuteError) as cleanup:
            message += f"; its partial index {index.schema_}.{name} is left INVALID ({cleanup})"
    return await _fail(ctx, change, reason, message)


async def _adopted(change: Change, conn: Any) -> str | None:
    """Why our partitioned index may not be dropped, if it may not: an index of someone else's that PostgreSQL
    attached to it (a table attached with a matching index of its own has it adopted) would go with it."""
    index, name = change.spec.index, _name(change)
    if index is None or name is None:
        return None
    try:
        if not await partitions.partitioned_index(conn, index.schema_, name):
            return None
        root = await partitions.partition_tree(conn, index.schema_, index.table)
        ours = {(s.schema, s.index) for s in partitioned.rollout(index, root, name)} if root is not None else set()
        found = await partitions.adopted_below(conn, index.schema_, name, ours)
    except execute.CONNECTION_LOST:
        raise
    except DATABASE_ERRORS as error:
        return f"the indexes attached to {index.schema_}.{name} could not be read ({str(error).splitlines()[0]})"
    if not found:
        return None
    return (
        f"index {', '.join(found[:5])} (not built by the operator) was attached to {index.schema_}.{name} with its "
        "table, and a DROP INDEX of ours would drop it too; detach that table or drop that index first"
    )


async def _incomplete(ctx: Context, change: Change, conn: Any, schema: str, name: str, when: str) -> float | None:
    missing = await partitions.partitions_without(conn, schema, name)
    return await _fail(
        ctx,
        change,
        Reason.APPLY_FAILED,
        f"index {schema}.{name} is not valid {when}: partition(s) without a valid index: "
        f"{', '.join(missing[:20]) or '(none found)'}",
    )


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
        root, _ = await _statements(change, conn)
        notes = []
        if change.spec.operation in BUILDS and index is not None and name is not None:
            state = await catalog.index_state(conn, index.schema_, name)
            if state is None or not state.valid:
                notes.append(f"index {name} is missing or INVALID after the change")
            elif (await partitions.scans_below(conn, index.schema_, name) if root else state.scans) == 0:
                notes.append(f"index {name} has not been used yet")
        change.patch["verification"] = {
            "baselineMeanMs": reads.baseline_mean_ms,
            "afterMeanMs": reads.after_mean_ms,
            "regressionPercent": reads.regression_percent,
            "verdict": "Regressed" if "Regressed" in (reads.verdict, writes.verdict) else reads.verdict,
        }
        summary = f"reads: {reads.message}; writes: {writes.message}" + (f"; {'; '.join(notes)}" if notes else "")
        regressed = any(j.verdict == "Regressed" for j in (reads, writes))
        undo = _undo(change, name, root)
        if regressed and change.spec.rollback.automatic and undo is not None:
            return await _rollback(ctx, change, conn, undo, summary)
        _audit(ctx, change, "Verify", "Succeeded", summary)
        return await _finish(ctx, change, "Applied", Reason.APPLIED, summary)


def _instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _undo(change: Change, name: str | None, root: partitioned.Partition | None) -> list[str] | None:
    """The rollback: a dropped index comes back exactly as captured before the drop (a partitioned one is rolled
    out again from its structured definition, partition by partition: ``CONCURRENTLY`` is refused on the parent).
    A new partitioned index is dropped with its partitions' indexes (``ddl.render_drop_partitioned``)."""
    captured = change.status.get("droppedDefinition")
    if change.spec.operation == "drop" and captured and root is None:
        return [recreate(captured)]
    replaced = change.status.get("replacedSetting")
    if change.spec.setting is not None and replaced:
        return _setting_undo(change.spec.setting, ReplacedSetting.model_validate(replaced))
    return partitioned.undo(change.spec, name, root)


def _setting_undo(setting: SettingChange, replaced: ReplacedSetting) -> list[str]:
    """Back to what the server had just before our ``ALTER SYSTEM`` (or Cluster patch) — not to the spec's
    ``currentValue``, which a Git change's author wrote (a value above the settings' caps would pass unchecked
    through a rollback)."""
    restored = setting.model_copy(update={"current_value": replaced.value, "current_source": replaced.source})
    if setting.cluster is not None:
        return [render_cluster_setting_rollback(restored)]  # comments: _rollback patches the Cluster
    return render_setting_rollback(restored).split(";\n")


async def _rollback(ctx: Context, change: Change, conn: Any, undo: list[str], summary: str) -> float | None:
    """Undo after a regression — in a window, on the same database, and (for a create) only our own index."""
    sql = "; ".join(undo)
    guard = Guard(ctx, change, conn, policy=False)
    setting = change.spec.setting
    try:
        if setting is not None and setting.cluster is not None:
            return await _unpatch_cluster(ctx, change, guard, setting, sql, summary)
        if change.spec.operation == "create":
            problem = await _ownership(change, conn)
            if problem is not None:
                return await _fail(ctx, change, problem[0], f"regressed, but not rolled back: {problem[1]}")
            adopted = await _adopted(change, conn)
            if adopted is not None:
                return await _fail(ctx, change, Reason.PROTECTED_INDEX, f"regressed, but not rolled back: {adopted}")
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


async def _unpatch_cluster(
    ctx: Context, change: Change, guard: Guard, setting: SettingChange, sql: str, summary: str
) -> float | None:
    """The rollback of a Cluster's setting: the value the server had before the patch patched back (removed when
    it was PostgreSQL's default or its configuration file's), on the target's own Cluster, after the re-check."""
    replaced = change.status.get("replacedSetting")
    if not replaced:
        return await _fail(ctx, change, Reason.APPLY_FAILED, "regressed, but the replaced value was not recorded")
    target = await ctx.kube.get("postgrestargets", change.namespace, change.spec.target_ref.name)
    own = PostgresTargetSpec.model_validate(target["spec"]).connection.cluster
    if own is None or own.name != setting.cluster:
        return await _fail(ctx, change, Reason.TARGET_MISMATCH, "regressed, but the target no longer names the "
                           f"Cluster {setting.cluster}; nothing was patched")  # fmt: skip
    if not allows_patches(await ctx.kube.clusters.get(change.namespace, own.name)):
        why = _not_opted_in(change.namespace, own.name)
        return await _fail(ctx, change, Reason.POLICY_VIOLATION, f"regressed, but not rolled back: {why}")
    await guard()
    undo = cnpg.undo_value(replaced["value"], replaced["source"])
    await ctx.kube.clusters.patch_parameters(change.namespace, own.name, cnpg.parameters_patch(setting.name, undo))
    _audit(ctx, change, "Verify", "Failed", summary)
    _audit(ctx, change, "Rollback", "Succeeded", "regression: " + summary, sql=sql)
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
        endpoint = await locate(self.change.namespace, self.spec, self.ctx.kube.clusters)
        if isinstance(endpoint, Check):
            await _waiting(self.ctx, self.change, endpoint.reason, endpoint.message, stalled=endpoint.stalled)
            return None
        try:
            dsn = connect_params(self.spec, secret[ref.username_key], secret[ref.password_key], ca, endpoint)
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
