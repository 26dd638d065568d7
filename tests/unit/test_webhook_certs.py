"""The webhook's certificate: when it is renewed and what the bundle trusts (pure decisions, table-driven), how
replicas agree on one bundle, and the server presenting a renewed certificate without a restart (a real TLS
listener on loopback: the store in memory, or a mounted directory as cert-manager leaves it)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from optischema.handlers.operator import _webhook_server
from optischema.handlers.webhookserver import DirectorySource, RotatingWebhookServer, SharedSource, make_server
from optischema.kube import certs
from optischema.kube.webhookbundle import Bundle, Lifetimes, advance, cas, decide, serial, trusted_bundle
from optischema.kube.webhookcerts import MemoryStore, decoded, server_time, settle
from optischema.postgres.local import free_port
from optischema.settings import Settings
from tests.tls import presented

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
LIFE = Lifetimes(ca=90 * DAY, cert=30 * DAY)
HOSTS = {"hosts": ["opt-webhook.ops.svc"], "ips": []}


def made(at: datetime.datetime = T0, lifetimes: Lifetimes = LIFE) -> Bundle:
    return advance(None, decide(None, now=at, lifetimes=lifetimes, **HOSTS), now=at, lifetimes=lifetimes, **HOSTS)


def rotated(bundle: Bundle, at: datetime.datetime) -> Bundle:
    decision = decide(bundle, now=at, lifetimes=LIFE, **HOSTS)
    assert decision.action == "rotate-ca", decision
    return advance(bundle, decision, now=at, lifetimes=LIFE, **HOSTS)


def foreign_cert(bundle: Bundle) -> Bundle:
    """tls.crt/tls.key from another CA than ca.crt (e.g. a hand-edited Secret)."""
    other_ca = certs.new_ca("other", lifetime=LIFE.ca, now=T0)
    cert, key = certs.new_serving_cert(*other_ca, **HOSTS, lifetime=LIFE.cert, now=T0)
    return bundle.model_copy(update={"tls_crt": cert.decode(), "tls_key": key.decode()})


def foreign_ca_key(bundle: Bundle) -> Bundle:
    return bundle.model_copy(update={"ca_key": certs.new_ca("other", lifetime=LIFE.ca, now=T0)[1].decode()})


def encrypted_key(bundle: Bundle) -> Bundle:
    """tls.key as a PEM encrypted with a password (the operator has none): loading it raises TypeError."""
    key = serialization.load_pem_private_key(bundle.tls_key.encode(), password=None)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    return bundle.model_copy(update={"tls_key": pem.decode()})


def serving_as_ca(bundle: Bundle) -> Bundle:
    """ca.crt/ca.key replaced by the serving pair: a key that matches, a certificate that may sign nothing (the API
    server would refuse every certificate it signed, and with failurePolicy Fail every approval)."""
    return bundle.model_copy(update={"ca_crt": bundle.tls_crt, "ca_key": bundle.tls_key})


def with_expired_ca(bundle: Bundle) -> Bundle:
    """A bundle still listing a CA that expired on day 90."""
    return bundle.model_copy(update={"ca_bundle": bundle.ca_bundle + made(T0).ca_crt})


DECISIONS: list[tuple[str, Any, datetime.datetime, dict[str, list[str]], str]] = [
    ("nothing in the Secret yet", lambda: None, T0, HOSTS, "create"),
    ("fresh", made, T0 + DAY, HOSTS, "keep"),
    ("certificate at 60% of its life", made, T0 + 18 * DAY, HOSTS, "keep"),
    ("certificate past 2/3 of its life", made, T0 + 21 * DAY, HOSTS, "renew-cert"),
    ("certificate expired", made, T0 + 31 * DAY, HOSTS, "renew-cert"),
    ("CA past 2/3 of its life", made, T0 + 61 * DAY, HOSTS, "rotate-ca"),
    ("another host name", made, T0 + DAY, {"hosts": ["new-webhook.ops.svc"], "ips": []}, "renew-cert"),
    ("an address added", made, T0 + DAY, {"hosts": ["opt-webhook.ops.svc"], "ips": ["10.0.0.7"]}, "renew-cert"),
    ("tls.crt signed by another CA", lambda: foreign_cert(made()), T0 + DAY, HOSTS, "renew-cert"),
    ("ca.key of another CA", lambda: foreign_ca_key(made()), T0 + DAY, HOSTS, "create"),
    ("unreadable", lambda: made().model_copy(update={"tls_crt": "-----BEGIN nonsense"}), T0, HOSTS, "create"),
    # Edited by someone else: nothing of it is trusted, a new bundle is made (never an exception that stops the
    # server from starting or leaves it refreshing nothing until the certificate expires).
    ("tls.key encrypted", lambda: encrypted_key(made()), T0 + DAY, HOSTS, "create"),
    ("ca.crt not a CA (the serving pair pasted in)", lambda: serving_as_ca(made()), T0 + DAY, HOSTS, "create"),
    ("bundle holds an expired CA", lambda: with_expired_ca(made(T0 + 100 * DAY)), T0 + 101 * DAY, HOSTS, "prune"),
    ("bundle lacks the current CA", lambda: made().model_copy(update={"ca_bundle": made().ca_crt}), T0, HOSTS, "prune"),
]


@pytest.mark.parametrize(("title", "bundle", "at", "names", "action"), DECISIONS, ids=[d[0] for d in DECISIONS])
def test_what_is_due(title: str, bundle: Any, at: datetime.datetime, names: dict[str, list[str]], action: str) -> None:
    assert decide(bundle(), now=at, lifetimes=LIFE, **names).action == action


def test_a_renewed_certificate_keeps_its_ca_and_names_the_hosts() -> None:
    first = made()
    at = T0 + 21 * DAY
    renewed = advance(first, decide(first, now=at, lifetimes=LIFE, **HOSTS), now=at, lifetimes=LIFE, **HOSTS)
    assert (renewed.ca_crt, renewed.ca_key, renewed.ca_bundle) == (first.ca_crt, first.ca_key, first.ca_bundle)
    assert serial(renewed.tls_crt) != serial(first.tls_crt)
    cert = x509.load_pem_x509_certificate(renewed.tls_crt.encode())
    assert cert.not_valid_after_utc == at + 30 * DAY
    assert decide(renewed, now=at, lifetimes=LIFE, **HOSTS).action == "keep"


def test_a_rotated_ca_is_trusted_next_to_the_old_one_until_that_one_expires() -> None:
    first = made()
    second = rotated(first, T0 + 61 * DAY)
    assert cas(second.ca_bundle) == [serial(second.ca_crt), serial(first.ca_crt)]  # new first, old kept
    # the old CA's certificate (a replica that has not reloaded yet) and the new one both verify against it
    trusted = x509.load_pem_x509_certificates(second.ca_bundle.encode())
    for leaf in (first.tls_crt, second.tls_crt):
        cert = x509.load_pem_x509_certificate(leaf.encode())
        assert any(cert.issuer == ca.subject and _signed_by(cert, ca) for ca in trusted)
    assert decide(second, now=T0 + 62 * DAY, lifetimes=LIFE, **HOSTS).action == "keep"
    # once the old CA has expired it leaves the bundle, with the next renewal or on its own (prune)
    at = T0 + 91 * DAY
    decision = decide(second, now=at, lifetimes=LIFE, **HOSTS)
    assert decision.action == "renew-cert"
    renewed = advance(second, decision, now=at, lifetimes=LIFE, **HOSTS)
    assert cas(renewed.ca_bundle) == [serial(second.ca_crt)]
    stale = with_expired_ca(made(T0 + 100 * DAY))
    decision = decide(stale, now=T0 + 101 * DAY, lifetimes=LIFE, **HOSTS)
    assert decision.action == "prune"
    pruned = advance(stale, decision, now=T0 + 101 * DAY, lifetimes=LIFE, **HOSTS)
    assert cas(pruned.ca_bundle) == [serial(stale.ca_crt)]
    assert (pruned.tls_crt, pruned.ca_crt, pruned.ca_key) == (stale.tls_crt, stale.ca_crt, stale.ca_key)


def test_a_serving_certificate_never_outlives_its_ca_nor_renews_in_a_loop() -> None:
    short_ca = Lifetimes(ca=10 * DAY, cert=30 * DAY)  # a certificate asked to live longer than its CA
    bundle = made(lifetimes=short_ca)
    cert = x509.load_pem_x509_certificate(bundle.tls_crt.encode())
    ca = x509.load_pem_x509_certificate(bundle.ca_crt.encode())
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc
    assert decide(bundle, now=T0 + DAY, lifetimes=short_ca, **HOSTS).action == "keep"


def test_a_bundle_unreadable_or_of_a_foreign_key_does_not_keep_trusting_what_it_held() -> None:
    broken = foreign_ca_key(made())
    fresh = advance(broken, decide(broken, now=T0, lifetimes=LIFE, **HOSTS), now=T0, lifetimes=LIFE, **HOSTS)
    assert cas(fresh.ca_bundle) == [serial(fresh.ca_crt)]  # the old CA is not carried over


def test_a_secret_holding_bytes_that_are_not_text_reads_as_no_bundle_and_is_made_again() -> None:
    """Someone wrote binary into the Secret: read as no bundle (a new one is written over it), not a
    UnicodeDecodeError that stopped the start and, later, every refresh until the certificate expired."""
    data = {key: base64.b64encode(value.encode()).decode() for key, value in made().to_data().items()}
    data["tls.key"] = base64.b64encode(b"\xff\xfe\x00garbage").decode()
    read = decoded(data)
    assert "tls.key" not in read
    assert read["tls.crt"].startswith("-----BEGIN CERTIFICATE")
    assert Bundle.from_data(read) is None
    assert decide(Bundle.from_data(read), now=T0, lifetimes=LIFE, **HOSTS).action == "create"
    assert decoded({"ca.crt": "not base64 at all!"}) == {}


def test_the_trusted_bundle_lists_each_ca_once_and_drops_expired_ones() -> None:
    old, current = made(), made()
    twice = trusted_bundle(current.ca_crt, current.ca_crt + old.ca_crt + old.ca_crt, T0)
    assert cas(twice) == [serial(current.ca_crt), serial(old.ca_crt)]
    assert cas(trusted_bundle(current.ca_crt, old.ca_crt, T0 + 91 * DAY)) == [serial(current.ca_crt)]


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:
        return False
    return True


# -- replicas agree: the first write wins, the others serve what it wrote ---------------------------------------


class RacingStore(MemoryStore):
    """Both replicas read before either writes (the store yields to the event loop on each read)."""

    async def read(self) -> tuple[Bundle | None, str | None]:
        found = await super().read()
        await asyncio.sleep(0.01)
        return found


def test_two_replicas_starting_at_once_serve_one_bundle() -> None:
    store = RacingStore()

    async def both() -> list[Bundle]:
        now = lambda: T0  # noqa: E731
        return list(await asyncio.gather(*(settle(store, now=now, lifetimes=LIFE, **HOSTS) for _ in range(2))))

    first, second = asyncio.run(both())
    assert first == second == store.bundle
    assert store.version == 1  # one write: the loser read the winner's bundle instead of writing its own


def test_a_due_bundle_is_renewed_once_by_whoever_notices_first() -> None:
    store = RacingStore()
    store.bundle, store.version = made(), 1
    later = lambda: T0 + 21 * DAY  # noqa: E731

    async def both() -> list[Bundle]:
        return list(await asyncio.gather(*(settle(store, now=later, lifetimes=LIFE, **HOSTS) for _ in range(2))))

    first, second = asyncio.run(both())
    assert first == second == store.bundle
    assert store.version == 2  # one renewal, not two


class ServerClockStore(MemoryStore):
    """The store as the API server answers it: with the server's time (the ``Date`` of its response)."""

    def __init__(self, server_now: datetime.datetime) -> None:
        super().__init__()
        self.server_now_value = server_now

    def server_now(self) -> datetime.datetime | None:
        return self.server_now_value


