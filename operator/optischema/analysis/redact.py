"""SQL with its literals replaced by ``…``: identifiers stay, values go.

Used wherever a statement or a change's SQL leaves the operator with PII-safe on (notifications, reports, stored
history): a partial index's predicate or a statement pg_stat_statements did not normalise may hold a real value.
:func:`redact_error` does the same for an error message a database (the sandbox's copy of real rows) wrote, before
it reaches a recommendation's status or an Event.
"""

from __future__ import annotations

import re

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$\"])\d+(?:\.\d+)?(?![\w\"])")
#: PostgreSQL quotes the offending value in double quotes at the end of some messages
#: (``invalid input syntax for type integer: "4111 1111"``) and in a ``Key (col)=(value)`` detail.
_TRAILING_VALUE = re.compile(r':\s*"(?:[^"]|"")*"\s*$')
_KEY_VALUE = re.compile(r"\)=\((?:[^()]|\([^()]*\))*\)")


def redact(sql: str) -> str:
    return _NUMBER.sub("…", _STRING.sub("'…'", sql))


def redact_error(message: str) -> str:
    """A database's error message without the values it quotes: string and number literals, a value in double
    quotes after a colon at the end, ``Key (col)=(value)``. Names (tables, columns, functions) stay, so a
    person can still tell what failed."""
    text = _TRAILING_VALUE.sub(': "…"', message)
    text = _KEY_VALUE.sub(")=(…)", text)
    return redact(text)
