"""Where the webhook's certificates live and who is told about them: the shared Secret (or memory, for one replica
in development), the mounted directory of a cert-manager Secret, and the ``caBundle`` of the chart's webhook
configurations. Decisions are in ``webhookbundle``; this module only reads and writes.

Writes to the Secret carry the ``resourceVersion`` that was read: when two replicas find the bundle due at once,
one write wins and the other reads what the winner wrote (a 409 is not an error, it is "someone was faster").
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from optischema.kube.webhookbundle import Bundle, Lifetimes, advance, decide

log = logging.getLogger("optischema.webhook")

#: Label of the Secret, so that people find what wrote it.
LABELS = {"app.kubernetes.io/name": "optischema", "app.kubernetes.io/component": "webhook-ca"}


class Material(NamedTuple):
    """What a replica serves (certificate and key) and what the API server is to trust (the CA bundle), PEM."""

    cert: bytes
    key: bytes
    ca_bundle: bytes


class Store(Protocol):
    async def read(self) -> tuple[Bundle | None, str | None]:
        """The bundle (None when absent or incomplete) and the version to write over (None: create)."""
        ...

    async def write(self, bundle: Bundle, version: str | None) -> bool:
        """Write the bundle over ``version``; False when someone else wrote first."""
        ...

    def server_now(self) -> datetime.datetime | None:
        """The API server's time at the last read (None: unknown, the local clock is used)."""
        ...


class MemoryStore:
    """One replica's own bundle (no Secret configured): it still rotates, but other replicas would not share it."""

    def __init__(self) -> None:
        self.bundle: Bundle | None = None
        self.version = 0

    async def read(self) -> tuple[Bundle | None, str | None]:
        return self.bundle, str(self.version) if self.bundle else None

    async def write(self, bundle: Bundle, version: str | None) -> bool:
        if version != (str(self.version) if self.bundle else None):
            return False
        self.bundle, self.version = bundle, self.version + 1
        return True

    def server_now(self) -> datetime.datetime | None:
        return None


class SecretStore:
    """The bundle in a Secret of the operator's namespace, shared by every replica."""

    def __init__(self, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self.core = client.CoreV1Api()
        self._server_now: tuple[datetime.datetime, float] | None = None  # (its Date, our monotonic clock then)

    def server_now(self) -> datetime.datetime | None:
        if self._server_now is None:
            return None
        date, at = self._server_now
        return date + datetime.timedelta(seconds=time.monotonic() - at)

    def _heard(self, headers: Any) -> None:
        date = server_time(headers)
        self._server_now = (date, time.monotonic()) if date else None

    async def read(self) -> tuple[Bundle | None, str | None]:
        try:
            secret, _, headers = await asyncio.to_thread(
                self.core.read_namespaced_secret_with_http_info, self.name, self.namespace
            )
        except ApiException as error:
            self._heard(error.headers)
            if error.status == 404:
                return None, None
            raise _refused(f"reading Secret {self.namespace}/{self.name}", error) from None
        self._heard(headers)
        return Bundle.from_data(decoded(secret.data)), secret.metadata.resource_version if secret.metadata else None

    async def write(self, bundle: Bundle, version: str | None) -> bool:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": LABELS},
            "type": "Opaque",
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in bundle.to_data().items()},
        }
        try:
            if version is None:
                await asyncio.to_thread(self.core.create_namespaced_secret, self.namespace, body)  # type: ignore[arg-type]
            else:
                body["metadata"]["resourceVersion"] = version
                await asyncio.to_thread(
                    self.core.replace_namespaced_secret,
                    self.name,
                    self.namespace,
                    body,  # type: ignore[arg-type]
                )
        except ApiException as error:
            if error.status == 409:  # created or replaced by another replica meanwhile
                return False
            raise _refused(f"writing Secret {self.namespace}/{self.name}", error) from None
        return True


def server_time(headers: Any) -> datetime.datetime | None:
    """The ``Date`` of an API server's response (HTTP date, second resolution); None when absent or unreadable."""
    found = next((value for key, value in (headers or {}).items() if key.lower() == "date"), None)
    if not found:
        return None
    try:
        return email.utils.parsedate_to_datetime(found).astimezone(datetime.UTC)
    except (TypeError, ValueError):
        return None


def decoded(data: Mapping[str, str | bytes] | None) -> dict[str, str]:
    """A Secret's ``data`` as text; a key that is not base64 of UTF-8 (someone else wrote it) is left out, so that the
    bundle reads as incomplete and a new one is written over it, instead of an error at every read."""
    text = {}
    for key, value in (data or {}).items():
        try:
            text[key] = base64.b64decode(value, validate=True).decode()
        except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
            continue
    return text


