"""What the admission webhook enforces: who decided, what a person may edit, and who created a change.

Pure rules over the request's old and new objects and its authenticated user; ``handlers.admission`` calls them
and turns a refusal into the API server's answer. Four rules, each against a way of laundering a decision:

- **The decider is whoever the API server authenticated**, never what a client writes: ``decidedBy`` and
  ``decidedAt`` are stamped when the state leaves ``Pending``, and a client that sends its own value is refused.
  A recommendation is created ``Pending``; only the operator's analysis may create one already decided (auto-approval
  records ``policy:<target>``). Once decided, ``spec.approval`` (state, reason, when, decider, time) never changes.
- **The proposal is the analysis's**: everything in the spec but ``approval`` (risk, evidence, rationale, source,
  model, the change and its SQL) is written by the operator's analysis only. A person decides; lowering ``risk``
  to slip under the auto-approval policy, or editing the evidence a reviewer reads, is refused.
- **The SQL shown is the SQL run**: ``spec.sql`` must be exactly what ``spec.change`` renders.
- **An IndexChange records its creator** (annotation ``optischema.io/created-by``, stamped from the authenticated
  user, never taken from the client), and the operator's optional allow-list of creators is enforced.

The analysis writes as the operator, or as an analysis Job's service account in the recommendation's namespace.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from optischema.api import describe
from optischema.api.recommendation import TuningRecommendationSpec
from optischema.changes import partitioned
from optischema.changes.ddl import (
    UnsafeDefinition,
    render_analyze,
    render_cluster_setting,
    render_drop,
    render_reindex,
    render_setting,
)
from optischema.changes.maintenance import render_maintenance
from optischema.changes.managed import render_advice

#: The annotation recording who created an IndexChange.
CREATED_BY = "optischema.io/created-by"
#: The approval's fields, in the order a refusal names them.
APPROVAL_FIELDS = ("state", "reason", "when", "decidedBy", "decidedAt")
#: The spec's fields written by the analysis (everything but ``approval``), in the order a refusal names them.
ANALYSIS_FIELDS = (
    "change",
    "sql",
    "rollbackSql",
    "kind",
    "targetRef",
    "risk",
    "evidence",
    "rationale",
    "source",
    "model",
    "systemIdentifier",
)


@dataclass(frozen=True, slots=True)
class Stamp:
    patch: dict[str, Any] | None = None
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class Writers:
    """Who writes recommendations: the operator, and analysis Jobs (their service account in the object's
    namespace). Both may create a recommendation already decided, by the target's policy only."""

    operator: str
    analysis_jobs: str | None = None
    """Service account name of analysis Jobs (``Settings.job_service_account``), or ``None`` for none."""

    def trusted(self, username: str, namespace: str | None) -> bool:
        if username == self.operator:
            return True
        job = f"system:serviceaccount:{namespace}:{self.analysis_jobs}"
        return bool(self.analysis_jobs and namespace and username == job)


def admit_recommendation(
    operation: str,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    username: str,
    *,
    writers: Writers,
    now: datetime,
) -> Stamp:
    """The webhook's whole answer for a TuningRecommendation CREATE or UPDATE (``old``/``new`` are the objects)."""
    namespace = (new.get("metadata") or {}).get("namespace")
    trusted = writers.trusted(username, namespace)
    old_spec = dict(old["spec"]) if old is not None and old.get("spec") is not None else None
    new_spec = dict(new.get("spec") or {})
    # The analysis (the operator or a Job) may stamp a decision itself: auto-approval by the target's policy.
    stamp = stamp_decision(
        operation, old_spec, new_spec, username, operator=username if trusted else writers.operator, now=now
    )
    if stamp.refusal:
        return stamp
    approval = new_spec.get("approval") or {}
    policy = f"policy:{(new_spec.get('targetRef') or {}).get('name')}"
    if (
        operation == "CREATE"
        and username != writers.operator
        and approval.get("state", "Pending") != "Pending"
        and approval.get("decidedBy") != policy
    ):
        return Stamp(refusal=f"spec.approval.decidedBy: an analysis Job records only its target's policy ({policy})")
    refusal = check_sql(old_spec, new_spec) or (None if trusted else check_proposal(old_spec, new_spec, username))
    return Stamp(refusal=refusal) if refusal else stamp


def stamp_decision(
    operation: str,
    old_spec: dict[str, Any] | None,
    new_spec: dict[str, Any],
    username: str,
    *,
    operator: str,
    now: datetime,
) -> Stamp:
    """Who decided and when, stamped from the authenticated user; a decision made once and never edited."""
    new = new_spec.get("approval") or {}
    old = (old_spec or {}).get("approval") or {}
    trusted = username == operator
    if not trusted and new.get("decidedBy") != old.get("decidedBy"):
        return Stamp(
            refusal="spec.approval.decidedBy is filled in by the operator from the authenticated user; do not send it"
        )
    if not trusted and new.get("decidedAt") != old.get("decidedAt"):
        return Stamp(refusal="spec.approval.decidedAt is filled in by the operator; do not send it")
    if operation == "CREATE":
        if trusted:
            if new.get("state", "Pending") != "Pending" and not new.get("decidedBy"):
                return Stamp(refusal="spec.approval.decidedBy: a recommendation created decided must say by whom")
            return Stamp()
        if new.get("state", "Pending") != "Pending":
            return Stamp(
                refusal=f"spec.approval.state: a recommendation is created Pending and decided afterwards; user "
                f"{username} may not create one already {new.get('state')}"
            )
        if new.get("reason"):
            return Stamp(
                refusal="spec.approval.reason: a recommendation is created Pending, without a decision's reason"
            )
        return Stamp()
    if old.get("state", "Pending") != "Pending":
        changed = next((f for f in APPROVAL_FIELDS if new.get(f) != old.get(f)), None)
        if changed is not None:
            by = f" by {old['decidedBy']}" if old.get("decidedBy") else ""
            return Stamp(
                refusal=f"spec.approval.{changed}: the recommendation was decided once ({old.get('state')}{by}); "
                "its approval (state, reason, when, decider, time) cannot change afterwards"
            )
        return Stamp()
    if operation == "UPDATE" and new.get("state", "Pending") != "Pending":
        if trusted and new.get("decidedBy"):
            return Stamp()
        return Stamp(patch={"decidedBy": username, "decidedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ")})
    return Stamp()


