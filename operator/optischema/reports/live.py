"""The live endpoint's answer (``GET /targets/<namespace>/<name>/top``), written by the operator and read by
``kubectl optischema top``: one module owns the format, so the two cannot drift apart.

The answer is a *sample*: the cumulative ``pg_stat_statements`` counters of the target's top workload statements
now, in the history's terms (``reports/history.py``), so that the plugin adds it to the stored points as one more
point and the interval from the last analysis to now gives live calls/s, mean and share::

    {"v": 1, "namespace": "shop", "name": "db", "at": "2026-12-01T10:00:00Z", "hidden": 0,
     "statements": [{"queryId": "123", "text": "SELECT … WHERE id = $1", "calls": 10, "totalMs": 1.5, "rows": 10}]}

Only the statement text the analysis itself keeps leaves the operator: application statements (SELECT, INSERT,
UPDATE, DELETE, WITH, MERGE, VALUES, TABLE — never utility statements, whose text pg_stat_statements keeps with
its literals, such as ``ALTER ROLE … PASSWORD '…'``), redacted whatever the target's ``piiSafe`` says (constants
that survived normalisation, and comments, which may carry a request's data, are replaced).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from optischema.analysis.redact import redact
from optischema.reports.history import Counter, Day, Point, is_workload

VERSION = 1
#: Statements one answer carries at most, and the characters of each text.
MAX_STATEMENTS = 200
MAX_TEXT = 2000


def answer(
    namespace: str,
    name: str,
    at: datetime,
    statements: Iterable[tuple[str, str, int, float, int]],
    *,
    hidden: int = 0,
    limit: int = MAX_STATEMENTS,
) -> dict[str, Any]:
    """The body for ``(query id, text, calls, total ms, rows)`` rows: the top ``limit`` workload statements by
    total time, their texts redacted."""
    chosen = sorted((s for s in statements if is_workload(s[1])), key=lambda s: (-s[3], s[0]))[: max(limit, 0)]
    return {
        "v": VERSION,
        "namespace": namespace,
        "name": name,
        "at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hidden": hidden,
        "statements": [
            {"queryId": qid, "text": redact(text)[:MAX_TEXT], "calls": calls, "totalMs": round(total, 3), "rows": rows}
            for qid, text, calls, total, rows in chosen
        ],
    }


def sample(body: object) -> tuple[Point, dict[str, str]]:
    """The point and texts of an answer; ValueError naming what is wrong when it is not one."""
    if not isinstance(body, dict):
        raise ValueError("the live answer is not a JSON object")
    if body.get("v") != VERSION:
        raise ValueError(f"the live answer's version {body.get('v')!r} is not {VERSION}")
    try:
        at = datetime.fromisoformat(str(body["at"]).replace("Z", "+00:00")).astimezone(UTC)
        counters: list[Counter] = []
        texts: dict[str, str] = {}
        for item in body["statements"]:
            qid = str(item["queryId"])
            counters.append(Counter(qid, int(item["calls"]), float(item["totalMs"]), int(item.get("rows", 0))))
            texts[qid] = str(item["text"])[:MAX_TEXT]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"the live answer is malformed: {error!r}") from error
    return Point(at, tuple(counters)), texts


def with_samples(days: Iterable[Day], samples: Iterable[tuple[Point, dict[str, str]]]) -> list[Day]:
    """The stored days plus the live samples as points of their own: the last interval then runs from the last
    analysis (or the previous sample) to now. A statement a sample has but the point before it lacks has no
    interval yet (its share of it is unknown): it appears from the next sample on."""
    taken = list(samples)
    if not taken:
        return list(days)
    live = Day(taken[-1][0].at.date())
    for point, texts in taken:
        live.queries.update(texts)
        live.points.append(point)
    return [*days, live]
