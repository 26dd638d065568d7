"""What a TLS server presents, as a client that trusts only a given CA bundle sees it (the webhook tests)."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509


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
