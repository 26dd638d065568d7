"""SQL with its literals and comments gone: identifiers and ``$n`` parameters stay, values go.

Used wherever a statement or a change's SQL leaves the operator with PII-safe on (notifications, reports, stored
history, the LLM prompt): a partial index's predicate, a statement pg_stat_statements did not normalise (a utility
statement, a sampled one) or the comment an ORM adds (sqlcommenter's ``/*user='a@b.c'*/``) may hold a real value.

The statement is read by PostgreSQL's own scanner (libpg_query, through pglast), so every form of constant is
recognised as the server would read it: ``'…'``, ``E'…\\'…'``, ``$$…$$``, ``$tag$…$tag$``, ``U&'…'``, ``B'…'`` and
``X'…'``, numbers; and comments (``--``, nested ``/* … */``) vanish. Each constant becomes ``'…'`` (a number ``…``).
Text the scanner cannot read (an unterminated quote, a backslash outside a string, i.e. text written for
``standard_conforming_strings = off``) is hidden whole: a guess about where a literal ends could pass one through.

:func:`redact_error` does the same for an error message a database (the sandbox's copy of real rows) wrote, or a
summary that quotes one, before it reaches a recommendation's status, an Event or a notification.
"""

from __future__ import annotations

import re

from pglast.parser import ParseError, scan

HIDDEN = "(statement hidden: unreadable)"
"""What :func:`redact` returns for text the scanner cannot read; it says why and shows none of the text."""

MAX_CHARS = 8192
"""Text read at most, for a statement or a message; the rest becomes ``…``. libpg_query's scanner takes quadratic
time over some input (nested comments, a long run of operator characters: 80 kB of ``+-`` takes half a minute),
pg_stat_statements keeps a statement's whole text, and anyone who may run SQL on the target can leave one there;
redaction runs in the operator's event loop. Every place that shows a statement shows fewer characters than this
(the prompt and the history keep 2,000). A cut literal is unterminated, so it is hidden like any other."""

_STRINGS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST"})
_NUMBERS = frozenset({"ICONST", "FCONST"})
_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})
#: A backslash outside any string: PostgreSQL's grammar has no such token, so the text was written for
#: ``standard_conforming_strings = off`` and a ``\\'`` in it did not end the string the scanner ended.
_BACKSLASH = "ASCII_92"

#: PostgreSQL quotes the offending value in double quotes at the end of some messages
#: (``invalid input syntax for type integer: "4111 1111"``), in ``value "…" is out of range``, in a
#: ``Key (col)=(value)`` detail and in ``Failing row contains (…)``.
_TRAILING_VALUE = re.compile(r':\s*".*"\s*$', re.DOTALL)  # the value is quoted raw: it may hold quotes
_VALUE_OUT_OF_RANGE = re.compile(r'\bvalue\s+"(?:[^"]|"")*"', re.IGNORECASE)
_KEY_VALUE = re.compile(r"\)=\((?:[^()]|\([^()]*\))*\)")
_FAILING_ROW = re.compile(r"(Failing row contains\s*)\(.*\)", re.IGNORECASE | re.DOTALL)
_AT_OR_NEAR = re.compile(r'(at or near\s*)".*"', re.IGNORECASE | re.DOTALL)  # to the last quote: the token is raw
_JUNK = re.compile(r"[\w.$]+")


class Unreadable(ValueError):
    """The scanner could not read the text (``location`` is where it stopped, in characters)."""

    def __init__(self, why: str, location: int) -> None:
        super().__init__(why)
        self.location = location


def redact(sql: str) -> str:
    """``sql`` with every constant replaced by ``'…'`` (numbers by ``…``) and its comments removed; identifiers,
    keywords, operators and ``$n`` parameters kept as written. Unreadable text gives :data:`HIDDEN`; past
    :data:`MAX_CHARS`, what can be read of the first ones, then ``…``."""
    if len(sql) > MAX_CHARS:
        head = sql[:MAX_CHARS]
        # a backslash may be a standard_conforming_strings = off escape whose string ends past the cut, where the
        # whole text would have shown it: the scanner's reading of the head cannot be trusted then
        return HIDDEN if "\\" in head else _readable_part(head) + " …"
    try:
        return _redacted(sql)
    except Unreadable:
        return HIDDEN


