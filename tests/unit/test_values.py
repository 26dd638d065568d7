"""Small value types: quantities, durations, conditions and error formatting (table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from optischema.api import describe
from optischema.api.conditions import find_condition, remove_condition, set_condition
from optischema.api.durations import format_duration, parse_duration
from optischema.api.errors import field_path
from optischema.api.quantity import parse_quantity, quantity_bytes
from optischema.api.target import MaintenanceWindow


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1Gi", Decimal(2**30)),
        ("512Mi", Decimal(512 * 2**20)),
        ("1G", Decimal(10**9)),
        ("250m", Decimal("0.25")),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1e3", Decimal(1000)),
        ("0", Decimal(0)),
        (1024, Decimal(1024)),
    ],
)
def test_quantity(text: str | int, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "Gi", "1 Gi", "1GB", "one", "1..2", "--1"])
def test_bad_quantity(text: str) -> None:
    with pytest.raises(ValueError, match="is not a quantity"):
        parse_quantity(text)


def test_quantity_bytes_rounds_up() -> None:
    assert quantity_bytes("1.5k") == 1500
    assert quantity_bytes("1500m") == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("24h", timedelta(days=1)),
        ("7d", timedelta(days=7)),  # days: report periods and history retention
        ("1d12h", timedelta(hours=36)),
    ],
)
def test_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "90", "1w", "1y", "h", "1h 30m", "-1h"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("value", "text"), [(timedelta(hours=1, minutes=30), "1h30m"), (timedelta(0), "0s")])
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


def test_window_across_midnight_and_a_dst_zone_is_valid() -> None:
    window = MaintenanceWindow.model_validate(
        {"days": ["Sun"], "start": "23:30", "duration": "3h", "timeZone": "America/New_York"}
    )
    assert window.time_zone == "America/New_York"
    assert window.to_wire() == {"days": ["Sun"], "start": "23:30", "duration": "3h", "timeZone": "America/New_York"}


T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_transition_time_moves_only_when_status_changes() -> None:
    conditions = set_condition([], "Ready", "False", "ConnectionFailed", "refused", now=T0, generation=1)
    same_status = set_condition(conditions, "Ready", "False", "AuthenticationFailed", "bad password", now=T1)
    flipped = set_condition(same_status, "Ready", "True", "Connected", "ok", now=T1, generation=2)

    assert find_condition(same_status, "Ready").last_transition_time == T0  # type: ignore[union-attr]
    assert find_condition(same_status, "Ready").reason == "AuthenticationFailed"  # type: ignore[union-attr]
    ready = find_condition(flipped, "Ready")
    assert ready is not None
    assert ready.last_transition_time == T1
    assert ready.observed_generation == 2
    assert len(flipped) == 1


def test_remove_condition() -> None:
    conditions = set_condition([], "Reconciling", "True", "Analysing", "", now=T0)
    conditions = set_condition(conditions, "Ready", "True", "Connected", "", now=T0)
    assert [c.type for c in remove_condition(conditions, "Reconciling")] == ["Ready"]


def test_condition_reason_must_be_camel_case() -> None:
    with pytest.raises(ValidationError) as caught:
        set_condition([], "Ready", "True", "not a reason!", "", now=T0)
    assert describe(caught.value)[0].startswith("reason: must match pattern")


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("spec", "maintenanceWindows", 0, "start"), "spec.maintenanceWindows[0].start"),
        (("spec", "days", 1), "spec.days[1]"),
        (("spec", "function-after[check(), str]"), "spec"),
        ((), "(root)"),
    ],
)
def test_field_path(loc: tuple[str | int, ...], path: str) -> None:
    assert field_path(loc) == path
