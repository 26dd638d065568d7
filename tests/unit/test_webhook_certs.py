"""The webhook's certificate: made by the operator at start-up, or taken from a directory (a cert-manager Secret)."""

from __future__ import annotations

import shutil
from pathlib import Path

from optischema.handlers.operator import _webhook_server
from optischema.kube import certs
from optischema.settings import Settings


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


def test_on_loopback_the_operator_makes_its_own_certificate_for_the_address() -> None:
    server = _webhook_server(Settings(webhook_port=9443, webhook_host="127.0.0.1"))
    assert (server.addr, server.host) == ("127.0.0.1", "127.0.0.1")
    assert Path(str(server.certfile)).exists()
