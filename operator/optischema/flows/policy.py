"""Auto-approval under a target's policy: which kinds, up to which risk, and only on *measured* improvement.

The measured improvement comes from the sandbox benchmark; kinds that are never benchmarked (``analyze``,
``setting``) are judged on kind and risk alone. Until a recommendation has a benchmark, a rule that asks for a
measured improvement does not approve it: an estimate is not a measurement.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from optischema.api.target import AutoApprove, PostgresTargetSpec

RISK_ORDER = {"low": 0, "medium": 1, "high": 2}
BENCHMARKED = {"createIndex", "dropIndex"}


def auto_approves(rule: AutoApprove, kind: str, risk: str, measured_improvement: float | None) -> tuple[bool, str]:
    """(approved, why) for a recommendation under ``rule``."""
    if not rule.enabled:
        return False, "auto-approval is off"
    if kind not in rule.kinds:
        return False, f"{kind} is not among the auto-approved kinds ({', '.join(rule.kinds)})"
    if RISK_ORDER[risk] > RISK_ORDER[rule.max_risk]:
        return False, f"risk {risk} is above the allowed {rule.max_risk}"
    if kind in BENCHMARKED and rule.min_measured_improvement_percent > 0:
        if measured_improvement is None:
            return False, "no measured improvement yet (the sandbox benchmark decides)"
        if measured_improvement < rule.min_measured_improvement_percent:
            return False, (
                f"measured improvement {measured_improvement:.1f}% is below {rule.min_measured_improvement_percent:g}%"
            )
    return True, f"auto-approved by the policy of the target ({kind}, risk {risk})"


def forged_policy_decision(spec: dict[str, Any], status: dict[str, Any], target_spec: dict[str, Any]) -> str | None:
    """Why a recommendation's decision recorded as a target's policy does not hold (else None): judged again when
    it is acted on, on the target's policy as it is and the benchmark the operator recorded.

    The admission webhook lets the analysis — the operator, or the analysis Job's ServiceAccount — stamp
    ``policy:<target>``; whoever can run a pod as that ServiceAccount could stamp it too. A decision the policy
    would not have made is not acted on.
    """
    decided_by = str((spec.get("approval") or {}).get("decidedBy") or "")
    if not decided_by.startswith("policy:"):
        return None
    name = (spec.get("targetRef") or {}).get("name")
    if decided_by != f"policy:{name}":
        return f"approved as {decided_by}, which is not this recommendation's target ({name}): nothing is applied"
    try:
        rule = PostgresTargetSpec.model_validate(target_spec).policy.auto_approve
    except ValidationError:
        return f"approved as {decided_by}, but the target's policy cannot be read: nothing is applied"
    benchmark = status.get("benchmark") or {}
    measured = None if benchmark.get("error") else benchmark.get("improvementPercent")
    approved, why = auto_approves(rule, str(spec.get("kind")), str(spec.get("risk", "medium")), measured)
    return None if approved else f"approved as {decided_by}, but the target's policy would not approve it: {why}"
