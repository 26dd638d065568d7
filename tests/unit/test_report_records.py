"""StatementHistory and TuningReport: what the operator writes round-trips through the models, the size rules keep
each object under the API server's limit, and neither kind is served by a kopf handler or the admission webhook."""

from __future__ import annotations

import base64
import importlib
import json
import pkgutil
from datetime import UTC, date, datetime
from typing import Any

import kopf
import pytest

from optischema.api.reports import (
    HISTORY_MAX_BYTES,
    OBJECT_LIMIT_BYTES,
    RECORDS,
    REPORT_MAX_BYTES,
    StatementHistory,
    TuningReport,
    stored_size,
)
from optischema.flows.reports import report_body, report_name
from optischema.kube import history as stored
from optischema.reports import history
from optischema.reports.history import Counter, Day, Point
from optischema.reports.model import Report

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
TARGET: dict[str, Any] = {
    "apiVersion": "optischema.io/v1alpha1",
    "kind": "PostgresTarget",
    "metadata": {"name": "shop", "namespace": "team-a", "uid": "0000-1111"},
}


def _day(points: int = 3) -> Day:
    day = Day(date(2026, 12, 1))
    for i in range(points):
        point = Point(datetime(2026, 12, 1, i, tzinfo=UTC), (Counter("q1", 10 * (i + 1), 5.5 * (i + 1), i),), 8192, 2)
        day = history.add(day, point, {"q1": "SELECT * FROM invoices WHERE customer_id = $1"})
    return day


def _report() -> Report:
    return Report(
        generated_at=NOW, namespace="team-a", target="shop", database="shop", since=NOW, until=NOW, snapshots=2
    )


def test_a_history_day_round_trips_through_its_object() -> None:
    day = _day()
    data = history.encode(day)
    body = stored.body_of(TARGET, day, data)

    assert body["kind"] == "StatementHistory"
    assert body["metadata"]["name"] == "shop-history-20261201"
    assert body["metadata"]["labels"]["optischema.io/target-uid"] == "0000-1111"
    assert (
        body["metadata"]["ownerReferences"][0] | {"kind": "PostgresTarget", "name": "shop", "uid": "0000-1111"}
        == (body["metadata"]["ownerReferences"][0])
    )
    assert body["history"] == {
        "targetRef": {"name": "shop"},
        "day": "2026-12-01",
        "points": 3,
        "sizeBytes": len(data),
        "data": base64.b64encode(data).decode(),
    }
    again = stored._day_of(StatementHistory.model_validate(body).to_wire())
    assert again == day


@pytest.mark.parametrize(
    ("title", "edit"),
    [
        ("data not base64", lambda b: b["history"].update(data="not base64!")),
        ("data not a history", lambda b: b["history"].update(data=base64.b64encode(b"plain").decode())),
        ("unknown field", lambda b: b["history"].update(extra=1)),
        ("day not a date", lambda b: b["history"].update(day="yesterday")),
    ],
)
def test_a_damaged_day_is_skipped_not_fatal(title: str, edit: Any) -> None:
    body = stored.body_of(TARGET, _day(), history.encode(_day()))
    edit(body)
    assert stored._day_of(body) is None, title


def test_a_history_object_stays_far_below_the_object_limit() -> None:
    encoded = (HISTORY_MAX_BYTES + 2) // 3 * 4
    assert encoded + 64 * 1024 < OBJECT_LIMIT_BYTES  # the metadata's share, generously


@pytest.mark.parametrize(
    ("title", "sizes", "kept"),
    [
        ("small: all three formats", {"html": 1000, "md": 1000, "json": 1000}, {"html", "md", "json"}),
        ("a large JSON is left out first", {"html": 1000, "md": 1000, "json": 1_300_000}, {"html", "md"}),
        ("then the Markdown", {"html": 400_000, "md": 900_000, "json": 500_000}, {"html"}),
    ],
)
def test_the_report_keeps_the_html_and_what_fits(title: str, sizes: dict[str, int], kept: set[str]) -> None:
    files = {fmt: "x" * n for fmt, n in sizes.items()}
    body = report_body(TARGET, _report(), files, NOW)
    assert set(body["report"]) - {"targetRef", "generatedAt", "since", "sizeBytes"} == kept, title
    assert stored_size({k: body["report"][k] for k in kept}) <= REPORT_MAX_BYTES
    assert body["metadata"]["name"] == report_name("shop") == "shop-report"
    assert body["report"]["sizeBytes"] == sizes["html"]
    assert TuningReport.model_validate(body).to_wire() == body


def test_html_is_measured_as_the_api_server_stores_it() -> None:
    """Go's JSON escapes <, > and & as \\u003c…: 400 kB of markup is 2.4 MB stored, over the object limit."""
    markup = "<b>" * 140_000  # 420 kB of text, 280 000 angle brackets
    assert stored_size({"html": markup}) > 6 * 280_000
    with pytest.raises(ValueError, match=r"^report.html: \d+ bytes as stored, more than a TuningReport holds"):
        report_body(TARGET, _report(), {"html": markup, "md": "", "json": "{}"}, NOW)


def test_stored_size_matches_a_go_style_encoding() -> None:
    text = 'a "quoted" <tag> & line\nbreak — ü'
    go = json.dumps(text, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    assert stored_size({"html": text}) == len('"html":') + len(go.encode())


def _handler_selectors() -> list[Any]:
    import optischema.handlers as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    registry = kopf.get_default_registry()
    found = []
    for kind in (registry._watching, registry._spawning, registry._changing, registry._webhooks, registry._indexing):
        found += [handler.selector for handler in kind.get_all_handlers()]
    return found


def test_no_kopf_handler_nor_webhook_serves_the_records() -> None:
    """The operator writes these and never watches them: no handler, no admission webhook, no finalizer."""
    selectors = _handler_selectors()
    assert selectors
    names = {name for info in RECORDS for name in (info.kind, info.plural, info.singular, *info.short_names)}
    for selector in selectors:
        assert selector.category is None, selector  # our CRDs share the "optischema" category
        chosen = {selector.any_name, selector.plural, selector.kind, selector.singular, *(selector.shortcut or ())}
        assert chosen - {None}, f"{selector} selects every resource"
        assert not chosen & names, selector