def redact_error(message: str) -> str:
    """A database's error message (or a summary quoting one) without the values it quotes: string and number
    literals in any form, comments, a value in double quotes after a colon at the end or in ``value "…"``,
    ``Key (col)=(value)``, ``Failing row contains (…)``, the token after ``at or near``. Names (tables, columns,
    functions, constraints in double quotes) stay, so a person can still tell what failed.

    A message is prose, not SQL: where the scanner stops (an apostrophe opens a string it never closes), the rest
    of the message is replaced by ``…``; a number with letters after it (``3x``) becomes ``…`` and reading goes on.
    """
    text = message.encode("utf-8", "replace").decode()  # a lone surrogate becomes "?"; the rest is read
    if len(text) > MAX_CHARS:  # read after each junk token again: bounded, as the scanner's time is
        text = text[:MAX_CHARS] + " …"
    text = _TRAILING_VALUE.sub(': "…"', text)
    text = _VALUE_OUT_OF_RANGE.sub('value "…"', text)
    text = _KEY_VALUE.sub(")=(…)", text)
    text = _FAILING_ROW.sub(r"\1(…)", text)
    text = _AT_OR_NEAR.sub(r'\1"…"', text)
    out: list[str] = []
    while text:
        try:
            out.append(_redacted(text))
            break
        except Unreadable as error:
            out.append(_readable_part(text[: error.location]))
            rest = text[error.location :]
            junk = _JUNK.match(rest) if str(error).startswith("trailing junk") else None
            if junk is None or not junk.end():
                out.append("…")  # inside a string, identifier or comment that never ends: nothing more is shown
                break
            out.append("…")
            text = rest[junk.end() :]
    return "".join(out)


def _readable_part(text: str) -> str:
    """What comes before the place the scanner stopped, read on its own (it may stop earlier there: a backslash
    is judged only once the whole text scanned); from where it stops again, ``…``."""
    try:
        return _redacted(text)
    except Unreadable as error:
        if not 0 <= error.location < len(text):
            return "…"
        return _readable_part(text[: error.location]) + "…"


def _redacted(text: str) -> str:
    try:
        tokens = scan(text)
    except UnicodeEncodeError as error:  # a lone surrogate: not text PostgreSQL could have sent
        raise Unreadable("not UTF-8", error.start) from None
    except ParseError as error:
        why, location = (*error.args, 0, 0)[:2]
        where = location if isinstance(location, int) else 0  # none for an invalid byte sequence (E'\0')
        raise Unreadable(str(why).split(" at or near ")[0], where) from None
    except Exception as error:  # whatever else the scanner raises: unread text is hidden, never passed on
        raise Unreadable(type(error).__name__, 0) from None
    out: list[str] = []
    position = 0
    first_string: int | None = None
    for token in tokens:
        gap = text[position : token.start]
        if gap.strip():  # nothing the scanner skipped but white space may pass through unread
            raise Unreadable("text the scanner skipped", position)
        out.append(gap)
        position = token.end + 1
        if token.name in _STRINGS:
            first_string = token.start if first_string is None else first_string
            out.append("'…'")
        elif token.name in _NUMBERS:
            out.append("…")
        elif token.name in _COMMENTS:
            _drop_comment(out, text, token.start, position)
        elif token.name == _BACKSLASH:  # where the first string began, the scanner and the server parted ways
            raise Unreadable("a backslash outside a string", token.start if first_string is None else first_string)
        else:
            out.append(text[token.start : position])
    tail = text[position:]
    if tail.strip():
        raise Unreadable("text the scanner skipped", position)
    out.append(tail)
    return "".join(out)


def _drop_comment(out: list[str], text: str, start: int, after: int) -> None:
    """Remove a comment: keep two tokens it separated apart, and leave no trailing blanks where it ended a line."""
    following = text[after : after + 1]
    if following in ("", "\n", "\r"):
        while out and not out[-1].strip(" \t"):
            out.pop()
        if out:
            out[-1] = out[-1].rstrip(" \t")
    elif following in (" ", "\t"):
        if out and out[-1].endswith((" ", "\t")):
            out[-1] = out[-1].rstrip(" \t")  # one blank, not two, where the comment was
    elif start > 0 and not text[start - 1].isspace() and not following.isspace():
        out.append(" ")


def redact_value(value: object) -> str:
    """A bound parameter shown without its value: ``'…'`` for text, ``…`` for a number, ``NULL``, ``true``/``false``,
    else the type's name (``date(…)``). Never ``redact(repr(value))``: the repr of ``"O'Brien"`` reads as a quoted
    identifier, which redaction keeps."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | bytes):
        return "'…'"
    if isinstance(value, int | float):
        return "…"
    return f"{type(value).__name__}(…)"
