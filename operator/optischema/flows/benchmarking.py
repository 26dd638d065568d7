"""The operator's benchmark queue: which recommendations to measure, how many sandboxes at once, and recording.

A recommendation is measured once, while it waits for a decision: index kinds only (an ANALYZE or a setting is
not a per-statement change a sandbox copy could show), approval still ``Pending``, no benchmark yet. A
recommendation left in ``Benchmarking`` by an operator that died is measured again (its old pod is replaced).
The limits are a semaphore per target (``spec.sandbox.maxConcurrent``) inside a cluster-wide one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from optischema.analysis.redact import redact_error
from optischema.api.conditions import Condition, ConditionType, Reason, set_condition
from optischema.api.recommendation import Benchmark
from optischema.api.target import PostgresTargetSpec
from optischema.flows import notifications
from optischema.flows.benchmark import BENCHMARKED_KINDS, Outcome, benchmark
from optischema.flows.policy import auto_approves
from optischema.flows.sandbox import Provider
from optischema.flows.target import Check
from optischema.kube.client import Kube
from optischema.lifecycle import recommendation as lifecycle
from optischema.notify.deliver import Notifier
from optischema.postgres.connect import ConnectTarget
from optischema.telemetry import BENCHMARK_SECONDS, BENCHMARKS, LLM_SUGGESTIONS, SANDBOXES_RUNNING, log_for

PLURAL = "tuningrecommendations"
TARGET_LABEL = "optischema.io/target"
WAITING = lifecycle.WAITING
#: Outcomes that turn a query rewrite down: it is never applied, so a person need not look at it.
VERDICTS = {Reason.ROWS_DIFFER, Reason.NOT_FASTER}
Announce = Callable[[dict[str, Any], str, str, bool], None]  # (recommendation, reason, message, warning)


def needs_benchmark(item: dict[str, Any]) -> bool:
    spec, status = item.get("spec") or {}, item.get("status") or {}
    return (
        spec.get("kind") in BENCHMARKED_KINDS
        and (spec.get("approval") or {}).get("state", "Pending") == "Pending"
        and not status.get("benchmark")
        and status.get("phase") in WAITING
        and not item["metadata"].get("deletionTimestamp")
    )


def recorded(outcome: Outcome, status: dict[str, Any], generation: int | None, now: datetime) -> dict[str, Any]:
    """The status patch for a finished benchmark: the figures, the ``Benchmarked`` condition, the phase back to
    waiting for a decision (unless someone decided meanwhile)."""
    previous = [Condition.model_validate(c) for c in status.get("conditions", [])]
    measured = outcome.reason == Reason.MEASURED
    bench = outcome.benchmark
    message = (
        f"measured in a {bench.data_mode} sandbox: p50 {bench.p50_before_ms} → {bench.p50_after_ms} ms "
        f"(speed-up {bench.speedup}x)"
        if measured
        else f"the sandbox turned it down: {bench.error}"
        if outcome.reason in VERDICTS
        else f"the sandbox could not measure it: {bench.error}"
    )
    conditions = set_condition(
        previous,
        ConditionType.BENCHMARKED,
        "True" if measured else "False",
        outcome.reason,
        message,
        now=now,
        generation=generation,
    )
    patch: dict[str, Any] = {
        "benchmark": bench.model_dump(mode="json", by_alias=True, exclude_none=True),
        "conditions": [c.to_wire() for c in conditions],
    }
    if status.get("phase") == "Benchmarking":
        patch |= lifecycle.transition("Benchmarking", "AwaitingApproval")
    return patch


class Queue:
    """Runs the pending benchmarks of one target within its own limit and the cluster-wide one."""

    def __init__(
        self, kube: Kube, provider: Provider, slots: asyncio.Semaphore, *, runs: int, notifier: Notifier | None = None
    ) -> None:
        self.kube = kube
        self.provider = provider
        self.slots = slots
        self.runs = runs
        self.notifier = notifier

    async def run_pending(
        self, target: dict[str, Any], check: Callable[[], Awaitable[Check]], announce: Announce
    ) -> int:
        """Benchmark every recommendation of ``target`` that needs it; how many were measured. The target is
        checked (credentials, reachability) only when there is something to do."""
        try:
            declared = PostgresTargetSpec.model_validate(target.get("spec") or {})
        except ValidationError:
            return 0  # the target's own daemon reports the invalid spec
        if not declared.sandbox.enabled or declared.suspend:
            return 0
        meta = target["metadata"]
        items = await self.kube.list(PLURAL, meta["namespace"], f"{TARGET_LABEL}={meta['name']}")
        todo = sorted((i for i in items if needs_benchmark(i)), key=lambda i: i["metadata"]["creationTimestamp"])
        if not todo:
            return 0
        checked = await check()
        spec = checked.spec
        if spec is None or checked.dsn is None or not checked.ready:
            return 0  # the target's own daemon reports why
        own = asyncio.Semaphore(spec.sandbox.max_concurrent)
        results = await asyncio.gather(*(self._one(item, spec, checked.dsn, own, announce, target) for item in todo))
        return sum(results)

    async def _one(
        self,
        item: dict[str, Any],
        spec: PostgresTargetSpec,
        dsn: ConnectTarget,
        own: asyncio.Semaphore,
        announce: Announce,
        target_body: dict[str, Any],
    ) -> int:
        meta = item["metadata"]
        namespace, name, target = meta["namespace"], meta["name"], item["spec"]["targetRef"]["name"]
        log = log_for(namespace, name, kind="TuningRecommendation")
        async with own, self.slots:
            try:
                current = await self.kube.get(PLURAL, namespace, name)
            except LookupError:
                return 0
            if not needs_benchmark(current):
                return 0  # decided, or measured, while it waited for a slot
            await self.kube.patch_status(
                PLURAL, namespace, name, lifecycle.transition(lifecycle.phase_of(current), "Benchmarking")
            )
            SANDBOXES_RUNNING.labels(namespace, target).inc()
            try:
                outcome = await benchmark(
                    self.provider,
                    dsn,
                    current,
                    spec.sandbox,
                    runs=self.runs,
                    progress=lambda step: log.info("benchmark", step=step),
                )
            except Exception as error:  # recorded rather than retried forever: a person can read why
                log.exception("benchmark failed unexpectedly")
                outcome = Outcome(
                    Benchmark(data_mode=spec.sandbox.data_mode, completed_at=datetime.now(UTC),
                              error=f"{type(error).__name__}: {redact_error(str(error))}"[:4000]),
                    Reason.BENCHMARK_FAILED,
                )  # fmt: skip
            finally:
                SANDBOXES_RUNNING.labels(namespace, target).dec()
        BENCHMARKS.labels(namespace, target, outcome.reason).inc()
        BENCHMARK_SECONDS.labels(namespace, target).observe(outcome.benchmark.duration_seconds or 0)
        try:
            latest = await self.kube.get(PLURAL, namespace, name)
            status = latest.get("status") or {}
            await self.kube.patch_status(
                PLURAL, namespace, name, recorded(outcome, status, meta.get("generation"), datetime.now(UTC))
            )
        except LookupError:
            log.info("benchmark finished after the recommendation was deleted")
            return 0
        measured = outcome.reason == Reason.MEASURED
        announce(
            latest,
            outcome.reason,
            f"speed-up {outcome.benchmark.speedup}x in the sandbox" if measured else outcome.benchmark.error or "",
            not measured,
        )
        if outcome.reason in VERDICTS:
            await self._decide(latest, "Rejected", f"the sandbox turned the rewrite down: {outcome.benchmark.error}")
            LLM_SUGGESTIONS.labels(namespace, target, "rewrite", "rejected").inc()
        else:
            await self._auto_approve(latest, spec, outcome.benchmark)
            if measured and self.notifier is not None and latest["spec"]["kind"] != "queryRewrite":
                fresh = await self.kube.get(PLURAL, namespace, name)
                if (fresh["spec"].get("approval") or {}).get("state", "Pending") == "Pending":
                    bench = outcome.benchmark
                    summary = (
                        f"{fresh['spec']['kind']} on {target}: p50 {bench.p50_before_ms} → "
                        f"{bench.p50_after_ms} ms in a {bench.data_mode} sandbox ({bench.speedup}x)"
                    )
                    await notifications.announce(
                        self.notifier,
                        self.kube,
                        target_body,
                        "recommendationAwaitingApproval",
                        fresh,
                        summary,
                        sql=fresh["spec"]["sql"],
                        gain=bench.improvement_percent,
                    )
        return 1 if measured else 0

    async def _auto_approve(self, item: dict[str, Any], spec: PostgresTargetSpec, bench: Benchmark) -> None:
        """The target's auto-approve rule, now judged on the measured improvement."""
        approval = item["spec"].get("approval") or {}
        if approval.get("state", "Pending") != "Pending" or bench.error is not None:
            return
        kind, risk = item["spec"]["kind"], item["spec"].get("risk", "medium")
        approved, why = auto_approves(spec.policy.auto_approve, kind, risk, bench.improvement_percent)
        if approved:
            await self._decide(item, "Approved", f"{why}; measured improvement {bench.improvement_percent}%")

    async def _decide(self, item: dict[str, Any], state: str, reason: str) -> None:
        """A decision by the target's policy, recorded as such (``decidedBy: policy:<target>``)."""
        meta = item["metadata"]
        approval = {
            "state": state,
            "reason": reason[:1024],
            "decidedBy": f"policy:{item['spec']['targetRef']['name']}",
            "decidedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "when": "nextWindow",
        }
        await self.kube.patch(PLURAL, meta["namespace"], meta["name"], {"spec": {"approval": approval}})
