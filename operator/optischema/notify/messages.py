"""What a notification says, in each sink's format, and nothing of the database's data when PII-safe is on.

An :class:`Event` is one thing that happened to one object (a recommendation awaits approval, a change was applied,
rolled back, failed; an analysis keeps failing; the LLM budget is spent). Its ``key`` (object uid + event) is what
delivery deduplicates on, so a re-analysis that finds the same recommendation again does not notify twice.

With PII-safe on, SQL is shown with its string and number literals replaced by ``…`` and its comments removed (a
partial index's predicate may hold a real value such as a customer's status or e-mail domain; an ORM's comment a
user's e-mail); names of tables, columns and indexes stay. The summary and the string values of ``details`` are
redacted as a database's error message is (they quote one: a stalled change's condition, the last analysis's
failure), so their numbers go too; the measured gain travels in its own field (``measuredGainPercent``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from optischema.analysis.redact import redact, redact_error
from optischema.api.target import NotificationEvent

EventType = NotificationEvent  # one list, the API's: a sink's `events` and what is sent cannot drift apart
SCHEMA_VERSION = 1
SEVERITY: dict[str, str] = {
    "recommendationAwaitingApproval": "info",
    "changeApplied": "info",
    "changeRolledBack": "warning",
    "changeFailed": "warning",
    "analysisFailing": "warning",
    "llmBudgetSpent": "info",
    "reportReady": "info",
}


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    namespace: str
    target: str
    object_kind: str
    object_name: str
    object_uid: str
    summary: str
    sql: str | None = None
    measured_gain_percent: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    episode: str = ""
    """For events that recur on one object (a new run of failed analyses, a new day's spent budget, each scheduled
    report): what tells this occurrence from the last, so that it is sent once, not once ever."""

    @property
    def key(self) -> str:
        """What delivery deduplicates on: the same event for the same object (and episode) is sent once."""
        return f"{self.object_uid}/{self.type}" + (f"/{self.episode}" if self.episode else "")


def _sql(event: Event, pii_safe: bool) -> str | None:
    if event.sql is None:
        return None
    return redact(event.sql) if pii_safe else event.sql


def _summary(event: Event, pii_safe: bool) -> str:
    return redact_error(event.summary) if pii_safe else event.summary


def _details(event: Event, pii_safe: bool) -> dict[str, Any]:
    if not pii_safe:
        return event.details
    return {k: redact_error(v) if isinstance(v, str) else v for k, v in event.details.items()}


def webhook_body(event: Event, *, pii_safe: bool) -> dict[str, Any]:
    """The generic webhook's JSON (schema version 1, documented in the README)."""
    return {
        "version": SCHEMA_VERSION,
        "event": event.type,
        "severity": SEVERITY[event.type],
        "time": event.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "namespace": event.namespace,
        "target": event.target,
        "object": {"kind": event.object_kind, "name": event.object_name, "uid": event.object_uid},
        "summary": _summary(event, pii_safe),
        "sql": _sql(event, pii_safe),
        "measuredGainPercent": event.measured_gain_percent,
        "details": _details(event, pii_safe),
    }


def signature(body: bytes, secret: str) -> str:
    """``X-OptiSchema-Signature``: ``sha256=<hex HMAC of the exact body>``, as GitHub signs its webhooks."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def slack_body(event: Event, *, pii_safe: bool) -> dict[str, Any]:
    """A Slack incoming-webhook message in Block Kit: what, the SQL, the measured gain, the command to run."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _title(event)[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _summary(event, pii_safe)[:2900]}},
    ]
    sql = _sql(event, pii_safe)
    if sql:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{sql[:2800]}```"}})
    if event.measured_gain_percent is not None:
        blocks.append(
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"Measured in a sandbox: *{event.measured_gain_percent:.1f}%* faster"}]}
        )  # fmt: skip
    if event.type == "recommendationAwaitingApproval":
        command = f"kubectl optischema approve {event.object_name} -n {event.namespace} --reason '…'"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"To approve:\n`{command}`"}})
    return {"text": _title(event), "blocks": blocks}


def alertmanager_body(event: Event, *, pii_safe: bool, generator_url: str = "") -> list[dict[str, Any]]:
    """Alertmanager's ``POST /api/v2/alerts`` body: one alert, labelled so that Alertmanager groups and routes it."""
    return [
        {
            "labels": {
                "alertname": f"OptiSchema{event.type[0].upper()}{event.type[1:]}",
                "severity": SEVERITY[event.type],
                "namespace": event.namespace,
                "target": event.target,
                "object": event.object_name,
            },
            "annotations": {
                "summary": _summary(event, pii_safe),
                **({"sql": _sql(event, pii_safe) or ""} if event.sql else {}),
            },
            "startsAt": event.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            **({"generatorURL": generator_url} if generator_url else {}),
        }
    ]


def _title(event: Event) -> str:
    titles = {
        "recommendationAwaitingApproval": "A recommendation awaits your approval",
        "changeApplied": "A change was applied",
        "changeRolledBack": "A change was rolled back",
        "changeFailed": "A change failed",
        "analysisFailing": "Analyses keep failing",
        "llmBudgetSpent": "The LLM token budget is spent",
        "reportReady": "A tuning report is ready",
    }
    title = "A change is stalled: it waits for a person" if event.details.get("stalled") else titles[event.type]
    return f"{title}: {event.namespace}/{event.target}"


def encode(body: Any) -> bytes:
    """The exact bytes sent (and signed)."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
