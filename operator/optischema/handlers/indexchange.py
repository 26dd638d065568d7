"""IndexChange: admitted against its target (policy, identity, budget), then one daemon per change drives it
through its window: wait, pre-check, execute, verify, roll back on regression (``flows.apply``)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import kopf

from optischema.api.resources import GROUP, VERSION
from optischema.flows import notifications
from optischema.flows.apply import FINAL, Context, step
from optischema.flows.changes import admit, gather
from optischema.flows.target import utc_now
from optischema.handlers.lifetime import alive, owned, without_finalizer
from optischema.lifecycle import indexchange as lifecycle
from optischema.telemetry import CHANGES_FINISHED, CHANGES_WAITING, ROLLBACKS, STATEMENTS_EXECUTED, log_for


@kopf.on.resume(GROUP, VERSION, "indexchanges")
@kopf.on.create(GROUP, VERSION, "indexchanges")
async def accept(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta, spec = body["metadata"], body["spec"]
    status = dict(body.get("status") or {})
    if status.get("phase") not in (None, "Pending"):
        return  # already accepted or refused: decisions are not revisited on restart
    namespace = meta["namespace"]
    facts = await gather(memo.kube, namespace, meta["name"], dict(spec))
    if facts.unreachable:
        message = f"cannot check the change against the database yet: {facts.unreachable}; retrying"
        current = lifecycle.parse(status)
        if current.phase is None or not any(c.message == message for c in current.conditions):
            patch = lifecycle.pending(current, message, now=utc_now(), generation=meta.get("generation"))
            await memo.kube.patch_status("indexchanges", namespace, meta["name"], patch)
        raise kopf.TemporaryError(message, delay=30)
    verdict = admit(spec, facts, now=utc_now(), generation=meta.get("generation"), status=status)
    await memo.kube.patch_status("indexchanges", namespace, meta["name"], verdict.status)
    (kopf.info if verdict.accepted else kopf.warn)(body, reason=verdict.reason, message=verdict.message)
    if not verdict.accepted:  # refused at admission is final too: OptiSchemaChangeFailed must see it
        CHANGES_FINISHED.labels(namespace, (spec.get("targetRef") or {}).get("name", ""), "Failed").inc()


#: Seconds a stopped change daemon has to exit before it is cancelled (a build in flight is then cancelled too).
CANCELLATION_SECONDS = 30


def unfinished(status: kopf.Status, body: kopf.Body, memo: kopf.Memo, **_: Any) -> bool:
    """A daemon drives a change until it is final, and not once its object is deleted (handlers.lifetime)."""
    return status.get("phase") not in FINAL and alive(body, memo)


@without_finalizer  # deleting a change, or its namespace, never waits for the operator (handlers.lifetime)
@kopf.daemon(GROUP, VERSION, "indexchanges", cancellation_timeout=CANCELLATION_SECONDS, when=unfinished)
async def drive(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Steps the change until it is final; a restarted operator starts here again and resumes from the status."""
    with owned(memo, body, CANCELLATION_SECONDS):
        await _drive(stopped, body, memo)


