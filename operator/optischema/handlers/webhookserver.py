"""kopf's webhook server, serving a certificate that is renewed while it runs.

kopf's own ``WebhookServer`` reads its certificate files once and, when they change, stops listening and starts
again; its self-signed path needs oscrypto, broken on OpenSSL 3. This one listens once and keeps the
``ssl.SSLContext`` it listens with: a renewed certificate is loaded into that context (``load_cert_chain``), and
every later handshake presents it, with no restart and no gap.

Order matters when the CA changes: the new CA bundle is published first (the chart's configurations, patched here;
or kopf's own managed configuration, told through the client config this server yields), then, after
``webhook_ca_grace_seconds``, the certificate it signed is served. Certificates of the old CA stay trusted until
that CA expires (``webhookbundle``), so a replica that has not yet reloaded is still believed.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import aiohttp.web
import kopf

from optischema.kube import webhookbundle
from optischema.kube.webhookcerts import (
    Configurations,
    Material,
    Store,
    material,
    read_directory,
    settle,
)

log = logging.getLogger("optischema.webhook")


class Source(Protocol):
    async def current(self) -> Material:
        """What is to be served now."""
        ...


class SharedSource:
    """The bundle in the store (the shared Secret), renewed when due by whichever replica notices first."""

    def __init__(self, store: Store, *, lifetimes: webhookbundle.Lifetimes, hosts: list[str], ips: list[str]) -> None:
        self.store, self.lifetimes, self.hosts, self.ips = store, lifetimes, hosts, ips

    async def current(self) -> Material:
        bundle = await settle(
            self.store,
            now=lambda: datetime.datetime.now(datetime.UTC),
            lifetimes=self.lifetimes,
            hosts=self.hosts,
            ips=self.ips,
        )
        return material(bundle)


class DirectorySource:
    """A mounted Secret that someone else renews (cert-manager; the kubelet updates the files in place)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def current(self) -> Material:
        return await asyncio.to_thread(read_directory, self.directory)


