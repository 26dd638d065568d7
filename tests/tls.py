"""What a TLS server presents, as a client that trusts only a given CA bundle sees it (the webhook tests)."""

from __future__ import annotations

import datetime
import shutil
import socket
import ssl
from pathlib import Path

from cryptography import x509

from devcluster import LocalPostgres
from optischema.kube import certs


def presented(port: int, ca_bundle: bytes) -> x509.Certificate:
    """The certificate behind 127.0.0.1:``port``, verified against ``ca_bundle`` and for 127.0.0.1: the handshake
    fails otherwise."""
    context = ssl.create_default_context(cadata=ca_bundle.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der)


def tls_postgres(
    base: Path, hosts: list[str], *, settings: dict[str, str] | None = None, hba: list[str] | None = None
) -> tuple[LocalPostgres, str]:
    """A PostgreSQL (not started) with ``ssl = on`` under ``base``, serving a certificate for ``hosts`` (names only)
    signed by a CA of its own; and that CA's PEM. The key files belong to the postgres user, as the server demands."""
    ca_cert, ca_key = certs.new_ca(f"{hosts[0]}-ca", lifetime=datetime.timedelta(days=1))
    cert, key = certs.new_serving_cert(ca_cert, ca_key, hosts=hosts, ips=[], lifetime=datetime.timedelta(days=1))
    keys = base / "tls"
    keys.mkdir()
    (keys / "server.crt").write_bytes(cert)
    (keys / "server.key").write_bytes(key)
    for path in (keys, keys / "server.crt", keys / "server.key"):
        shutil.chown(path, "postgres", "postgres")
    (keys / "server.key").chmod(0o600)
    server = LocalPostgres(
        base_dir=base / "pg",
        settings={"ssl": "on", "ssl_cert_file": str(keys / "server.crt"), "ssl_key_file": str(keys / "server.key"),
                  **(settings or {})},
        hba=hba or [],
    )  # fmt: skip
    shutil.chown(base, "postgres", "postgres")
    return server, ca_cert.decode()
