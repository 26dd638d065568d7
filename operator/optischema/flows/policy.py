"""Auto-approval under a target's policy: which kinds, up to which risk, and only on *measured* improvement.

The measured improvement comes from the sandbox benchmark; kinds that are never benchmarked (``analyze``,
``setting``) are judged on kind and risk alone. Until a recommendation has a benchmark, a rule that asks for a
measured improvement does not approve it: an estimate is not a measurement.
"""

from __future__ import annotations

from optischema.api.target import AutoApprove

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
