"""CloudNativePG ``Cluster`` objects (``postgresql.cnpg.io/v1``): where a target that names one is reached, its
instances, and the merge patch of its ``spec.postgresql.parameters`` that changes a setting there.

CloudNativePG publishes, in the Cluster's status, the read-write Service (``status.writeService``, the primary), the
instances (``status.instanceNames``) and the current primary; each instance is a Pod of the Cluster's name whose
``status.podIP`` is where its PostgreSQL listens. Its server certificate names the Cluster's Services
(``<name>-rw``, ``-r``, ``-ro``, each also ``.<namespace>`` and ``.<namespace>.svc``), never an instance: an
instance is reached at its Pod's address with the ``-r`` Service's name authenticated.

``host_addresses`` (the operator's ``hostAddresses`` setting) maps a host name to the IP address to connect to
instead of resolving it, as libpq's ``hostaddr`` (and a Pod's ``hostAliases``) do: for an operator run outside the
cluster, whose resolver does not know in-cluster Services. TLS still authenticates the name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "postgresql.cnpg.io", "v1", "clusters"
#: The label a Cluster carries when the people who own it let the operator patch its parameters (the same opt-in
#: as Secrets': whoever may write a PostgresTarget and an IndexChange must not get someone's Cluster patched).
ALLOW_LABEL = "optischema.io/allow"
#: The label CloudNativePG puts on every Pod of a Cluster.
CLUSTER_LABEL = "cnpg.io/cluster"


@dataclass(frozen=True, slots=True)
class Instance:
    """A Cluster instance other than the primary: its name, and its Pod's IP (None while it has none)."""

    name: str
    address: str | None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a Cluster is reached: the primary through its read-write Service (``host`` authenticated by TLS,
    ``address`` connected to when the operator's settings map the name), and its other instances."""

    host: str
    address: str | None
    instances_host: str
    """The name an instance's certificate is checked against (the ``-r`` Service's)."""
    instances: list[Instance] = field(default_factory=list)


class ClusterProblem(Exception):
    """The Cluster cannot be used (yet): missing, or without the status CloudNativePG writes once it runs."""


def endpoint(
    namespace: str, cluster: Mapping[str, Any], pods: list[Any], host_addresses: Mapping[str, str]
) -> Endpoint:
    """The endpoint of ``cluster`` (the object as read) and its ``pods``. ClusterProblem when CloudNativePG has not
    published a read-write Service yet."""
    name = cluster["metadata"]["name"]
    status = cluster.get("status") or {}
    service = status.get("writeService")
    if not service:
        raise ClusterProblem(
            f"CloudNativePG Cluster {namespace}/{name} has no status.writeService yet (is CloudNativePG running it?)"
        )
    if service != f"{name}-rw":
        # CloudNativePG always names it so; whoever else wrote the status would send the credentials to a Service
        # of their choosing in the namespace.
        raise ClusterProblem(
            f"CloudNativePG Cluster {namespace}/{name}: status.writeService is {str(service)[:80]!r}, not the "
            f"Cluster's read-write Service {name}-rw; not connected"
        )
    host = f"{service}.{namespace}.svc"
    primary = status.get("currentPrimary")
    uid = cluster["metadata"].get("uid")
    addresses = {pod.metadata.name: pod.status.pod_ip for pod in pods if _instance_of(pod, name, uid)}
    instances = [
        Instance(instance, addresses.get(instance))
        for instance in status.get("instanceNames") or []
        if instance != primary
    ]
    return Endpoint(host, host_addresses.get(host), f"{name}-r.{namespace}.svc", instances)


def _instance_of(pod: Any, cluster: str, uid: str | None) -> bool:
    """Whether ``pod`` is one of the Cluster's instances: labelled with its name *and* owned by it (its uid), as
    CloudNativePG makes them. A label alone anyone who may create Pods can copy; TLS (the Cluster's CA, the ``-r``
    Service's name) is what authenticates the instance before credentials are sent, this keeps strays out."""
    meta = pod.metadata
    if meta is None or pod.status is None or (meta.labels or {}).get(CLUSTER_LABEL) != cluster:
        return False
    owners = meta.owner_references or []
    return uid is not None and any(o.kind == "Cluster" and o.uid == uid and o.name == cluster for o in owners)


class Clusters:
    """The operator's CloudNativePG calls (each in a worker thread: the client is synchronous)."""

    def __init__(self, api_client: client.ApiClient | None = None, host_addresses: Mapping[str, str] | None = None):
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.host_addresses = dict(host_addresses or {})

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        """The Cluster; ClusterProblem when it does not exist (or CloudNativePG's CRD is not installed) or cannot
        be read."""
        try:
            found = await asyncio.to_thread(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace,
                                            PLURAL, name)  # fmt: skip
        except ApiException as error:
            if error.status == 404:
                raise ClusterProblem(
                    f"CloudNativePG Cluster {namespace}/{name} not found (spec.connection.cluster.name; is "
                    "CloudNativePG installed?)"
                ) from error
            raise _problem(f"CloudNativePG Cluster {namespace}/{name} cannot be read", error) from error
        return cast(dict[str, Any], found)

    async def endpoint(self, namespace: str, name: str) -> Endpoint:
        """Where the Cluster and its instances are reached now (see :func:`endpoint`)."""
        cluster = await self.get(namespace, name)
        try:
            pods = await asyncio.to_thread(
                self.core.list_namespaced_pod, namespace, label_selector=f"{CLUSTER_LABEL}={name}"
            )
        except ApiException as error:
            raise _problem(f"the Pods of CloudNativePG Cluster {namespace}/{name} cannot be listed", error) from error
        return endpoint(namespace, cluster, list(pods.items or []), self.host_addresses)

    async def patch_parameters(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge ``patch`` (``changes.cnpg.parameters_patch``: one ``spec.postgresql.parameters`` entry) into the
        Cluster; CloudNativePG rolls it out (a reload, or a restart for settings that need one)."""
        try:
            patched = await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, patch
            )
        except ApiException as error:
            raise _problem(f"CloudNativePG Cluster {namespace}/{name} could not be patched", error) from error
        return cast(dict[str, Any], patched)


def allows_patches(cluster: dict[str, Any]) -> bool:
    """Whether the Cluster opted in to having its parameters patched (label ``optischema.io/allow: "true"``)."""
    return ((cluster.get("metadata") or {}).get("labels") or {}).get(ALLOW_LABEL) == "true"


def _problem(what: str, error: ApiException) -> ClusterProblem:
    return ClusterProblem(f"{what}: {error.status} {error.reason}")
