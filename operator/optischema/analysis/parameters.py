"""Where each ``$n`` of a normalised statement gets a value from, so the sandbox can run it for real.

pg_stat_statements keeps statements with their constants replaced by ``$n``; to time one we need values that look
like the application's. A parameter compared with a column (or an expression of one table's columns, such as
``lower(email)``) takes that expression's value from a row of the sandbox's own data; ``LIKE $n`` takes a prefix of
one; ``IN ($1, $2)`` members take values from different rows; ``= ANY($n)`` an array of them; ``BETWEEN`` the
smaller and larger of two rows' values; ``column > $n`` a value that keeps as many rows as the statement returned
per call on the target (so that a "recent rows" query stays one); ``INSERT … VALUES`` the column's value; ``LIMIT``
and ``OFFSET`` a typical page; containment, overlap and key tests (``doc @> $n``, ``tags && $n``, ``doc ? $n``) a part
of one row's value (a key and its value, an element, a key). Anything else is left to the parameter's type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from .statements import DIALECT, Catalog, TableKey, prepare_text, source_span, tokens_of

Role = Literal["value", "prefix", "array", "lower", "upper", "above", "below", "limit", "offset", "member", "unknown"]
#: Operators whose other side is a part of the column's value: jsonb/array containment, overlap, key existence.
_MEMBER_TESTS = (
    exp.ArrayContainsAll,
    exp.ArrayContainedBy,
    exp.ArrayOverlaps,
    exp.JSONBContainsTopKey,
    exp.JSONBContainsAnyTopKeys,
    exp.JSONBContainsAllTopKeys,
)
#: Rows a LIMIT is taken to ask for when the statement's own constant is gone.
TYPICAL_LIMIT = 20


@dataclass(frozen=True, slots=True)
class Source:
    """An expression over one table whose values a parameter is compared with."""

    table: TableKey
    alias: str
    expression: str


@dataclass(frozen=True, slots=True)
class Parameter:
    number: int
    role: Role
    source: Source | None = None
    #: Which member of an IN list this is: members draw from different rows.
    slot: int = 0


class ParameterError(ValueError):
    """The statement cannot be read, so its parameters cannot be bound."""


def plan_parameters(query: str, catalog: Catalog) -> list[Parameter]:
    """One entry per distinct ``$n`` in ``query``, in number order."""
    try:
        tree = sqlglot.parse_one(prepare_text(query), dialect=DIALECT)
    except SqlglotError as error:
        raise ParameterError(f"cannot parse the statement: {str(error).splitlines()[0]}") from error
    if tree is None:
        raise ParameterError("empty statement")
    aliases: dict[str, TableKey] = {}
    for table in tree.find_all(exp.Table):
        key = catalog.resolve(table.db or None, table.name)
        if key is not None:
            aliases.setdefault(table.alias_or_name, key)
    found: dict[int, Parameter] = {}
    for node in tree.find_all(exp.Parameter):
        number = _number(node)
        if number is None or number in found:
            continue
        found[number] = _classify(node, number, tree, aliases, catalog)
    return [found[n] for n in sorted(found)]


_PLACEHOLDER = re.compile(r"\$(\d+)")


def runnable(query: str) -> str:
    """The statement with each LIKE pattern built from several parts (``LIKE $1 || $2``, ``LIKE $1 || lpad(…)``)
    replaced by one parameter, and the parameters numbered again from 1: a pattern built by the application is
    a prefix search whose parts no sandbox row can supply one by one, while one pattern parameter can take a
    prefix of a real value. Statements without such a pattern come back as they are (typed parameters as casts)."""
    text = prepare_text(query)
    try:
        tree = sqlglot.parse_one(text, dialect=DIALECT)
    except SqlglotError:
        return query
    if tree is None:
        return query
    tokens = tokens_of(text)
    spans = []
    for like in tree.find_all(exp.Like, exp.ILike):
        pattern = like.expression
        if isinstance(pattern, exp.Parameter) or not pattern.find(exp.Parameter) or pattern.find(exp.Column):
            continue
        span = source_span(pattern, pattern, text, tokens)
        if span is not None:
            spans.append(span[:2])
    if not spans:
        return text
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + "$0" + text[end:]  # a marker, numbered with the others below
    numbers: dict[str, int] = {}

    def renumber(match: re.Match[str]) -> str:
        old = match.group(1)
        key = f"pattern{match.start()}" if old == "0" else old
        return f"${numbers.setdefault(key, len(numbers) + 1)}"

    return _PLACEHOLDER.sub(renumber, text)


def _number(node: exp.Parameter) -> int | None:
    try:
        return int(node.name)
    except (TypeError, ValueError):
        return None


def _classify(node: exp.Expr, number: int, tree: exp.Expr, aliases: dict[str, TableKey], catalog: Catalog) -> Parameter:
    child, parent = node, node.parent
    while isinstance(parent, (exp.Paren, exp.Cast)):
        child, parent = parent, parent.parent
    if isinstance(parent, exp.Limit):
        return Parameter(number, "limit")
    if isinstance(parent, exp.Offset):
        return Parameter(number, "offset")
    if isinstance(parent, exp.Any):
        comparison = parent.parent
        if isinstance(comparison, exp.EQ):
            source = _source(comparison.this, aliases, catalog)
            return Parameter(number, "array" if source else "unknown", source)
    if isinstance(parent, (exp.Like, exp.ILike)) and child is parent.expression:
        source = _source(parent.this, aliases, catalog)
        return Parameter(number, "prefix" if source else "unknown", source)
    if isinstance(parent, exp.In):
        source = _source(parent.this, aliases, catalog)
        slot = next((i for i, member in enumerate(parent.expressions) if member is child), 0)
        return Parameter(number, "value" if source else "unknown", source, slot)
    if isinstance(parent, exp.Between) and child is not parent.this:
        source = _source(parent.this, aliases, catalog)
        bound: Role = "lower" if child is parent.args.get("low") else "upper"
        return Parameter(number, bound if source else "unknown", source)
    if isinstance(parent, (exp.GT, exp.GTE, exp.LT, exp.LTE)):
        on_right = child is parent.expression
        source = _source(parent.this if on_right else parent.expression, aliases, catalog)
        # column > $1 (or $1 < column) keeps the rows above the value; the statement's rows per call say how many.
        above = isinstance(parent, (exp.GT, exp.GTE)) == on_right
        side: Role = "above" if above else "below"
        return Parameter(number, side if source else "unknown", source)
    if isinstance(parent, _MEMBER_TESTS):
        other = parent.expression if child is parent.this else parent.this
        source = _source(other, aliases, catalog)
        return Parameter(number, "member" if source else "unknown", source)
    if isinstance(parent, (exp.EQ, exp.NEQ)):
        other = parent.expression if child is parent.this else parent.this
        source = _source(other, aliases, catalog)
        return Parameter(number, "value" if source else "unknown", source)
    if isinstance(parent, exp.Tuple) and isinstance(parent.parent, exp.Values):
        return _insert_value(parent, child, number, tree, catalog)
    return Parameter(number, "unknown")


def _insert_value(row: exp.Tuple, child: exp.Expr, number: int, tree: exp.Expr, catalog: Catalog) -> Parameter:
    insert = tree if isinstance(tree, exp.Insert) else tree.find(exp.Insert)
    if insert is None:
        return Parameter(number, "unknown")
    target = insert.this
    table = target.this if isinstance(target, exp.Schema) else target
    if not isinstance(table, exp.Table):
        return Parameter(number, "unknown")
    key = catalog.resolve(table.db or None, table.name)
    if key is None:
        return Parameter(number, "unknown")
    # Without a column list the values follow the table's column order, which the catalog here does not keep.
    names = [c.name for c in target.expressions] if isinstance(target, exp.Schema) else []
    position = next((i for i, member in enumerate(row.expressions) if member is child), None)
    if position is None or position >= len(names):
        return Parameter(number, "unknown")
    return Parameter(number, "value", Source(key, table.name, exp.to_identifier(names[position]).sql(DIALECT)))


def _source(node: exp.Expr, aliases: dict[str, TableKey], catalog: Catalog) -> Source | None:
    """The expression as the statement wrote it, when all its columns belong to one table of the statement."""
    columns = [node] if isinstance(node, exp.Column) else list(node.find_all(exp.Column))
    if not columns or node.find(exp.Parameter) or node.find(exp.Select):
        return None
    owners: set[str] = set()
    for column in columns:
        if column.table:
            if column.table not in aliases:
                return None
            owners.add(column.table)
        else:
            having = [alias for alias, key in aliases.items() if column.name in catalog.columns.get(key, ())]
            if len(having) != 1:
                return None
            owners.add(having[0])
    if len(owners) != 1:
        return None
    alias = owners.pop()
    return Source(aliases[alias], alias, node.sql(DIALECT))
