"""Statement history in ConfigMaps: one per target and UTC day, ``<target>-history-YYYYMMDD``.

Why ConfigMaps: the operator and analysis Jobs already talk to the API server and write nothing to the target
database, and a report is read with the same credentials as the custom resources (``kubectl optischema report``).
Each is owned by its target (deleted with it), labelled with the target's uid, and holds one gzip-compressed JSON
day (``reports/history.py``) in ``binaryData`` — a few kB per day, far below the 1 MiB limit. Days older than
``spec.reports.historyRetention`` are deleted when a new point is written.
"""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta
from typing import Any

from optischema.api.resources import owner_reference
from optischema.reports import history
from optischema.reports.history import Day, Point

from .client import ApiException, Kube

KEY = "history.json.gz"
#: A day's compressed bytes at most (base64 in the ConfigMap adds a third; the limit is 1 MiB).
MAX_BYTES = 600 * 1024
COMPONENT = "history"


def name_of(target: str, day: date) -> str:
    return f"{target[:220]}-history-{day:%Y%m%d}"


def _selector(uid: str) -> str:
    return f"app.kubernetes.io/component={COMPONENT},optischema.io/target-uid={uid}"


def _day_of(config_map: Any) -> Day | None:
    data = (config_map.binary_data or {}).get(KEY)
    if not data:
        return None
    try:
        return history.decode(base64.b64decode(data))
    except ValueError:
        return None  # hand-edited or damaged: a report does without it rather than failing


async def add(kube: Kube, target: dict[str, Any], point: Point, texts: dict[str, str]) -> int:
    """Add ``point`` to its day's ConfigMap (read-modify-write, retried on conflict); the stored size in bytes."""
    meta = target["metadata"]
    name = name_of(meta["name"], point.at.date())
    for _ in range(5):
        found = await kube.read_config_map(meta["namespace"], name)
        day = history.add(_day_of(found) if found is not None else None, point, texts)
        data = history.encode(day)
        while len(data) > MAX_BYTES and len(day.points) > 1:  # analyses every few minutes with many statements
            day = history.thin(day)
            data = history.encode(day)
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": {
                    "app.kubernetes.io/name": "optischema",
                    "app.kubernetes.io/component": COMPONENT,
                    "optischema.io/target-uid": meta["uid"],
                },
                "annotations": {"optischema.io/target": meta["name"], "optischema.io/day": day.day.isoformat()},
                "ownerReferences": [owner_reference(target)],
            },
            "binaryData": {KEY: base64.b64encode(data).decode()},
        }
        try:
            await kube.write_config_map(
                meta["namespace"], body, found.metadata.resource_version if found is not None else None
            )
            return len(data)
        except ApiException as error:
            if error.status != 409:  # someone else wrote this day in between: read it again
                raise
    raise RuntimeError(f"ConfigMap {name} kept changing while a history point was written")


async def days(kube: Kube, target: dict[str, Any], since: datetime | None = None) -> list[Day]:
    meta = target["metadata"]
    found = [_day_of(c) for c in await kube.list_config_maps(meta["namespace"], _selector(meta["uid"]))]
    return sorted((d for d in found if d is not None and (since is None or d.day >= since.date())), key=lambda d: d.day)


async def prune(kube: Kube, target: dict[str, Any], retention: timedelta, today: date) -> list[str]:
    """Delete the days older than ``retention``; their names."""
    meta = target["metadata"]
    stored = {}
    for config_map in await kube.list_config_maps(meta["namespace"], _selector(meta["uid"])):
        annotation = (config_map.metadata.annotations or {}).get("optischema.io/day")
        try:
            stored[date.fromisoformat(str(annotation))] = config_map.metadata.name
        except (TypeError, ValueError):
            continue
    gone = [stored[d] for d in history.expired(stored, retention, today)]
    for name in gone:
        await kube.delete_config_map(meta["namespace"], name)
    return gone
