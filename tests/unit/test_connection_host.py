"""Where the operator connects is a host, not a DSN fragment; URLs that carry keys and prompts are https.

Table-driven: each host is checked by the model (what ``kubectl apply`` meets through the CRD's pattern, also
checked here with the pattern itself), by :class:`ConnectParams` (where the connection is built), and each URL by
the model and at delivery. The hostile cases are the ones that made the operator a deputy: a host that rewrote the
database and TLS of a formatted DSN, a Unix socket path, a user or port smuggled in.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from optischema.api import describe
from optischema.api.network import ENDPOINT_URL_PATTERN, HOST_PATTERN, endpoint_url_problem, host_problem
from optischema.api.target import Connection, LlmProvider
from optischema.llm.providers import Provider, ProviderError, complete, http_client
from optischema.notify.deliver import Notifier, Sink
from optischema.notify.messages import Event
from optischema.postgres.connect import ConnectParams

HOSTS_ACCEPTED = [
    "db",
    "orders-db-rw.shop.svc",
    "orders-db-rw.shop.svc.cluster.local.",
    "a" * 63 + ".example.com",
    "DB.Example.COM",
    "10.0.0.7",
    "127.0.0.1",
    "::1",
    "2001:db8::42",
    "fe80::1",
    "::ffff:10.0.0.1",
    "xn--bcher-kva.example",
]

HOSTS_REFUSED = [
    ("db/postgres?sslmode=disable#", "the DSN rewrite: database and TLS overridden"),
    ("db?sslmode=disable", "options in a query string"),
    ("db#", "a fragment"),
    ("db@evil", "a user part"),
    ("user:pw@db", "credentials"),
    ("db:5432", "a port"),
    ("db:evil", "a port-like suffix"),
    ("/var/run/postgresql", "a Unix socket directory (asyncpg reads a leading / as one)"),
    ("/tmp", "another socket directory"),
    ("db sslmode=disable", "a space: libpq keyword syntax"),
    (" db", "a leading space"),
    ("db\n", "a newline"),
    ("db\t", "a tab"),
    ("host=evil", "a libpq keyword"),
    ("dbé.example", "unicode"),
    ("ｄｂ", "fullwidth letters"),
    ("-db", "a leading hyphen"),
    ("db-", "a trailing hyphen"),
    ("db..example", "an empty label"),
    ("a" * 64 + ".example", "a label longer than 63"),
    ("a." * 127 + "b", "longer than 253"),
    ("", "empty"),
    ("999.1.1.1", "not an IPv4 address"),
    ("1.2.3", "a short dotted number"),
    ("[::1]", "brackets"),
    ("fe80::1%eth0", "a zone id"),
    ("2001:db8::g", "not IPv6"),
    ("db,evil", "a host list"),
    ("db;drop", "a semicolon"),
    ("db'", "a quote"),
]


@pytest.mark.parametrize("host", HOSTS_ACCEPTED)
def test_a_host_name_or_address_is_accepted_everywhere(host: str) -> None:
    assert host_problem(host) is None
    assert re.fullmatch(HOST_PATTERN, host), "the CRD's pattern must accept it too"
    Connection.model_validate({"host": host, "database": "d", "credentialsSecret": {"name": "s"}})
    ConnectParams(host=host, port=5432, user="u", password="p", database="d")


@pytest.mark.parametrize(("host", "why"), HOSTS_REFUSED, ids=[why for _, why in HOSTS_REFUSED])
def test_anything_else_in_host_is_refused_naming_the_field(host: str, why: str) -> None:
    assert host_problem(host) is not None, why
    with pytest.raises(ValidationError) as caught:
        Connection.model_validate({"host": host, "database": "d", "credentialsSecret": {"name": "s"}})
    messages = describe(caught.value, "spec.connection")
    assert any(m.startswith("spec.connection.host: ") for m in messages), messages
    with pytest.raises(ValueError, match=r"spec\.connection\.host"):
        ConnectParams(host=host, port=5432, user="u", password="p", database="d")


#: What the CRD's pattern alone refuses: all but IPv6-shaped strings, dotted numbers and over-long names, which
#: the model refuses (the CRD's maxLength takes the last).
PATTERN_REFUSED = [
    h for h, _ in HOSTS_REFUSED if h.count(":") < 2 and not re.fullmatch(r"[0-9.]+", h) and len(h) <= 253
]


@pytest.mark.parametrize("host", PATTERN_REFUSED)
def test_the_crds_pattern_refuses_what_is_not_a_host(host: str) -> None:
    assert re.fullmatch(HOST_PATTERN, host) is None


URLS = [
    ("https://api.openai.com/v1", None),
    ("https://vllm.ml.svc:8443/v1", None),
    ("http://127.0.0.1:8080/v1", None),
    ("http://127.3.4.5/v1", None),
    ("http://localhost:11434/v1", None),
    ("http://[::1]:8000/v1", None),
    ("http://vllm.ml.svc:8000/v1", "plain http to a host that is not loopback"),
    ("http://10.0.0.5/v1", "plain http to a host that is not loopback"),
    ("http://localhost.evil.com/v1", "plain http to a host that is not loopback"),
    # names the resolver may send to DNS: a pod's search list makes x.localhost the Service x of a namespace
    # "localhost" (x.localhost.svc.cluster.local); "localhost." is absolute, past /etc/hosts
    ("http://evil.localhost/v1", "plain http to a host that is not loopback"),
    ("http://evil.svc.localhost:8080/v1", "plain http to a host that is not loopback"),
    ("http://localhost./v1", "plain http to a host that is not loopback"),
    ("http://127.0.0.1.evil.com/v1", "plain http to a host that is not loopback"),
    ("http://evil.com#@127.0.0.1/", "plain http to a host that is not loopback"),
    ("http://localhost:80@evil.com/", "plain http to a host that is not loopback"),
    ("http://127.0.0.1@evil.com/", "plain http to a host that is not loopback"),
    ("ftp://files.example/x", "has scheme 'ftp'"),
    ("file:///etc/passwd", "has no host"),
    ("//example.com/v1", "has scheme '(none)'"),
    ("https:///v1", "has no host"),
    ("http://127.0.0.1:port/", "is not a URL"),
]


@pytest.mark.parametrize(("url", "problem"), URLS, ids=[u for u, _ in URLS])
def test_endpoint_urls_are_https_or_loopback_http(url: str, problem: str | None) -> None:
    found = endpoint_url_problem(url)
    if problem is None:
        assert found is None
        assert re.fullmatch(ENDPOINT_URL_PATTERN, url)
        LlmProvider.model_validate({"provider": "openaiCompatible", "model": "m", "baseURL": url})
        return
    assert found is not None
    assert problem in found
    assert "loopback" in found
    assert "development" in found
    with pytest.raises(ValidationError) as caught:
        LlmProvider.model_validate({"provider": "openaiCompatible", "model": "m", "baseURL": url})
    assert any(m.startswith("spec.llm.providers[0].baseURL: ") for m in describe(caught.value, "spec.llm.providers[0]"))


def test_the_crds_url_pattern_refuses_plain_http_to_a_remote_host() -> None:
    for url, problem in URLS:
        if problem and problem.startswith("plain http") and "#@" not in url:
            assert re.fullmatch(ENDPOINT_URL_PATTERN, url) is None, url


SSL_MODES: list[tuple[str, bool, Any]] = [
    ("disable", False, False),
    ("allow", False, "allow"),
    ("prefer", False, "prefer"),
    ("require", False, (ssl.CERT_NONE, False)),
    ("require", True, (ssl.CERT_REQUIRED, False)),
    ("verify-ca", True, (ssl.CERT_REQUIRED, False)),
    ("verify-full", True, (ssl.CERT_REQUIRED, True)),
    ("verify-full", False, (ssl.CERT_REQUIRED, True)),
]


@pytest.mark.parametrize(("mode", "with_ca", "expected"), SSL_MODES)
def test_each_sslmode_gives_asyncpg_what_libpq_would_do(mode: str, with_ca: bool, expected: Any) -> None:
    import datetime

    from optischema.kube import certs

    ca = certs.new_ca("t", lifetime=datetime.timedelta(days=1))[0].decode() if with_ca else None
    params = ConnectParams(host="db", port=5432, user="u", password="s3cret", database="d", sslmode=mode, ca_pem=ca)  # type: ignore[arg-type]
    context = params.ssl_context()
    if isinstance(expected, tuple):
        assert isinstance(context, ssl.SSLContext)
        assert (context.verify_mode, context.check_hostname) == expected
    else:
        assert context == expected
    kwargs = params.asyncpg_kwargs()
    assert set(kwargs) == {"host", "port", "user", "password", "database", "ssl"}  # never a dsn
    assert "s3cret" not in repr(params)


def test_verify_full_is_the_default() -> None:
    assert Connection.model_validate({"host": "db", "database": "d", "credentialsSecret": {"name": "s"}}).sslmode == (
        "verify-full"
    )
    assert ConnectParams(host="db", port=1, user="u", password="p", database="d").sslmode == "verify-full"


BODY = "internal: key sk-live-123 for tenant acme is over quota; see https://corp.example/secret-dashboard"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_no_provider_response_body_reaches_an_error(status: int) -> None:
    """Whoever answers at a provider's URL writes the body; the status and Events read by others get the code and a
    classification only."""
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text=BODY))
    provider = Provider("openaiCompatible", "m", base_url="https://llm.example/v1", attempts=1)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ProviderError) as caught:
            await complete(client, provider, "system", "prompt")
    message = str(caught.value)
    assert f"HTTP {status}" in message
    assert "sk-live" not in message
    assert "acme" not in message
    assert "corp.example" not in message


async def test_an_answer_of_the_wrong_shape_is_not_quoted() -> None:
    payload = {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "sk-live-123"}}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=payload))
    provider = Provider("openaiCompatible", "m", base_url="https://llm.example/v1", attempts=1)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ProviderError) as caught:
            await complete(client, provider, "system", "prompt")
    assert "sk-live" not in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("openaiCompatible", ["sk-live-123"]),
        ("openaiCompatible", {"choices": [{"message": "sk-live-123"}]}),
        ("openaiCompatible", {"choices": [{"message": {"content": "x"}}], "usage": "sk-live-123"}),
        ("openaiCompatible", {"choices": [{"message": {"content": {"sk-live-123": 1}}}]}),
        ("openaiCompatible", b'{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 1e400}}'),
        ("gemini", {"candidates": [{"content": {"parts": ["sk-live-123"]}}]}),
        ("gemini", {"candidates": [{"content": {"parts": [{"text": "x"}]}}], "usageMetadata": ["sk-live-123"]}),
    ],
)
async def test_a_hostile_answer_of_any_shape_is_a_provider_error_quoting_nothing(kind: str, payload: object) -> None:
    """Whoever answers at the URL writes the JSON: an answer that is a list, a string where an object belongs, text
    that is not a string or a number too large for an integer is one ProviderError naming no part of it (not an
    AttributeError or OverflowError escaping the failover with the answer's shape in its message)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()  # bytes: JSON httpx won't write
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    provider = Provider(kind, "m", base_url="https://llm.example/v1", api_key="k", attempts=1)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ProviderError, match="unexpected answer shape") as caught:
            await complete(client, provider, "system", "prompt")
    assert "sk-live" not in str(caught.value)


