"""Sandbox benchmarks: one queue per target, woken when recommendations arrive, limited per target and overall."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import kopf

from optischema.api.resources import GROUP, VERSION
from optischema.flows import target as target_flow
from optischema.flows.benchmarking import Queue
from optischema.flows.sandbox import PodDefaults, PodProvider
from optischema.handlers.lifetime import alive, owned, without_finalizer
from optischema.kube.client import current_namespace
from optischema.kube.runner import Runner
from optischema.kube.sandboxes import Pods
from optischema.telemetry import log_for


def make_queue(memo: kopf.Memo) -> Queue:
    settings = memo.settings
    # Sandbox pods (and analysis Jobs, handlers.target) are created as the runner ServiceAccount, impersonated: the
    # operator's own may not create pods.
    memo.runner = Runner(settings.runner_service_account)
    pods = Pods(settings.operator_namespace or current_namespace(), settings.operator_pod_labels, memo.runner)
    provider = PodProvider(pods, settings.sandbox_ready_timeout_seconds, PodDefaults.from_settings(settings))
    return Queue(
        memo.kube,
        provider,
        asyncio.Semaphore(settings.max_sandboxes),
        runs=settings.benchmark_runs,
        notifier=memo.notifier,
    )


def wake(memo: kopf.Memo, namespace: str, target: str) -> None:
    """A new recommendation for ``target``: its queue looks now rather than at its next round."""
    event = getattr(memo, "benchmark_wakeups", {}).get((namespace, target))
    if event is not None:
        event.set()


#: Seconds a stopped benchmark daemon has to exit before it is cancelled (its sandbox pod is removed on the way).
CANCELLATION_SECONDS = 30


@without_finalizer  # deleting a target never waits for the operator (handlers.lifetime)
@kopf.daemon(GROUP, VERSION, "postgrestargets", id="benchmarks", cancellation_timeout=CANCELLATION_SECONDS, when=alive)
async def benchmarks(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    with owned(memo, body, CANCELLATION_SECONDS):
        await _benchmarks(stopped, body, memo)


async def _benchmarks(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    event = memo.benchmark_wakeups.setdefault((namespace, name), asyncio.Event())

    def announce(item: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        post = kopf.warn if warning else kopf.info
        post(cast(Any, item), reason=reason, message=message)  # kopf posts Events for any object with metadata

    async def check() -> target_flow.Check:
        return await target_flow.check_target(
            namespace, dict(body["spec"]), memo.kube.read_secret, clusters=memo.kube.clusters
        )

    try:
        while not stopped:
            event.clear()
            try:
                await memo.benchmarks.run_pending(dict(body), check, announce)
            except Exception as error:
                log_for(namespace, name).exception("benchmarks failed")
                kopf.exception(body, reason="BenchmarkError", message=f"{type(error).__name__}: {error}")
            waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopped.wait())]
            try:
                await asyncio.wait(waiters, timeout=memo.settings.check_seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
    finally:
        memo.benchmark_wakeups.pop((namespace, name), None)
