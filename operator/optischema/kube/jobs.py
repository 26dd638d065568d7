"""Analysis Jobs: the same image's ``optischema analyze-target``, owned by the target, cleaned up after a while.

Its Pod passes Pod Security "restricted" (as the sandbox pods do, :mod:`optischema.kube.sandboxes`); unlike them it
keeps its ServiceAccount token, which is how it reads its target and records the analysis."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from optischema.api.resources import owner_reference
from optischema.kube.podsecurity import restricted_security_context, with_default_resources

#: uid and gid of the operator's image (its Dockerfile's ``USER 10001:10001``), given by number so that Pod Security
#: "restricted" can check that it is not root.
RUN_AS_USER = 10001
#: Resources when ``spec.analysis.jobResources`` gives none (an analysis holds one workload snapshot in memory).
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}
#: ``sizeLimit`` of the Job's only writable place, ``/tmp`` (the root filesystem is read-only).
TMP_LIMIT = "256Mi"
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
    allowed_secrets: Sequence[str] = (),
    reserved_secrets: Iterable[str] = (),
) -> dict[str, Any]:
    """The Job for one analysis of ``target``; ``token`` (the request, or the time) makes its name unique.
    ``allowed_secrets`` (the operator's ``namespace/name`` allow-list) reaches the Job narrowed to the target's
    namespace: the Job reads Secrets by the same opt-in rule as the operator, and learns of no other namespace's."""
    meta = target["metadata"]
    own = [entry for entry in allowed_secrets if entry.partition("/")[0] == meta["namespace"]]
    # The operator's own Secrets (default sinks', the webhook's) stay refused to the target's spec in the Job too.
    reserved = sorted(entry for entry in reserved_secrets if entry.partition("/")[0] == meta["namespace"])
    suffix = hashlib.sha256(f"{meta['uid']}/{token}".encode()).hexdigest()[:8]
    name = f"{meta['name'][:52]}-analysis-{suffix}"
    resources = (target["spec"].get("analysis") or {}).get("jobResources") or None
    pod_security, container_security = restricted_security_context(RUN_AS_USER)
    container: dict[str, Any] = {
        "name": "analyze",
        "image": image,
        "command": ["optischema", "analyze-target", "--namespace", meta["namespace"], "--target", meta["name"]],
        "env": [{"name": "OPTISCHEMA_SAMPLE_SECONDS", "value": str(sample_seconds)}]
        + ([{"name": "OPTISCHEMA_OPERATOR_NAMESPACE", "value": operator_namespace}] if operator_namespace else [])
        + ([{"name": "OPTISCHEMA_ALLOWED_SECRETS", "value": json.dumps(own)}] if own else [])
        + ([{"name": "OPTISCHEMA_RESERVED_SECRETS", "value": json.dumps(reserved)}] if reserved else []),
        "securityContext": container_security,
        "resources": with_default_resources(resources, DEFAULT_RESOURCES),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
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
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": service_account,
                    "securityContext": pod_security,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_LIMIT}}],
                },
            },
        },
    }
