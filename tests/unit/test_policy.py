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
