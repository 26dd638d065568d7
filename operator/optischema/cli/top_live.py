"""How ``kubectl optischema top`` reads the operator's live endpoint (``flows/live.py``): through the API server's
service proxy, with the user's own credentials, and no database credential on the laptop.

The request goes to ``/api/v1/namespaces/<ns>/services/<service>:live/proxy/targets/<namespace>/<name>/top`` (RBAC:
``get`` on ``services/proxy``, which the chart's viewer roles grant for that Service only) and carries the user's
bearer token in ``X-OptiSchema-Token``, which the operator has the API server review before it answers (the proxy
forwards no identity). ``--live-url`` reaches the endpoint directly instead (``kubectl port-forward``). Whatever
fails — no token (a client-certificate kubeconfig), ``--as`` (the operator would review the real user, not the one
impersonated), the Service missing, a refusal — is one line, and ``top`` shows the history alone.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from optischema.reports import live
from optischema.reports.history import Point

#: The header the operator reads the token from (``handlers/live.py``), and the Service's port name.
TOKEN_HEADER = "X-OptiSchema-Token"
PORT_NAME = "live"
#: Where the chart's live Service is when the release is ``optischema`` in ``optischema-system``.
DEFAULT_SERVICE = "optischema-system/optischema-live"
TIMEOUT_SECONDS = 10.0


class LiveUnavailable(Exception):
    """Why there are no live figures, in one line."""


def token_of(api_client: client.ApiClient) -> str | None:
    """The bearer token the kubeconfig gives this client (refreshed for exec plugins); None for certificates."""
    # kube_config keeps it under BearerToken, older clients under authorization (the client reads both)
    value = str(api_client.configuration.get_api_key_with_prefix("BearerToken", alias="authorization") or "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _refusal(status: int | None, body: bytes | str | None) -> str:
    """The operator's ``{"error": …}`` or the API server's Status message, else the HTTP status."""
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        parsed = {}
    message = (parsed.get("error") or parsed.get("message")) if isinstance(parsed, dict) else None
    return f"{status}: {message}" if message else f"HTTP {status}"


def _safe_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


@dataclass(frozen=True)
class LiveSource:
    api_client: client.ApiClient
    #: ``namespace/name`` of the operator's live Service.
    service: str = DEFAULT_SERVICE
    #: The endpoint's base URL when reached directly (port-forward); the service proxy otherwise.
    url: str | None = None

    def path(self, namespace: str, name: str) -> str:
        quote = urllib.parse.quote
        return f"/targets/{quote(namespace, safe='')}/{quote(name, safe='')}/top"

    async def fetch(self, namespace: str, name: str) -> tuple[Point, dict[str, str]]:
        """One live sample of the target, or :class:`LiveUnavailable`."""
        if self.api_client.default_headers.get("Impersonate-User"):
            raise LiveUnavailable("not with --as (the operator reviews the token's own user, not the impersonated)")
        if self.url and not _safe_url(self.url):
            raise LiveUnavailable(f"--live-url {self.url}: http:// only to a loopback address (kubectl port-forward), "
                                  "or https://: the token would cross the network in clear")  # fmt: skip
        token = token_of(self.api_client)
        if token is None:
            raise LiveUnavailable("the kubeconfig's credentials are not a bearer token the operator could review")
        raw = await asyncio.to_thread(self._direct if self.url else self._proxied, token, namespace, name)
        try:
            return live.sample(json.loads(raw))
        except ValueError as error:
            raise LiveUnavailable(str(error)) from error

    def _proxied(self, token: str, namespace: str, name: str) -> bytes:
        service_namespace, _, service = self.service.partition("/")
        if not service_namespace or not service:
            raise LiveUnavailable(f"--live-service {self.service}: give NAMESPACE/NAME")
        resource = (
            f"/api/v1/namespaces/{urllib.parse.quote(service_namespace, safe='')}/services/"
            f"{urllib.parse.quote(service, safe='')}:{PORT_NAME}/proxy{self.path(namespace, name)}"
        )
        try:
            method, url, headers, body, post = self.api_client.param_serialize(
                "GET",
                resource,
                header_params={"Accept": "application/json", TOKEN_HEADER: token},
                auth_settings=["BearerToken"],
            )
            response: Any = self.api_client.call_api(method, url, headers, body, post, _request_timeout=TIMEOUT_SECONDS)
            response.read()
        except ApiException as error:
            raise LiveUnavailable(f"service {self.service}: {_refusal(error.status, error.body)}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise LiveUnavailable(f"service {self.service}: {getattr(error, 'reason', None) or error}") from error
        if not 200 <= int(response.status) < 300:
            raise LiveUnavailable(f"service {self.service}: {_refusal(response.status, response.data)}")
        return bytes(response.data)

    def _direct(self, token: str, namespace: str, name: str) -> bytes:
        url = str(self.url).rstrip("/") + self.path(namespace, name)
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
                return bytes(answer.read())
        except urllib.error.HTTPError as error:
            raise LiveUnavailable(f"{self.url}: {_refusal(error.code, error.read())}") from error
        except (urllib.error.URLError, OSError) as error:
            raise LiveUnavailable(f"{self.url}: {getattr(error, 'reason', None) or error}") from error