def test_a_replica_whose_clock_runs_ahead_decides_in_the_api_server_s_time() -> None:
    """A replica's clock 10 days ahead: it would rotate a CA that is not due and write certificates valid only from
    its own "now" (past the 5 minutes backdated), which the API server refuses as not yet valid: with
    failurePolicy Fail, every approval. The API server's clock decides instead."""
    ahead = lambda: T0 + 70 * DAY  # noqa: E731  (the CA would be past 2/3 of its life)
    store = ServerClockStore(T0 + DAY)
    before = made()
    store.bundle, store.version = before, 1
    kept = asyncio.run(settle(store, now=ahead, lifetimes=LIFE, **HOSTS))
    assert kept == before
    assert store.version == 1  # nothing rotated, nothing written
    fresh = ServerClockStore(T0)
    created = asyncio.run(settle(fresh, now=ahead, lifetimes=LIFE, **HOSTS))
    for pem in (created.ca_crt, created.tls_crt):
        assert x509.load_pem_x509_certificate(pem.encode()).not_valid_before_utc <= T0  # valid for the API server


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Date": "Thu, 01 Jan 2026 00:00:00 GMT"}, T0),
        ({"date": "Thu, 01 Jan 2026 00:00:00 GMT"}, T0),
        ({}, None),
        (None, None),
        ({"Date": "not a date"}, None),
    ],
)
def test_the_api_server_s_time_is_read_from_its_date_header(headers: Any, expected: Any) -> None:
    assert server_time(headers) == expected


