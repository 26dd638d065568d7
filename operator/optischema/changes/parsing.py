"""Guards run before sqlglot reads text nobody vetted: statement texts, LLM replies, expressions written in a CR.

sqlglot's parser recurses once per level of parentheses through a dozen frames, so a deeply nested text exhausts
Python's recursion limit; and its errors are not all ``ParseError`` (a lone quote raises ``TokenError``). Every
place that parses untrusted SQL checks the nesting first and catches :data:`PARSE_ERRORS`, so bad text becomes a
reason, never a crash or an endless retry.
"""

from __future__ import annotations

import re

from sqlglot.errors import SqlglotError

#: Deepest nesting of parentheses parsed. sqlglot recurses once per level through a dozen frames: 50 levels exhaust
#: Python's recursion limit. A deeper statement is skipped before the parser sees it — hitting the limit works
#: (it is caught as well) but is slow, and whatever else runs at that depth (a finalizer, a log handler) fails too.
MAX_NESTING = 32
_QUOTED = re.compile(r"'(?:[^']|'')*'")

#: What sqlglot may raise on text it cannot read (RecursionError despite the nesting guard, e.g. long chains).
PARSE_ERRORS: tuple[type[BaseException], ...] = (SqlglotError, RecursionError, ValueError)


def nesting_problem(text: str) -> str | None:
    """Why ``text`` is nested too deeply to parse, or None; quoted strings are not counted."""
    depth = deepest = 0
    for char in _QUOTED.sub("''", text):
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    if deepest > MAX_NESTING:
        return f"nested too deeply to parse ({deepest} levels of parentheses, more than {MAX_NESTING})"
    return None
