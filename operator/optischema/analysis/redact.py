"""SQL with its literals replaced by ``…``: identifiers stay, values go.

Used wherever a statement or a change's SQL leaves the operator with PII-safe on (notifications, reports, stored
history): a partial index's predicate or a statement pg_stat_statements did not normalise may hold a real value.
"""

from __future__ import annotations

import re

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$\"])\d+(?:\.\d+)?(?![\w\"])")


def redact(sql: str) -> str:
    return _NUMBER.sub("…", _STRING.sub("'…'", sql))