# -- the server: a renewed certificate presented without a restart -----------------------------------------------


class Running:
    """The server run as kopf runs it (a task consuming its client configs), stopped on leaving."""

    def __init__(self, server: RotatingWebhookServer) -> None:
        self.server, self.configs = server, asyncio.Queue[Any]()

    async def __aenter__(self) -> Running:
        async def fn(*_: Any, **__: Any) -> Any:
            return {}

        async def consume() -> None:
            async for config in self.server(fn):  # type: ignore[arg-type]
                await self.configs.put(config)

        self.task = asyncio.ensure_future(consume())
        return self

    async def next_config(self, timeout: float = 5) -> Any:
        return await asyncio.wait_for(self.configs.get(), timeout)

    async def __aexit__(self, *_: Any) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def test_the_server_presents_a_renewed_certificate_on_the_same_socket() -> None:
    port = free_port()
    store = MemoryStore()
    seconds = Lifetimes(ca=datetime.timedelta(seconds=60), cert=datetime.timedelta(seconds=3))
    server = make_server(
        source=SharedSource(store, lifetimes=seconds, hosts=[], ips=["127.0.0.1"]),
        configurations=None,
        check_seconds=0.2,
        grace_seconds=0,
        host="127.0.0.1",
        port=port,
    )

    async def scenario() -> set[int]:
        async with Running(server) as running:
            config = await running.next_config()
            assert config["url"] == f"https://127.0.0.1:{port}"
            trusted = base64.b64decode(config["caBundle"])
            serials = set()
            for _ in range(25):  # 5 s: the 3 s certificate is renewed at 2 s, then again at 4 s
                cert = await asyncio.to_thread(presented, port, trusted)
                serials.add(cert.serial_number)
                await asyncio.sleep(0.2)
            assert running.configs.empty()  # the same CA throughout: kopf is not asked to rewrite anything
        return serials

    serials = asyncio.run(scenario())
    assert len(serials) >= 2  # renewed while serving, every handshake verified against the one CA bundle


