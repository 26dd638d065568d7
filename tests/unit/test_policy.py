"""Auto-approval rules (table-driven)."""

from __future__ import annotations

import pytest

from optischema.api.target import AutoApprove
from optischema.flows.policy import auto_approves

ON = AutoApprove(enabled=True, kinds=["analyze", "createIndex"], max_risk="low", min_measured_improvement_percent=20)


@pytest.mark.parametrize(
    ("rule", "kind", "risk", "measured", "approved", "why"),
    [
        pytest.param(AutoApprove(), "analyze", "low", None, False, "auto-approval is off", id="off by default"),
        pytest.param(ON, "analyze", "low", None, True, "auto-approved", id="analyze needs no measurement"),
        pytest.param(ON, "setting", "low", None, False, "not among the auto-approved kinds", id="kind not allowed"),
        pytest.param(ON, "analyze", "medium", None, False, "risk medium is above the allowed low", id="too risky"),
        pytest.param(ON, "createIndex", "low", None, False, "no measured improvement yet", id="estimate is not enough"),
        pytest.param(ON, "createIndex", "low", 12.5, False, "below 20%", id="measured too little"),
        pytest.param(ON, "createIndex", "low", 45.0, True, "auto-approved", id="measured enough"),
    ],
)
def test_auto_approval(
    rule: AutoApprove, kind: str, risk: str, measured: float | None, approved: bool, why: str
) -> None:
    decision, reason = auto_approves(rule, kind, risk, measured)
    assert decision is approved
    assert why in reason


def _target(**auto_approve: object) -> dict[str, object]:
    """The PostgresTarget sample's spec with the given ``policy.autoApprove``."""
    import copy
    from pathlib import Path

    import yaml

    sample = yaml.safe_load((Path(__file__).parents[2] / "manifests" / "samples" / "postgrestarget.yaml").read_text())
    spec = copy.deepcopy(sample["spec"])
    spec.setdefault("policy", {})["autoApprove"] = auto_approve
    return dict(spec)


RULE = {"enabled": True, "kinds": ["createIndex"], "maxRisk": "low", "minMeasuredImprovementPercent": 20}


def _recommendation(decided_by: str, risk: str = "low") -> dict[str, object]:
    return {
        "targetRef": {"name": "shop"},
        "kind": "createIndex",
        "risk": risk,
        "approval": {"state": "Approved", "decidedBy": decided_by},
    }


@pytest.mark.parametrize(
    ("decided_by", "risk", "status", "target", "refused"),
    [
        pytest.param("alice", "high", {}, _target(), None, id="a person's decision is theirs"),
        pytest.param(
            "policy:shop", "low", {"benchmark": {"improvementPercent": 60}}, _target(**RULE), None, id="policy holds"
        ),
        pytest.param("policy:shop", "low", {}, _target(), "auto-approval is off", id="forged: policy off"),
        pytest.param(
            "policy:shop", "low", {}, _target(**RULE), "no measured improvement yet", id="forged: never benchmarked"
        ),
        pytest.param(
            "policy:shop",
            "low",
            {"benchmark": {"improvementPercent": 60, "error": "failed"}},
            _target(**RULE),
            "no measured improvement yet",
            id="forged: a failed benchmark measures nothing",
        ),
        pytest.param(
            "policy:shop",
            "high",
            {"benchmark": {"improvementPercent": 60}},
            _target(**RULE),
            "risk high is above the allowed low",
            id="forged: too risky",
        ),
        pytest.param("policy:other", "low", {}, _target(**RULE), "not this recommendation's target", id="other target"),
    ],
)
def test_a_policy_decision_is_judged_again_before_it_is_acted_on(
    decided_by: str, risk: str, status: dict[str, object], target: dict[str, object], refused: str | None
) -> None:
    """Anyone able to run a pod as the analysis Job's ServiceAccount may stamp ``policy:<target>``: the approval
    handler acts on such a decision only when the target's policy, as it is, would have made it."""
    from optischema.flows.policy import forged_policy_decision

    why = forged_policy_decision(_recommendation(decided_by, risk), status, target)
    assert (why is None) if refused is None else (why is not None and refused in why), why
