"""The live endpoint's answer and how ``top`` merges it with the history (pure parts): what leaves the operator
(workload statements only, redacted), a malformed answer named, the live sample as the newest interval of a frame,
where the token comes from and which URLs it may be sent to."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from kubernetes import client

from optischema.cli import top
from optischema.cli.top_live import _safe_url, token_of
from optischema.handlers.live import token_of as request_token
from optischema.reports import live

from .test_plugin_parts import CHANGES, RECOMMENDATIONS, SLOW, T0, TARGET, days

NOW = T0 + timedelta(minutes=40)

#: (query id, text, calls, total ms, rows) as pg_stat_statements gives them -> in the answer (text) or left out.
ROWS: list[tuple[tuple[str, str, int, float, int], str | None]] = [
    (("1", SLOW, 2500, 25000.0, 2500), SLOW),
    (("3", "SELECT /* user=alice@example.com */ count(*) FROM t WHERE id = $1", 9, 1.0, 9),
     "SELECT count(*) FROM t WHERE id = $1"),
    (("4", "ALTER ROLE app PASSWORD 'hunter2'", 1, 900.0, 0), None),  # utility: kept as written, never sent
    (("5", "VACUUM ANALYZE t", 1, 800.0, 0), None),
    (("6", "UPDATE t SET note = 'kept literal' WHERE id = $1", 3, 2.0, 3), "UPDATE t SET note = '…' WHERE id = $1"),
]  # fmt: skip


def test_the_answer_carries_workload_statements_only_redacted() -> None:
    body = live.answer("apps", "shop", NOW, [r for r, _ in ROWS], hidden=2)
    sent = {s["queryId"]: s["text"] for s in body["statements"]}
    assert sent == {r[0]: text for r, text in ROWS if text is not None}
    assert [s["queryId"] for s in body["statements"]] == ["1", "6", "3"]  # by total time
    assert (body["namespace"], body["name"], body["at"], body["hidden"]) == ("apps", "shop", "2026-11-30T10:40:00Z", 2)
    assert "hunter2" not in str(body)
    assert "alice@example.com" not in str(body)


def test_the_answer_is_cut_at_its_limit() -> None:
    body = live.answer("apps", "shop", NOW, [r for r, _ in ROWS], limit=1)
    assert [s["queryId"] for s in body["statements"]] == ["1"]


def test_a_sample_reads_back_what_the_answer_wrote() -> None:
    point, texts = live.sample(live.answer("apps", "shop", NOW, [ROWS[0][0]]))
    assert point.at == NOW
    assert [(c.query_id, c.calls, c.total_ms) for c in point.counters] == [("1", 2500, 25000.0)]
    assert texts == {"1": SLOW}


MALFORMED: list[tuple[Any, str]] = [
    ([], "not a JSON object"),
    ({"v": 2}, "version 2"),
    ({"v": 1, "at": "2026-11-30T10:40:00Z"}, "malformed"),
    ({"v": 1, "at": "yesterday", "statements": []}, "malformed"),
    ({"v": 1, "at": "2026-11-30T10:40:00Z", "statements": [{"queryId": "1", "calls": "many", "totalMs": 1}]},
     "malformed"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), MALFORMED)
def test_a_malformed_answer_is_named(body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        live.sample(body)


def test_the_live_sample_is_the_newest_interval_of_the_frame() -> None:
    """History up to 10:30; live at 10:40: 600 more calls of the slow statement in 600 s, at 5 ms each."""
    rows = [("1", SLOW, 2500, 25000.0, 2500), ("2", "SELECT 1", 1850, 185.0, 1850)]
    sample = live.sample(live.answer("apps", "shop", NOW, rows))
    merged = live.with_samples(days(), [sample])
    text = top.frame(TARGET, merged, RECOMMENDATIONS, CHANGES, now=NOW, limit=10, source="live: from the operator")
    assert "interval 10:30:00 → 10:40:00 UTC" in text
    lines = text.splitlines()
    assert lines[-1] == "live: from the operator"  # last: the header's lines stay where scripts read them
    assert lines[3].split()[:2] == ["CALLS/S", "MEAN"]
    (line,) = [row for row in text.splitlines() if row.endswith(SLOW)]
    assert line.split()[:3] == ["1.00", "5.00", "100.0%"]  # the fast one did not run since: not shown
    assert "pending: shop-ix-1 (+97%)" in text  # recommendations still beside it


def test_no_sample_leaves_the_history_as_it_is() -> None:
    assert live.with_samples(days(), []) == days()


def _client(api_key: dict[str, str], prefix: dict[str, str] | None = None) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.api_key = api_key
    configuration.api_key_prefix = prefix or {}
    return client.ApiClient(configuration)


TOKENS = [
    ({"authorization": "Bearer abc"}, None, "abc"),
    ({"BearerToken": "Bearer abc"}, None, "abc"),  # as kubernetes.config.load_kube_config stores it
    ({"authorization": "abc"}, {"authorization": "Bearer"}, "abc"),
    ({}, None, None),  # a client certificate: no token to forward
    ({"authorization": "Basic dTpw"}, None, None),
]


@pytest.mark.parametrize(("key", "prefix", "token"), TOKENS)
def test_the_token_forwarded_is_the_kubeconfig_s_bearer_token(
    key: dict[str, str], prefix: dict[str, str] | None, token: str | None
) -> None:
    assert token_of(_client(key, prefix)) == token


URLS = [
    ("http://127.0.0.1:8082", True),
    ("http://localhost:8082/", True),
    ("https://live.example", True),
    ("http://10.0.0.1:8082", False),  # the token would cross the network in clear
    ("http://live.example", False),
    ("file:///etc/passwd", False),
]


@pytest.mark.parametrize(("url", "safe"), URLS)
def test_a_direct_url_gets_the_token_only_over_tls_or_loopback(url: str, safe: bool) -> None:
    assert _safe_url(url) is safe


REQUESTS = [
    ({"X-OptiSchema-Token": "abc"}, "abc"),
    ({"Authorization": "Bearer abc"}, "abc"),
    ({"X-OptiSchema-Token": "abc", "Authorization": "Bearer other"}, "abc"),
    ({"Authorization": "Basic abc"}, None),
    ({"Authorization": "Bearer "}, None),
    ({"X-Remote-User": "admin"}, None),  # a claimed identity is no token
    ({}, None),
]


@pytest.mark.parametrize(("headers", "token"), REQUESTS)
def test_the_endpoint_reads_the_token_from_the_plugin_s_header_or_authorization(
    headers: dict[str, str], token: str | None
) -> None:
    assert request_token(make_mocked_request("GET", "/targets/a/b/top", headers=headers)) == token
