"""Findings become TuningRecommendations: created when new, refreshed when found again, Superseded when gone.

Names are hashes of target and change, so a re-analysis never duplicates; nothing is deleted silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from optischema.analysis.report import Recommendation
from optischema.api.resources import owner_reference
from optischema.api.target import PostgresTargetSpec
from optischema.flows.analyze import AnalysisResult
from optischema.flows.policy import auto_approves
from optischema.kube.client import Kube
from optischema.lifecycle import recommendation as lifecycle

PLURAL = "tuningrecommendations"
TARGET_LABEL = "optischema.io/target"
#: Phases that are final or in a person's hands: a recommendation in them is never marked Superseded.
SETTLED = lifecycle.SETTLED


@dataclass(slots=True)
class SyncPlan:
    create: list[dict[str, Any]] = field(default_factory=list)
    refresh: list[str] = field(default_factory=list)
    supersede: list[str] = field(default_factory=list)


def desired(
    recommendations: Sequence[Recommendation], target: dict[str, Any], system_identifier: str | None = None
) -> dict[str, dict[str, Any]]:
    """Custom resources for the findings, owned by the target (deleting it deletes them), each recording the
    database the analysis saw (``spec.systemIdentifier``), which the IndexChange made on approval carries."""
    meta = target["metadata"]
    bodies = {}
    for recommendation in recommendations:
        resource = recommendation.to_custom_resource(meta["name"], meta["namespace"])
        if system_identifier is not None:
            resource.spec.system_identifier = system_identifier
        body = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["metadata"] = {
            "name": resource.metadata.name,
            "namespace": meta["namespace"],
            "labels": resource.metadata.labels,
            "ownerReferences": [owner_reference(target)],
        }
        bodies[body["metadata"]["name"]] = body
    return bodies


def plan(wanted: dict[str, dict[str, Any]], existing: Sequence[dict[str, Any]]) -> SyncPlan:
    """What to create, what to refresh (found again), and what analysis no longer finds."""
    have = {item["metadata"]["name"]: (item.get("status") or {}).get("phase") for item in existing}
    result = SyncPlan()
    for name, body in wanted.items():
        if name in have:
            result.refresh.append(name)
        else:
            result.create.append(body)
    result.supersede = [name for name, phase in have.items() if name not in wanted and phase not in SETTLED]
    return result


async def apply(kube: Kube, body: dict[str, Any], result: AnalysisResult) -> dict[str, int]:
    """Create, refresh and supersede the target's recommendations; their counts by phase, for its status."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    wanted = desired(result.recommendations, body, result.system_identifier)
    existing = await kube.list(PLURAL, namespace, f"{TARGET_LABEL}={name}")
    recorded = {item["metadata"]["name"]: lifecycle.phase_of(item) for item in existing}
    actions = plan(wanted, existing)
    now = datetime.now(UTC)
    seen = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    rule = PostgresTargetSpec.model_validate(body["spec"]).policy.auto_approve
    for created in actions.create:
        approved, why = auto_approves(rule, created["spec"]["kind"], created["spec"].get("risk", "medium"), None)
        if approved:
            created["spec"]["approval"] = {
                "state": "Approved",
                "reason": why,
                "decidedBy": f"policy:{name}",
                "decidedAt": seen,
                "when": "nextWindow",
            }
        if await kube.create(PLURAL, namespace, created) is not None:
            # The approval handler links the IndexChange of an auto-approved one.
            first = lifecycle.transition(None, "Approved" if approved else "AwaitingApproval", last_seen_at=now)
            await kube.patch_status(PLURAL, namespace, created["metadata"]["name"], first)
    for refreshed in actions.refresh:
        update = {
            "spec": {
                "evidence": wanted[refreshed]["spec"]["evidence"],
                "rationale": wanted[refreshed]["spec"]["rationale"],
            }
        }
        await kube.patch(PLURAL, namespace, refreshed, update)
        await kube.patch_status(PLURAL, namespace, refreshed, lifecycle.seen(now))
    for gone in actions.supersede:
        await kube.patch_status(PLURAL, namespace, gone, lifecycle.transition(recorded.get(gone), "Superseded"))
    items = await kube.list(PLURAL, namespace, f"{TARGET_LABEL}={name}")
    phases = [(i.get("status") or {}).get("phase") for i in items]
    approval = [i["spec"].get("approval", {}).get("state") for i in items]
    return {
        "pending": sum(1 for p, a in zip(phases, approval, strict=True) if a == "Pending" and p != "Superseded"),
        "approved": sum(1 for p in phases if p == "Approved"),
        "rejected": sum(1 for p in phases if p == "Rejected"),
        "applied": sum(1 for p in phases if p == "Applied"),
        "rolledBack": sum(1 for p in phases if p == "RolledBack"),
        "superseded": sum(1 for p in phases if p == "Superseded"),
    }
