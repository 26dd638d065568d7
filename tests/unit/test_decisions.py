"""Who decided: the webhook's rule, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from optischema.flows.decisions import stamp_decision

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
