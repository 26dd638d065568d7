"""TuningRecommendation: a decision becomes an IndexChange (for index kinds), once, whoever restarts when.

The phase moves through ``lifecycle.recommendation``; the IndexChange carries the database identity the analysis
recorded on the recommendation (``spec.systemIdentifier``), not whatever the target points at now.
"""

from __future__ import annotations

from typing import Any

import kopf

from optischema.api.resources import GROUP, VERSION, owner_reference
from optischema.changes.managed import advice_only
from optischema.flows.policy import forged_policy_decision
from optischema.handlers.benchmark import wake
from optischema.lifecycle import recommendation as lifecycle
from optischema.telemetry import INDEX_CHANGES_CREATED

#: Recommendation kind → (IndexChange operation, the member of spec.change it carries, its name in the change).
OPERATIONS = {
    "createIndex": ("create", "index", "index"),
    "dropIndex": ("drop", "index", "index"),
    "reindex": ("reindex", "index", "index"),
    "analyze": ("analyze", "analyze", "table"),
    "setting": ("setting", "setting", "setting"),
}


@kopf.on.resume(GROUP, VERSION, "tuningrecommendations")
@kopf.on.create(GROUP, VERSION, "tuningrecommendations")
@kopf.on.update(GROUP, VERSION, "tuningrecommendations", field="spec.approval")
async def decided(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Idempotent: safe to run again after a restart, creates the IndexChange only once (by name)."""
    spec, meta, status = body["spec"], body["metadata"], body.get("status") or {}
    state = spec.get("approval", {}).get("state", "Pending")
    namespace, name = meta["namespace"], meta["name"]
    if state == "Pending":
        wake(memo, namespace, spec["targetRef"]["name"])  # its sandbox benchmark
    phase = lifecycle.phase_of(body)
    if state == "Rejected" and phase != "Rejected" and lifecycle.allowed(phase, "Rejected"):
        await memo.kube.patch_status("tuningrecommendations", namespace, name, lifecycle.transition(phase, "Rejected"))
        kopf.info(body, reason="Rejected", message=spec["approval"].get("reason") or "rejected")
    if state != "Approved" or status.get("indexChangeRef"):
        return
    if not lifecycle.allowed(phase, "Approved"):
        # Superseded (analysis no longer finds it) or already finished: the approval changes nothing.
        kopf.warn(body, reason="NotApplied", message=f"approved in phase {phase}: no IndexChange is made")
        return
    try:
        target = await memo.kube.get("postgrestargets", namespace, spec["targetRef"]["name"])
    except LookupError:
        target = {}
    refused = forged_policy_decision(spec, status, target.get("spec") or {})
    if refused is not None:
        kopf.warn(body, reason="NotApplied", message=refused)
        return
    advice = advice_only(spec)  # a managed service's setting: approved, and nothing is run
    mapping = None if advice else OPERATIONS.get(spec["kind"])
    index_change: str | None = None
    if mapping is not None:
        operation, member, field = mapping
        identity = spec.get("systemIdentifier")  # the database the analysis saw, not the target's current one
        verification = ((target.get("spec") or {}).get("policy") or {}).get("verification")
        change = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IndexChange",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"optischema.io/target": spec["targetRef"]["name"]},
                "ownerReferences": [owner_reference(body)],
            },
            "spec": {
                "targetRef": spec["targetRef"],
                "operation": operation,
                field: spec["change"][member],
                "schedule": spec["approval"].get("when", "nextWindow"),
                "recommendationRef": {"name": name},
                **({"systemIdentifier": identity} if identity else {}),
                **({"verification": verification} if verification else {}),
            },
        }
        if await memo.kube.create("indexchanges", namespace, change) is not None:
            INDEX_CHANGES_CREATED.labels(namespace).inc()
        index_change = name
    await memo.kube.patch_status(
        "tuningrecommendations", namespace, name, lifecycle.transition(phase, "Approved", index_change=index_change)
    )
    kopf.info(
        body,
        reason="Approved",
        message=f"approved by {spec['approval'].get('decidedBy') or 'a client'}"
        + (f"; IndexChange {name} created" if mapping else ""),
    )
    if advice:  # posted whatever the posting level (info is not): the approver must hear that nothing ran
        kopf.event(body, type="Normal", reason="AdviceOnly", message=advice)
