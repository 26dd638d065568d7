"""TLS to the database, tried on a real PostgreSQL 15 serving a certificate of our own CA (``kube/certs.py``).

``verify-full`` is the default: the connection works with the CA from the target's ``sslRootCertSecret``, and is
refused, in one line naming what to check, with another CA or a host name the certificate does not carry; no
session is opened then (``pg_stat_activity`` shows none of ours). A crafted ``host`` that the API server would
refuse is refused again where the connection is built, before any packet leaves.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from devcluster import LocalPostgres
from optischema.analysis.errors import AnalysisError
from optischema.flows.target import check_target
from optischema.kube import certs
from optischema.postgres.connect import ConnectParams, connect
from tests.tls import tls_postgres

DAY = datetime.timedelta(days=1)


class Tls:
    def __init__(self, server: LocalPostgres, ca: str, other_ca: str) -> None:
        self.server, self.ca, self.other_ca = server, ca, other_ca


@pytest.fixture(scope="module")
def tls() -> Iterator[Tls]:
    """A PostgreSQL with ``ssl = on``, its certificate for ``localhost`` only (no IP address), signed by a CA of
    ours; password authentication over TLS only, so that an unencrypted attempt cannot log in either."""
    base = Path(tempfile.mkdtemp(prefix="optischema-tls-"))
    other_ca, _ = certs.new_ca("someone-else", lifetime=DAY)
    server, ca = tls_postgres(
        base, ["localhost"], hba=["hostssl all tls 127.0.0.1/32 scram-sha-256", "host all tls 127.0.0.1/32 reject"]
    )
    server.start()
    server.psql("CREATE ROLE tls LOGIN PASSWORD 'tls-pw'; GRANT pg_read_all_stats TO tls")
    server.psql("CREATE DATABASE shop")
    server.psql("CREATE EXTENSION pg_stat_statements", database="shop")
    try:
        yield Tls(server, ca, other_ca.decode())
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def spec(tls: Tls, host: str = "localhost", **connection: Any) -> dict[str, Any]:
    return {
        "connection": {
            "host": host,
            "port": tls.server.port,
            "database": "shop",
            "credentialsSecret": {"name": "db"},
            "sslRootCertSecret": {"name": "db-ca", "key": "ca.crt"},
            **connection,
        }
    }


def reader(ca: str) -> Any:
    """The Secrets as the operator would read them (opted in): credentials and the CA."""
    secrets = {"db": {"username": "tls", "password": "tls-pw"}, "db-ca": {"ca.crt": ca}}

    async def read(namespace: str, name: str) -> dict[str, str] | None:
        return secrets.get(name)

    return read


def our_sessions(tls: Tls) -> int:
    return int(tls.server.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tls'").strip() or 0)


async def test_verify_full_with_the_ca_from_the_secret_connects_over_tls(tls: Tls) -> None:
    check = await check_target("shop", spec(tls), reader(tls.ca))
    assert check.ready, check.message
    assert check.dsn is not None
    assert check.dsn.sslmode == "verify-full"
    conn = await connect(check.dsn)
    try:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("title", "host", "ca_of", "expected"),
    [
        ("a CA that did not sign the server's certificate", "localhost", "other", "unable to get local issuer"),
        ("a host name the certificate does not carry", "127.0.0.1", "ours", "IP address mismatch"),
    ],
    ids=["wrong-ca", "host-mismatch"],
)
async def test_verify_full_refuses_a_server_it_cannot_authenticate(
    tls: Tls, title: str, host: str, ca_of: str, expected: str
) -> None:
    before = our_sessions(tls)
    check = await check_target("shop", spec(tls, host), reader(tls.other_ca if ca_of == "other" else tls.ca))
    assert not check.ready, title
    assert check.stalled
    assert check.reason == "TLSVerificationFailed"
    assert "\n" not in check.message
    assert "Traceback" not in check.message
    assert expected in check.message
    assert "spec.connection.sslRootCertSecret" in check.message
    assert our_sessions(tls) == before  # no session was opened: the password was never sent


async def test_a_weaker_mode_is_used_only_when_written(tls: Tls) -> None:
    """``require`` without a CA encrypts without authenticating the server: it must be asked for by name."""
    written = spec(tls, "127.0.0.1", sslmode="require")
    del written["connection"]["sslRootCertSecret"]
    check = await check_target("shop", written, reader(tls.ca))
    assert check.ready, check.message
    unwritten = spec(tls, "127.0.0.1")
    del unwritten["connection"]["sslRootCertSecret"]
    refused = await check_target("shop", unwritten, reader(tls.ca))
    assert not refused.ready
    assert refused.reason == "TLSVerificationFailed"


async def test_disable_never_gets_a_password_to_a_server_demanding_tls(tls: Tls) -> None:
    check = await check_target("shop", spec(tls, "localhost", sslmode="disable"), reader(tls.ca))
    assert not check.ready
    assert check.reason == "AuthenticationFailed"  # pg_hba's reject: no cleartext session
    assert our_sessions(tls) == 0


@pytest.mark.parametrize(
    "host",
    ["db/postgres?sslmode=disable#", "localhost/postgres?sslmode=disable", "/tmp", "localhost sslmode=disable"],
)
async def test_a_crafted_host_is_refused_where_the_connection_is_built(tls: Tls, host: str) -> None:
    """The API server refuses it (CRD pattern); a spec that reached us anyway is refused again, before connecting:
    ``/tmp`` would be a Unix socket directory for asyncpg, a query string would override the database and TLS."""
    check = await check_target("shop", spec(tls, host), reader(tls.ca))
    assert not check.ready
    assert check.stalled
    assert check.reason == "InvalidSpec"
    assert "spec.connection.host" in check.message
    with pytest.raises(ValueError, match=r"spec\.connection\.host"):
        ConnectParams(host=host, port=tls.server.port, user="tls", password="tls-pw", database="shop")


async def test_the_connection_goes_to_the_database_named_not_one_a_host_could_smuggle(tls: Tls) -> None:
    """Keyword arguments: the database is what spec.connection.database says, whatever else the parts hold."""
    params = ConnectParams(
        host="localhost", port=tls.server.port, user="tls", password="tls-pw", database="shop", ca_pem=tls.ca
    )
    conn = await connect(params)
    try:
        assert await conn.fetchval("SELECT current_database()") == "shop"
    finally:
        await conn.close()
    assert "tls-pw" not in repr(params)
    assert "BEGIN CERTIFICATE" not in repr(params)
    with pytest.raises(asyncpg.InvalidCatalogNameError):  # a database name is only a name, never options
        await asyncpg.connect(**{**params.asyncpg_kwargs(), "database": "shop?sslmode=disable"})


async def test_the_schema_dump_reaches_the_target_with_the_same_tls_and_no_password_on_its_command_line(
    tls: Tls,
) -> None:
    """pg_dump (the sandbox's schema copy) gets the parameters through libpq's environment, the CA as a file it
    removes afterwards: verify-full holds there too."""
    from optischema.postgres.clone import CloneError, SchemaDump

    tls.server.psql("CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY); GRANT SELECT ON orders TO tls", "shop")
    params = ConnectParams(
        host="localhost", port=tls.server.port, user="tls", password="tls-pw", database="shop", ca_pem=tls.ca
    )
    dump = SchemaDump(15)
    try:
        await dump.take(params)
        assert "TABLE public orders" in dump.listing.read_text()
        with pytest.raises(CloneError, match="certificate verify failed"):
            await SchemaDump(15).take(
                ConnectParams(
                    host="localhost", port=tls.server.port, user="tls", password="tls-pw", database="shop",
                    ca_pem=tls.other_ca,
                )
            )  # fmt: skip
    finally:
        dump.remove()


async def test_verify_full_to_a_server_without_tls_says_so_and_never_falls_back(pg_server: LocalPostgres) -> None:
    """The session's server has no TLS: the default mode refuses it (no silent clear text), saying what to change."""
    spec = {"connection": {"host": "127.0.0.1", "port": pg_server.port, "database": "postgres",
                           "credentialsSecret": {"name": "db"}}}  # fmt: skip
    check = await check_target("shop", spec, reader(""))
    assert check.reason == "TLSUnavailable"
    assert check.stalled
    assert "sslmode is verify-full" in check.message
    assert "sslmode: disable" in check.message


async def test_a_ca_secret_that_has_not_opted_in_stalls_the_target_naming_it(tls: Tls) -> None:
    """The CA Secret is read like every other: one the reader does not return (not labelled, not listed) stalls."""
    secrets = {"db": {"username": "tls", "password": "tls-pw"}}

    async def read(namespace: str, name: str) -> dict[str, str] | None:
        return secrets.get(name)

    before = our_sessions(tls)
    check = await check_target("shop", spec(tls), read)
    assert check.reason == "SecretNotAllowed"
    assert check.stalled
    assert "Secret shop/db-ca does not exist or is not labelled optischema.io/allow=true" in check.message
    assert our_sessions(tls) == before  # nothing was attempted without the CA


async def test_the_schema_dump_ignores_a_libpq_service_or_address_in_the_operators_environment(
    tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad day: the operator's environment holds libpq variables of its own (a base image's ``PGSERVICE``, an
    admin's ``PGHOSTADDR``). libpq takes a service file's values over the environment's, so they would silently
    turn the target's verify-full into ``require`` with no CA (or send the password elsewhere): pg_dump gets the
    target's parameters and no other libpq variable, and another CA is still refused."""
    from optischema.postgres.clone import CloneError, SchemaDump

    tls.server.psql("CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY); GRANT SELECT ON orders TO tls", "shop")
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[weak]\nsslmode=require\nsslrootcert={tmp_path / 'none.crt'}\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGSERVICE", "weak")
    monkeypatch.setenv("PGOPTIONS", "-c default_transaction_read_only=off")
    dump = SchemaDump(15)
    try:
        with pytest.raises(CloneError, match="certificate verify failed"):
            await dump.take(
                ConnectParams(
                    host="localhost", port=tls.server.port, user="tls", password="tls-pw", database="shop",
                    ca_pem=tls.other_ca,
                )
            )  # fmt: skip
        assert not dump.listing.exists()  # nothing was dumped through the weaker service
    finally:
        dump.remove()
    monkeypatch.setenv("PGHOSTADDR", "192.0.2.1")  # TEST-NET-1: nothing answers there
    dump = SchemaDump(15)
    try:
        await dump.take(
            ConnectParams(
                host="localhost", port=tls.server.port, user="tls", password="tls-pw", database="shop", ca_pem=tls.ca
            )
        )
        assert "TABLE public orders" in dump.listing.read_text()
    finally:
        dump.remove()


@pytest.mark.parametrize(
    "garbage",
    [
        "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n",  # base64, not a certificate
        "-----BEGIN CERTIFICATE-----\nÉté\n-----END CERTIFICATE-----\n",  # not ASCII: the ssl module raised TypeError
        "BEGIN CERTIFICATE",
    ],
)
async def test_a_ca_secret_holding_garbage_stalls_the_target_naming_it_and_nothing_is_attempted(
    tls: Tls, garbage: str
) -> None:
    """A CA that cannot be read is the Secret's fault, for a person to fix: Stalled naming the Secret and key, never
    a crash of the reconciliation (a TypeError) nor a TLS failure retried every interval; no session opens."""
    before = our_sessions(tls)
    check = await check_target("shop", spec(tls), reader(garbage))
    assert not check.ready
    assert check.stalled
    assert check.reason == "SecretKeyMissing"
    assert "spec.connection.sslRootCertSecret" in check.message
    assert "shop/db-ca" in check.message
    assert "Z2FyYmFnZQ" not in check.message
    assert our_sessions(tls) == before


async def test_an_address_is_connected_to_while_tls_authenticates_the_host_name(tls: Tls) -> None:
    """``address`` (libpq's ``hostaddr``: a CloudNativePG instance's Pod IP, the operator's ``hostAddresses``)
    opens the socket; ``verify-full`` still checks the certificate against ``host``, never against the address: the
    name the certificate carries connects, another name at the same address is refused before the password goes."""
    named = ConnectParams(host="localhost", port=tls.server.port, user="tls", password="tls-pw", database="shop",
                          ca_pem=tls.ca, address="127.0.0.1")  # fmt: skip
    conn = await connect(named)
    try:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
    finally:
        await conn.close()
    before = our_sessions(tls)
    other = ConnectParams(host="shop-rw.team.svc", port=tls.server.port, user="tls", password="tls-pw",
                          database="shop", ca_pem=tls.ca, address="127.0.0.1")  # fmt: skip
    with pytest.raises(AnalysisError, match="Hostname mismatch") as refused:
        await connect(other)
    assert refused.value.reason == "TLSVerificationFailed"
    assert our_sessions(tls) == before
