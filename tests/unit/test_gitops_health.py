"""Argo CD (Lua) and Flux (CEL) health checks agree on every state of the three kinds."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gitops import argocd, flux


def condition(type_: str, status: str, reason: str = "R") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": f"{type_} {status}",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip


def obj(kind: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": {},
        "status": status,
    }


CASES = [
    (obj("PostgresTarget"), "Progressing"),
    (obj("PostgresTarget", conditions=[condition("Ready", "True", "Connected")]), "Healthy"),
    (obj("PostgresTarget", conditions=[condition("Ready", "False"), condition("Reconciling", "True")]), "Progressing"),
    (obj("PostgresTarget", conditions=[condition("Ready", "False"), condition("Stalled", "True", "SecretNotFound")]),
     "Degraded"),
    (obj("TuningRecommendation", phase="AwaitingApproval"), "Healthy"),
    (obj("TuningRecommendation", phase="Benchmarking"), "Progressing"),
    (obj("TuningRecommendation", phase="Approved"), "Progressing"),
    (obj("TuningRecommendation", phase="Applied"), "Healthy"),
    (obj("TuningRecommendation", phase="RolledBack"), "Degraded"),
    (obj("TuningRecommendation", phase="Rejected"), "Healthy"),
    (obj("IndexChange"), "Progressing"),
    (obj("IndexChange", phase="WaitingForWindow", conditions=[condition("Reconciling", "True")]), "Progressing"),
    (obj("IndexChange", phase="Verifying"), "Progressing"),
    (obj("IndexChange", phase="Applied", conditions=[condition("Ready", "True")]), "Healthy"),
    (obj("IndexChange", phase="RolledBack"), "Degraded"),
    (obj("IndexChange", phase="Pending", conditions=[condition("Stalled", "True", "NoWriteCredentials")]), "Degraded"),
    (obj("IndexChange", phase="Failed", conditions=[condition("Stalled", "True", "ApplyFailed")]), "Degraded"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("resource", "health"),
    CASES,
    ids=[f"{o['kind']}-{o['status'].get('phase', '')}-{i}" for i, (o, _) in enumerate(CASES)],
)
def test_argo_cd_and_flux_tell_healthy_from_progressing_and_degraded(resource: dict[str, Any], health: str) -> None:
    assert argocd(resource) == health
    assert flux(resource) == health
