"""Admission: decisions are attributed and cannot be laundered, an IndexChange records who created it, and one
that its target would refuse is not stored at all.

The rules are in ``flows.decisions`` (pure) and ``flows.review``; here they meet kopf's webhooks: the request's
authenticated user in, a patch, a warning or a refusal (one line naming the field) out.
"""

from __future__ import annotations

from typing import Any

import kopf

from optischema.api.resources import GROUP, VERSION
from optischema.flows.decisions import CREATED_BY, Writers, admit_recommendation, stamp_creator
from optischema.flows.review import review
from optischema.flows.target import utc_now
from optischema.handlers.lifetime import serves


@kopf.on.mutate(GROUP, VERSION, "tuningrecommendations", id="decision", operations=["CREATE", "UPDATE"])
def decision(userinfo: Any, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
    old, new = kwargs.get("old"), kwargs.get("new")
    settings = memo.settings
    stamp = admit_recommendation(
        str(kwargs.get("operation")),
        dict(old) if old is not None else None,
        dict(new) if new is not None else {},
        userinfo.get("username", ""),
        writers=Writers(settings.operator_identity, settings.job_service_account),
        now=utc_now(),
    )
    if stamp.refusal:
        raise kopf.AdmissionError(stamp.refusal, code=400)
    if stamp.patch:
        patch.spec["approval"] = stamp.patch


@kopf.on.mutate(GROUP, VERSION, "indexchanges", id="creator", operations=["CREATE", "UPDATE"])
def creator(userinfo: Any, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
    old, new = kwargs.get("old"), kwargs.get("new")
    stamp = stamp_creator(
        str(kwargs.get("operation")),
        (old.get("metadata") or {}).get("annotations") if old is not None else None,
        (new.get("metadata") or {}).get("annotations") if new is not None else None,
        userinfo.get("username", ""),
        userinfo.get("groups") or [],
        operator=memo.settings.operator_identity,
        allowed=memo.settings.index_change_creators,
    )
    if stamp.refusal:
        raise kopf.AdmissionError(stamp.refusal, code=400)
    if stamp.patch:
        patch.metadata.annotations[CREATED_BY] = stamp.patch[CREATED_BY]


@kopf.on.validate(GROUP, VERSION, "indexchanges", id="policy", operations=["CREATE"])
async def policy(userinfo: Any, memo: Any, warnings: list[str], **kwargs: Any) -> None:
    """A new IndexChange its target would refuse is refused here (``flows.review``), so a server-side dry run and a
    GitOps sync fail on it. Only creation is judged: the spec is immutable, and status or metadata updates are never
    blocked. The operator's own changes (from approved recommendations) are judged when they arrive instead, where
    the verdict is recorded on the change and its recommendation; a namespace another release serves is its to
    judge."""
    new = kwargs.get("new") or {}
    namespace = (new.get("metadata") or {}).get("namespace") or ""
    if userinfo.get("username", "") == memo.settings.operator_identity or not serves(namespace):
        return
    verdict = await review(memo.kube, namespace, (new.get("metadata") or {}).get("name") or "", dict(new["spec"]))
    if verdict.refusal is not None:
        reason, message = verdict.refusal
        raise kopf.AdmissionError(f"{message} ({reason})", code=400)
    if verdict.warning is not None:
        warnings.append(verdict.warning)
