"""PostgresTarget: one daemon per target checks it, reports conditions, and analyses it when due."""

from __future__ import annotations

from typing import Any

import kopf

from optischema.api.conditions import Condition
from optischema.api.resources import GROUP, VERSION
from optischema.flows import recommendations as sync
from optischema.flows import target as flow
from optischema.telemetry import ANALYSIS_FAILURES, ANALYSIS_SECONDS, TARGET_READY, log_for

ANALYZE_ANNOTATION = "optischema.io/analyze-requested"


@kopf.daemon(GROUP, VERSION, "postgrestargets", cancellation_timeout=10)
async def run_target(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
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
    check = await flow.check_target(namespace, dict(body["spec"]), memo.kube.read_secret)
    previous = [Condition.model_validate(c) for c in status.get("conditions", [])]
    conditions = flow.conditions_for(check, previous, now=now, generation=meta.get("generation"))
    patch: dict[str, Any] = {
        "observedGeneration": meta.get("generation"),
        "conditions": [c.to_wire() for c in conditions],
    }
    if check.database is not None:
        patch["database"] = check.database.to_wire()
    was_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
    if check.ready != was_ready or check.stalled:
        (kopf.info if check.ready else kopf.warn)(body, reason=check.reason, message=check.message)
    TARGET_READY.labels(namespace, name).set(1 if check.ready else 0)
    await memo.kube.patch_status("postgrestargets", namespace, name, patch)
    log.info("checked", ready=check.ready, reason=str(check.reason))

    last = status.get("lastAnalysis") or {}
    requested = (meta.get("annotations") or {}).get(ANALYZE_ANNOTATION)
    if not check.ready or check.spec is None:
        return
    if not flow.analysis_due(check.spec, last.get("completionTime"), requested, last.get("requested"), now):
        return
    started = flow.utc_now()
    result, error, seconds = await flow.run_analysis(check, memo.settings.sample_seconds, memo.analyses)
    ANALYSIS_SECONDS.labels(namespace, name).observe(seconds)
    summary: dict[str, Any] = {
        "startTime": started.isoformat(),
        "completionTime": flow.utc_now().isoformat(),
        "durationSeconds": round(seconds, 3),
        "requested": requested,
    }
    if result is None:
        ANALYSIS_FAILURES.labels(namespace, name, (error or "").split(":")[0]).inc()
        kopf.warn(body, reason="AnalysisFailed", message=error or "")
        await memo.kube.patch_status(
            "postgrestargets", namespace, name, {"lastAnalysis": {**summary, "outcome": "Failed", "message": error}}
        )
        return
    counts = await sync.apply(memo.kube, dict(body), result)
    summary |= {
        "outcome": "Succeeded",
        "statementsSeen": result.statements_seen,
        "statementsAnalysed": result.statements_analysed,
        "message": "; ".join(result.notes)[:4000] or None,
    }
    await memo.kube.patch_status(
        "postgrestargets", namespace, name, {"lastAnalysis": summary, "recommendations": counts}
    )
    kopf.info(
        body,
        reason="Analysed",
        message=f"{len(result.recommendations)} finding(s) from {result.statements_analysed} statements",
    )
    log.info("analysed", findings=len(result.recommendations), seconds=round(seconds, 2))
