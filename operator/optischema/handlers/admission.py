"""Admission: decisions are attributed and cannot be laundered, and an IndexChange records who created it.

The rules are in ``flows.decisions`` (pure); here they meet kopf's mutating webhook: the request's authenticated
user in, a patch or a refusal (one line naming the field) out.
"""

from __future__ import annotations

from typing import Any

import kopf

from optischema.api.resources import GROUP, VERSION
from optischema.flows.decisions import CREATED_BY, Writers, admit_recommendation, stamp_creator
from optischema.flows.target import utc_now


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
