"""Sandbox pods: a PostgreSQL of the target's major version per recommendation, reachable by the operator only.

The Pod is owned by its recommendation (deleting the recommendation deletes it), its password lives in a Secret
owned by the Pod, and a NetworkPolicy owned by the Pod lets only the operator's pods in. ``activeDeadlineSeconds``
bounds its life even if the operator dies mid-benchmark. The operator connects to the Pod IP: a sandbox is
short-lived and has no Service.

``USER`` is the image's superuser. The operator uses it for one thing: creating the unprivileged role that owns
the restored copy and runs the benchmark (:func:`optischema.postgres.clone.create_bench_role`). The copy holds the
target users' functions and expressions; they never run with the superuser's power to read files or start
programs in the pod.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from kubernetes.client.exceptions import ApiException

from optischema.api.resources import owner_reference
from optischema.kube.podsecurity import restricted_security_context, with_default_resources
from optischema.kube.runner import Runner

COMPONENT = "sandbox"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_RECOMMENDATION = "optischema.io/recommendation"
LABEL_TARGET = "optischema.io/target"
USER = "sandbox"
DATABASE = "sandbox"
PORT = 5432


class SandboxError(RuntimeError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PodSandbox:
    namespace: str
    name: str
    dsn: str = field(repr=False)  # holds the sandbox's generated password: never in a log or a traceback


def pod_name(recommendation: str) -> str:
    digest = hashlib.sha256(recommendation.encode()).hexdigest()[:6]
    return f"{recommendation[:48]}-sbx-{digest}"


#: uid (and gid) of the ``postgres`` user in the official Debian-based images (the Alpine ones use 70): the
#: entrypoint runs as it, with no root step, when PGDATA and the socket directory are writable.
POSTGRES_UID = 999
#: Where the image's server writes: its data (``PGDATA`` below it), its socket, temporary files. Everything else
#: of the root filesystem is read-only.
DATA_DIR = "/var/lib/postgresql/data"
WRITABLE = {"data": DATA_DIR, "run": "/var/run/postgresql", "tmp": "/tmp"}
#: ``sizeLimit`` of the socket and temporary-file emptyDirs (the data's comes from the spec or the setting).
SMALL_VOLUME_LIMIT = {"run": "16Mi", "tmp": "1Gi"}
#: Resources when the spec gives none: enough for a sample-mode copy and the timed runs, bounded so that a runaway
#: benchmark cannot starve the node.
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}


def image_for(major: int, *, spec_image: str | None, template: str, per_major: dict[str, str]) -> str:
    """The sandbox image: the target's own (``spec.sandbox.image``), else the cluster's pin for this major version
    (``per_major``, e.g. a digest), else ``template`` with ``{major}`` filled in (a private registry's path)."""
    if spec_image:
        return spec_image
    return per_major.get(str(major)) or template.format(major=major)


def pod_manifest(
    recommendation: dict[str, Any],
    *,
    image: str,
    resources: dict[str, Any] | None,
    deadline_seconds: int,
    storage_limit: str = "4Gi",
    run_as_user: int = POSTGRES_UID,
    service_account: str | None = None,
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The sandbox Pod: passes Pod Security "restricted" with a read-only root filesystem (PostgreSQL writes only
    to its emptyDirs, each with a ``sizeLimit``), no ServiceAccount token, default requests and limits, and the
    ServiceAccount ``service_account`` (one with no rights) when given.

    The pod is named after ``recommendation`` and owned by it, or by ``owner`` when given (an analysis's measuring
    sandbox is named ``<target>-measure`` and owned by the target itself): an owner reference must name an object
    that exists, or the garbage collector deletes the pod as an orphan at once."""
    meta = recommendation["metadata"]
    name = pod_name(meta["name"])
    labels = {
        "app.kubernetes.io/name": "optischema",
        LABEL_COMPONENT: COMPONENT,
        LABEL_RECOMMENDATION: meta["name"],
        LABEL_TARGET: recommendation["spec"]["targetRef"]["name"],
    }
    pod_security, container_security = restricted_security_context(run_as_user)
    container: dict[str, Any] = {
        "name": "postgres",
        "image": image,
        "ports": [{"containerPort": PORT, "name": "postgres"}],
        "env": [
            {"name": "POSTGRES_USER", "value": USER},
            {"name": "POSTGRES_DB", "value": DATABASE},
            {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": name, "key": "password"}}},
            {"name": "PGDATA", "value": f"{DATA_DIR}/pgdata"},
        ],
        "readinessProbe": {
            "exec": {"command": ["pg_isready", "-U", USER, "-d", DATABASE, "-h", "127.0.0.1"]},
            "periodSeconds": 2,
        },
        "securityContext": container_security,
        "resources": with_default_resources(resources, DEFAULT_RESOURCES),
        "volumeMounts": [{"name": volume, "mountPath": path} for volume, path in WRITABLE.items()],
    }
    limits = {"data": storage_limit, **SMALL_VOLUME_LIMIT}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline_seconds,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [{"name": volume, "emptyDir": {"sizeLimit": limits[volume]}} for volume in WRITABLE],
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(owner or recommendation)],
        },
        "spec": spec,
    }


def secret_manifest(pod: dict[str, Any], password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "labels": pod["metadata"]["labels"],
            "ownerReferences": [owner_reference(pod)],
        },
        "type": "Opaque",
        "stringData": {"password": password},
    }


def network_policy_manifest(
    pod: dict[str, Any], operator_namespace: str, operator_labels: dict[str, str]
) -> dict[str, Any]:
    """Ingress to the sandbox from the operator's pods only; nothing else (the sandbox needs no egress)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "labels": pod["metadata"]["labels"],
            "ownerReferences": [owner_reference(pod)],
        },
        "spec": {
            "podSelector": {
                "matchLabels": {
                    LABEL_RECOMMENDATION: pod["metadata"]["labels"][LABEL_RECOMMENDATION],
                    LABEL_COMPONENT: COMPONENT,
                }
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}},
                            "podSelector": {"matchLabels": operator_labels},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": PORT}],
                }
            ],
            "egress": [],
        },
    }


