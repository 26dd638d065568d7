"""Who decided: the webhook's rule, table-driven."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from optischema.flows.decisions import CREATED_BY, Writers, admit_recommendation, stamp_creator, stamp_decision
from optischema.handlers.operator import webhook_required
from optischema.settings import Settings

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
OPERATOR = "system:serviceaccount:optischema-system:optischema"
PENDING: dict[str, Any] = {"approval": {"state": "Pending"}}


@pytest.mark.parametrize(
    ("operation", "old", "new", "user", "patch", "refusal"),
    [
        pytest.param(
            "UPDATE",
            PENDING,
            {"approval": {"state": "Approved"}},
            "alice",
            {"decidedBy": "alice", "decidedAt": "2026-11-29T10:00:00Z"},
            None,
            id="approval is stamped",
        ),
        pytest.param(
            "UPDATE",
            PENDING,
            {"approval": {"state": "Rejected", "reason": "no"}},
            "bob",
            {"decidedBy": "bob", "decidedAt": "2026-11-29T10:00:00Z"},
            None,
            id="rejection is stamped",
        ),
        pytest.param(
            "UPDATE",
            PENDING,
            {"approval": {"state": "Approved", "decidedBy": "bob"}},
            "alice",
            None,
            "decidedBy is filled in by the operator",
            id="a forged decider is refused",
        ),
        pytest.param(
            "CREATE",
            None,
            {"approval": {"state": "Pending", "decidedBy": "mallory"}},
            "mallory",
            None,
            "decidedBy is filled in by the operator",
            id="a decider sent on create is refused",
        ),
        pytest.param(
            "UPDATE",
            PENDING,
            {"approval": {"state": "Approved", "decidedAt": "2020-01-01T00:00:00Z"}},
            "alice",
            None,
            "decidedAt is filled in by the operator",
            id="a forged time is refused",
        ),
        pytest.param(
            "UPDATE",
            PENDING,
            {"approval": {"state": "Approved", "decidedBy": "policy:shop"}},
            OPERATOR,
            None,
            None,
            id="the operator records auto-approval itself",
        ),
        pytest.param(
            "UPDATE",
            PENDING,
            {"approval": {"state": "Pending"}, "evidence": {}},
            "alice",
            None,
            None,
            id="other edits pass untouched",
        ),
        pytest.param("CREATE", None, PENDING, OPERATOR, None, None, id="the operator creates pending ones"),
    ],
)
def test_stamp(operation: str, old: Any, new: Any, user: str, patch: Any, refusal: str | None) -> None:
    stamp = stamp_decision(operation, old, new, user, operator=OPERATOR, now=NOW)
    assert stamp.patch == patch
    if refusal is None:
        assert stamp.refusal is None
    else:
        assert stamp.refusal is not None
        assert refusal in stamp.refusal


# -- the whole webhook answer for a recommendation: decisions made once, proposals written by the analysis only -----

WRITERS = Writers(OPERATOR, "optischema-analysis")
JOB = "system:serviceaccount:shop:optischema-analysis"
INDEX = {"table": "invoices", "columns": [{"name": "customer_id"}], "name": "invoices_customer_id_idx"}
CREATE_SQL = 'CREATE INDEX CONCURRENTLY "invoices_customer_id_idx" ON "public"."invoices" ("customer_id")'


def recommendation(approval: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A TuningRecommendation as the API server hands it to the webhook (defaults applied)."""
    return {
        "metadata": {"name": "shop-createindex-1", "namespace": "shop"},
        "spec": {
            "targetRef": {"name": "shop"},
            "kind": "createIndex",
            "change": {"index": INDEX},
            "sql": CREATE_SQL,
            "rollbackSql": 'DROP INDEX CONCURRENTLY IF EXISTS "public"."invoices_customer_id_idx"',
            "risk": "medium",
            "source": "whatif",
            "rationale": "measured",
            "evidence": {"costBefore": 100.0, "costAfter": 1.0},
            "approval": approval or {"state": "Pending", "when": "nextWindow"},
            **spec,
        },
    }


APPROVED = {
    "state": "Approved",
    "reason": "reviewed",
    "when": "nextWindow",
    "decidedBy": "bob",
    "decidedAt": "2026-11-29T09:00:00Z",
}
AUTO = {**APPROVED, "decidedBy": "policy:shop", "reason": "auto-approved"}


