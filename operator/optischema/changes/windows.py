"""Maintenance-window arithmetic: when may a change run, and when is the next chance.

Pure: ``now`` is always passed in, so the property tests can walk a simulated week across DST transitions.

How wall-clock times are read (documented in the CRD as well):

- A window's ``start`` is local time in its ``timeZone``. On the night clocks jump forward, a start inside the gap
  (``02:30`` in Europe/Berlin on the last Sunday of March) does not exist: the window starts at the first minute that
  does, i.e. the moment of the jump (``03:00`` local).
- On the night clocks fall back, a start inside the repeated hour (``02:30`` twice) is its *first* occurrence.
- ``duration`` is elapsed time, not wall-clock time: a 2h window lasts two real hours even when the clock is
  moved in between. Windows may cross midnight (``23:00`` for ``3h`` ends at ``02:00`` the next day).
- Windows, one-off windows and overlapping occurrences are merged; blackouts are then cut out of the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from optischema.api.durations import parse_duration
from optischema.api.target import MaintenanceWindow, Period

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: Horizons searched for the next window: a fortnight is enough for weekly windows, a year covers long freezes.
HORIZONS = (timedelta(days=15), timedelta(days=400))
#: Longest gap a clock jump makes in any IANA zone (Antarctica/Troll jumps 2h); walked minute by minute.
MAX_GAP_MINUTES = 180


@dataclass(frozen=True, slots=True, order=True)
class Occurrence:
    """One concrete opening, in UTC: ``[start, end)``."""

    start: datetime
    end: datetime

    def contains(self, instant: datetime) -> bool:
        return self.start <= instant < self.end

    def remaining(self, instant: datetime) -> timedelta:
        return max(self.end - instant, timedelta(0))


def local_start(day: date, hhmm: str, zone: ZoneInfo) -> datetime:
    """The UTC instant a window starting at ``hhmm`` local time on ``day`` begins (DST rules in the docstring)."""
    hour, minute = (int(part) for part in hhmm.split(":"))
    wall = datetime.combine(day, time(hour, minute))
    for step in range(MAX_GAP_MINUTES + 1):
        candidate = (wall + timedelta(minutes=step)).replace(tzinfo=zone, fold=0)
        if _exists(candidate):
            return candidate.astimezone(UTC)
    raise ValueError(f"{hhmm} on {day} in {zone.key} is in a gap longer than {MAX_GAP_MINUTES} minutes")


def _exists(aware: datetime) -> bool:
    """A local time exists when it survives a round trip through UTC unchanged."""
    back = aware.astimezone(UTC).astimezone(aware.tzinfo)
    return back.replace(tzinfo=None) == aware.replace(tzinfo=None)


def weekly(window: MaintenanceWindow, since: datetime, until: datetime) -> list[Occurrence]:
    """Occurrences of one weekly window overlapping ``[since, until)``."""
    zone = ZoneInfo(window.time_zone)
    length = parse_duration(window.duration)
    days = {WEEKDAYS.index(d) for d in window.days}
    first = since.astimezone(zone).date() - timedelta(days=2)  # a window that began yesterday may still be open
    last = until.astimezone(zone).date() + timedelta(days=1)
    found = []
    day = first
    while day <= last:
        if day.weekday() in days:
            start = local_start(day, window.start, zone)
            occurrence = Occurrence(start, start + length)
            if occurrence.end > since and occurrence.start < until:
                found.append(occurrence)
        day += timedelta(days=1)
    return found


def merge(occurrences: Iterable[Occurrence]) -> list[Occurrence]:
    """Overlapping or touching occurrences become one."""
    merged: list[Occurrence] = []
    for item in sorted(occurrences):
        if merged and item.start <= merged[-1].end:
            if item.end > merged[-1].end:
                merged[-1] = Occurrence(merged[-1].start, item.end)
        else:
            merged.append(item)
    return merged


def subtract(openings: Sequence[Occurrence], closed: Sequence[Occurrence]) -> list[Occurrence]:
    """``openings`` with every instant of ``closed`` removed (both sorted and merged)."""
    result: list[Occurrence] = []
    for opening in openings:
        pieces = [opening]
        for gap in closed:
            pieces = [
                piece
                for p in pieces
                for piece in (Occurrence(p.start, min(p.end, gap.start)), Occurrence(max(p.start, gap.end), p.end))
                if piece.start < piece.end
            ]
        result.extend(pieces)
    return result


def openings(
    windows: Sequence[MaintenanceWindow],
    one_off: Sequence[Period],
    blackouts: Sequence[Period],
    since: datetime,
    until: datetime,
) -> list[Occurrence]:
    """Every instant in ``[since, until)`` when changes may run, as sorted disjoint occurrences."""
    found = [occurrence for window in windows for occurrence in weekly(window, since, until)]
    found += [Occurrence(p.start.astimezone(UTC), p.end.astimezone(UTC)) for p in one_off]
    closed = merge(Occurrence(p.start.astimezone(UTC), p.end.astimezone(UTC)) for p in blackouts)
    return [o for o in subtract(merge(found), closed) if o.end > since and o.start < until]


def current_or_next(
    windows: Sequence[MaintenanceWindow],
    one_off: Sequence[Period],
    blackouts: Sequence[Period],
    now: datetime,
) -> Occurrence | None:
    """The opening containing ``now``, else the next one; ``None`` when there is none within a year."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    for horizon in HORIZONS:
        found = openings(windows, one_off, blackouts, now, now + horizon)
        if found:
            return _extended(found[0], windows, one_off, blackouts, limit=now + HORIZONS[-1])
    return None


