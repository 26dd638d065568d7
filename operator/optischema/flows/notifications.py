"""From what the operator saw to the target's sinks: build the event, read the sink URLs from their Secrets, hand it
to the notifier (which queues, retries and deduplicates), and keep count in the target's status and a metric.
Nothing here waits for a sink: a down sink never slows reconciliation.

Deduplication has two memories: the notifier's (this process) and ``status.notifications.notified`` on the target
(the last keys sent), which a restarted operator reads — so a re-analysis or a restart never sends an event twice.
A target that names no sinks uses the cluster default from the operator's settings, if there is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from optischema.analysis.redact import redact_error
from optischema.api.network import endpoint_url_problem
from optischema.api.target import NotificationSink, PostgresTargetSpec
from optischema.kube.client import secret_refused
from optischema.notify.deliver import Delivery, Notifier, Sink
from optischema.notify.messages import Event, EventType
from optischema.telemetry import NOTIFICATIONS, log_for

#: Keys kept in ``status.notifications.notified`` (oldest dropped first).
REMEMBERED = 500


async def sinks_of(kube: Any, namespace: str, items: Sequence[NotificationSink], *, own: bool = False) -> list[Sink]:
    """The sinks with their URLs read. ``own``: the cluster default sinks of the operator's settings, whose Secrets
    are read by name (the settings are their opt-in) and are refused to every spec."""
    read = kube.read_own_secret if own else kube.read_secret
    found = []
    for item in items:
        secret = await read(namespace, item.url_secret.name) or {}
        url = secret.get(item.url_secret.key)
        if not url:
            log_for(namespace, None).warning(
                "notification sink skipped: URL Secret missing or not opted in",
                secret=item.url_secret.name,
                why=secret_refused(namespace, item.url_secret.name),
            )
            continue
        problem = endpoint_url_problem(url)
        if problem is not None:  # kept: its delivery is refused and counted in status.notifications (never the URL)
            log_for(namespace, None).warning(
                "notification sink refused: not https",
                secret=f"{namespace}/{item.url_secret.name}",
                key=item.url_secret.key,
                problem=problem,
            )
        key = None
        if item.hmac_secret is not None:
            key = (await read(namespace, item.hmac_secret.name) or {}).get(item.hmac_secret.key)
        found.append(
            Sink(item.type, url, key, frozenset(item.events) or None, name=f"{item.type}:{item.url_secret.name}")
        )
    return found


async def announce(
    notifier: Notifier,
    kube: Any,
    target: dict[str, Any],
    kind: EventType,
    obj: dict[str, Any],
    summary: str,
    *,
    sql: str | None = None,
    gain: float | None = None,
    episode: str = "",
    details: dict[str, Any] | None = None,
) -> bool:
    """Queue one event for ``target``'s sinks (or the cluster default); False when there was nothing to send."""
    try:
        spec = PostgresTargetSpec.model_validate(target.get("spec") or {})
    except ValidationError:
        return False
    if kind == "recommendationAwaitingApproval" and (gain or 0) < spec.notifications.min_measured_gain_percent:
        return False
    meta, namespace = target["metadata"], target["metadata"]["namespace"]
    event = Event(kind, namespace, meta["name"], obj["kind"], obj["metadata"]["name"], obj["metadata"]["uid"],
                  summary, sql=sql, measured_gain_percent=gain, episode=episode,
                  details=details or {})  # fmt: skip
    if event.key in notifier.seen:  # before any API call: the status-derived events are looked at every check
        return False
    if spec.notifications.sinks:
        sinks = await sinks_of(kube, namespace, spec.notifications.sinks)
    else:
        sinks = await sinks_of(kube, notifier.default_namespace, notifier.default_sinks, own=True)
    if not sinks:
        return False
    log = log_for(namespace, meta["name"], kind="PostgresTarget")
    if not notifier.claim(event.key) or not await _remember(kube, meta, event.key):
        return False

    async def report(_: Event, delivery: Delivery) -> None:
        log.info("notification", sink=delivery.sink, notified=event.type, ok=delivery.ok, error=delivery.error)
        NOTIFICATIONS.labels(namespace, meta["name"], delivery.sink, "delivered" if delivery.ok else "failed").inc()
        try:
            current = await kube.get("postgrestargets", namespace, meta["name"])
        except LookupError:
            return
        state = (current.get("status") or {}).get("notifications") or {}
        if delivery.ok:  # only the fields this outcome changes: `notified` is not ours to rewrite here
            patch = {
                "delivered": int(state.get("delivered", 0)) + 1,
                "lastDeliveredAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        else:
            patch = {
                "failed": int(state.get("failed", 0)) + 1,
                "lastError": f"{delivery.sink} {delivery.event}: {delivery.error}"[:1024],
            }
        await kube.patch_status("postgrestargets", namespace, meta["name"], {"notifications": patch})

    log.info("notification queued", notified=kind, object=obj["metadata"]["name"], sinks=len(sinks))
    notifier.submit(event, sinks, pii_safe=spec.notifications.pii_safe, report=report, claimed=True)
    return True


async def _remember(kube: Any, meta: dict[str, Any], key: str) -> bool:
    """Record ``key`` in the target's status before sending; False when a former run of the operator sent it."""
    try:
        current = await kube.get("postgrestargets", meta["namespace"], meta["name"])
    except LookupError:
        return False
    notified = list(((current.get("status") or {}).get("notifications") or {}).get("notified") or [])
    if key in notified:
        return False
    notified = [*notified, key][-REMEMBERED:]
    await kube.patch_status(
        "postgrestargets", meta["namespace"], meta["name"], {"notifications": {"notified": notified}}
    )
    return True


async def from_status(notifier: Notifier, kube: Any, target: dict[str, Any], spec: PostgresTargetSpec) -> None:
    """The target's own events, read from its status: analyses failing in a row, an LLM budget spent. Each is sent
    once per episode (a run of failures, a day)."""
    status = target.get("status") or {}
    last = status.get("lastAnalysis") or {}
    failures = int(last.get("consecutiveFailures") or 0)
    if failures >= spec.notifications.analysis_failures and last.get("failingSince"):
        # a database error may quote a value (a violated key's, say)
        message = redact_error(str(last.get("message"))) if spec.notifications.pii_safe else last.get("message")
        await announce(
            notifier, kube, target, "analysisFailing", target,
            f"{failures} analyses in a row failed (since {last['failingSince']}); the last: {message}",
            episode=str(last["failingSince"]), details={"consecutiveFailures": failures},
        )  # fmt: skip
    llm = status.get("llm") or {}
    if llm.get("budgetSpent") and last.get("completionTime"):
        await announce(
            notifier, kube, target, "llmBudgetSpent", target,
            f"the {llm['budgetSpent']} daily LLM token budget is spent ({llm.get('tokensToday', 0)} tokens today "
            "for this target): analyses go on with the engine alone until tomorrow (UTC)",
            episode=f"{llm['budgetSpent']}/{str(last['completionTime'])[:10]}",
        )  # fmt: skip