@pytest.mark.parametrize(
    "header", ["Wed, 21 Oct 2015 07:28:00 -0000", "Mon, 01 Jan 0001 00:00:00 +0000", "nan", "-1", "1e400"]
)
async def test_a_hostile_retry_after_is_a_provider_error_never_a_crash(header: str) -> None:
    """``Retry-After`` is the answering host's to write: an HTTP date with ``-0000`` (a naive datetime) raised a
    TypeError out of the failover, whatever it says the provider fails over with a ProviderError."""
    transport = httpx.MockTransport(lambda request: httpx.Response(503, headers={"Retry-After": header}))
    provider = Provider("openaiCompatible", "m", base_url="https://llm.example/v1", attempts=2, backoff=0.0)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ProviderError, match="HTTP 503"):
            await complete(client, provider, "system", "prompt")


async def test_a_provider_at_a_plain_http_remote_url_is_never_called() -> None:
    calls: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(200, json={}))
    provider = Provider("openaiCompatible", "m", base_url="http://llm.example/v1", api_key="sk-1", attempts=1)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ProviderError, match="baseURL is plain http to a host that is not loopback"):
            await complete(client, provider, "system", "prompt")
    assert calls == []


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("http://hooks.example/T000/B000/XXXXSECRETPATH", False),
        ("ftp://hooks.example/x", False),
        ("https://hooks.example/T000/B000/XXXXSECRETPATH", True),
        ("http://127.0.0.1:9/hook", True),
    ],
)
async def test_a_notification_url_must_be_https_or_loopback(url: str, sent: bool) -> None:
    calls: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(200))
    notifier = Notifier(attempts=1, transport=transport)
    event = Event("analysisFailing", "ns", "shop", "PostgresTarget", "shop", "uid-1", "summary")
    [delivery] = await notifier.send(event, [Sink("webhook", url, name="webhook:hook")], pii_safe=True)
    assert bool(calls) is sent
    assert delivery.ok is sent
    if not sent:
        assert delivery.attempts == 0
        assert delivery.error is not None
        assert "https" in delivery.error
        assert "loopback" in delivery.error
        assert "SECRETPATH" not in delivery.error
        assert "hooks.example" not in delivery.error


