"""Statement history as ``StatementHistory`` objects: one per target and UTC day, ``<target>-history-YYYYMMDD``.

Why custom resources (``api/reports.py``): the operator and analysis Jobs already talk to the API server and write
nothing to the target database, and a kind of our own lets ``optischema-viewer`` read the history without any right
on ConfigMaps. Each day is owned by its target (deleted with it), labelled with the target's uid, and holds one
gzip-compressed JSON day (``reports/history.py``) base64-encoded — a few kB per day; a day past ``MAX_BYTES``
keeps every other point, far below the API server's ~1.5 MiB per object. Days older than
``spec.reports.historyRetention`` are deleted when a new point is written.

Earlier versions kept each day in a ConfigMap of the same name (``binaryData["history.json.gz"]``). Those are left
as they are, neither read nor pruned: they are owned by their target and garbage-collected with it, and a report
simply starts its history from the first day kept here.
"""

from __future__ import annotations

import base64
import binascii
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from optischema.api.reports import HISTORY_MAX_BYTES, StatementHistory
from optischema.api.resources import API_VERSION, owner_reference
from optischema.reports import history
from optischema.reports.history import Day, Point

from .client import ApiException, Kube

PLURAL = "statementhistories"
#: A day's compressed bytes at most (base64 in the object adds a third; the API server's limit is ~1.5 MiB).
MAX_BYTES = HISTORY_MAX_BYTES
COMPONENT = "history"
#: Read-modify-write attempts before giving up on a day others keep changing.
ATTEMPTS = 5


def name_of(target: str, day: date) -> str:
    return f"{target[:220]}-history-{day:%Y%m%d}"


def _selector(uid: str) -> str:
    return f"app.kubernetes.io/component={COMPONENT},optischema.io/target-uid={uid}"


def _parsed(obj: dict[str, Any]) -> StatementHistory | None:
    try:
        return StatementHistory.model_validate(obj)
    except ValidationError:
        return None  # hand-edited: a report does without it rather than failing


def _day_of(obj: dict[str, Any]) -> Day | None:
    stored = _parsed(obj)
    if stored is None:
        return None
    try:
        return history.decode(base64.b64decode(stored.history.data, validate=True))
    except (ValueError, binascii.Error):
        return None  # damaged: likewise


def body_of(target: dict[str, Any], day: Day, data: bytes) -> dict[str, Any]:
    """The ``StatementHistory`` of ``day`` for ``target``, its compressed ``data`` given."""
    meta = target["metadata"]
    record = StatementHistory.model_validate(
        {
            "apiVersion": API_VERSION,
            "metadata": {"name": name_of(meta["name"], day.day), "namespace": meta["namespace"]},
            "history": {
                "targetRef": {"name": meta["name"]},
                "day": day.day,
                "points": len(day.points),
                "sizeBytes": len(data),
                "data": base64.b64encode(data).decode(),
            },
        }
    )
    body = record.to_wire()
    body["metadata"].update(
        {
            "labels": {
                "app.kubernetes.io/name": "optischema",
                "app.kubernetes.io/component": COMPONENT,
                "optischema.io/target-uid": meta["uid"],
            },
            "annotations": {"optischema.io/target": meta["name"]},
            "ownerReferences": [owner_reference(target)],
        }
    )
    return body


async def _read(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await kube.get(PLURAL, namespace, name)
    except LookupError:
        return None


async def add(kube: Kube, target: dict[str, Any], point: Point, texts: dict[str, str]) -> int:
    """Add ``point`` to its day (read-modify-write, retried when another writer came in between); the stored size
    in bytes."""
    meta = target["metadata"]
    name = name_of(meta["name"], point.at.date())
    for _ in range(ATTEMPTS):
        found = await _read(kube, meta["namespace"], name)
        day = history.add(_day_of(found) if found is not None else None, point, texts)
        data = history.encode(day)
        while len(data) > MAX_BYTES and len(day.points) > 1:  # analyses every few minutes with many statements
            day = history.thin(day)
            data = history.encode(day)
        if len(data) > MAX_BYTES:
            raise ValueError(f"{name}: one point is {len(data)} bytes compressed, more than a day holds ({MAX_BYTES})")
        body = body_of(target, day, data)
        if found is None:
            if await kube.create(PLURAL, meta["namespace"], body) is not None:
                return len(data)
            continue  # created by someone else in between: read theirs and add to it
        try:
            await kube.replace(PLURAL, meta["namespace"], body, found["metadata"]["resourceVersion"])
            return len(data)
        except ApiException as error:
            if error.status != 409:  # someone else wrote this day in between: read it again
                raise
    raise RuntimeError(f"StatementHistory {name} kept changing while a history point was written")


async def _stored(kube: Kube, target: dict[str, Any]) -> list[dict[str, Any]]:
    meta = target["metadata"]
    return await kube.list(PLURAL, meta["namespace"], _selector(meta["uid"]))


async def days(kube: Kube, target: dict[str, Any], since: datetime | None = None) -> list[Day]:
    found = [_day_of(obj) for obj in await _stored(kube, target)]
    return sorted((d for d in found if d is not None and (since is None or d.day >= since.date())), key=lambda d: d.day)


async def prune(kube: Kube, target: dict[str, Any], retention: timedelta, today: date) -> list[str]:
    """Delete the days older than ``retention``; their names."""
    stored = {}
    for obj in await _stored(kube, target):
        parsed = _parsed(obj)
        if parsed is not None and parsed.metadata.name:
            stored[parsed.history.day] = parsed.metadata.name
    gone = [stored[d] for d in history.expired(stored, retention, today)]
    for name in gone:
        await kube.delete(PLURAL, target["metadata"]["namespace"], name)
    return gone
