"""Daemons that hold no finalizer: deleting a namespace never waits for an operator that may be gone.

kopf puts its finalizer on every object a ``@kopf.daemon`` runs for, so that it can stop the daemon before the
object goes (``requires_finalizer=True`` is hard-wired in ``kopf.daemon``; only ``on.delete`` takes
``optional=``). With the operator uninstalled or down, deleting a namespace that holds a target or an unfinished
IndexChange then hangs forever: nobody removes the finalizer. Our daemons need nothing done before their object
is gone (the database is not the object's, and an interrupted build leaves an INVALID index that the README's
"Uninstalling" section shows how to find), so they run without one, and keep all else kopf does for daemons:
restarts after errors, being stopped when the operator stops or pauses (peering), one per object.

What the finalizer bought, done otherwise:

* **Stopping a daemon whose object was deleted.** Without a finalizer the object is gone at once and kopf only
  sees a ``DELETED`` event. :func:`gone_event` (an ``on.event`` handler, which kopf runs before it matches
  daemons for that same event) records the uid; the daemons' ``when=alive`` filter then no longer matches, so kopf
  sets their ``stopped`` flag (and does not start them again). kopf forgets the object with that event and would
  not come back to cancel a daemon that does not exit on its flag, so :func:`gone_event` cancels it itself after
  the handler's ``cancellation_timeout``, as kopf does for a deleted object.
* **Objects made by a version that held finalizers.** kopf itself removes its finalizer from an object when no
  handler requires one any more, on the first event it handles for it (the listing at start-up) — but it does not
  watch a namespace that is already Terminating, the very one such a finalizer wedged. :func:`release_finalizers`
  (at start-up) takes it off every object of ours in the watched namespaces (:mod:`optischema.kube.finalizers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import kopf
from kopf._cogs.structs.references import NamespaceName, match_namespace  # kopf's own glob rules for -n

from optischema.api.resources import GROUP, VERSION
from optischema.kube import finalizers
from optischema.kube.client import load_config

#: The namespaces the operator watches (kopf's patterns) and whether it watches them all, as ``run_operator`` was
#: told; None when kopf was started some other way (the start-up release of old finalizers is then skipped).
_WATCHED: tuple[tuple[str, ...], bool] | None = None


def watching(namespaces: Sequence[str], clusterwide: bool) -> None:
    """Record what the operator is about to watch (called by ``run_operator`` before kopf starts)."""
    global _WATCHED
    _WATCHED = (tuple(namespaces), clusterwide)


def serves(namespace: str) -> bool:
    """Whether this operator watches ``namespace`` (kopf's own pattern matching; all of them when started some other
    way). Webhooks match every namespace, and another release may serve this one: only it may judge its objects."""
    if _WATCHED is None:
        return True
    patterns, clusterwide = _WATCHED
    return clusterwide or any(match_namespace(NamespaceName(namespace), pattern) for pattern in patterns)


@kopf.on.startup()
async def release_finalizers(logger: kopf.Logger, **_: Any) -> None:
    """Take off the finalizer earlier versions left on our objects (see the module's docstring). A failure (e.g. no
    right to list cluster-wide) is logged and does not stop the operator: kopf still releases the objects it sees."""
    if _WATCHED is None:
        return
    patterns, clusterwide = _WATCHED
    try:
        load_config()
        released = await finalizers.release(patterns, clusterwide)
    except Exception as error:  # see the docstring
        logger.warning(f"could not release the finalizers earlier versions left: {type(error).__name__}: {error}")
        return
    if released:
        logger.info(f"released the finalizer earlier versions left on {len(released)} object(s): {released[:20]}")


#: How long a deleted object's uid is remembered (a late event for it must not start its daemons again).
GONE_MEMORY_SECONDS = 3600.0
#: Kinds whose daemons run without a finalizer.
DAEMON_KINDS = ("postgrestargets", "indexchanges")

F = TypeVar("F", bound=Callable[..., Any])


def without_finalizer(fn: F) -> F:
    """Mark the daemon ``fn`` (already registered by ``@kopf.daemon``, which this decorator must sit above) as
    needing no finalizer. kopf has no parameter for it; its handler records are frozen dataclasses, replaced here."""
    spawning = kopf.get_default_registry()._spawning
    handlers = spawning._handlers
    found = [i for i, handler in enumerate(handlers) if handler.fn is fn]
    if not found:
        raise RuntimeError(f"{fn.__qualname__} is not a registered kopf daemon: put @without_finalizer above it")
    for i in found:
        handlers[i] = dataclasses.replace(handlers[i], requires_finalizer=False)
    return fn


def requiring_finalizer() -> list[str]:
    """Ids of the registered daemons and timers that would still put a finalizer on their objects (for tests)."""
    return [str(h.id) for h in kopf.get_default_registry()._spawning.get_all_handlers() if h.requires_finalizer]


def _gone(memo: kopf.Memo) -> dict[str, float]:
    gone: dict[str, float] = memo.gone  # uid -> time.monotonic() of its DELETED event
    return gone


def alive(body: kopf.Body, memo: kopf.Memo, **_: Any) -> bool:
    """``when=`` of every daemon: false once the object's ``DELETED`` event was seen."""
    return body.get("metadata", {}).get("uid") not in _gone(memo)


def _tasks(memo: kopf.Memo) -> dict[str, dict[asyncio.Task[Any], float]]:
    tasks: dict[str, dict[asyncio.Task[Any], float]] = memo.daemon_tasks  # uid -> {task: cancellation timeout}
    return tasks


@contextlib.contextmanager
def owned(memo: kopf.Memo, body: kopf.Body, cancellation_timeout: float) -> Iterator[None]:
    """Around a daemon's body: records its task (kopf runs an async daemon in its own task), so that it can be
    cancelled ``cancellation_timeout`` seconds after its object's deletion if it has not exited on its flag."""
    uid = body["metadata"]["uid"]
    task = asyncio.current_task()
    tasks = _tasks(memo)
    if task is not None:
        tasks.setdefault(uid, {})[task] = cancellation_timeout
    try:
        yield
    finally:
        if task is not None:
            running = tasks.get(uid, {})
            running.pop(task, None)
            if not running:
                tasks.pop(uid, None)


async def _cancel_after(task: asyncio.Task[Any], timeout: float) -> None:
    await asyncio.wait({task}, timeout=timeout)
    if not task.done():
        task.cancel()  # as kopf does after cancellation_timeout; the daemon's own `finally` still runs


def _forget_old(gone: dict[str, float], now: float) -> None:
    for uid, seen in list(gone.items()):
        if now - seen > GONE_MEMORY_SECONDS:
            del gone[uid]


def _on_event(plural: str) -> Callable[..., Any]:
    async def gone_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        uid = body.get("metadata", {}).get("uid")
        if not uid:
            return
        now = time.monotonic()
        gone = _gone(memo)
        _forget_old(gone, now)
        gone[uid] = now
        for daemon, timeout in list(_tasks(memo).get(uid, {}).items()):
            task = asyncio.create_task(_cancel_after(daemon, timeout), name=f"cancel a daemon of {uid}")
            memo.background.add(task)
            task.add_done_callback(memo.background.discard)

    gone_event.__qualname__ = gone_event.__name__ = f"gone_{plural}"
    return kopf.on.event(GROUP, VERSION, plural, id=f"gone-{plural}", when=_deleted)(gone_event)


def _deleted(type: str, **_: Any) -> bool:
    """Only DELETED events reach the handler (kopf would log every other one it handled, at info)."""
    return type == "DELETED"


for _plural in DAEMON_KINDS:
    _on_event(_plural)