@pytest.mark.parametrize(
    ("operation", "old", "new", "user", "refusal"),
    [
        pytest.param(
            "CREATE", None, recommendation({"state": "Approved", "when": "nextWindow"}), "mallory",
            "spec.approval.state: a recommendation is created Pending and decided afterwards; user mallory may not "
            "create one already Approved",
            id="a user creating one already approved is refused",
        ),
        pytest.param(
            "CREATE", None, recommendation({"state": "Pending", "reason": "pre-filled"}), "mallory",
            "spec.approval.reason: a recommendation is created Pending",
            id="a user creating one with a decision's reason is refused",
        ),
        pytest.param(
            "CREATE", None, recommendation(APPROVED), "mallory",
            "spec.approval.decidedBy is filled in by the operator",
            id="a user creating one decided by the ceo is refused",
        ),
        pytest.param(
            "CREATE", None, recommendation(), "mallory",
            "spec.change: TuningRecommendations are written by the operator's analysis; user mallory may only decide",
            id="a user creating even a pending one is refused",
        ),
        pytest.param("CREATE", None, recommendation(AUTO), OPERATOR, None, id="the operator records auto-approval"),
        pytest.param("CREATE", None, recommendation(AUTO), JOB, None, id="an analysis Job records auto-approval"),
        pytest.param(
            "CREATE", None, recommendation(APPROVED), JOB,
            "spec.approval.decidedBy: an analysis Job records only its target's policy (policy:shop)",
            id="an analysis Job cannot name a person as decider",
        ),
        pytest.param(
            "CREATE", None, recommendation(AUTO), "system:serviceaccount:other:optischema-analysis",
            "spec.approval.decidedBy is filled in by the operator",
            id="another namespace's analysis Job is a user here",
        ),
        pytest.param(
            "UPDATE", recommendation(APPROVED), recommendation({**APPROVED, "reason": "the ceo said so"}), "bob",
            "spec.approval.reason: the recommendation was decided once (Approved by bob)",
            id="the reason cannot be edited after the decision",
        ),
        pytest.param(
            "UPDATE", recommendation(APPROVED), recommendation({**APPROVED, "when": "immediate"}), "bob",
            "spec.approval.when: the recommendation was decided once",
            id="the schedule cannot be edited after the decision",
        ),
        pytest.param(
            "UPDATE", recommendation(AUTO), recommendation({**AUTO, "reason": "edited"}), OPERATOR,
            "spec.approval.reason: the recommendation was decided once",
            id="not even by the operator",
        ),
        pytest.param(
            "UPDATE", recommendation(), recommendation(risk="low"), "bob",
            "spec.risk: is written by the operator's analysis only (user bob changed it from 'medium' to 'low')",
            id="a user lowering the risk is refused",
        ),
        pytest.param(
            "UPDATE", recommendation(), recommendation(evidence={"costBefore": 1e9, "costAfter": 1.0}), "bob",
            "spec.evidence: is written by the operator's analysis only",
            id="a user editing the evidence is refused",
        ),
        pytest.param(
            "UPDATE", recommendation(), recommendation(rationale="trust me", source="heuristic"), "bob",
            "spec.rationale: is written by the operator's analysis only",
            id="a user editing the rationale is refused",
        ),
        pytest.param(
            "UPDATE", recommendation(), recommendation(model="gpt-9"), "bob",
            "spec.model: is written by the operator's analysis only",
            id="a user adding a model is refused",
        ),
        pytest.param(
            "UPDATE", recommendation(), recommendation(evidence={"costBefore": 200.0}), OPERATOR, None,
            id="the operator refreshes the evidence",
        ),
        pytest.param(
            "UPDATE", recommendation(), recommendation({"state": "Approved", "reason": "ok"}), "bob", None,
            id="a person decides",
        ),
        pytest.param(
            "CREATE", None, recommendation(sql='DROP TABLE "invoices"'), OPERATOR,
            "spec.sql: is not what spec.change renders; expected 'CREATE INDEX CONCURRENTLY",
            id="sql differing from the change is refused, even from the operator",
        ),
        pytest.param(
            "CREATE", None, recommendation(sql=CREATE_SQL + "; DROP TABLE invoices"), "mallory",
            "spec.sql: is not what spec.change renders",
            id="a user's sql differing from the change is refused",
        ),
        pytest.param(
            "CREATE", None,
            recommendation(kind="setting", change={"setting": {"name": "work_mem", "value": "100TB"}},
                           sql="ALTER SYSTEM SET \"work_mem\" = '100TB';\nSELECT pg_reload_conf()"),
            OPERATOR,
            "spec.change.setting.value: work_mem = '100TB' is outside 64kB to 2GB",
            id="a setting out of range is refused",
        ),
    ],
)  # fmt: skip
def test_admit_recommendation(operation: str, old: Any, new: Any, user: str, refusal: str | None) -> None:
    stamp = admit_recommendation(operation, old, new, user, writers=WRITERS, now=NOW)
    if refusal is None:
        assert stamp.refusal is None
    else:
        assert stamp.refusal is not None
        assert refusal in stamp.refusal
        assert "\n" not in stamp.refusal  # one line