class Pods:
    """Creates, waits for and removes sandbox pods (the official client, each call in a worker thread), as the
    namespace's runner (:mod:`optischema.kube.runner`): the operator itself may not create pods."""

    def __init__(self, operator_namespace: str, operator_labels: dict[str, str], runner: Runner | None = None) -> None:
        self.runner = runner or Runner()
        self.operator_namespace = operator_namespace
        self.operator_labels = operator_labels

    async def start(
        self,
        recommendation: dict[str, Any],
        *,
        image: str,
        resources: dict[str, Any] | None,
        deadline_seconds: int,
        ready_timeout: float,
        storage_limit: str = "4Gi",
        run_as_user: int = POSTGRES_UID,
        service_account: str | None = None,
        owner: dict[str, Any] | None = None,
    ) -> PodSandbox:
        pod = pod_manifest(
            recommendation,
            image=image,
            resources=resources,
            deadline_seconds=deadline_seconds,
            storage_limit=storage_limit,
            run_as_user=run_as_user,
            service_account=service_account,
            owner=owner,
        )
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        core, networking = self.runner.core(namespace), self.runner.networking(namespace)
        await self.remove(namespace, name)  # a leftover of a previous attempt (the operator restarted)
        created = await asyncio.to_thread(core.create_namespaced_pod, namespace, pod)
        pod["metadata"]["uid"] = created.metadata.uid
        password = secrets.token_urlsafe(24)
        try:
            await asyncio.to_thread(core.create_namespaced_secret, namespace, secret_manifest(pod, password))
            await asyncio.to_thread(
                networking.create_namespaced_network_policy,
                namespace,
                network_policy_manifest(pod, self.operator_namespace, self.operator_labels),
            )
            ip = await self._ready(namespace, name, ready_timeout)
        except BaseException:
            await asyncio.shield(self.remove(namespace, name))  # nothing half-made is left behind
            raise
        dsn = f"postgresql://{USER}:{quote(password, safe='')}@{ip}:{PORT}/{DATABASE}?sslmode=disable"
        return PodSandbox(namespace, name, dsn)

    async def _ready(self, namespace: str, name: str, timeout: float) -> str:
        core = self.runner.core(namespace)
        deadline = time.monotonic() + timeout
        last = "not scheduled yet"
        while time.monotonic() < deadline:
            try:
                pod = await asyncio.to_thread(core.read_namespaced_pod, name, namespace)
            except ApiException as error:
                if error.status == 404:  # deleted under us: its recommendation went, or someone removed it
                    raise SandboxError(
                        "SandboxFailed", f"sandbox pod {name} was deleted before it was ready"
                    ) from error
                raise
            status = pod.status
            if status.phase in ("Failed", "Succeeded"):
                raise SandboxError(
                    "SandboxFailed", f"sandbox pod {name} ended ({status.phase}): {_why(status) or 'no reason given'}"
                )
            ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
            if ready and status.pod_ip:
                return str(status.pod_ip)
            last = _why(status) or f"phase {status.phase}"
            await asyncio.sleep(0.5)
        raise SandboxError(
            "SandboxNotReady", f"sandbox pod {name} was not ready within {timeout:g}s ({last}); it was removed"
        )

    async def remove(self, namespace: str, name: str) -> None:
        """Delete the pod now (its Secret and NetworkPolicy follow by owner reference, and are deleted too in
        case the garbage collector is slow)."""
        core, networking = self.runner.core(namespace), self.runner.networking(namespace)
        for call in (
            lambda: core.delete_namespaced_pod(name, namespace, grace_period_seconds=0),
            lambda: core.delete_namespaced_secret(name, namespace),
            lambda: networking.delete_namespaced_network_policy(name, namespace),
        ):
            try:
                await asyncio.to_thread(call)
            except ApiException as error:
                if error.status != 404:
                    raise


def _why(status: Any) -> str:
    for condition in status.conditions or []:
        if condition.status != "True" and condition.reason:
            return f"{condition.type}: {condition.reason} {condition.message or ''}".strip()
    for container in status.container_statuses or []:
        state = container.state
        if state and state.waiting and state.waiting.reason:
            return f"{state.waiting.reason}: {state.waiting.message or ''}".strip()
        if state and state.terminated:
            return f"{state.terminated.reason}: {state.terminated.message or ''}".strip()
    return ""