def _extended(
    occurrence: Occurrence,
    windows: Sequence[MaintenanceWindow],
    one_off: Sequence[Period],
    blackouts: Sequence[Period],
    limit: datetime,
) -> Occurrence:
    """An opening found within a horizon may go on past it (daily 24h windows): follow it up to ``limit``."""
    while occurrence.end < limit:
        after = openings(windows, one_off, blackouts, occurrence.end, occurrence.end + HORIZONS[0])
        if not after or after[0].start > occurrence.end:
            break
        occurrence = Occurrence(occurrence.start, after[0].end)
    return occurrence


def in_blackout(blackouts: Sequence[Period], now: datetime) -> Period | None:
    """The blackout ``now`` falls in, if any (its reason goes into the status message)."""
    return next((p for p in blackouts if p.start <= now < p.end), None)


#: Less than this left of a window counts as closed: no statement starts that could not even be sent in time.
MIN_STATEMENT_TIME = timedelta(seconds=1)
#: A difference between the operator's clock and the database's beyond this is reported (condition and Event).
CLOCK_SKEW_TOLERANCE = timedelta(seconds=30)


def time_left(
    windows: Sequence[MaintenanceWindow],
    one_off: Sequence[Period],
    blackouts: Sequence[Period],
    instants: Sequence[datetime],
    *,
    immediate_until: datetime | None = None,
) -> timedelta:
    """How long a statement starting now may run: what is left of the opening, by *every* clock in ``instants``.

    The operator's clock and the database's both count: a statement starts only when the window is open by both,
    and its ``statement_timeout`` is the shorter of the two remainders, so a skewed clock can shorten a window,
    never stretch it (the skew itself is reported). ``immediate_until`` replaces the windows for a change scheduled
    ``immediate`` (its time budget); blackouts are cut out either way. Zero means closed."""
    closed = merge(Occurrence(p.start.astimezone(UTC), p.end.astimezone(UTC)) for p in blackouts)
    lefts = []
    for instant in instants:
        if immediate_until is not None:
            pieces = subtract([Occurrence(instant, immediate_until)] if instant < immediate_until else [], closed)
            found = pieces[0] if pieces else None
        else:
            found = current_or_next(windows, one_off, blackouts, instant)
        if found is None or not found.contains(instant):
            return timedelta(0)
        lefts.append(found.end - instant)
    left = min(lefts, default=timedelta(0))
    return left if left >= MIN_STATEMENT_TIME else timedelta(0)
