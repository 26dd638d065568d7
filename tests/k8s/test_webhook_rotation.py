"""Webhook certificates that last, on the real API server: two operator replicas share one CA through a Secret,
serve behind one address (the same port, as Pods behind a Service), and keep the chart's webhook configuration's
caBundle equal to the Secret's bundle. A certificate made to live seconds is renewed, and its CA rotated, while
approvals go through the webhook (``failurePolicy: Fail``: a webhook the API server cannot verify refuses them).

The configurations are the chart's own template (``helm template``), in URL mode on loopback as everywhere in this
tier (the embedded cluster's Services do not route to loopback Pods).
"""

from __future__ import annotations

import base64
import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from devcluster.cluster import Cluster
from optischema.kube import certs
from optischema.postgres.local import free_port
from tests.tls import presented

from .conftest import LOGS, apply, get, operator_env, wait_for
from .test_chart_install import helm_binary
from .test_decisions import create, patch, recommendation

ROOT = Path(__file__).resolve().parents[2]


class Webhook:
    """The chart's configurations applied for one release, and the replicas serving them."""

    def __init__(self, cluster: Cluster, namespace: str, port: int, release: str | None) -> None:
        """``release`` None: no chart, kopf manages its own configuration (development)."""
        self.cluster, self.namespace, self.port, self.release = cluster, namespace, port, release
        self.name = f"{release}.optischema.io" if release else "optischema.io"
        self.replicas: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def configuration(self, kind: str = "mutatingwebhookconfiguration") -> dict[str, Any]:
        found: dict[str, Any] = get(self.cluster, kind, self.name)
        return found

    def ca_bundles(self) -> set[bytes]:
        return {base64.b64decode(w["clientConfig"].get("caBundle", "")) for w in self.configuration()["webhooks"]}

    def secret(self) -> dict[str, str]:
        data = get(self.cluster, "secret", "webhook-ca", "-n", self.namespace)["data"]
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def start(self, replica: str, **env: str) -> subprocess.Popen[bytes]:
        LOGS.mkdir(exist_ok=True)
        self.logs[replica] = LOGS / f"rotation-{replica}-{self.namespace}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "optischema.cli.main", "run", "-n", self.namespace],
            env=operator_env(
                self.cluster,
                OPTISCHEMA_WEBHOOK_PORT=str(self.port),  # both replicas: the kernel spreads connections (reuse_port)
                OPTISCHEMA_WEBHOOK_HOST="127.0.0.1",
                OPTISCHEMA_WEBHOOK_SECRET="webhook-ca",
                **({"OPTISCHEMA_WEBHOOK_CONFIGURATION": self.name} if self.release else {}),
                OPTISCHEMA_OPERATOR_NAMESPACE=self.namespace,
                OPTISCHEMA_OPERATOR_IDENTITY="admin",
                OPTISCHEMA_STANDALONE="false",  # peering: one replica active, both serving the webhook
                OPTISCHEMA_PEERING_LIFETIME_SECONDS="10",
                OPTISCHEMA_METRICS_PORT=str(free_port()),
                **env,
            ),
            stdout=self.logs[replica].open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.replicas[replica] = process
        return process

    def serving(self, replica: str) -> list[str]:
        """Serial numbers of the certificates the replica has loaded, in order (from its log)."""
        text = self.logs[replica].read_text(errors="replace")
        return [line.split("webhook serving certificate ", 1)[1].split(",")[0] for line in text.splitlines()
                if "webhook serving certificate " in line]  # fmt: skip

    def trusted(self, replica: str) -> list[str]:
        """The CA serials the replica last said it publishes (from its log)."""
        text = self.logs[replica].read_text(errors="replace")
        lines = [line for line in text.splitlines() if "trusted CAs " in line]
        return lines[-1].split("trusted CAs ", 1)[1].strip().split(",") if lines else []


@pytest.fixture
def webhook(cluster: Cluster, namespace: str) -> Iterator[Webhook]:
    yield from serving(cluster, namespace, chart=True)


@pytest.fixture
def managed(cluster: Cluster, namespace: str) -> Iterator[Webhook]:
    yield from serving(cluster, namespace, chart=False)


