"""PostgresTarget: one daemon per target checks it, reports conditions, and analyses it when due."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import kopf

from optischema.api.conditions import Condition
from optischema.api.resources import GROUP, VERSION
from optischema.api.target import LastAnalysis, PostgresTargetSpec
from optischema.flows import notifications, reports
from optischema.flows import target as flow
from optischema.handlers import webhookserver
from optischema.handlers.lifetime import alive, owned, without_finalizer
from optischema.kube.client import current_namespace
from optischema.kube.jobs import analysis_job
from optischema.lifecycle import target as lifecycle
from optischema.telemetry import ANALYSIS_FAILURES, ANALYSIS_SECONDS, TARGET_READY, log_for

ANALYZE_ANNOTATION = "optischema.io/analyze-requested"
#: Seconds a stopped target daemon has to exit before it is cancelled.
CANCELLATION_SECONDS = 10


@without_finalizer  # deleting a target never waits for the operator (handlers.lifetime)
@kopf.daemon(GROUP, VERSION, "postgrestargets", cancellation_timeout=CANCELLATION_SECONDS, when=alive)
async def run_target(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    with owned(memo, body, CANCELLATION_SECONDS):
        while not stopped:
            try:
                await reconcile(body, memo)
            except Exception as error:
                log_for(body["metadata"]["namespace"], body["metadata"]["name"]).exception("reconcile failed")
                kopf.exception(body, reason="ReconcileError", message=f"{type(error).__name__}: {error}")
            await stopped.wait(memo.settings.check_seconds)


async def reconcile(body: kopf.Body, memo: kopf.Memo) -> None:
    meta, namespace, name = body["metadata"], body["metadata"]["namespace"], body["metadata"]["name"]
    log = log_for(namespace, name, kind="PostgresTarget")
    status = dict(body.get("status") or {})
    now = flow.utc_now()
    check = await flow.check_target(namespace, dict(body["spec"]), memo.kube.read_secret, clusters=memo.kube.clusters)
    previous = [Condition.model_validate(c) for c in status.get("conditions", [])]
    conditions = flow.conditions_for(check, previous, now=now, generation=meta.get("generation"))
    patch: dict[str, Any] = {
        "observedGeneration": meta.get("generation"),
        "conditions": [c.to_wire() for c in conditions],
    }
    if check.database is not None:
        patch["database"] = check.database.to_wire()
    if check.spec is not None:
        patch |= flow.window_status(check.spec, now)
    was_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
    if check.ready != was_ready or check.stalled:
        (kopf.info if check.ready else kopf.warn)(body, reason=check.reason, message=check.message)
    TARGET_READY.labels(namespace, name).set(1 if check.ready else 0)
    await memo.kube.patch_status("postgrestargets", namespace, name, patch)
    log.info("checked", ready=check.ready, reason=str(check.reason))

    if check.spec is None:
        return
    await tell(body, memo, check.spec, now)
    last = lifecycle.read(status)
    completed = last.completion_time.isoformat() if last.completion_time else None
    requested = (meta.get("annotations") or {}).get(ANALYZE_ANNOTATION)
    if not check.ready:
        # An analysis that was due could not run: that counts as a failed one (analysisFailing is judged on it).
        if flow.analysis_due(check.spec, completed, requested, last.requested, now):
            ANALYSIS_FAILURES.labels(namespace, name, str(check.reason)).inc()
            await memo.kube.patch_status("postgrestargets", namespace, name, flow.unready(check, last, requested, now))
        return
    if lifecycle.in_flight(last):
        await watch_job(body, last, memo)  # an analysis Job is in flight: it records its own result
        return
    if not flow.analysis_due(check.spec, completed, requested, last.requested, now):
        return
    if check.spec.analysis.runner == "job":
        settings = memo.settings
        job = analysis_job(
            dict(body),
            image=settings.image,
            service_account=settings.job_service_account,
            sample_seconds=settings.sample_seconds,
            token=requested or now.isoformat(),
            operator_namespace=settings.operator_namespace or current_namespace(),
            allowed_secrets=settings.allowed_secrets,
            reserved_secrets=memo.kube.reserved_secrets,
        )
        await webhookserver.serving(memo)  # the Job's recommendations pass the webhook too
        await memo.runner.create_job(namespace, job)  # as the runner: the operator may not create Jobs
        begun = lifecycle.started(last, now, job=job["metadata"]["name"], requested=requested)
        await memo.kube.patch_status("postgrestargets", namespace, name, lifecycle.status_patch(begun))
        kopf.info(body, reason="AnalysisJobCreated", message=f"analysis runs in Job {job['metadata']['name']}")
        return
    await webhookserver.serving(memo)  # every recommendation the analysis creates passes the webhook
    clock = time.monotonic()
    ok, message = await flow.analyse_and_record(
        memo.kube,
        dict(body),
        check,
        sample_seconds=memo.settings.sample_seconds,
        semaphore=memo.analyses,
        run=lifecycle.started(last, now, job=None, requested=requested),
        operator_namespace=memo.settings.operator_namespace or current_namespace(),
        llm_cluster_budget=memo.settings.llm_cluster_daily_token_budget,
        sandbox_provider=getattr(getattr(memo, "benchmarks", None), "provider", None),  # the benchmarks' sandboxes
    )
    ANALYSIS_SECONDS.labels(namespace, name).observe(time.monotonic() - clock)
    if not ok:
        ANALYSIS_FAILURES.labels(namespace, name, message.split(":")[0]).inc()
    (kopf.info if ok else kopf.warn)(body, reason="Analysed" if ok else "AnalysisFailed", message=message)
    log.info("analysed", ok=ok, message=message)


async def tell(body: kopf.Body, memo: kopf.Memo, spec: PostgresTargetSpec, now: datetime) -> None:
    """Events read from the status (so also what an analysis Job or a former run recorded) and the scheduled
    report. Neither may stop the target's reconciliation: a failure is logged and posted, and tried again next check."""
    try:
        await notifications.from_status(memo.notifier, memo.kube, dict(body), spec)
        await reports.scheduled(memo.kube, memo.notifier, dict(body), now)
    except Exception as error:  # see the docstring
        log_for(body["metadata"]["namespace"], body["metadata"]["name"]).exception("report or notification failed")
        kopf.warn(body, reason="ReportFailed", message=f"{type(error).__name__}: {error}"[:1024])


async def watch_job(body: kopf.Body, last: LastAnalysis, memo: kopf.Memo) -> None:
    """Record a failed (or vanished) analysis Job, which cannot record itself."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    failed = await memo.runner.job_failed(namespace, last.job or "")
    if failed is False:
        return
    message = f"analysis Job {last.job} " + ("failed: see its Pod's log" if failed else "disappeared")
    ANALYSIS_FAILURES.labels(namespace, name, "JobFailed").inc()
    kopf.warn(body, reason="AnalysisFailed", message=message)
    failure = lifecycle.failed(last, flow.utc_now(), message)
    await memo.kube.patch_status("postgrestargets", namespace, name, lifecycle.status_patch(failure))
