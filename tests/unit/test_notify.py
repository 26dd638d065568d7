"""Notifications against a local receiver on 127.0.0.1: each sink's payload and signature, retries after 500s and
timeouts, deduplication, the per-target rate limit, and no literal of the database when PII-safe is on."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from optischema.notify.deliver import Delivery, Notifier, Sink
from optischema.notify.messages import Event, redact
from tests.receiver import receiver

SQL = (
    'CREATE INDEX CONCURRENTLY "orders_created_at_part_idx" ON "public"."orders" ("created_at") '
    "WHERE status <> 'vip-customer@example.com' AND total > 1000"
)


def event(kind: str = "changeRolledBack", uid: str = "uid-1", **kw: Any) -> Event:
    return Event(kind, "shop", "orders-db", "IndexChange", "orders-created-at", uid,  # type: ignore[arg-type]
                 "verification measured +42% on the affected statements; rolled back", sql=SQL, **kw)  # fmt: skip


def test_literals_are_redacted_and_names_kept() -> None:
    assert redact(SQL) == (
        'CREATE INDEX CONCURRENTLY "orders_created_at_part_idx" ON "public"."orders" ("created_at") '
        "WHERE status <> '…' AND total > …"
    )


async def test_each_sink_gets_its_format_signed_and_without_literals() -> None:
    with receiver() as sink:
        notifier = Notifier(backoff=0.01)
        sinks = [
            Sink("webhook", sink.url("/hook"), hmac_secret="s3cret"),
            Sink("slack", sink.url("/slack")),
            Sink("alertmanager", sink.url("/api/v2/alerts")),
        ]
        results = await notifier.send(
            event("recommendationAwaitingApproval", measured_gain_percent=87.5), sinks, pii_safe=True
        )
        assert [r.ok for r in results] == [True, True, True]
        by_path = {r["path"]: r for r in sink.received}
        hook = by_path["/hook"]
        expected = "sha256=" + hmac.new(b"s3cret", hook["body"], hashlib.sha256).hexdigest()
        assert hook["headers"]["X-OptiSchema-Signature"] == expected
        payload = json.loads(hook["body"])
        assert (payload["version"], payload["event"], payload["measuredGainPercent"]) == (
            1,
            "recommendationAwaitingApproval",
            87.5,
        )
        slack = json.loads(by_path["/slack"]["body"])
        texts = json.dumps(slack["blocks"])
        assert "kubectl optischema approve orders-created-at -n shop" in texts
        assert "87.5%" in texts
        alerts = json.loads(by_path["/api/v2/alerts"]["body"])
        assert alerts[0]["labels"]["alertname"] == "OptiSchemaRecommendationAwaitingApproval"
        everything = b"".join(r["body"] for r in sink.received).decode()
        assert "vip-customer@example.com" not in everything
        assert "1000" not in everything


async def test_500s_and_timeouts_are_retried_and_a_final_failure_is_reported_not_raised() -> None:
    with receiver() as sink:
        sink.script = [500, 2.0, 200]  # a 500, then no answer within the timeout, then accepted
        reports: list[Delivery] = []
        notifier = Notifier(backoff=0.01, timeout=0.5)
        notifier.submit(event(), [Sink("webhook", sink.url("/hook"))], pii_safe=True,
                        report=lambda _e, d: reports.append(d))  # fmt: skip
        await notifier.drain()
        assert [(r.ok, r.attempts) for r in reports] == [(True, 3)]
        sink.script = [503] * 10
        failed = await Notifier(backoff=0.01, attempts=3).send(
            event(uid="uid-2"), [Sink("webhook", sink.url("/h"))], pii_safe=True
        )
        assert [(r.ok, r.attempts, r.error) for r in failed] == [(False, 3, "HTTP 503")]


async def test_a_rolled_back_change_is_notified_exactly_once_and_the_rate_limit_holds() -> None:
    with receiver() as sink:
        notifier = Notifier(backoff=0.01, per_target_per_hour=3)
        sinks = [Sink("webhook", sink.url("/hook"))]
        for _ in range(3):  # the change's daemon sees RolledBack again after a restart, a re-analysis, …
            await notifier.send(event(), sinks, pii_safe=True)
        assert len(sink.received) == 1
        for number in range(5):
            await notifier.send(event("changeApplied", uid=f"other-{number}"), sinks, pii_safe=True)
        assert len(sink.received) == 3  # 3 per target per hour
        limited = await notifier.send(event("changeApplied", uid="late"), sinks, pii_safe=True)
        assert limited[0].error == "rate limit: 3 per hour"


async def test_a_sink_gets_only_the_events_it_asked_for() -> None:
    with receiver() as sink:
        sinks = [Sink("slack", sink.url("/slack"), events=frozenset({"changeRolledBack"}))]
        notifier = Notifier(backoff=0.01)
        await notifier.send(event("changeApplied", uid="a"), sinks, pii_safe=True)
        await notifier.send(event("changeRolledBack", uid="b"), sinks, pii_safe=True)
        assert len(sink.received) == 1


async def test_recurring_events_are_sent_once_per_episode() -> None:
    with receiver() as sink:
        notifier = Notifier(backoff=0.01)
        sinks = [Sink("webhook", sink.url("/hook"))]
        first_run = event("analysisFailing", episode="2026-11-29T10:00:00Z")
        assert first_run.key == "uid-1/analysisFailing/2026-11-29T10:00:00Z"
        await notifier.send(first_run, sinks, pii_safe=True)
        await notifier.send(event("analysisFailing", episode="2026-11-29T10:00:00Z"), sinks, pii_safe=True)
        await notifier.send(event("analysisFailing", episode="2026-11-30T08:00:00Z"), sinks, pii_safe=True)
        assert len(sink.received) == 2, "a new run of failures is a new event; the same run is not"
        assert not notifier.claim(first_run.key)
        assert notifier.claim("uid-1/llmBudgetSpent/target/2026-11-29")


async def test_a_report_summary_goes_to_slack_without_an_attachment() -> None:
    with receiver() as sink:
        ready = Event("reportReady", "shop", "orders-db", "PostgresTarget", "orders-db", "uid-9",
                      "3 change(s) applied; estimated time saved: 120.0 s/day. Read it with: kubectl optischema "
                      "report orders-db -n shop --format html -o report.html")  # fmt: skip
        (result,) = await Notifier().send(ready, [Sink("slack", sink.url("/slack"))], pii_safe=True)
        assert result.ok
        body = json.loads(sink.received[0]["body"])
        assert body["text"] == "A tuning report is ready: shop/orders-db"
        assert "kubectl optischema report orders-db" in json.dumps(body["blocks"])
        assert "files" not in body
        assert "attachments" not in body


def test_the_cluster_default_sinks_are_read_from_the_environment_and_checked(monkeypatch: Any) -> None:
    import pytest
    from pydantic import ValidationError

    from optischema.settings import Settings

    monkeypatch.setenv(
        "OPTISCHEMA_NOTIFICATION_SINKS", '[{"type": "slack", "urlSecret": {"name": "team", "key": "url"}}]'
    )
    assert [(s.type, s.url_secret.name) for s in Settings().notification_sinks] == [("slack", "team")]
    monkeypatch.setenv("OPTISCHEMA_NOTIFICATION_SINKS", '[{"type": "pager", "urlSecret": {"name": "t", "key": "u"}}]')
    with pytest.raises(ValidationError, match=r"notification_sinks\.0\.type"):
        Settings()


HOSTILE_SQL = (
    'CREATE INDEX "orders_vip_idx" ON orders (created_at) WHERE note = $$vip-dollar@example.com$$ '
    "AND memo = E'it\\'s escaped@example.com' /*user='commenter@example.com'*/"
)
HOSTILE_SUMMARY = (
    'orders-vip: Stalled — CREATE INDEX failed: could not create unique index "orders_vip_idx" '
    "Key (email)=(summary-key@example.com) is duplicated; while running "
    "SELECT 1 FROM orders WHERE note = $t$summary-dollar@example.com$t$ -- by summary-comment@example.com"
)
SECRETS = [
    "vip-dollar@example.com",
    "escaped@example.com",
    "commenter@example.com",
    "summary-key@example.com",
    "summary-dollar@example.com",
    "summary-comment@example.com",
    "details@example.com",
]


async def test_pii_safe_sends_no_literal_in_the_summary_the_details_or_the_sql_to_any_sink() -> None:
    """The attack: a value of the database reaches a sink through a field other than ``sql`` (a stalled change's
    condition message in the summary, a reason in the details) or in a literal form the old regular expressions did
    not know (dollar quotes, E-strings, sqlcommenter comments)."""
    details = {"stalled": True, "reason": "value 'details@example.com' refused"}
    hostile = Event("changeFailed", "shop", "orders-db", "IndexChange", "orders-vip", "uid-h", HOSTILE_SUMMARY,
                    sql=HOSTILE_SQL, details=details)  # fmt: skip
    for pii_safe in (True, False):
        with receiver() as sink:
            sinks = [
                Sink("webhook", sink.url("/hook")),
                Sink("slack", sink.url("/slack")),
                Sink("alertmanager", sink.url("/api/v2/alerts")),
            ]
            results = await Notifier(backoff=0.01).send(hostile, sinks, pii_safe=pii_safe)
            assert [r.ok for r in results] == [True, True, True]
            everything = b"".join(r["body"] for r in sink.received).decode()
        leaked = [s for s in SECRETS if s in everything]
        if pii_safe:
            assert not leaked, f"{leaked} reached a sink with PII-safe on"
            assert "orders_vip_idx" in everything, "names stay"
        else:
            assert leaked == SECRETS, "without PII-safe the text goes as it is (the attack above is real)"
