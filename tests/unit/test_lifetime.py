"""Daemons without finalizers (handlers.lifetime): none is registered needing one, and a DELETED event stops and,
past its cancellation timeout, cancels the daemon of the object that went."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

import optischema.handlers  # noqa: F401 - registers the handlers
from optischema.handlers import lifetime
from optischema.kube import finalizers


def test_no_daemon_requires_a_finalizer() -> None:
    """The attack: with the operator gone, a daemon's finalizer keeps a deleted namespace Terminating forever."""
    daemons = {str(h.id) for h in kopf.get_default_registry()._spawning.get_all_handlers()}
    assert {"run_target", "benchmarks", "drive"} <= daemons
    assert lifetime.requiring_finalizer() == []


def test_nothing_else_requires_a_finalizer() -> None:
    """No on.delete handler (which would need one unless optional) is registered either."""
    changing = kopf.get_default_registry()._changing.get_all_handlers()
    assert [str(h.id) for h in changing if h.requires_finalizer] == []


def test_without_finalizer_refuses_a_function_that_is_no_daemon() -> None:
    async def not_registered(**_: Any) -> None: ...

    with pytest.raises(RuntimeError, match="not a registered kopf daemon"):
        lifetime.without_finalizer(not_registered)


def _memo() -> kopf.Memo:
    memo = kopf.Memo()
    memo.gone = {}
    memo.daemon_tasks = {}
    memo.background = set()
    return memo


def _body(uid: str) -> kopf.Body:
    return kopf.Body({"metadata": {"uid": uid, "name": "x", "namespace": "n"}})


def _gone_handler() -> Any:
    return next(h.fn for h in kopf.get_default_registry()._watching.get_all_handlers() if h.id == "gone-indexchanges")


@pytest.mark.parametrize(
    ("event", "obeys_flag", "cancelled", "alive_after"),
    [
        ("MODIFIED", False, False, True),  # not a deletion: nothing happens
        ("DELETED", True, False, False),  # exits on its stopped flag (kopf sets it when `alive` stops matching)
        ("DELETED", False, True, False),  # ignores it (e.g. mid-build): cancelled after its timeout
    ],
)
def test_a_deleted_objects_daemon_is_cancelled_after_its_timeout(
    event: str, obeys_flag: bool, cancelled: bool, alive_after: bool
) -> None:
    async def scenario() -> tuple[bool, bool]:
        memo, body = _memo(), _body("u1")
        flag = asyncio.Event()
        was_cancelled = False

        async def daemon() -> None:
            nonlocal was_cancelled
            with lifetime.owned(memo, body, 0.3):
                try:
                    if obeys_flag:
                        await flag.wait()
                    else:
                        await asyncio.sleep(30)
                except asyncio.CancelledError:
                    was_cancelled = True
                    raise

        task = asyncio.create_task(daemon())
        await asyncio.sleep(0.05)
        assert memo.daemon_tasks["u1"]
        if lifetime._deleted(type=event):  # the handler's filter, as kopf applies it
            await _gone_handler()(type=event, body=body, memo=memo)
        alive = lifetime.alive(body, memo)
        if not alive:
            flag.set()  # what kopf does when the daemon's filter stops matching
        await asyncio.sleep(0.6)
        cancelled_by_lifetime = task.done() and was_cancelled
        if not task.done():
            task.cancel()  # the test's own clean-up
        await asyncio.gather(task, return_exceptions=True)
        assert "u1" not in memo.daemon_tasks  # nothing of it is kept
        return cancelled_by_lifetime, alive

    assert asyncio.run(scenario()) == (cancelled, alive_after)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ([], None),
        (["foregroundDeletion"], None),
        ([finalizers.KOPF_FINALIZER], []),
        (["foregroundDeletion", finalizers.KOPF_FINALIZER], ["foregroundDeletion"]),  # others' stay
    ],
)
def test_only_kopfs_finalizer_is_taken_off(given: list[str] | None, expected: list[str] | None) -> None:
    assert finalizers.remaining(given) == expected


@pytest.mark.parametrize(
    ("namespace", "patterns", "clusterwide", "expected"),
    [
        ("shop", ["shop"], False, True),
        ("other", ["shop"], False, False),
        ("shop-eu", ["shop-*"], False, True),
        ("shop-test", ["shop-*", "!shop-test"], False, False),
        ("anything", [], True, True),
    ],
)
def test_which_namespaces_are_released(namespace: str, patterns: list[str], clusterwide: bool, expected: bool) -> None:
    assert finalizers.watched(namespace, patterns, clusterwide) is expected


def test_a_final_change_daemon_waits_to_be_stopped_so_that_a_retry_drives_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attack (a CI flake): a change's daemon that *returned* once its change was final is never spawned again
    by kopf for that object ("exited on its own"), so a Failed change retried with ``kubectl optischema retry`` sat
    in WaitingForWindow with its window open. The daemon now waits until kopf stops it (the filter no longer
    matches: a stop kopf may undo), and only then ends."""
    from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter, FlagSetter
    from kopf._core.intents.stoppers import DaemonStoppingReason

    from optischema.handlers import indexchange
    from optischema.settings import Settings

    async def final(*_: Any) -> None:
        return None

    monkeypatch.setattr(indexchange, "step", final)
    memo = _memo()
    memo.settings = Settings()
    memo.kube = None
    memo.changes_waiting = {}
    body = kopf.Body({"metadata": {"uid": "u", "name": "c", "namespace": "n"}, "spec": {"targetRef": {"name": "t"}}})

    async def scenario() -> None:
        setter: FlagSetter[DaemonStoppingReason] = FlagSetter()
        daemon = asyncio.ensure_future(indexchange._drive(AsyncFlagWaiter(setter), body, memo))
        await asyncio.sleep(0.2)
        assert not daemon.done(), "the daemon ended on its own: kopf would never spawn it again for a retry"
        setter.set(reason=DaemonStoppingReason.FILTERS_MISMATCH)
        await asyncio.wait_for(daemon, timeout=5)

    asyncio.run(scenario())
