"""A PostgresTarget's ``status.lastAnalysis``: the one place that decides what each analysis outcome records.

Four transitions, each from the previous value to the next one:

- :func:`started` — an analysis Job was created; it has not completed (the operator watches it until it does).
- :func:`succeeded` — the analysis ran: the failure run ends (``consecutiveFailures`` 0, ``failingSince`` unset).
- :func:`failed` — it ran and failed, for whatever reason (an unexpected error included): one more failure in a
  row, the run dated from its first failure. ``analysisFailing`` is judged on these two fields, so every failure
  must pass through here, or the notification never fires.
- :func:`not_ready` — it was due but could not run (the target not ready): counted as a failure too.

Every transition returns a whole :class:`LastAnalysis`; :func:`status_patch` turns it into the merge patch, with
the fields it does not set written as null, so nothing of a former analysis lingers (a stale ``job`` or
``message``). Pure: the clock is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from optischema.api.target import LastAnalysis, SkippedStatement

#: Longest ``message`` kept (status fields are read by people and by ``kubectl``; a traceback is not).
MAX_MESSAGE = 4000
#: Unreadable statements listed by id and reason (all are counted).
MAX_UNREADABLE = 10


def read(status: Mapping[str, Any] | None) -> LastAnalysis:
    """``status.lastAnalysis`` as the model; an unreadable or foreign value reads as no analysis yet, rather than
    stopping the target's reconciliation (the next transition overwrites it whole)."""
    raw = (status or {}).get("lastAnalysis") or {}
    known = {f.alias or name for name, f in LastAnalysis.model_fields.items()}
    try:
        return LastAnalysis.model_validate({k: v for k, v in raw.items() if k in known})
    except (ValidationError, AttributeError):
        return LastAnalysis()


def in_flight(last: LastAnalysis) -> bool:
    """An analysis Job was started and has not recorded its end."""
    return last.job is not None and last.completion_time is None


def started(previous: LastAnalysis, now: datetime, *, job: str | None, requested: str | None) -> LastAnalysis:
    """An analysis begins (inline, or in the Job ``job``), answering the on-demand request ``requested``: no
    completion, outcome or message yet; the failure run is kept, since only a success ends it. :func:`succeeded`
    and :func:`failed` take this value and keep its start, Job and request."""
    return LastAnalysis(
        start_time=now,
        job=job,
        requested=requested,
        consecutive_failures=previous.consecutive_failures,
        failing_since=previous.failing_since if previous.consecutive_failures else None,
    )


def succeeded(
    run: LastAnalysis,
    now: datetime,
    *,
    duration_seconds: float,
    statements_seen: int,
    statements_analysed: int,
    statements_skipped: int = 0,
    unreadable: Sequence[tuple[str, str]] = (),
    notes: Sequence[str] = (),
) -> LastAnalysis:
    """The analysis ``run`` (from :func:`started`) ran to its end. ``unreadable`` is (query id, reason) of every
    statement the parser could not read: the first :data:`MAX_UNREADABLE` are listed, all are counted."""
    return LastAnalysis(
        start_time=run.start_time or now,
        completion_time=now,
        duration_seconds=round(max(duration_seconds, 0.0), 3),
        statements_seen=statements_seen,
        statements_analysed=statements_analysed,
        statements_skipped=statements_skipped,
        unreadable=[
            SkippedStatement(query_id=str(query_id)[:32], reason=reason[:300])
            for query_id, reason in unreadable[:MAX_UNREADABLE]
        ],
        unreadable_count=len(unreadable),
        outcome="Succeeded",
        job=run.job,
        requested=run.requested,
        message=_message("; ".join(n for n in notes if n)),
        consecutive_failures=0,
        failing_since=None,
    )


def failed(run: LastAnalysis, now: datetime, message: str, *, duration_seconds: float | None = None) -> LastAnalysis:
    """The analysis ``run`` (from :func:`started`) failed, for whatever reason: one more failure in a row, with
    ``failingSince`` kept from the run of failures' first."""
    count = run.consecutive_failures
    return LastAnalysis(
        start_time=run.start_time or now,
        completion_time=now,
        duration_seconds=round(max(duration_seconds, 0.0), 3) if duration_seconds is not None else None,
        outcome="Failed",
        job=run.job,
        requested=run.requested,
        message=_message(message) or "the analysis failed",
        consecutive_failures=count + 1,
        failing_since=(run.failing_since if count else None) or now,
    )


def not_ready(
    previous: LastAnalysis, now: datetime, *, reason: str, message: str, requested: str | None
) -> LastAnalysis:
    """An analysis was due but could not run, the target not being ready: a failure (``analysisFailing`` must hear
    of a target that stays unreachable), answering ``requested`` so that one request is not retried forever."""
    run = started(previous, now, job=None, requested=requested)
    return failed(run, now, f"not analysed: the target is not ready ({reason}: {message})", duration_seconds=0.0)


def status_patch(last: LastAnalysis) -> dict[str, Any]:
    """The status merge patch recording ``last``: every field written, unset ones as null (which clears them)."""
    return {"lastAnalysis": last.model_dump(mode="json", by_alias=True)}


def _message(text: str) -> str | None:
    return text[:MAX_MESSAGE] or None