class _Listener:
    """A real HTTP/1.1 listener on the loopback interface that answers 200 and keeps the request lines it got."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> _Listener:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        if length:
            await reader.readexactly(int(length.group(1)))
        self.requests.append(head.split(b"\r\n")[0])
        body = b'{"choices": [{"message": {"content": "ok"}}]}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()


async def test_a_loopback_http_url_never_goes_through_the_environment_s_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain http is accepted only because a loopback URL never leaves the pod; with ``HTTP_PROXY`` in the operator's
    environment (a corporate cluster) httpx sent it, API key, prompt and webhook path in clear text, to the proxy
    across the network (which would ask its own loopback). Both the LLM and the notification clients go direct."""
    async with _Listener() as proxy, _Listener() as model, _Listener() as hook:
        for variable in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        provider = Provider("openaiCompatible", "m", base_url=f"http://127.0.0.1:{model.port}/v1", api_key="sk-1",
                            attempts=1)  # fmt: skip
        async with http_client() as client:
            reply = await complete(client, provider, "system", "prompt")
        notifier = Notifier(attempts=1)
        event = Event("analysisFailing", "ns", "shop", "PostgresTarget", "shop", "uid-1", "summary")
        sink = Sink("webhook", f"http://127.0.0.1:{hook.port}/T000/SECRETPATH", name="webhook:hook")
        [delivery] = await notifier.send(event, [sink], pii_safe=True)
    assert proxy.requests == []  # the proxy saw nothing
    assert reply.text == "ok"
    assert model.requests == [b"POST /v1/chat/completions HTTP/1.1"]
    assert delivery.ok
    assert hook.requests == [b"POST /T000/SECRETPATH HTTP/1.1"]
