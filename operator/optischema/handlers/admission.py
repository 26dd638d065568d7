"""Admission: the recommendation's approver is recorded from the request's authenticated user."""

from __future__ import annotations

from typing import Any

import kopf

from optischema.api.resources import GROUP, VERSION
from optischema.flows.decisions import stamp_decision
from optischema.flows.target import utc_now


@kopf.on.mutate(GROUP, VERSION, "tuningrecommendations", id="decision", operations=["CREATE", "UPDATE"])
def decision(userinfo: Any, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
    old, new = kwargs.get("old"), kwargs.get("new")
    stamp = stamp_decision(
        str(kwargs.get("operation")),
        dict(old["spec"]) if old is not None else None,
        dict(new["spec"]) if new is not None else {},
        userinfo.get("username", ""),
        operator=memo.settings.operator_identity,
        now=utc_now(),
    )
    if stamp.refusal:
        raise kopf.AdmissionError(stamp.refusal, code=400)
    if stamp.patch:
        patch.spec["approval"] = stamp.patch