@pytest.mark.parametrize(
    ("kind", "change", "sql"),
    [
        ("createIndex", {"index": INDEX}, CREATE_SQL),
        ("dropIndex", {"index": INDEX}, 'DROP INDEX CONCURRENTLY IF EXISTS "public"."invoices_customer_id_idx"'),
        ("analyze", {"analyze": {"table": "invoices"}}, 'ANALYZE "public"."invoices"'),
        ("setting", {"setting": {"name": "work_mem", "value": "64MB"}},
         "ALTER SYSTEM SET \"work_mem\" = '64MB';\nSELECT pg_reload_conf()"),
    ],
)  # fmt: skip
def test_the_sql_of_each_kind_is_what_its_change_renders(kind: str, change: dict[str, Any], sql: str) -> None:
    body = recommendation(kind=kind, change=change, sql=sql)
    if kind == "analyze":
        del body["spec"]["rollbackSql"]
    assert admit_recommendation("CREATE", None, body, OPERATOR, writers=WRITERS, now=NOW).refusal is None


# -- who created an IndexChange ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "old", "new", "user", "groups", "allowed", "patch", "refusal"),
    [
        pytest.param("CREATE", None, None, "alice", [], [], {CREATED_BY: "alice"}, None, id="the creator is recorded"),
        pytest.param(
            "CREATE", None, {CREATED_BY: "ceo"}, "mallory", [], [], None,
            f"metadata.annotations[{CREATED_BY}]: is recorded by the operator from the authenticated user",
            id="a creator sent by the client is refused",
        ),
        pytest.param(
            "CREATE", None, None, "mallory", ["developers"], ["alice", "group:dbas"], None,
            f"metadata.annotations[{CREATED_BY}]: user mallory may not create IndexChanges (the operator's "
            "indexChangeCreators allows: alice, group:dbas)",
            id="a creator outside the allow-list is refused",
        ),
        pytest.param(
            "CREATE", None, None, "carol", ["dbas"], ["alice", "group:dbas"], {CREATED_BY: "carol"}, None,
            id="a member of an allowed group may",
        ),
        pytest.param(
            "CREATE", None, None, OPERATOR, [], ["alice"], {CREATED_BY: OPERATOR}, None,
            id="the operator always may (changes made on approval)",
        ),
        pytest.param(
            "UPDATE", {CREATED_BY: "alice"}, {CREATED_BY: "bob"}, "bob", [], [], None,
            f"metadata.annotations[{CREATED_BY}]: records who created the change and cannot be edited",
            id="the creator cannot be edited",
        ),
        pytest.param(
            "UPDATE", {CREATED_BY: "alice"}, {}, "bob", [], [], None, "cannot be edited", id="nor removed",
        ),
        pytest.param(
            "UPDATE", {CREATED_BY: "alice"}, {CREATED_BY: "alice", "x": "y"}, "bob", [], [], None, None,
            id="other annotations may change",
        ),
    ],
)  # fmt: skip
def test_stamp_creator(
    operation: str, old: Any, new: Any, user: str, groups: list[str], allowed: list[str], patch: Any, refusal: Any
) -> None:
    stamp = stamp_creator(operation, old, new, user, groups, operator=OPERATOR, allowed=allowed)
    assert stamp.patch == patch
    assert (stamp.refusal is None) if refusal is None else (refusal in (stamp.refusal or ""))


def test_the_operator_refuses_to_run_without_its_webhook_unless_told_it_may() -> None:
    refusal = webhook_required(Settings(webhook_port=0))
    assert refusal is not None
    assert "OPTISCHEMA_INSECURE_NO_WEBHOOK=true" in refusal
    assert webhook_required(Settings(webhook_port=0, insecure_no_webhook=True)) is None
    assert webhook_required(Settings(webhook_port=9443)) is None


def test_optischema_run_without_its_webhook_exits_with_the_reason() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTISCHEMA_")}
    done = subprocess.run(
        [sys.executable, "-m", "optischema.cli.main", "run", "-n", "shop"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "the admission webhook is off" in done.stderr
    assert "OPTISCHEMA_INSECURE_NO_WEBHOOK=true" in done.stderr
