"""``optischema.io/retry`` on an IndexChange: a person's request to admit a Failed change again (``flows.retry``).

A timer, not an update handler: kopf leaves the annotations under its own storage prefix (``optischema.io/``) out
of the object's essence, so setting one is no "update". The timer runs only while a request waits — the
annotation is present and the change is ``Failed`` with a token not yet honoured, or ``Pending`` after an
honoured one (admission could not reach the database yet) — and the flow is idempotent by token, so a repeated
run does nothing twice. Once admitted again the change is no longer final and the change daemon
(``handlers.indexchange.drive``) takes it from there. A request made while the operator was down is seen when it
starts (timers start for every matching object).
"""

from __future__ import annotations

from typing import Any

import kopf

from optischema.api.resources import GROUP, VERSION
from optischema.flows.retry import retry
from optischema.flows.target import utc_now
from optischema.handlers.lifetime import alive, without_finalizer
from optischema.lifecycle import indexchange as lifecycle
from optischema.lifecycle import retry as retrying

ANNOTATION = "optischema.io/retry"
#: Seconds between looks at a waiting request.
INTERVAL = 3.0


def waiting(body: kopf.Body, status: kopf.Status, memo: kopf.Memo, **_: Any) -> bool:
    """A request not answered yet (a final change, token not recorded), or one admission has still to judge; never
    for an object already deleted (handlers.lifetime)."""
    token = (body.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
    if token is None or not alive(body, memo):
        return False
    honoured = retrying.honoured(lifecycle.parse(status), str(token))
    return (status.get("phase") in lifecycle.FINAL and not honoured) or (status.get("phase") == "Pending" and honoured)


@without_finalizer  # a deleted change, or its namespace, never waits for the operator (handlers.lifetime)
@kopf.timer(GROUP, VERSION, "indexchanges", interval=INTERVAL, annotations={ANNOTATION: kopf.PRESENT}, when=waiting)
async def retry_requested(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    token = str(body["metadata"]["annotations"][ANNOTATION])
    outcome = await retry(memo.kube, dict(body), token, actor=memo.settings.operator_identity, now=utc_now())
    if outcome is None:
        return
    if outcome.refused:
        kopf.warn(body, reason="RetryRefused", message=outcome.refused)
    elif outcome.unreachable:
        raise kopf.TemporaryError(f"retry: cannot check the change against the database yet: {outcome.unreachable}")
    elif outcome.verdict is not None:
        verdict = outcome.verdict
        (kopf.info if verdict.accepted else kopf.warn)(
            body, reason=verdict.reason, message=f"retried ({ANNOTATION}={token}): {verdict.message}"
        )
