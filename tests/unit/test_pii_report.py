"""A PII-safe report (``spec.reports.piiSafe``, on by default) carries no value a failed change's history quotes.

The apply flow records a failed statement as ``"<sql> failed: <the server's words>"``: the SQL of a partial index
holds its predicate's literal, and PostgreSQL's words may quote the value it refused. A report lists each rolled
back or failed change with that reason, and a report leaves the cluster (``kubectl optischema report``, the
``TuningReport`` a viewer reads, a summary sent to the sinks).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from optischema.reports.build import build
from optischema.reports.render import render

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
SQL = "CREATE INDEX CONCURRENTLY vip_idx ON customers (id) WHERE email = 'vip@example.com'"
#: As flows/apply.py writes a failed statement (_fail: f"{sql} failed: {error.message}"), the server's words real
#: PostgreSQL 15 says for a predicate whose literal does not fit its column.
FAILED = [
    {"action": "Execute", "outcome": "Failed", "sql": SQL,
     'message': 'invalid input syntax for type date: "vip@example.com"'},
    {"action": "Fail", "outcome": "Failed", "message": f"{SQL} failed: invalid input syntax for type date: "
     '"vip@example.com"'},
]  # fmt: skip


def _resources() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    target = {"metadata": {"name": "shop", "namespace": "demo"},
              "spec": {"connection": {"host": "db", "port": 5432, "database": "shop"}}}  # fmt: skip
    change = {
        "metadata": {"name": "shop-create-vip"},
        "spec": {"targetRef": {"name": "shop"}, "operation": "create",
                 "index": {"schema": "public", "table": "customers", "name": "vip_idx"}},
        "status": {"phase": "Failed", "sql": SQL, "completedAt": (T0 + timedelta(hours=1)).isoformat(),
                   "history": FAILED},
    }  # fmt: skip
    return target, [change]


@pytest.mark.parametrize("pii_safe", [True, False])
def test_a_pii_safe_report_shows_no_value_a_failed_change_s_history_quotes(pii_safe: bool) -> None:
    target, changes = _resources()
    report = build(target, [], changes, [], since=T0 - timedelta(days=1), now=T0 + timedelta(days=1),
                   pii_safe=pii_safe)  # fmt: skip
    (failed,) = report.failed
    assert failed.reason is not None
    assert "vip_idx" in failed.reason  # a person still sees what failed
    for form in ("md", "html", "json"):
        rendered = render(report, form)
        assert ("vip@example.com" in rendered) is not pii_safe, form
