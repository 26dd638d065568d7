"""No confused deputy, on the embedded control plane with the operator process and a real PostgreSQL pod.

Whoever may create a ``PostgresTarget`` names Secrets; the operator reads them with its own rights. Without the
opt-in (label ``optischema.io/allow: "true"`` or the ``allowedSecrets`` setting) a Secret is never read: the target
is ``Stalled`` with ``SecretNotAllowed`` and a message saying what to add, and the API server's audit log shows no
request of the operator that could have returned the Secret — no ``get`` or ``watch`` of it, and every ``list`` of
Secrets filtered by the opt-in label on the server (so the unlabelled one never left it). A crafted ``host`` and a
plain-http LLM URL are refused by the API server itself, naming the field, and nothing is created.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devcluster.cluster import Cluster
from devcluster.controlplane import ControlPlaneError
from tests.receiver import receiver

from .conftest import allow_secrets, apply, get, operators, secret, target, wait_for

ALLOW = "optischema.io/allow=true"
CLEAR = "http://llm.example.com/v1"


def condition(cluster: Cluster, namespace: str, kind: str) -> dict[str, Any] | None:
    status = get(cluster, "pgt", "shop", "-n", namespace).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def operator_secret_requests(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """Audit events of requests on Secrets in ``namespace`` made by anything but kubectl (the test's own client):
    the operator process."""
    return [
        event
        for event in cluster.plane.audit_events()
        if (event.get("objectRef") or {}).get("resource") == "secrets"
        and (event.get("objectRef") or {}).get("namespace") == namespace
        and not str(event.get("userAgent", "")).startswith("kubectl")
    ]


def query(event: dict[str, Any]) -> dict[str, list[str]]:
    return parse_qs(urlsplit(event["requestURI"]).query)


def assert_never_read(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """Only lists filtered by the opt-in label on the server: no get or watch (the API server names the Secret in a
    list's objectRef when the field selector does, so the label selector is what shows it was never returned)."""
    requests = operator_secret_requests(cluster, namespace)
    for event in requests:
        uri = event["requestURI"]
        assert event["verb"] == "list", f"the operator did {event['verb']} {uri} (Secret {name})"
        assert query(event).get("labelSelector") == [ALLOW], f"a list of Secrets not filtered by the label: {uri}"
    return requests


def test_a_secret_without_the_opt_in_is_never_read_and_the_target_stalls_saying_what_to_add(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    apply(cluster, secret(namespace, "pw", allow=False))
    apply(cluster, target(namespace, database))

    stalled = wait_for(lambda: condition(cluster, namespace, "Stalled"), what="Stalled")
    assert stalled["reason"] == "SecretNotAllowed"
    message = stalled["message"]
    assert f"Secret {namespace}/shop-db does not exist or is not labelled optischema.io/allow=true" in message
    assert f"kubectl label secret -n {namespace} shop-db optischema.io/allow=true" in message
    assert f'"{namespace}/shop-db" to the operator\'s allowedSecrets' in message
    ready = condition(cluster, namespace, "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    # Several checks have run by now (every 2 s): none fetched the Secret.
    wait_for(lambda: len(operator_secret_requests(cluster, namespace)) >= 2, what="two checks in the audit log")
    requests = assert_never_read(cluster, namespace, "shop-db")
    assert all(query(e).get("fieldSelector") == ["metadata.name=shop-db"] for e in requests)

    # Opting in is enough: the target connects without a restart, through the same filtered list.
    cluster.plane.kubectl("label", "secret", "-n", namespace, "shop-db", "optischema.io/allow=true")
    wait_for(lambda: (c := condition(cluster, namespace, "Ready")) and c["status"] == "True", what="Ready")
    assert condition(cluster, namespace, "Stalled") is None
    assert_never_read(cluster, namespace, "no-such-name")  # still no get, no watch, no unfiltered list


def test_a_secret_listed_in_allowed_secrets_is_read_without_the_label_and_no_other(
    cluster: Cluster, namespace: str, database: str
) -> None:
    apply(cluster, secret(namespace, "pw", allow=False))
    apply(cluster, secret(namespace, "other", name="other-db", allow=False))
    allowed = json.dumps([f"{namespace}/shop-db"])
    with operators(cluster, namespace, "allowed-secrets", OPTISCHEMA_ALLOWED_SECRETS=allowed) as start:
        start()
        apply(cluster, target(namespace, database))
        wait_for(lambda: (c := condition(cluster, namespace, "Ready")) and c["status"] == "True", what="Ready")
        # Repointed at a Secret that is not listed: Stalled, and that one is never read.
        doc = target(namespace, database, secret="other-db")
        apply(cluster, doc)
        stalled = wait_for(lambda: condition(cluster, namespace, "Stalled"), what="Stalled")
        assert stalled["reason"] == "SecretNotAllowed"
    gets = [e for e in operator_secret_requests(cluster, namespace) if e["verb"] == "get"]
    assert gets, "the allow-listed Secret is read with a get"
    assert {e["objectRef"]["name"] for e in gets} == {"shop-db"}
    others = [e for e in operator_secret_requests(cluster, namespace) if e["verb"] != "get"]
    assert all(e["verb"] == "list" and query(e).get("labelSelector") == [ALLOW] for e in others)


HOSTILE_SPECS = [
    (
        "a host that rewrote the formatted DSN's database and TLS",
        {"connection": {"host": "db/postgres?sslmode=disable#"}},
        "spec.connection.host",
    ),
    ("a user smuggled in the host", {"connection": {"host": "db@evil"}}, "spec.connection.host"),
    ("a port in the host", {"connection": {"host": "db:5432"}}, "spec.connection.host"),
    (
        "an LLM endpoint in clear text",
        {"llm": {"enabled": True, "providers": [{"provider": "openaiCompatible", "model": "m", "baseURL": CLEAR}]}},
        "spec.llm.providers[0].baseURL",
    ),
]


@pytest.mark.parametrize(("title", "change", "field"), HOSTILE_SPECS, ids=[t for t, _, _ in HOSTILE_SPECS])
def test_the_api_server_refuses_a_crafted_host_or_a_clear_text_llm_url_naming_the_field(
    cluster: Cluster, namespace: str, title: str, change: dict[str, Any], field: str
) -> None:
    doc = target(namespace, "127.0.0.1")
    for key, value in change.items():
        doc["spec"][key] = {**doc["spec"].get(key, {}), **value}
    with pytest.raises(ControlPlaneError) as caught:
        apply(cluster, doc)
    assert field in str(caught.value), title
    assert cluster.plane.kubectl("get", "pgt", "-n", namespace, "-o", "name") == ""  # nothing was created


def test_a_notification_url_in_clear_text_to_a_remote_host_is_never_called_and_loopback_is(
    cluster: Cluster, namespace: str, database: str
) -> None:
    """Two sinks of one target, both in plain http: the loopback one (development) is called; the remote one is
    refused at delivery, counted in ``status.notifications`` naming its Secret, never its URL. To see that nothing
    left for the remote host while staying on loopback, the operator's HTTP proxy is the receiver itself: a request
    for ``hooks.example.com`` would arrive there."""
    with receiver() as sink:
        for name, url in (("hook", sink.url("/local")), ("remote", "http://hooks.example.com/T0/B0/SECRETPATH")):
            cluster.plane.kubectl("create", "secret", "generic", name, "-n", namespace, f"--from-literal=url={url}")
            allow_secrets(cluster, namespace, name)
        apply(cluster, secret(namespace, "wrong"))  # analyses fail: analysisFailing is sent
        doc = target(namespace, database)
        doc["spec"]["notifications"] = {
            "analysisFailures": 1,
            "sinks": [
                {"type": "webhook", "urlSecret": {"name": "remote", "key": "url"}},
                {"type": "webhook", "urlSecret": {"name": "hook", "key": "url"}},
            ],
        }
        proxy = {"HTTP_PROXY": sink.url(""), "HTTPS_PROXY": sink.url(""), "NO_PROXY": "127.0.0.1,localhost"}
        with operators(cluster, namespace, "notify-https", **proxy) as start:
            start()
            apply(cluster, doc)
            wait_for(lambda: any(r["path"] == "/local" for r in sink.received), timeout=90, what="the loopback sink")
            state = wait_for(
                lambda: (
                    ((get(cluster, "pgt", "shop", "-n", namespace).get("status") or {}).get("notifications") or {})
                    if "webhook:remote" in str(get(cluster, "pgt", "shop", "-n", namespace).get("status") or {})
                    else None
                ),
                what="the refused delivery in the status",
            )
            log = start.log.read_text()  # type: ignore[attr-defined]
    assert "SECRETPATH" not in str(state)
    assert "hooks.example.com" not in str(state)
    assert "not loopback" in state["lastError"]
    assert state["failed"] >= 1
    assert all("SECRETPATH" not in r["path"] for r in sink.received)  # nothing went out for the remote host
    assert f"{namespace}/remote" in log
    assert "notification sink refused: not https" in log
    assert "SECRETPATH" not in log


def test_a_secret_the_operator_keeps_for_itself_is_refused_to_a_spec_even_when_opted_in(
    cluster: Cluster, namespace: str, database: str
) -> None:
    """A target author in the operator's namespace names the cluster's default notification sink's Secret (opted in,
    as the team labelled it) as the database credentials, with their own host: the operator would send the sink's
    URL to them as a password. Here that Secret even holds the database's real credentials, so reading it would make
    the target Ready: it stays Stalled, SecretNotAllowed, and the message says why."""
    apply(cluster, secret(namespace, "pw", name="team-sink"))  # opted in, and it would log in
    sinks = json.dumps([{"type": "webhook", "urlSecret": {"name": "team-sink", "key": "password"}}])
    env = {"OPTISCHEMA_NOTIFICATION_SINKS": sinks, "OPTISCHEMA_OPERATOR_NAMESPACE": namespace}
    with operators(cluster, namespace, "own-secrets", **env) as start:
        start()
        apply(cluster, target(namespace, database, secret="team-sink"))
        stalled = wait_for(lambda: condition(cluster, namespace, "Stalled"), what="Stalled")
        assert stalled["reason"] == "SecretNotAllowed"
        assert "never for a spec one its own settings name" in stalled["message"]
        ready = condition(cluster, namespace, "Ready")
        assert ready is not None
        assert ready["status"] == "False"
