"""The operator's only Kubernetes client calls: Secrets, our custom resources and their status.

The official client is synchronous; each call runs in a worker thread so that kopf's event loop never blocks.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from optischema.api.base import DNS_SUBDOMAIN
from optischema.api.resources import GROUP, VERSION
from optischema.kube.cnpg import Clusters


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context, or of the Pod we run in, else ``default``."""
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as handle:
            return handle.read().strip()
    except OSError:
        pass
    try:
        _, context = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError):
        return "default"
    return str((context or {}).get("context", {}).get("namespace") or "default")


def load_config() -> None:
    """In-cluster credentials when running in a Pod, else ``KUBECONFIG``."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


#: The label a Secret carries to let the operator (and its analysis Jobs) read it.
ALLOW_LABEL = "optischema.io/allow"
ALLOW_SELECTOR = f"{ALLOW_LABEL}=true"


def decoded_text(data: Mapping[str, bytes | str] | None) -> dict[str, str]:
    """A Secret's values as text. A value that is not UTF-8 (a binary key someone stored) is left out, as if the
    key were missing — the caller then says which key it lacks — rather than failing every reconcile."""
    found = {}
    for key, value in (data or {}).items():
        try:
            found[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            continue
    return found


def secret_refused(namespace: str, name: str) -> str:
    """What to tell a person whose Secret the operator would not read: it cannot tell "missing" from "not opted
    in" without reading it, so it says both and what to add."""
    return (
        f"Secret {namespace}/{name} does not exist or is not labelled {ALLOW_SELECTOR}: the operator reads only "
        f"Secrets that opt in (kubectl label secret -n {namespace} {name} {ALLOW_SELECTOR}, or add "
        f'"{namespace}/{name}" to the operator\'s allowedSecrets setting), and never for a spec one its own '
        f"settings name (a default notification sink's, the webhook's)"
    )


class Kube:
    def __init__(
        self,
        allowed_secrets: Iterable[str] = (),
        reserved_secrets: Iterable[str] = (),
        api_client: client.ApiClient | None = None,
        host_addresses: Mapping[str, str] | None = None,
    ) -> None:
        """``allowed_secrets``: ``namespace/name`` of Secrets the operator may read without the opt-in label (the
        ``allowedSecrets`` setting). ``reserved_secrets``: those its own settings name (``Settings.own_secrets``),
        which no spec may name even when they carry the label. ``api_client``: a client of its own (the kubectl
        plugin's ``--kubeconfig``/``--context``/``--as``) instead of the process-wide default configuration.
        ``host_addresses``: the ``hostAddresses`` setting, for CloudNativePG Clusters (:mod:`optischema.kube.cnpg`)."""
        self.allowed_secrets = frozenset(allowed_secrets)
        self.reserved_secrets = frozenset(reserved_secrets)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.clusters = Clusters(api_client, host_addresses)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's data decoded, or None when it does not exist or has not opted in (see
        :func:`secret_refused`). The only way the operator reads a Secret.

        A spec names Secrets, and whoever writes the spec may not be allowed to read them: the operator would be
        their deputy. So a Secret is read only when it carries ``optischema.io/allow=true`` — asked of the API
        server as a list filtered by that label and the name, so that a Secret without it never leaves the server
        — or when ``namespace/name`` is in ``allowed_secrets`` (then a plain get).
        """
        if re.fullmatch(DNS_SUBDOMAIN, name) is None:  # specs are validated; this keeps the selector whole anyway
            return None
        if f"{namespace}/{name}" in self.reserved_secrets:  # the operator's own: never read for a spec
            return None
        if f"{namespace}/{name}" in self.allowed_secrets:
            try:
                secret = await asyncio.to_thread(self.core.read_namespaced_secret, name, namespace)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
        else:
            found = await asyncio.to_thread(
                self.core.list_namespaced_secret,
                namespace,
                label_selector=ALLOW_SELECTOR,
                field_selector=f"metadata.name={name}",
            )
            matching = [item for item in found.items or [] if item.metadata and item.metadata.name == name]
            if not matching:
                return None
            secret = matching[0]
        return decoded_text(secret.data)

    async def read_own_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret the operator's own settings name (the default notification sinks'): read by name, as the
        settings are its opt-in; None when it does not exist. Only for names in ``reserved_secrets``, which
        :meth:`read_secret` refuses to specs."""
        if f"{namespace}/{name}" not in self.reserved_secrets:
            raise ValueError(f"Secret {namespace}/{name} is not one of the operator's own")
        try:
            secret = await asyncio.to_thread(self.core.read_namespaced_secret, name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return decoded_text(secret.data)

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """The object; LookupError when it does not exist."""
        try:
            found = await asyncio.to_thread(
                self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
            )
        except ApiException as error:
            if error.status == 404:
                raise LookupError(f"{plural}/{name} not found in {namespace}") from error
            raise
        return cast(dict[str, Any], found)

    async def list(self, plural: str, namespace: str | None, selector: str = "") -> list[dict[str, Any]]:
        """The objects matching the label ``selector``; ``namespace`` None: in every namespace."""
        if namespace is None:
            result = await asyncio.to_thread(
                self.custom.list_cluster_custom_object, GROUP, VERSION, plural, label_selector=selector
            )
        else:
            result = await asyncio.to_thread(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural, label_selector=selector
            )
        return list(cast(dict[str, Any], result).get("items", []))

    async def create(
        self, plural: str, namespace: str, body: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any] | None:
        """Create; None when it already exists (creation is idempotent by name). ``dry_run``: the API server judges
        it (schema, CEL, admission webhooks) and stores nothing."""
        try:
            created = await asyncio.to_thread(
                self.custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                plural,
                body,
                dry_run="All" if dry_run else None,
            )
        except ApiException as error:
            if error.status == 409:
                return None
            raise
        return cast(dict[str, Any], created)

    async def patch(
        self, plural: str, namespace: str, name: str, body: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Merge ``body``; the object as the server has it (or would, with ``dry_run``: admission webhooks judge
        and mutate it, nothing is stored)."""
        patched = await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            body,
            dry_run="All" if dry_run else None,
        )
        return cast(dict[str, Any], patched)

    async def replace(self, plural: str, namespace: str, body: dict[str, Any], resource_version: str) -> None:
        """Replace the object if ``resource_version`` (of what was read) is still current: a conflict raises
        ``ApiException`` 409 for the caller to read again (optimistic concurrency)."""
        body["metadata"]["resourceVersion"] = resource_version
        await asyncio.to_thread(
            self.custom.replace_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            body["metadata"]["name"],
            body,
        )

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        """Delete the object; one already gone is fine."""
        try:
            await asyncio.to_thread(
                self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge ``status``; LookupError when the object is gone."""
        try:
            await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                {"status": status},
            )
        except ApiException as error:
            if error.status == 404:
                raise LookupError(f"{plural}/{name} not found in {namespace}") from error
            raise


__all__ = [
    "ALLOW_LABEL",
    "ALLOW_SELECTOR",
    "ApiException",
    "Kube",
    "current_namespace",
    "load_config",
    "secret_refused",
]