def test_a_mounted_certificate_renewed_by_cert_manager_is_served_without_a_restart(tmp_path: Path) -> None:
    mounted, port = tmp_path / "mounted", free_port()
    mounted.mkdir()

    def issue(stem: str) -> bytes:
        ca = certs.make_ca(tmp_path, f"issuer-{stem}")
        cert, key = certs.make_serving_cert(tmp_path, stem, ca, hosts=[], ips=["127.0.0.1"])
        for source, name in ((cert, "tls.crt"), (key, "tls.key"), (ca[0], "ca.crt")):
            shutil.copy(source, mounted / name)
        return ca[0].read_bytes()

    first_ca = issue("first")
    server = make_server(
        source=DirectorySource(mounted),
        configurations=None,
        check_seconds=0.2,
        grace_seconds=0,
        host="127.0.0.1",
        port=port,
    )

    async def scenario() -> tuple[list[Any], x509.Certificate, x509.Certificate]:
        async with Running(server) as running:
            first_config = await running.next_config()
            before = await asyncio.to_thread(presented, port, first_ca)
            second_ca = issue("second")  # cert-manager renewed the Secret, the kubelet updated the files
            second_config = await running.next_config()  # kopf's managed configuration is told the new CA
            await asyncio.sleep(0.5)
            after = await asyncio.to_thread(presented, port, second_ca)
        return [first_config, second_config, second_ca], before, after

    (first_config, second_config, second_ca), before, after = asyncio.run(scenario())
    assert base64.b64decode(second_config["caBundle"]) == second_ca != base64.b64decode(first_config["caBundle"])
    assert before.serial_number != after.serial_number