def serving(cluster: Cluster, namespace: str, *, chart: bool) -> Iterator[Webhook]:
    release = f"rot-{namespace}"
    port = free_port()
    rendered = "" if not chart else subprocess.run(
        [helm_binary(), "template", release, str(ROOT / "charts/optischema"), "-n", namespace, "--kube-version",
         "1.36.3", "--show-only", "templates/webhook-configuration.yaml", "--set", "webhook.host=127.0.0.1",
         "--set", f"webhook.port={port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for document in yaml.safe_load_all(rendered):
        if document:
            apply(cluster, document)
    apply(cluster, {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                    "metadata": {"name": "optischema", "namespace": namespace}})  # fmt: skip
    # bob approves, as in test_decisions (the approver role; the webhook stamps decidedBy)
    cluster.plane.kubectl(
        "create", "rolebinding", "bob-approver", "-n", namespace, "--clusterrole=optischema-approver", "--user=bob"
    )
    served = Webhook(cluster, namespace, port, release if chart else None)
    try:
        yield served
    finally:
        for process in served.replicas.values():
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        # with no server left the configuration would refuse every later edit: the chart's uninstall removes it (and
        # kopf's own, in development, is left behind by kopf)
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            cluster.plane.kubectl("delete", kind, served.name, "--ignore-not-found")


def serial_of(pem: str) -> str:
    return f"{x509.load_pem_x509_certificate(pem.encode()).serial_number:x}"


def cas_of(pem: str) -> list[str]:
    return [f"{c.serial_number:x}" for c in x509.load_pem_x509_certificates(pem.encode())]


def approve_one(cluster: Cluster, namespace: str, index: int) -> str | None:
    """Create a recommendation (as the operator's analysis) and approve it (as bob), both through the webhook;
    what went wrong, or None."""
    name = f"shop-createindex-{index}"
    created = create(cluster, recommendation(namespace, name=name), "admin")
    if "created" not in created:
        return f"create {name}: {created.strip()}"
    body = {"spec": {"approval": {"state": "Approved", "reason": "reviewed"}}}
    answer = patch(cluster, "trec", name, namespace, body, "bob")
    if "patched" not in answer:
        return f"approve {name}: {answer.strip()}"
    decided = get(cluster, "trec", name, "-n", namespace)["spec"]["approval"]
    if decided.get("decidedBy") != "bob":  # stamped by the webhook: it ran
        return f"approve {name}: decidedBy {decided.get('decidedBy')!r}"
    return None


def until(deadline: float, step: Callable[[], None]) -> None:
    while time.monotonic() < deadline:
        step()


def test_a_certificate_expiring_in_seconds_is_rotated_while_approvals_keep_working_with_two_replicas(
    cluster: Cluster, namespace: str, webhook: Webhook
) -> None:
    seconds = {
        "OPTISCHEMA_WEBHOOK_CERT_LIFETIME_SECONDS": "15",  # renewed when 5 s are left
        "OPTISCHEMA_WEBHOOK_CA_LIFETIME_SECONDS": "45",  # rotated when 15 s are left
        "OPTISCHEMA_WEBHOOK_CHECK_SECONDS": "1",
        "OPTISCHEMA_WEBHOOK_CA_GRACE_SECONDS": "2",
    }
    webhook.start("a", **seconds)
    webhook.start("b", **seconds)
    wait_for(lambda: webhook.serving("a") and webhook.serving("b"), timeout=90, what="both replicas serving")
    first = webhook.secret()
    assert webhook.ca_bundles() == {first["ca-bundle.crt"].encode()}  # the configuration trusts the Secret's CA

    failures: list[str] = []
    cas_seen: list[str] = []
    certs_seen: list[str] = []
    index = max_trusted = 0

    def step() -> None:
        nonlocal index
        index += 1
        failure = approve_one(cluster, namespace, index)
        if failure:
            failures.append(failure)
        nonlocal max_trusted
        held = webhook.secret()
        max_trusted = max(max_trusted, len(cas_of(held["ca-bundle.crt"])))
        for seen, value in ((cas_seen, serial_of(held["ca.crt"])), (certs_seen, serial_of(held["tls.crt"]))):
            if value not in seen:
                seen.append(value)

    # 55 s: the certificate is renewed every ~10 s and the CA is rotated once (at ~30 s), approvals all along
    until(time.monotonic() + 55, step)
    logs = {r: webhook.logs[r].read_text(errors="replace")[-3000:] for r in "ab"}
    assert not failures, f"{len(failures)} of {index} approvals failed: {failures[:3]}; logs: {logs}"
    assert index >= 10, f"only {index} approvals in 55 s"
    assert len(cas_seen) >= 2, f"the CA was not rotated: {cas_seen}"
    assert len(certs_seen) >= 4, f"the certificate was not renewed often enough: {certs_seen}"

    # After the rotation: both replicas serve the Secret's certificate, which verifies against the caBundle.
    wait_for(
        lambda: all(webhook.serving(r)[-1] == serial_of(webhook.secret()["tls.crt"]) for r in "ab"),
        timeout=10,
        what="both replicas serving the Secret's certificate",
    )
    held = webhook.secret()
    assert webhook.trusted("a")[0] == webhook.trusted("b")[0] == serial_of(held["ca.crt"])  # one CA for both
    for _ in range(30):  # the kernel spreads new connections over both replicas' sockets
        (ca_bundle,) = webhook.ca_bundles()  # read afresh: the 45 s CA may rotate again meanwhile
        assert set(cas_of(ca_bundle.decode())) <= set(cas_seen) | {serial_of(webhook.secret()["ca.crt"])}
        presented(webhook.port, ca_bundle)  # raises unless the certificate verifies against it
    assert max_trusted >= 2, "a rotated CA did not keep the previous one trusted"


def test_a_replica_restarting_with_a_stale_temp_dir_writes_no_ca_of_its_own(
    cluster: Cluster, namespace: str, webhook: Webhook, tmp_path: Path
) -> None:
    webhook.start("a")
    webhook.start("b")
    wait_for(lambda: webhook.serving("a") and webhook.serving("b"), timeout=90, what="both replicas serving")
    configuration = webhook.configuration()
    secret = get(cluster, "secret", "webhook-ca", "-n", namespace)
    assert webhook.ca_bundles() == {webhook.secret()["ca-bundle.crt"].encode()}

    # b dies without cleaning up, and comes back with a temp dir holding the webhook files of an earlier life: a
    # CA and a certificate of its own, as the operator used to make at every start.
    webhook.replicas["b"].send_signal(signal.SIGKILL)
    webhook.replicas["b"].wait(timeout=30)
    stale = tmp_path / "optischema-webhook-stale"
    stale.mkdir()
    ca = certs.make_ca(stale, "optischema-webhook-ca")
    certs.make_serving_cert(stale, "webhook", ca, hosts=[], ips=["127.0.0.1"])
    before = len(webhook.serving("b"))
    webhook.start("b", TMPDIR=str(tmp_path))
    wait_for(lambda: len(webhook.serving("b")) > before, timeout=90, what="b serving again")
    time.sleep(3)  # a few of its checks

    # What did not happen: neither the configuration nor the Secret was written, and b serves the shared CA's
    # certificate, never the stale one.
    assert webhook.configuration()["metadata"]["resourceVersion"] == configuration["metadata"]["resourceVersion"]
    after = get(cluster, "secret", "webhook-ca", "-n", namespace)
    assert after["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert webhook.serving("b")[-1] == serial_of(webhook.secret()["tls.crt"])
    stale_ca = ca[0].read_text()
    assert serial_of(stale_ca) not in cas_of(webhook.secret()["ca-bundle.crt"])
    (ca_bundle,) = webhook.ca_bundles()
    for _ in range(20):
        presented(webhook.port, ca_bundle)  # every handshake, a or b, verifies against the configuration
    with pytest.raises(ssl.SSLCertVerificationError):
        presented(webhook.port, stale_ca.encode())
    assert json.dumps(after["data"]) == json.dumps(secret["data"])


def test_in_development_kopfs_own_configuration_follows_the_rotation(
    cluster: Cluster, namespace: str, managed: Webhook
) -> None:
    # No chart: kopf writes the configuration optischema.io itself; the server tells it each new CA bundle.
    managed.start(
        "a",
        OPTISCHEMA_WEBHOOK_CERT_LIFETIME_SECONDS="15",
        OPTISCHEMA_WEBHOOK_CA_LIFETIME_SECONDS="30",  # rotated when 10 s are left
        OPTISCHEMA_WEBHOOK_CHECK_SECONDS="1",
        OPTISCHEMA_WEBHOOK_CA_GRACE_SECONDS="2",
    )
    wait_for(lambda: managed.serving("a"), timeout=90, what="the replica serving")
    wait_for(lambda: "creator" in json.dumps(get(cluster, "mutatingwebhookconfiguration", "optischema.io")),
             what="kopf's configuration")  # fmt: skip
    first_ca = serial_of(managed.secret()["ca.crt"])
    failures, index = [], 0
    deadline = time.monotonic() + 35
    while time.monotonic() < deadline:
        index += 1
        failure = approve_one(cluster, namespace, index)
        if failure:
            failures.append(failure)
    assert not failures, f"{len(failures)} of {index} approvals failed: {failures[:3]}"
    held = managed.secret()
    assert serial_of(held["ca.crt"]) != first_ca, "the CA was not rotated"
    wait_for(lambda: managed.ca_bundles() == {managed.secret()["ca-bundle.crt"].encode()}, timeout=10,
             what="kopf's configuration carrying the rotated bundle")  # fmt: skip
    (ca_bundle,) = managed.ca_bundles()
    presented(managed.port, ca_bundle)