class RotatingWebhookServer(kopf.WebhookServer):
    def __init__(
        self,
        *,
        source: Source,
        configurations: Configurations | None,
        check_seconds: float,
        grace_seconds: float,
        addr: str,
        host: str,
        port: int,
        certfile: str | None = None,
        pkeyfile: str | None = None,
        cafile: str | None = None,
    ) -> None:
        # certfile/pkeyfile/cafile only say where a mounted certificate is; this server reads them through source.
        super().__init__(addr=addr, host=host, port=port, certfile=certfile, pkeyfile=pkeyfile, cafile=cafile)
        self.source, self.configurations = source, configurations
        self.check_seconds, self.grace_seconds = check_seconds, grace_seconds
        self.workdir = Path(tempfile.mkdtemp(prefix="optischema-webhook-"))  # 0700; rewritten, never read back
        #: Set once the server listens. With ``failurePolicy: Fail`` every create of a recommendation is refused
        #: until then; the work that creates them waits for it (:func:`serving`).
        self.serving = asyncio.Event()

    def _load(self, context: ssl.SSLContext, served: Material) -> bool:
        """Load the certificate into the live context: handshakes from now on present it. The pair is tried in a
        scratch context first: a key that does not match (files read mid-update) would leave the live context with
        the new certificate and the old key, and no handshake would succeed. False, said in one line, then."""
        cert, key = self.workdir / "tls.crt", self.workdir / "tls.key"
        key.touch(mode=0o600)
        try:
            cert.write_bytes(served.cert)
            key.write_bytes(served.key)
            try:
                ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
            except (ssl.SSLError, ValueError) as error:
                log.error("webhook certificate not loaded, the previous one is still served: %s", error)
                return False
            context.load_cert_chain(str(cert), str(key))
        finally:
            cert.unlink(missing_ok=True)
            key.unlink(missing_ok=True)
        log.info(
            "webhook serving certificate %s, trusted CAs %s",
            webhookbundle.serial(served.cert.decode()),
            ",".join(webhookbundle.cas(served.ca_bundle.decode())),
        )
        return True

    def _client_config(self, port: int, ca_bundle: bytes) -> kopf.WebhookClientConfig:
        host = self.host or self._get_accessible_addr(self.addr)
        config = kopf.WebhookClientConfig(url=self._build_url("https", host, port, self.path or ""))
        if ca_bundle:  # else the API server trusts its own roots (a public issuer's certificate)
            config["caBundle"] = base64.b64encode(ca_bundle).decode("ascii")
        return config

    async def _publish(self, ca_bundle: bytes) -> bool:
        return bool(self.configurations) and await self.configurations.publish(ca_bundle)  # type: ignore[union-attr]

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async def serve(request: aiohttp.web.Request) -> aiohttp.web.Response:
            return await self._serve(fn, request)

        served = await self.source.current()
        if await self._publish(served.ca_bundle):
            await asyncio.sleep(self.grace_seconds)  # e.g. a CA we just rotated at start-up
        context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
        if not self._load(context, served):
            raise RuntimeError("webhook certificate: the certificate and key do not match, nothing to serve")
        self.context = context
        path = self.path.rstrip("/") if self.path else ""
        app = aiohttp.web.Application()
        app.add_routes([aiohttp.web.post(f"{path}/{{id:.*}}", serve)])
        runner = aiohttp.web.AppRunner(app, handle_signals=False)
        await runner.setup()
        try:
            port = self.port or self._allocate_free_port()
            # reuse_port: replicas on one node (and the embedded cluster's processes) may share the port.
            site = aiohttp.web.TCPSite(
                runner, self.addr, port, ssl_context=context, reuse_port=True, reuse_address=True
            )
            await site.start()
            self.serving.set()
            yield self._client_config(port, served.ca_bundle)
            while True:
                await asyncio.sleep(self.check_seconds)
                latest = await self._refresh()
                if latest is None or latest == served:
                    continue
                if latest.ca_bundle != served.ca_bundle:
                    yield self._client_config(port, latest.ca_bundle)  # kopf's managed configuration follows
                    await asyncio.sleep(self.grace_seconds)
                    if await self._refresh() != latest:  # again: a slower replica may have written its older view
                        continue  # changed meanwhile (or unreadable): start over at the next check
                if self._load(context, latest):
                    served = latest
        finally:
            self.serving.clear()
            await runner.cleanup()

    async def _refresh(self) -> Material | None:
        """The latest material, its CA bundle published (also putting back a caBundle someone removed); None, said
        in one line, when it cannot be had now (the current certificate is served meanwhile)."""
        try:
            latest = await self.source.current()
            await self._publish(latest.ca_bundle)
        except Exception as error:
            log.error("webhook certificate not refreshed: %s", str(error).splitlines()[0] if str(error) else error)
            return None
        return latest


async def serving(memo: kopf.Memo, *, timeout: float = 120.0) -> None:
    """Wait until this process's webhook server listens (at once when it runs without one).

    The chart's configurations exist before the operator starts, with ``failurePolicy: Fail``: an analysis that
    finished before the server listened (it publishes its CA and waits a grace period first) had every
    recommendation refused and was recorded as failed until the next interval. After ``timeout`` the caller goes on
    and a refusal is recorded as the failure it is."""
    event: asyncio.Event | None = getattr(memo, "webhook_serving", None)
    if event is None or event.is_set():
        return
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        log.error("the webhook server is not listening after %.0fs: going on without it", timeout)


def make_server(
    *,
    source: Source,
    configurations: Configurations | None,
    check_seconds: float,
    grace_seconds: float,
    host: str,
    port: int,
    files: tuple[Path, Path, Path] | None = None,
) -> RotatingWebhookServer:
    """An IP (URL mode, e.g. 127.0.0.1 in the embedded cluster) is also where we listen; a Service's DNS name is
    only what the API server calls, and we listen on every interface of the Pod behind it."""
    return RotatingWebhookServer(
        source=source,
        configurations=configurations,
        check_seconds=check_seconds,
        grace_seconds=grace_seconds,
        addr=host if is_ip(host) else "0.0.0.0",
        host=host,
        port=port,
        **({"certfile": str(files[0]), "pkeyfile": str(files[1]), "cafile": str(files[2])} if files else {}),
    )


def is_ip(host: str) -> bool:
    return host.replace(".", "").isdigit() or ":" in host
