"""Parameters bound from the data's own statistics, for statements seen with no sample as they ran.

A generic plan hides what some indexes are for: ``LIKE $1`` may be a prefix search that a ``text_pattern_ops``
index serves, and ``state = $1`` on a column that is 97% ``'done'`` may always look for the other 3%, which a
partial index serves. pg_stat_statements does record how many rows each call returned on average: when that is far
below what the dominant value (or a full scan) would return, the statement looks for selective values, and a value
from the column's statistics (pg_stats: most common values, histogram) stands in for the parameter. The table is
never read for this.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from optischema.changes.ddl import literal

from .candidates import DOMINANT_VALUE_FREQUENCY
from .snapshot import Column, Table
from .statements import DIALECT, Catalog, TableKey, prepare_text, source_span, tokens_of

#: A statement returning less than this share of what its dominant value (or the whole table) would return is
#: taken to look for selective values.
SELECTIVE_SHARE = 0.2
#: Prefix taken from a typical value for LIKE: half of it, at least this many characters.
MIN_PREFIX = 3


def bind_from_statistics(
    query: str, catalog: Catalog, tables: Mapping[TableKey, Table], rows_per_call: float
) -> str | None:
    """The statement with some parameters replaced by values from pg_stats, or None when none applies."""
    text = prepare_text(query)
    try:
        tree = sqlglot.parse_one(text, dialect=DIALECT)
    except SqlglotError:
        return None
    aliases = {t.alias_or_name: catalog.resolve(t.db or None, t.name) for t in tree.find_all(exp.Table)}

    def column_of(node: exp.Expr) -> tuple[Table, Column] | None:
        while isinstance(node, exp.Paren):
            node = node.this
        if not isinstance(node, exp.Column):
            return None
        if node.table:
            keys = [aliases.get(node.table)]
        else:
            keys = [k for k in aliases.values() if k is not None and node.name in catalog.columns.get(k, ())]
        table = tables.get(keys[0]) if len(keys) == 1 and keys[0] is not None else None
        column = table.column(node.name) if table else None
        return (table, column) if table and column else None

    tokens = tokens_of(text)
    replacements: list[tuple[int, int, str]] = []
    for like in tree.find_all(exp.Like):
        found = column_of(like.this)
        pattern = like.expression
        if found is None or pattern.find(exp.Column) or not pattern.find(exp.Parameter):
            continue
        table, column = found
        value = column.typical_value()
        if value is None or rows_per_call >= SELECTIVE_SHARE * table.rows:
            continue
        prefix = value[: max(MIN_PREFIX, len(value) // 2)]
        prefix = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        span = source_span(pattern, pattern, text, tokens)
        if span:
            replacements.append((span[0], span[1], literal(prefix + "%")))
    for comparison in tree.find_all(exp.EQ):
        if isinstance(comparison.parent, exp.Update):  # SET col = $1 assigns: it selects no rows
            continue
        for side, other in ((comparison.this, comparison.expression), (comparison.expression, comparison.this)):
            if not isinstance(other, exp.Parameter):
                continue
            found = column_of(side)
            if found is None:
                continue
            value = _rare_value(*found, rows_per_call)
            span = source_span(other, other, text, tokens) if value is not None else None
            if span and value is not None:
                replacements.append((span[0], span[1], literal(value)))
    if not replacements:
        return None
    for start, end, value in sorted(replacements, reverse=True):
        text = text[:start] + value + text[end:]
    return text


def _rare_value(table: Table, column: Column, rows_per_call: float) -> str | None:
    """A non-dominant common value whose frequency best matches the rows each call returns."""
    freqs, values = column.most_common_freqs, column.most_common_vals
    if len(values) < 2 or freqs[0] < DOMINANT_VALUE_FREQUENCY:
        return None
    if rows_per_call >= SELECTIVE_SHARE * freqs[0] * table.rows:
        return None
    return min(zip(freqs[1:], values[1:], strict=False), key=lambda fv: abs(fv[0] * table.rows - rows_per_call))[1]
