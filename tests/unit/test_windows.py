"""Maintenance windows: table-driven DST cases, then properties over random zones, windows and clocks."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optischema.api.durations import parse_duration
from optischema.api.target import MaintenanceWindow, Period
from optischema.changes.windows import WEEKDAYS, current_or_next, in_blackout, local_start, openings, time_left

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute DST shift
    "Asia/Kolkata",  # +05:30, no DST
    "America/Santiago",  # DST transitions at midnight
    "Pacific/Chatham",  # +12:45 / +13:45
    "Antarctica/Troll",  # 2-hour jump
]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def window(days: list[str], start: str, duration: str, zone: str = "UTC") -> MaintenanceWindow:
    return MaintenanceWindow.model_validate({"days": days, "start": start, "duration": duration, "timeZone": zone})


@pytest.mark.parametrize(
    ("day", "hhmm", "zone", "expected"),
    [
        pytest.param(date(2026, 3, 29), "02:30", "Europe/Berlin", "2026-03-29T01:00", id="spring gap: at the jump"),
        pytest.param(date(2026, 3, 29), "01:30", "Europe/Berlin", "2026-03-29T00:30", id="before the gap"),
        pytest.param(date(2026, 3, 29), "03:00", "Europe/Berlin", "2026-03-29T01:00", id="first minute after gap"),
        pytest.param(date(2026, 10, 25), "02:30", "Europe/Berlin", "2026-10-25T00:30", id="fall: first of two"),
        pytest.param(date(2026, 3, 8), "02:30", "America/New_York", "2026-03-08T07:00", id="US spring gap"),
        pytest.param(date(2026, 11, 1), "01:30", "America/New_York", "2026-11-01T05:30", id="US fall: first"),
        pytest.param(date(2026, 10, 4), "02:15", "Australia/Lord_Howe", "2026-10-03T15:30", id="half-hour gap"),
        pytest.param(date(2026, 6, 1), "23:59", "Asia/Kolkata", "2026-06-01T18:29", id="half-hour offset"),
    ],
)
def test_local_start(day: date, hhmm: str, zone: str, expected: str) -> None:
    assert local_start(day, hhmm, ZoneInfo(zone)) == utc(expected)


@pytest.mark.parametrize(
    ("windows", "now", "start", "end"),
    [
        pytest.param(
            [window(["Sat"], "23:00", "3h")],
            "2026-11-28T12:00",
            "2026-11-28T23:00",
            "2026-11-29T02:00",
            id="crosses midnight",
        ),
        pytest.param(
            [window(["Sat"], "23:00", "3h")],
            "2026-11-29T01:00",
            "2026-11-28T23:00",
            "2026-11-29T02:00",
            id="open since yesterday",
        ),
        pytest.param(
            [window(["Sat"], "23:00", "3h")],
            "2026-11-29T02:00",
            "2026-12-05T23:00",
            "2026-12-06T02:00",
            id="end is exclusive",
        ),
        pytest.param(
            [window(["Sun"], "01:00", "2h", "Europe/Berlin")],
            "2026-10-24T00:00",
            "2026-10-24T23:00",
            "2026-10-25T01:00",
            id="two real hours on the fall-back night",
        ),
        pytest.param(
            [window(["Mon"], "01:00", "2h"), window(["Mon"], "02:30", "1h")],
            "2026-11-29T00:00",
            "2026-11-30T01:00",
            "2026-11-30T03:30",
            id="overlapping windows merge",
        ),
        pytest.param(
            [window(["Mon"], "01:00", "1h"), window(["Mon"], "02:00", "1h")],
            "2026-11-29T00:00",
            "2026-11-30T01:00",
            "2026-11-30T03:00",
            id="touching windows merge",
        ),
    ],
)
def test_next_window(windows: list[MaintenanceWindow], now: str, start: str, end: str) -> None:
    found = current_or_next(windows, [], [], utc(now))
    assert found is not None
    assert (found.start, found.end) == (utc(start), utc(end))


def period(start: str, end: str) -> Period:
    return Period.model_validate({"start": start + "+00:00", "end": end + "+00:00"})


def test_blackout_cuts_and_postpones() -> None:
    nightly = [window(list(WEEKDAYS), "01:00", "2h")]
    freeze = [period("2026-12-20T00:00", "2026-12-27T02:00")]
    found = current_or_next(nightly, [], freeze, utc("2026-12-19T12:00"))
    assert found is not None
    assert (found.start, found.end) == (utc("2026-12-27T02:00"), utc("2026-12-27T03:00")), "cut to what remains"
    assert in_blackout(freeze, utc("2026-12-24T01:30")) is freeze[0]


def test_one_off_window_and_none() -> None:
    assert current_or_next([], [], [], utc("2026-01-01T00:00")) is None
    extra = [period("2026-12-06T08:00", "2026-12-06T09:00")]
    found = current_or_next([], extra, [], utc("2026-11-29T00:00"))
    assert found is not None
    assert found.start == utc("2026-12-06T08:00")
    year_freeze = [period("2026-01-01T00:00", "2026-12-31T00:00")]
    found = current_or_next([window(["Mon"], "01:00", "1h")], [], year_freeze, utc("2026-01-01T00:00"))
    assert found is not None
    assert found.start == utc("2027-01-04T01:00"), "looks past a long freeze to the first Monday after it"


# -- properties -------------------------------------------------------------------------------------------------

hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
durations = st.builds(lambda minutes: f"{minutes}m", st.integers(5, 24 * 60))
windows_st = st.builds(
    window,
    st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True),
    hhmm,
    durations,
    st.sampled_from(ZONES),
)
# Instants around the 2026 transitions of most zones, and in between.
instants = st.datetimes(min_value=datetime(2026, 3, 1), max_value=datetime(2026, 11, 30)).map(
    lambda d: d.replace(tzinfo=UTC, microsecond=0)
)


def is_open(windows: list[MaintenanceWindow], instant: datetime) -> bool:
    """The definition, read directly: some window started on a recent local day and has not yet lasted its length."""
    for w in windows:
        zone = ZoneInfo(w.time_zone)
        today = instant.astimezone(zone).date()
        for back in range(3):
            day = today - timedelta(days=back)
            if WEEKDAYS[day.weekday()] in w.days:
                start = local_start(day, w.start, zone)
                if start <= instant < start + parse_duration(w.duration):
                    return True
    return False


@settings(max_examples=150, deadline=None)
@given(day=st.dates(date(2026, 1, 1), date(2027, 12, 31)), at=hhmm, zone=st.sampled_from(ZONES))
def test_start_is_the_written_time_or_the_first_minute_after_a_gap(day: date, at: str, zone: str) -> None:
    tz = ZoneInfo(zone)
    start = local_start(day, at, tz)
    wall = start.astimezone(tz).replace(tzinfo=None)
    written = datetime.combine(day, datetime.strptime(at, "%H:%M").time())
    assert wall >= written
    if wall > written:  # only in a gap: the minute before the start shows a wall time before the written one
        before = (start - timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None)
        assert before < written
        assert wall - written <= timedelta(hours=3)


@settings(max_examples=150, deadline=None)
@given(windows=st.lists(windows_st, min_size=1, max_size=3), now=instants)
def test_next_window_is_open_and_nothing_earlier_is(windows: list[MaintenanceWindow], now: datetime) -> None:
    found = current_or_next(windows, [], [], now)
    assert found is not None, "weekly windows always have a next occurrence"
    assert found.end > now
    assert is_open(windows, max(found.start, now))
    assert is_open(windows, found.end - timedelta(seconds=1))
    open_ended = found.end - now >= timedelta(days=400)  # always open: followed as far as the longest horizon
    assert open_ended or not is_open(windows, found.end), "merged occurrences end where no window is open"
    # nothing open between now and the start, sampled every 10 minutes
    probe = now
    while probe < found.start:
        assert not is_open(windows, probe), probe
        probe += timedelta(minutes=10)


@settings(max_examples=40, deadline=None)
@given(
    windows=st.lists(windows_st, min_size=1, max_size=2),
    start=instants,
    freeze_hours=st.integers(1, 72),
    freeze_offset_hours=st.integers(0, 96),
)
def test_simulated_week_applies_only_inside_windows(
    windows: list[MaintenanceWindow], start: datetime, freeze_hours: int, freeze_offset_hours: int
) -> None:
    """A clock walks a week in 5-minute steps; whenever the gate says "open", the definition must agree."""
    freeze_start = start + timedelta(hours=freeze_offset_hours)
    freeze = [Period(start=freeze_start, end=freeze_start + timedelta(hours=freeze_hours))]
    now = start
    while now < start + timedelta(days=7):
        found = current_or_next(windows, [], freeze, now)
        gate_open = found is not None and found.contains(now)
        in_freeze = freeze[0].start <= now < freeze[0].end
        assert gate_open == (is_open(windows, now) and not in_freeze), now
        now += timedelta(minutes=5)


def test_openings_are_sorted_and_disjoint() -> None:
    ws = [window(["Mon", "Tue"], "22:00", "4h", "Europe/Berlin"), window(["Tue"], "23:00", "1h", "UTC")]
    found = openings(ws, [], [], utc("2026-03-20T00:00"), utc("2026-04-20T00:00"))
    assert all(a.end < b.start for a, b in itertools.pairwise(found))


# -- time left for a statement, by both clocks ---------------------------------------------------------------------

_NOON = datetime(2026, 6, 3, 12, 0, tzinfo=UTC)  # a Wednesday
_DAILY = [MaintenanceWindow(days=list(WEEKDAYS), start="11:00", duration="2h", time_zone="UTC")]


@pytest.mark.parametrize(
    ("instants", "blackouts", "immediate_until", "left"),
    [
        pytest.param([_NOON], [], None, timedelta(hours=1), id="an hour left"),
        pytest.param([_NOON, _NOON + timedelta(minutes=10)], [], None, timedelta(minutes=50), id="the later clock"),
        pytest.param([_NOON, _NOON + timedelta(hours=2)], [], None, timedelta(0), id="closed by the database clock"),
        pytest.param([_NOON + timedelta(minutes=59, seconds=59.5)], [], None, timedelta(0), id="under a second"),
        pytest.param(
            [_NOON], [Period(start=_NOON + timedelta(minutes=5), end=_NOON + timedelta(hours=5))], None,
            timedelta(minutes=5), id="a blackout ahead cuts it",
        ),
        pytest.param(
            [_NOON], [Period(start=_NOON - timedelta(minutes=5), end=_NOON + timedelta(minutes=5))], None,
            timedelta(0), id="in a blackout",
        ),
        pytest.param([_NOON + timedelta(hours=3)], [], _NOON + timedelta(hours=4), timedelta(hours=1), id="immediate"),
        pytest.param(
            [_NOON], [Period(start=_NOON - timedelta(minutes=5), end=_NOON + timedelta(minutes=5))],
            _NOON + timedelta(hours=4), timedelta(0), id="immediate, but blacked out",
        ),
    ],
)  # fmt: skip
def test_time_left_for_a_statement(
    instants: list[datetime], blackouts: list[Period], immediate_until: datetime | None, left: timedelta
) -> None:
    # The attack: the statement timeout floored at 1 s let a DROP or ALTER SYSTEM run after the window; now a
    # closed window (by either clock) leaves zero, and the timeout is never more than what is left.
    assert time_left(_DAILY, [], blackouts, instants, immediate_until=immediate_until) == left
