"""IndexChange: accepted against its target's policy, then it waits for a maintenance window (issue 6 applies it)."""

from __future__ import annotations

from typing import Any

import kopf

from optischema.api.resources import GROUP, VERSION
from optischema.flows.changes import admit, gather
from optischema.flows.target import utc_now


@kopf.on.resume(GROUP, VERSION, "indexchanges")
@kopf.on.create(GROUP, VERSION, "indexchanges")
async def accept(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta, spec = body["metadata"], body["spec"]
    if (body.get("status") or {}).get("phase"):
        return  # already accepted or refused: decisions are not revisited on restart
    namespace = meta["namespace"]
    facts = await gather(memo.kube, namespace, meta["name"], dict(spec))
    if facts.unreachable:
        raise kopf.TemporaryError(f"cannot size the index yet: {facts.unreachable}", delay=30)
    verdict = admit(spec, facts, now=utc_now(), generation=meta.get("generation"))
    await memo.kube.patch_status("indexchanges", namespace, meta["name"], verdict.status)
    (kopf.info if verdict.accepted else kopf.warn)(body, reason=verdict.reason, message=verdict.message)