def test_a_given_certificate_is_used_and_the_server_listens_on_every_interface_behind_a_service(tmp_path: Path) -> None:
    ca = certs.make_ca(tmp_path, "issuer")
    cert, key = certs.make_serving_cert(tmp_path, "serving", ca, hosts=["opt-webhook.ops.svc"], ips=[])
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    for source, name in ((cert, "tls.crt"), (key, "tls.key"), (ca[0], "ca.crt")):
        shutil.copy(source, mounted / name)
    server = _webhook_server(
        Settings(webhook_port=9443, webhook_host="opt-webhook.ops.svc", webhook_cert_dir=str(mounted))
    )
    assert (server.certfile, server.pkeyfile, server.cafile) == tuple(
        str(mounted / n) for n in ("tls.crt", "tls.key", "ca.crt")
    )
    assert (server.addr, server.host) == ("0.0.0.0", "opt-webhook.ops.svc")
    assert isinstance(server.source, DirectorySource)
    assert server.configurations is None  # cert-manager's CA injector keeps the caBundle


def test_on_loopback_the_operator_makes_its_own_certificate_for_the_address() -> None:
    server = _webhook_server(Settings(webhook_port=9443, webhook_host="127.0.0.1"))
    assert (server.addr, server.host) == ("127.0.0.1", "127.0.0.1")
    material = asyncio.run(server.source.current())
    cert = x509.load_pem_x509_certificate(material.cert)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_a_mounted_certificate_without_ca_crt_leaves_the_ca_bundle_to_the_api_servers_roots(tmp_path: Path) -> None:
    ca = certs.make_ca(tmp_path, "public-issuer")
    cert, key = certs.make_serving_cert(tmp_path, "serving", ca, hosts=["opt-webhook.ops.svc"], ips=[])
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    shutil.copy(cert, mounted / "tls.crt")
    shutil.copy(key, mounted / "tls.key")  # an ACME issuer's Secret has no ca.crt
    material = asyncio.run(DirectorySource(mounted).current())
    assert material.ca_bundle == b""
    server = make_server(
        source=DirectorySource(mounted), configurations=None, check_seconds=60, grace_seconds=0, host="h", port=1
    )
    assert "caBundle" not in server._client_config(1, material.ca_bundle)


def test_a_mounted_key_that_does_not_match_its_certificate_leaves_the_previous_one_served(tmp_path: Path) -> None:
    mounted, port = tmp_path / "mounted", free_port()
    mounted.mkdir()
    ca = certs.make_ca(tmp_path, "issuer")
    first, first_key = certs.make_serving_cert(tmp_path, "first", ca, hosts=[], ips=["127.0.0.1"])
    second, second_key = certs.make_serving_cert(tmp_path, "second", ca, hosts=[], ips=["127.0.0.1"])
    for source, name in ((first, "tls.crt"), (first_key, "tls.key"), (ca[0], "ca.crt")):
        shutil.copy(source, mounted / name)
    server = make_server(
        source=DirectorySource(mounted), configurations=None, check_seconds=0.2, grace_seconds=0, host="127.0.0.1",
        port=port,
    )  # fmt: skip
    serial_of = lambda path: x509.load_pem_x509_certificate(path.read_bytes()).serial_number  # noqa: E731

    async def scenario() -> list[int]:
        seen = []
        async with Running(server) as running:
            await running.next_config()
            seen.append((await asyncio.to_thread(presented, port, ca[0].read_bytes())).serial_number)
            shutil.copy(second, mounted / "tls.crt")  # read mid-update: the new certificate with the old key
            await asyncio.sleep(1)
            seen.append((await asyncio.to_thread(presented, port, ca[0].read_bytes())).serial_number)
            shutil.copy(second_key, mounted / "tls.key")  # the update completes
            await asyncio.sleep(1)
            seen.append((await asyncio.to_thread(presented, port, ca[0].read_bytes())).serial_number)
        return seen

    assert asyncio.run(scenario()) == [serial_of(first), serial_of(first), serial_of(second)]