async def _drive(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    target = body["spec"]["targetRef"]["name"]
    settings = memo.settings

    def emit(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message)

    async def final(phase: str, reason: str) -> None:
        CHANGES_FINISHED.labels(namespace, target, phase).inc()
        if phase == "RolledBack":
            ROLLBACKS.labels(namespace, target).inc()
        kind = {"Applied": "changeApplied", "RolledBack": "changeRolledBack", "Failed": "changeFailed"}.get(phase)
        if kind is not None:
            # The final phase stops this daemon (kopf cancels it as its filter no longer matches): the notification
            # goes out from a task of its own.
            task = asyncio.create_task(notify_final(memo, namespace, target, name, kind, phase, reason))
            memo.background.add(task)
            task.add_done_callback(memo.background.discard)

    ctx = Context(
        kube=memo.kube,
        now=utc_now,
        actor=settings.operator_identity,
        emit=emit,
        log=log_for(namespace, name, kind="IndexChange"),
        lock_timeout_ms=settings.apply_lock_timeout_ms,
        retry_backoff=settings.apply_retry_backoff_seconds,
        immediate_budget=timedelta(seconds=settings.immediate_budget_seconds),
        check_seconds=settings.check_seconds,
        on_final=final,
    )
    waiting: set[str] = memo.changes_waiting.setdefault((namespace, target), set())
    # The series exists from the first change on (at 0), so that "waiting, and nothing executed for a week"
    # (OptiSchemaChangeStuck) can be true before any statement ever ran.
    for outcome in ("Succeeded", "Failed"):
        STATEMENTS_EXECUTED.labels(namespace, target, outcome)
    try:
        while not stopped:
            wait = await step(ctx, namespace, name)
            if wait is None:
                # Final (or gone). Never return: kopf never again spawns a daemon that ended on its own for this
                # object, and a retried change (Failed → Pending) would then wait for its window forever. The final
                # status makes the filter false, and kopf stops the daemon, free to spawn it again on a retry.
                await stopped.wait()
                return
            await notify_stalled(memo, namespace, target, name)
            waiting.add(name)  # asleep until its window (the gauge the dashboard shows)
            CHANGES_WAITING.labels(namespace, target).set(len(waiting))
            # Sleep until the step's time (a window's start), unless the target is edited (its windows may move).
            edited = target_edited(memo, namespace, target)
            woken = asyncio.ensure_future(edited.wait())
            paused = asyncio.ensure_future(stopped.wait(wait))
            await asyncio.wait({woken, paused}, return_when=asyncio.FIRST_COMPLETED)
            for task in (woken, paused):
                task.cancel()
            waiting.discard(name)
    finally:
        waiting.discard(name)
        CHANGES_WAITING.labels(namespace, target).set(len(waiting))


async def notify_final(
    memo: kopf.Memo, namespace: str, target: str, name: str, kind: str, phase: str, reason: str
) -> None:
    try:
        owner = await memo.kube.get("postgrestargets", namespace, target)
        change = await memo.kube.get("indexchanges", namespace, name)
    except LookupError:
        return
    status = change.get("status") or {}
    conditions = status.get("conditions") or []
    why = next((c.get("message") for c in conditions if c.get("type") in ("Stalled", "Ready")), "") or reason
    await notifications.announce(memo.notifier, memo.kube, owner, kind, change,  # type: ignore[arg-type]
                                 f"{name}: {phase} — {why}", sql=status.get("sql"))  # fmt: skip


async def notify_stalled(memo: kopf.Memo, namespace: str, target: str, name: str) -> None:
    """A change that waits for a person (Stalled, e.g. no write credentials) is announced as ``changeFailed``, once
    per stall (its condition's transition time tells one stall from the next)."""
    try:
        change = await memo.kube.get("indexchanges", namespace, name)
        stalled = next(
            (c for c in (change.get("status") or {}).get("conditions") or [] if c.get("type") == "Stalled"), None
        )
        if stalled is None or stalled.get("status") != "True":
            return
        owner = await memo.kube.get("postgrestargets", namespace, target)
    except LookupError:
        return
    await notifications.announce(
        memo.notifier, memo.kube, owner, "changeFailed", change,
        f"{name} is stalled and waits for a person: {stalled.get('reason')} — {stalled.get('message')}",
        sql=(change.get("status") or {}).get("sql"), episode=f"stalled/{stalled.get('lastTransitionTime')}",
        details={"stalled": True, "reason": stalled.get("reason")},
    )  # fmt: skip


def target_edited(memo: kopf.Memo, namespace: str, name: str) -> asyncio.Event:
    # One event per target, set and replaced when the target's spec is edited.
    events: dict[tuple[str, str], asyncio.Event] = memo.target_edits
    return events.setdefault((namespace, name), asyncio.Event())


@kopf.on.update(GROUP, VERSION, "postgrestargets", field="spec")
async def wake_changes(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # Changes waiting for this target's window re-read it now instead of at their next wake-up.
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    event = memo.target_edits.pop(key, None)
    if event is not None:
        event.set()
