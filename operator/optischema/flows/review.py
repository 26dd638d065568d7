"""Reviewing an IndexChange at admission, before it is stored: the validating webhook's flow.

A change that breaks its target's policy, names a missing table, overruns the storage budget or cannot be rendered
safely is refused here, so ``kubectl apply --dry-run=server`` in CI and Argo CD's or Flux's sync fail on it with
the reason; before, it was stored and only later marked ``Failed``. The checks are ``flows.changes.judge``, the
very ones the operator makes when a change arrives (and records in its status): nothing is decided twice.

The database part has a deadline: the API server waits for the webhook (kube-apiserver gives it at most
``timeoutSeconds``), and a GitOps sync should not hang on a slow database. When the database cannot be asked in
time (down, unreachable, credentials refused), the change is **admitted with a warning** rather than refused: a
database outage must not block every GitOps sync of the cluster, and nothing unsafe follows, because the operator
judges the change again when it arrives (waiting and retrying while the database is away) and once more right
before any statement runs. What needs no database (the spec, the rendering, the target, its policy's kinds) is
decided before the deadline starts, so a forbidden kind is refused even during an outage. A target that does not exist
(yet) is a warning too: a sync may create it after the change.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from optischema.api.conditions import Reason
from optischema.flows.changes import Facts, gather, judge

#: Longest the database facts may take before the change is admitted with a warning; with the API reads before
#: and after, the webhook answers well inside kube-apiserver's webhook timeout.
CHECK_SECONDS = 5.0
#: Longest a connection attempt to the target may take (caps the target's ``connectTimeoutSeconds``).
CONNECT_SECONDS = 3.0

#: Database checks abandoned at their deadline, kept referenced until they finish on their own.
_abandoned: set[asyncio.Future[Facts]] = set()


@dataclass(frozen=True, slots=True)
class Review:
    """The webhook's answer: refused (reason, message naming the field), admitted with a warning, or admitted."""

    refusal: tuple[str, str] | None = None
    warning: str | None = None


async def review(
    kube: Any,
    namespace: str,
    name: str,
    spec: dict[str, Any],
    *,
    check_seconds: float = CHECK_SECONDS,
    connect_seconds: float = CONNECT_SECONDS,
) -> Review:
    """Judge a new IndexChange as the operator will: first what needs no database, then with the database's facts
    within ``check_seconds``."""
    try:
        target = await kube.get("postgrestargets", namespace, spec["targetRef"]["name"])
    except LookupError:
        target = None
    except Exception as error:  # an API failure admits with a warning, never a traceback
        return Review(warning=_unchecked(_first_line(error)))
    quick = judge(spec, Facts(target))
    if target is None and isinstance(quick, tuple) and quick[0] == Reason.TARGET_MISMATCH:
        # Not refused: a GitOps tool may apply the change before the target of the same sync (Argo CD orders custom
        # kinds by name), and refusing would fail that whole sync. The operator refuses it on arrival if it is gone.
        return Review(warning=f"{quick[1]}; if it still does not when the operator handles the change, it fails")
    if isinstance(quick, tuple):
        return Review(refusal=quick)
    task = asyncio.ensure_future(gather(kube, namespace, name, spec, connect_timeout=connect_seconds))
    done, _ = await asyncio.wait({task}, timeout=check_seconds)
    if not done:
        task.cancel()  # not awaited: the answer goes out now; a connection being closed finishes on its own
        _abandoned.add(task)
        task.add_done_callback(_abandoned.discard)
        return Review(warning=_unchecked(f"the database did not answer within {check_seconds:g}s"))
    try:
        facts = task.result()
    except Exception as error:  # an API or network failure admits with a warning, never a traceback
        return Review(warning=_unchecked(_first_line(error)))
    judged = judge(spec, facts)
    if isinstance(judged, tuple):
        return Review(refusal=judged)
    if facts.unreachable:
        return Review(warning=_unchecked(facts.unreachable))
    return Review()


def _unchecked(why: str) -> str:
    return (
        f"IndexChange admitted without its database checks (table, budget, index name): {why}; the operator checks "
        "it when it arrives and marks it Failed with the reason if it does not pass"
    )


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
