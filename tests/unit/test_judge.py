"""``flows.changes.judge``: the checks an IndexChange meets at admission, asked by the operator (recorded in the
status) and by the validating webhook (the object refused). Pure: the facts are given, one case per refusal, each
asserting the reason and that the message names the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from optischema.flows.changes import Admissible, Facts, admit, judge

IDENTITY = "7000000000000000001"


def target(**policy: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "shop"},
        "spec": {
            "connection": {"host": "db", "database": "shop", "credentialsSecret": {"name": "db"}},
            "policy": {"indexStorageBudget": "3Mi", **policy},
        },
        "status": {"database": {"systemIdentifier": IDENTITY}},
    }


def spec(**fields: Any) -> dict[str, Any]:
    return {
        "targetRef": {"name": "shop"},
        "operation": "create",
        "index": {"table": "invoices", "columns": [{"name": "customer_id"}]},
        **fields,
    }


DROP = {"operation": "drop", "index": {"table": "invoices", "name": "invoices_pkey", "columns": [{"name": "id"}]}}

REFUSED = [
    ("kind not allowed", spec(**DROP), Facts(target()), "PolicyViolation", "spec.operation: the target's policy does "
     "not allow dropIndex"),
    ("immediate not allowed", spec(schedule="immediate"), Facts(target()), "PolicyViolation",
     "spec.schedule: immediate is not allowed"),
    ("over the budget", spec(), Facts(target(), committed_bytes=2 * 2**20, estimated_bytes=2 * 2**20), "OverBudget",
     "spec.index: the new index needs about 2.0 MiB, and 2.0 MiB of the target's indexStorageBudget (3Mi)"),
    ("table missing", spec(), Facts(target(), table_error='relation "public.invoices" does not exist'),
     "TableNotFound", 'spec.index: relation "public.invoices" does not exist'),
    ("unsafe definition", spec(index={"table": "t", "columns": [{"name": "a"}], "where": "a IN (SELECT 1)"}),
     Facts(target()), "InvalidSpec", "index.where: must not contain a query or a statement"),
    ("invalid spec", spec(operation="truncate"), Facts(target()), "InvalidSpec", "spec.operation"),
    ("another database", spec(systemIdentifier="12345"), Facts(target()), "DatabaseMismatch",
     f"spec.systemIdentifier: the change was written for database 12345, but target shop now points at database "
     f"{IDENTITY}"),
    ("no such target", spec(), Facts(None), "TargetMismatch", "spec.targetRef.name: PostgresTarget shop does not "
     "exist in this namespace"),
    ("found on the database", spec(), Facts(target(), problem=("IndexNameTaken", "spec.index: a table named x")),
     "IndexNameTaken", "spec.index: a table named x"),
]  # fmt: skip


@pytest.mark.parametrize(("title", "change", "facts", "reason", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_judge_refuses_naming_the_field(title: str, change: dict[str, Any], facts: Facts, reason: str,
                                        message: str) -> None:  # fmt: skip
    judged = judge(change, facts)
    assert isinstance(judged, tuple), title
    assert judged[0] == reason
    assert message in judged[1]
    # and the operator's path records that very verdict
    verdict = admit(change, facts, now=datetime.now(UTC), generation=1)
    assert (verdict.accepted, verdict.reason, verdict.message) == (False, reason, judged[1])


def test_a_change_that_fits_is_admissible_with_its_sql() -> None:
    judged = judge(spec(systemIdentifier=IDENTITY), Facts(target(), committed_bytes=2**20, estimated_bytes=2**20))
    assert isinstance(judged, Admissible)
    assert judged.sql.startswith("CREATE INDEX CONCURRENTLY")
    assert judged.identity == IDENTITY


def test_without_the_database_s_facts_the_budget_is_not_judged() -> None:
    """What the webhook decides before (or without) the database: policy and spec, never a guessed size."""
    assert isinstance(judge(spec(), Facts(target(), committed_bytes=10 * 2**20)), Admissible)
