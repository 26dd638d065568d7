"""Argo CD (Lua) and Flux (CEL) health checks agree on every state of the three kinds."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gitops import argocd, flux, flux_expressions


def condition(type_: str, status: str, reason: str = "R") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": f"{type_} {status}",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip


def obj(kind: str, generation: int | None = None, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", **({"generation": generation} if generation is not None else {})},
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
    # accepted and scheduled for its window (it may wait days): healthy, not progressing
    (obj("IndexChange", phase="WaitingForWindow", conditions=[condition("Reconciling", "True")]), "Healthy"),
    (obj("IndexChange", 1, observedGeneration=1, phase="WaitingForWindow",
         conditions=[condition("Ready", "False", "WaitingForWindow"), condition("Reconciling", "True")]), "Healthy"),
    # waiting, but for a person (no write credentials): degraded
    (obj("IndexChange", 1, observedGeneration=1, phase="WaitingForWindow",
         conditions=[condition("Stalled", "True", "NoWriteCredentials")]), "Degraded"),
    (obj("IndexChange", phase="Pending", conditions=[condition("Reconciling", "True")]), "Progressing"),
    (obj("IndexChange", phase="Applying"), "Progressing"),
    (obj("IndexChange", phase="Verifying"), "Progressing"),
    (obj("IndexChange", phase="Applied", conditions=[condition("Ready", "True")]), "Healthy"),
    (obj("IndexChange", phase="RolledBack"), "Degraded"),
    (obj("IndexChange", phase="Pending", conditions=[condition("Stalled", "True", "NoWriteCredentials")]), "Degraded"),
    (obj("IndexChange", phase="Failed", conditions=[condition("Stalled", "True", "ApplyFailed")]), "Degraded"),
]  # fmt: skip

#: A status written for an older generation says nothing about the spec yet, whatever it says: in progress.
STALE = [
    (obj("PostgresTarget", 3, observedGeneration=2, conditions=[condition("Ready", "True", "Connected")]),
     "Progressing"),
    (obj("PostgresTarget", 3, observedGeneration=2, conditions=[condition("Stalled", "True", "SecretNotFound")]),
     "Progressing"),
    (obj("PostgresTarget", 3, observedGeneration=3, conditions=[condition("Ready", "True", "Connected")]), "Healthy"),
    (obj("TuningRecommendation", 2, observedGeneration=1, phase="AwaitingApproval"), "Progressing"),
    (obj("TuningRecommendation", 2, observedGeneration=2, phase="AwaitingApproval"), "Healthy"),
    (obj("IndexChange", 2, observedGeneration=1, phase="WaitingForWindow"), "Progressing"),
    (obj("IndexChange", 2, observedGeneration=1, phase="Applied"), "Progressing"),
    (obj("IndexChange", 2, observedGeneration=1, phase="Failed"), "Progressing"),
    (obj("IndexChange", 2, observedGeneration=2, phase="Failed"), "Degraded"),
    (obj("IndexChange", 2, observedGeneration=2, phase="Applied"), "Healthy"),
]  # fmt: skip
CASES += STALE


@pytest.mark.parametrize(
    ("resource", "health"),
    CASES,
    ids=[f"{o['kind']}-{o['status'].get('phase', '')}-{i}" for i, (o, _) in enumerate(CASES)],
)
def test_argo_cd_and_flux_tell_healthy_from_progressing_and_degraded(resource: dict[str, Any], health: str) -> None:
    assert argocd(resource) == health
    assert flux(resource) == health


@pytest.mark.parametrize(("resource", "health"), STALE, ids=[f"{o['kind']}-{i}" for i, (o, _) in enumerate(STALE)])
def test_the_flux_expressions_compare_the_generations_themselves(resource: dict[str, Any], health: str) -> None:
    """Flux compares the generations before any expression; ``inProgress`` says it too, so the expressions keep
    their meaning on a CEL evaluator that does not (and the Argo CD checks do it in Lua)."""
    assert flux_expressions(resource) == health
