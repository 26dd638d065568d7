"""Analysis Jobs: the same image's ``optischema analyze-target``, owned by the target, cleaned up after a while."""

from __future__ import annotations

import hashlib
from typing import Any

from optischema.api.resources import owner_reference

#: Finished Jobs (and their Pods) are kept this long for inspection.
TTL_SECONDS = 3600
DEADLINE_SECONDS = 3600


def analysis_job(
    target: dict[str, Any],
    *,
    image: str,
    service_account: str,
    sample_seconds: float,
    token: str,
    operator_namespace: str | None = None,
) -> dict[str, Any]:
    """The Job for one analysis of ``target``; ``token`` (the request, or the time) makes its name unique."""
    meta = target["metadata"]
    suffix = hashlib.sha256(f"{meta['uid']}/{token}".encode()).hexdigest()[:8]
    name = f"{meta['name'][:52]}-analysis-{suffix}"
    resources = (target["spec"].get("analysis") or {}).get("jobResources") or {}
    container: dict[str, Any] = {
        "name": "analyze",
        "image": image,
        "command": ["optischema", "analyze-target", "--namespace", meta["namespace"], "--target", meta["name"]],
        "env": [{"name": "OPTISCHEMA_SAMPLE_SECONDS", "value": str(sample_seconds)}]
        + ([{"name": "OPTISCHEMA_OPERATOR_NAMESPACE", "value": operator_namespace}] if operator_namespace else []),
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
    }
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {"optischema.io/target": meta["name"], "app.kubernetes.io/component": "analysis"},
            "ownerReferences": [owner_reference(target)],
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": {"optischema.io/target": meta["name"]}},
                "spec": {"restartPolicy": "Never", "serviceAccountName": service_account, "containers": [container]},
            },
        },
    }
