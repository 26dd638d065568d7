"""From what the operator saw to the target's sinks: build the event, read the sink URLs from their Secrets, hand it
to the notifier (which queues, retries and deduplicates), and keep count in the target's status and a metric.
Nothing here waits for a sink: a down sink never slows reconciliation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from optischema.api.target import PostgresTargetSpec
from optischema.notify.deliver import Delivery, Notifier, Sink
from optischema.notify.messages import Event, EventType
from optischema.telemetry import NOTIFICATIONS, log_for


async def sinks_of(kube: Any, namespace: str, spec: PostgresTargetSpec) -> list[Sink]:
    found = []
    for item in spec.notifications.sinks:
        secret = await kube.read_secret(namespace, item.url_secret.name) or {}
        url = secret.get(item.url_secret.key)
        if not url:
            log_for(namespace, None).warning(
                "notification sink skipped: URL Secret missing", secret=item.url_secret.name
            )
            continue
        key = None
        if item.hmac_secret is not None:
            key = (await kube.read_secret(namespace, item.hmac_secret.name) or {}).get(item.hmac_secret.key)
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
) -> None:
    """Queue one event for ``target``'s sinks (when it has any)."""
    try:
        spec = PostgresTargetSpec.model_validate(target.get("spec") or {})
    except ValidationError:
        return
    if not spec.notifications.sinks:
        return
    if kind == "recommendationAwaitingApproval" and (gain or 0) < spec.notifications.min_measured_gain_percent:
        return
    meta, namespace = target["metadata"], target["metadata"]["namespace"]
    sinks = await sinks_of(kube, namespace, spec)
    event = Event(kind, namespace, meta["name"], obj["kind"], obj["metadata"]["name"], obj["metadata"]["uid"],
                  summary, sql=sql, measured_gain_percent=gain)  # fmt: skip

    log = log_for(namespace, meta["name"], kind="PostgresTarget")

    async def report(_: Event, delivery: Delivery) -> None:
        log.info("notification", sink=delivery.sink, notified=event.type, ok=delivery.ok, error=delivery.error)
        NOTIFICATIONS.labels(namespace, meta["name"], delivery.sink, "delivered" if delivery.ok else "failed").inc()
        try:
            current = await kube.get("postgrestargets", namespace, meta["name"])
        except LookupError:
            return
        state = dict((current.get("status") or {}).get("notifications") or {})
        if delivery.ok:
            state["delivered"] = int(state.get("delivered", 0)) + 1
            state["lastDeliveredAt"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            state["failed"] = int(state.get("failed", 0)) + 1
            state["lastError"] = f"{delivery.sink} {delivery.event}: {delivery.error}"[:1024]
        await kube.patch_status("postgrestargets", namespace, meta["name"], {"notifications": state})

    log.info("notification queued", notified=kind, object=obj["metadata"]["name"], sinks=len(sinks))
    notifier.submit(event, sinks, pii_safe=spec.notifications.pii_safe, report=report)
