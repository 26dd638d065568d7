"""What makes a Pod of ours pass Pod Security "restricted": its security contexts, and resources when none are given.

Shared by the sandbox pods (:mod:`optischema.kube.sandboxes`) and the analysis Jobs (:mod:`optischema.kube.jobs`);
pure functions over plain manifests. The profile's checks are the API server's (``pod-security.kubernetes.io``):
non-root (``runAsNonRoot``, and a numeric user so that the kubelet can verify it without reading the image),
``seccompProfile: RuntimeDefault``, ``allowPrivilegeEscalation: false``, every capability dropped, only
``emptyDir``/``secret``/``projected``-style volumes.
"""

from __future__ import annotations

from typing import Any

from optischema.api.quantity import parse_quantity


def with_default_resources(given: dict[str, Any] | None, defaults: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The spec's resources, each request and limit it leaves out taken from ``defaults``. The API server refuses a
    limit under its request: a default limit below a given request is raised to it, a default request above a
    given limit lowered to it."""
    given_requests, given_limits = (given or {}).get("requests") or {}, (given or {}).get("limits") or {}
    requests = {**defaults.get("requests", {}), **given_requests}
    limits = {**defaults.get("limits", {}), **given_limits}
    for resource in set(requests) & set(limits):
        if parse_quantity(limits[resource]) >= parse_quantity(requests[resource]):
            continue
        if resource in given_limits and resource not in given_requests:
            requests[resource] = limits[resource]
        elif resource not in given_limits:
            limits[resource] = requests[resource]
    return {"requests": requests, "limits": limits}


def restricted_security_context(uid: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pod and container security contexts that pass Pod Security "restricted" (non-root by number, so that the
    kubelet can check it without reading the image; RuntimeDefault seccomp; no capability; no escalation)."""
    pod = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return pod, container