async def settle(
    store: Store,
    *,
    now: Callable[[], datetime.datetime],
    lifetimes: Lifetimes,
    hosts: list[str],
    ips: list[str],
    attempts: int = 5,
) -> Bundle:
    """The bundle every replica is to serve: what the store holds, renewed first when it is due. A lost race is
    answered by reading the winner's bundle, never by writing ours over it.

    Time is the API server's when the store knows it (``now`` otherwise): it is the API server that checks the
    certificates, and a replica whose clock runs ahead would otherwise rotate early and write certificates valid
    only from its own "now", refused until the API server's clock caught up (every approval, with failurePolicy
    Fail)."""
    for _ in range(attempts):
        bundle, version = await store.read()
        at = store.server_now() or now()
        decision = decide(bundle, now=at, lifetimes=lifetimes, hosts=hosts, ips=ips)
        if decision.action == "keep" and bundle is not None:
            return bundle
        renewed = advance(bundle, decision, now=at, lifetimes=lifetimes, hosts=hosts, ips=ips)
        if await store.write(renewed, version):
            log.info("webhook certificate: %s (%s)", decision.action, decision.reason)
            return renewed
    raise RuntimeError(f"webhook certificate: {attempts} writes lost to other replicas in a row")


def material(bundle: Bundle) -> Material:
    return Material(bundle.tls_crt.encode(), bundle.tls_key.encode(), bundle.ca_bundle.encode())


def read_directory(directory: Path) -> Material:
    """A mounted ``kubernetes.io/tls`` Secret (cert-manager): ``tls.crt``, ``tls.key`` and ``ca.crt`` (which some
    issuers, e.g. ACME ones, leave out: then the API server trusts its own roots)."""
    ca = directory / "ca.crt"
    return Material(
        (directory / "tls.crt").read_bytes(),
        (directory / "tls.key").read_bytes(),
        ca.read_bytes() if ca.exists() else b"",
    )


class WebhookStoreError(RuntimeError):
    """The Secret or a configuration could not be read or written: one line naming it and the API server's reason."""


def _refused(what: str, error: ApiException) -> WebhookStoreError:
    return WebhookStoreError(f"{what}: {error.status} {error.reason}")


class Configurations:
    """The chart's Validating- and MutatingWebhookConfiguration of one name: only their ``caBundle`` is ours."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.api = client.AdmissionregistrationV1Api()

    def _calls(self) -> list[tuple[Callable[..., Any], Callable[..., Any]]]:
        return [
            (self.api.read_mutating_webhook_configuration, self.api.replace_mutating_webhook_configuration),
            (self.api.read_validating_webhook_configuration, self.api.replace_validating_webhook_configuration),
        ]

    async def ca_bundles(self) -> list[bytes]:
        """The caBundle of each webhook of both configurations (what the API server trusts now)."""
        found: list[bytes] = []
        for read, _ in self._calls():
            try:
                configuration = await asyncio.to_thread(read, self.name)
            except ApiException as error:
                raise _refused(f"reading webhook configuration {self.name}", error) from None
            found += [base64.b64decode(w.client_config.ca_bundle or "") for w in configuration.webhooks or []]
        return found

    async def publish(self, ca_bundle: bytes) -> bool:
        """Set every webhook's ``caBundle`` to ``ca_bundle``; True when something changed. A configuration that
        does not exist is said in one line (the chart makes both) and left alone."""
        encoded = base64.b64encode(ca_bundle).decode()
        changed = False
        for read, replace in self._calls():
            for _ in range(5):
                try:
                    configuration = await asyncio.to_thread(read, self.name)
                except ApiException as error:
                    if error.status == 404:
                        log.error("webhook configuration %s not found: its caBundle cannot be kept", self.name)
                        break
                    raise _refused(f"reading webhook configuration {self.name}", error) from None
                stale = [w for w in configuration.webhooks or [] if w.client_config.ca_bundle != encoded]
                if not stale:
                    break
                for webhook in stale:
                    webhook.client_config.ca_bundle = encoded
                try:  # the read resourceVersion travels along: a concurrent edit makes this a 409, read again
                    await asyncio.to_thread(replace, self.name, configuration)
                except ApiException as error:
                    if error.status == 409:
                        continue
                    raise _refused(f"writing webhook configuration {self.name}", error) from None
                changed = True
                break
        return changed
