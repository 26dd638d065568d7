"""Delivery to the sinks: asynchronous, retried with backoff, deduplicated per object and event, rate-limited per
target. A sink that is down never blocks reconciliation: :meth:`Notifier.submit` only queues, and the outcome of
each delivery (and the last error) is reported through a callback for the target's status and a metric."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import httpx

from optischema.api.network import endpoint_url_problem
from optischema.api.target import NotificationSink

from .messages import Event, alertmanager_body, encode, signature, slack_body, webhook_body

SinkKind = Literal["webhook", "slack", "alertmanager"]
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True, slots=True)
class Sink:
    kind: SinkKind
    url: str = field(repr=False)  # from a Secret: it often carries a token (Slack)
    hmac_secret: str | None = field(default=None, repr=False)
    events: frozenset[str] | None = None  # None: every event
    name: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    sink: str
    event: str
    ok: bool
    attempts: int
    error: str | None = None


Report = Callable[[Event, Delivery], Awaitable[None] | None]


@dataclass(slots=True)
class Notifier:
    attempts: int = 4
    backoff: float = 1.0
    timeout: float = 10.0
    per_target_per_hour: int = 30
    transport: httpx.AsyncBaseTransport | None = None
    default_sinks: Sequence[NotificationSink] = ()
    """The cluster default (operator settings), for targets that name no sinks; URL Secrets in
    ``default_namespace``."""
    default_namespace: str = "optischema-system"
    seen: set[str] = field(default_factory=set)
    _sent: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[list[Delivery]]] = field(default_factory=set)

    def claim(self, key: str) -> bool:
        """Take ``key`` for sending; False when it was taken before (sent, or being sent)."""
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def submit(
        self,
        event: Event,
        sinks: Sequence[Sink],
        *,
        pii_safe: bool,
        report: Report | None = None,
        claimed: bool = False,
    ) -> None:
        """Queue the event; returns at once."""
        task = asyncio.create_task(self.send(event, sinks, pii_safe=pii_safe, report=report, claimed=claimed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for what is queued (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def send(
        self,
        event: Event,
        sinks: Sequence[Sink],
        *,
        pii_safe: bool,
        report: Report | None = None,
        claimed: bool = False,
    ) -> list[Delivery]:
        if not claimed and not self.claim(event.key):
            return []  # the same event for the same object was notified already
        window = self._sent.setdefault((event.namespace, event.target), deque())
        now = time.monotonic()
        while window and now - window[0] > 3600:
            window.popleft()
        if len(window) >= self.per_target_per_hour:
            delivery = Delivery("all", event.type, False, 0, f"rate limit: {self.per_target_per_hour} per hour")
            await _report(report, event, delivery)
            return [delivery]
        window.append(now)
        results = []
        # plain http goes only to a loopback host (refused otherwise), so never through the environment's proxy:
        # HTTP_PROXY would carry the event and the URL's token in clear text across the network
        direct = self.transport or httpx.AsyncHTTPTransport()
        async with httpx.AsyncClient(
            transport=self.transport, timeout=self.timeout, mounts={"http://": direct}
        ) as client:
            for sink in sinks:
                if sink.events is not None and event.type not in sink.events:
                    continue
                delivery = await self._deliver(client, sink, event, pii_safe)
                await _report(report, event, delivery)
                results.append(delivery)
        return results

    async def _deliver(self, client: httpx.AsyncClient, sink: Sink, event: Event, pii_safe: bool) -> Delivery:
        if sink.kind == "slack":
            body = encode(slack_body(event, pii_safe=pii_safe))
        elif sink.kind == "alertmanager":
            body = encode(alertmanager_body(event, pii_safe=pii_safe))
        else:
            body = encode(webhook_body(event, pii_safe=pii_safe))
        problem = endpoint_url_problem(sink.url)
        if problem is not None:  # never the URL itself: its path is often the credential (Slack)
            return Delivery(sink.name or sink.kind, event.type, False, 0, f"not sent: the URL in its Secret {problem}")
        headers = {"Content-Type": "application/json", "X-OptiSchema-Event": event.type}
        if sink.hmac_secret:
            headers["X-OptiSchema-Signature"] = signature(body, sink.hmac_secret)
        last = "no attempt"
        for attempt in range(1, self.attempts + 1):
            try:
                response = await client.post(sink.url, content=body, headers=headers)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout:g}s"
            except httpx.TransportError as error:
                last = f"connection failed ({type(error).__name__})"
            else:
                if response.status_code < 300:
                    return Delivery(sink.name or sink.kind, event.type, True, attempt)
                last = f"HTTP {response.status_code}"
                if response.status_code not in RETRYABLE:
                    return Delivery(sink.name or sink.kind, event.type, False, attempt, last)
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random()))
        return Delivery(sink.name or sink.kind, event.type, False, self.attempts, last)


async def _report(report: Report | None, event: Event, delivery: Delivery) -> None:
    if report is None:
        return
    outcome = report(event, delivery)
    if outcome is not None:
        await outcome
