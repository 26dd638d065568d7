"""A person's retry of a Failed IndexChange (``optischema.io/retry``, ``lifecycle/retry.py``): back to
``Pending``, then admission judges it again exactly as it judges a new change (``flows.changes``).

Idempotent: a token already recorded in the audit trail is not honoured twice, and a retry interrupted between
its two writes (``Pending`` recorded, admission not yet) resumes with the admission. What this returns is what the
handler reports: None when there was nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from optischema.kube.client import Kube
from optischema.lifecycle import indexchange as lifecycle
from optischema.lifecycle import retry as retrying

from .changes import Verdict, admit, gather


@dataclass(frozen=True)
class Outcome:
    """``verdict``: admission's, once judged; ``unreachable``: why it could not judge yet (retry later);
    ``refused``: why the retry itself was not honoured."""

    verdict: Verdict | None = None
    unreachable: str | None = None
    refused: str | None = None


async def retry(kube: Kube, body: dict[str, Any], token: str, *, actor: str, now: datetime) -> Outcome | None:
    meta, spec = body["metadata"], dict(body["spec"])
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    status = dict(body.get("status") or {})
    current = lifecycle.parse(status)
    if retrying.honoured(current, token):
        if current.phase != "Pending":
            return None  # done: admitted (or refused) again after this very request
    else:
        problem = retrying.refusal(current)
        if problem is not None:
            if current.phase not in lifecycle.FINAL:
                return None  # on its way (not admitted yet, waiting, applying): nothing to retry
            patch = retrying.declined(current, token, problem, actor=actor, now=now)
            await kube.patch_status("indexchanges", namespace, name, patch)  # answered once, with the reason
            return Outcome(refused=problem)
        patch = retrying.retried(current, token, actor=actor, now=now, generation=generation)
        await kube.patch_status("indexchanges", namespace, name, patch)
        status = {**status, **patch}
        status = {key: value for key, value in status.items() if value is not None}
    facts = await gather(kube, namespace, name, spec)
    if facts.unreachable:
        return Outcome(unreachable=facts.unreachable)
    verdict = admit(spec, facts, now=now, generation=generation, status=status)
    await kube.patch_status("indexchanges", namespace, name, verdict.status)
    return Outcome(verdict=verdict)
