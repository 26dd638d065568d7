"""When a scheduled report is due: the first cron time after the last report has passed (one report, however many
times were missed while the operator was away)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter


def next_time(schedule: str, time_zone: str, after: datetime) -> datetime:
    """The first time of ``schedule`` (read in ``time_zone``) strictly after ``after``, in UTC."""
    local = after.astimezone(ZoneInfo(time_zone))
    found: datetime = croniter(schedule, local).get_next(datetime)
    return found.astimezone(UTC)


def due(schedule: str, time_zone: str, last: datetime | None, now: datetime) -> bool:
    """Due when a time of the schedule lies in ``(last, now]``; with no ``last``, never before the first time."""
    return last is not None and next_time(schedule, time_zone, last) <= now