def check_proposal(old_spec: Mapping[str, Any] | None, new_spec: Mapping[str, Any], username: str) -> str | None:
    """A refusal when a user other than the analysis writes what the analysis writes, else ``None``."""
    if old_spec is None:
        field = next((f for f in ANALYSIS_FIELDS if f in new_spec), "change")
        return (
            f"spec.{field}: TuningRecommendations are written by the operator's analysis; user {username} may only "
            "decide them (spec.approval). Propose a change of your own as an IndexChange"
        )
    for field in (*ANALYSIS_FIELDS, *sorted(set(new_spec) | set(old_spec))):
        if field == "approval" or new_spec.get(field) == old_spec.get(field):
            continue
        return (
            f"spec.{field}: is written by the operator's analysis only (user {username} changed it"
            f"{_from_to(old_spec.get(field), new_spec.get(field))}); a person decides through spec.approval"
        )
    return None


def _from_to(old: Any, new: Any) -> str:
    if isinstance(old, str | int | float | None) and isinstance(new, str | int | float | None):
        return f" from {old!r} to {new!r}"
    return ""


def check_sql(old_spec: Mapping[str, Any] | None, new_spec: Mapping[str, Any]) -> str | None:
    """``spec.sql`` must be exactly what ``spec.change`` renders (checked when either is new or changed)."""
    if old_spec is not None and all(old_spec.get(f) == new_spec.get(f) for f in ("sql", "change", "kind")):
        return None
    try:
        spec = TuningRecommendationSpec.model_validate(dict(new_spec))
    except ValidationError as error:
        return "; ".join(describe(error, "spec"))
    try:
        expected = rendered_sql(spec)
    except UnsafeDefinition as error:
        return f"spec.change.{error}"
    if spec.sql != expected:
        return f"spec.sql: is not what spec.change renders; expected {expected!r}"
    return None


def rendered_sql(spec: TuningRecommendationSpec) -> str:
    """The SQL a recommendation's change renders to (a query rewrite is its rewritten statement)."""
    change = spec.change
    if spec.kind == "createIndex" and change.index is not None:
        return partitioned.index_sql(change.index, change.partitions or [])[0]  # the rollout, on a partitioned table
    if spec.kind == "dropIndex" and change.index is not None:
        return render_drop(change.index)
    if spec.kind == "analyze" and change.analyze is not None:
        return render_analyze(change.analyze)
    if spec.kind == "setting" and change.setting is not None:  # a managed service's: advice, comments only
        if change.setting.cluster is not None:  # a CloudNativePG Cluster's: its patch, comments only
            return render_cluster_setting(change.setting)
        return render_advice(change.setting) if change.setting.platform else render_setting(change.setting)
    if spec.kind == "queryRewrite" and change.query_rewrite is not None:
        return change.query_rewrite.rewritten
    if spec.kind == "reindex" and change.index is not None:
        return render_reindex(change.index)
    if spec.kind == "maintenance" and change.maintenance is not None:
        return render_maintenance(change.maintenance)
    raise UnsafeDefinition(f"{spec.kind}: no change of that kind")  # the model's own validator refuses this first


def stamp_creator(
    operation: str,
    old_annotations: Mapping[str, str] | None,
    new_annotations: Mapping[str, str] | None,
    username: str,
    groups: Collection[str],
    *,
    operator: str,
    allowed: Collection[str] = (),
) -> Stamp:
    """An IndexChange's creator, from the authenticated user; refused when a client sends or edits it, or when the
    user is not among ``allowed`` creators (names, or ``group:<name>``; empty: RBAC alone decides)."""
    field = f"metadata.annotations[{CREATED_BY}]"
    old, new = dict(old_annotations or {}), dict(new_annotations or {})
    trusted = username == operator
    if operation == "CREATE":
        if CREATED_BY in new and not trusted:
            return Stamp(refusal=f"{field}: is recorded by the operator from the authenticated user; do not send it")
        if allowed and not trusted and username not in allowed and not any(f"group:{g}" in allowed for g in groups):
            return Stamp(
                refusal=f"{field}: user {username} may not create IndexChanges (the operator's indexChangeCreators "
                f"allows: {', '.join(sorted(allowed))})"
            )
        if trusted and CREATED_BY in new:
            return Stamp()
        return Stamp(patch={CREATED_BY: username})
    if not trusted and old.get(CREATED_BY) != new.get(CREATED_BY):
        return Stamp(refusal=f"{field}: records who created the change and cannot be edited")
    return Stamp()
