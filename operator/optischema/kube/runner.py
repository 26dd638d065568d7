"""The runner: the identity sandbox pods, their Secrets and NetworkPolicies, and analysis Jobs are created under.

The operator's own ServiceAccount holds no right to create pods, Jobs, NetworkPolicies or Secrets. It may only
impersonate the runner ServiceAccount (RBAC ``impersonate`` on ``serviceaccounts``, limited by ``resourceNames``),
and the chart's ValidatingAdmissionPolicy limits what the runner may create: pods only as the sandbox
ServiceAccount without a token, Jobs only as the analysis ServiceAccount with the operator's image, Opaque Secrets.
So whoever takes over the operator cannot start a pod running as another ServiceAccount of the namespace.

Impersonating ``system:serviceaccount:<ns>:<name>`` without ``Impersonate-Group`` headers, the API server adds the
ServiceAccount's groups itself (``system:serviceaccounts``, ``system:serviceaccounts:<ns>``, and
``system:authenticated``), as the request had come with the ServiceAccount's token (checked on the embedded API
server: tests/k8s/test_rbac.py). One header is enough, which the client's ``ApiClient`` sets on every request.

With no runner configured (development, the tests that run the operator as a local process with admin
credentials), everything is created with the operator's own identity.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

SERVICE_ACCOUNT_USER = "system:serviceaccount:"
IMPERSONATE_USER = "Impersonate-User"


def runner_user(service_account: str, namespace: str) -> str | None:
    """The user name to act as in ``namespace``: the runner of that namespace for a bare name, the given user for a
    full ``system:serviceaccount:<ns>:<name>`` (one runner for the whole cluster), None when there is no runner."""
    if not service_account:
        return None
    if service_account.startswith(SERVICE_ACCOUNT_USER):
        return service_account
    return f"{SERVICE_ACCOUNT_USER}{namespace}:{service_account}"


class Runner:
    """API clients acting as the runner of a namespace, one per user name (each keeps its connection pool)."""

    def __init__(self, service_account: str = "") -> None:
        self.service_account = service_account
        self._clients: dict[str | None, client.ApiClient] = {}

    def api_client(self, namespace: str) -> client.ApiClient:
        user = runner_user(self.service_account, namespace)
        if user not in self._clients:
            self._clients[user] = (
                client.ApiClient(header_name=IMPERSONATE_USER, header_value=user) if user else client.ApiClient()
            )
        return self._clients[user]

    # Untyped on purpose: the client takes plain dicts as bodies, which its stubs do not say.
    def core(self, namespace: str) -> Any:
        return client.CoreV1Api(self.api_client(namespace))

    def networking(self, namespace: str) -> Any:
        return client.NetworkingV1Api(self.api_client(namespace))

    def batch(self, namespace: str) -> Any:
        return client.BatchV1Api(self.api_client(namespace))

    async def create_job(self, namespace: str, body: dict[str, Any]) -> None:
        """Create an analysis Job; an existing one of that name is left as it is."""
        try:
            await asyncio.to_thread(self.batch(namespace).create_namespaced_job, namespace, body)
        except ApiException as error:
            if error.status != 409:
                raise

    async def job_failed(self, namespace: str, name: str) -> bool | None:
        """True when the Job failed, False while running or done, None when it is gone."""
        try:
            job = await asyncio.to_thread(self.batch(namespace).read_namespaced_job, name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return bool(job.status and job.status.failed)


__all__ = ["Runner", "runner_user"]
