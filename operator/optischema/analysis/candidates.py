"""Index candidates: every index shape a statement could use, generated from how it uses each table.

Generation is generous on purpose and decides nothing: the what-if planner prices each candidate against the
whole workload and the selection keeps what pays for itself. The shapes are the ones a DBA would try:

* equality columns, most selective first, then one range, sort, LIKE or expression column;
* expression keys written exactly as the statement writes them (``upper(plate)``);
* ``text_pattern_ops`` for LIKE when the database collation is not C (a plain btree cannot serve a prefix then);
* partial indexes for ``IS NULL`` predicates and for columns dominated by one value that the statements avoid
  (``WHERE state <> 'done'``), which are small and cheap to maintain;
* INCLUDE of the few narrow columns that turn the scan into an index-only scan;
* GIN where only GIN serves: jsonb containment and key existence (``jsonb_path_ops`` when the statement only asks
  for containment, which it serves with a smaller, faster index; ``jsonb_ops`` otherwise), array containment and
  overlap, substring, regular-expression and similarity searches (``gin_trgm_ops``, when ``pg_trgm`` is installed),
  and full-text search on exactly the statement's ``to_tsvector(config, column)``;
* BRIN for ranges over a large table whose physical order follows the column (an append-only timestamp): a
  fraction of a btree's size, offered beside the btree so that the pricing can weigh one against the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from optischema.api.index import IndexColumn, IndexDefinition
from optischema.changes.ddl import UnsafeDefinition, definition_key, render_create
from optischema.changes.quoting import quote_ident_minimal
from optischema.changes.quoting import quote_literal as literal

from .snapshot import Index, IndexKey, Server, Table
from .statements import TableKey, TableUsage

#: Most key columns a candidate gets: wider composites rarely beat a narrower one and cost more on every write.
MAX_KEY_COLUMNS = 4
#: Equality columns taken into one composite.
MAX_EQUALITY_COLUMNS = 3
#: Keys that leave this few rows per value are (nearly) unique: nothing is gained by adding columns after them.
UNIQUE_ROWS = 1.5
#: INCLUDE is tried only for this many extra columns, each at most this wide on average (bytes).
MAX_INCLUDE_COLUMNS = 3
MAX_INCLUDE_WIDTH = 32
#: ... and only when the equality keys leave at least this many rows per value (see _include_columns).
INCLUDE_MIN_ROWS = 3.0
#: A value this frequent (per pg_stats) makes ``col <> value`` a useful partial-index predicate.
DOMINANT_VALUE_FREQUENCY = 0.5
#: ``IS NULL`` is worth a partial index when at most this fraction of rows is NULL (``IS NOT NULL``: at least).
PARTIAL_NULL_FRACTION = 0.5
TEXT_TYPES = ("text", "character varying", "character", "varchar", "citext")
#: jsonb operators ``jsonb_path_ops`` serves; any other (``?``, ``?|``, ``?&``) needs the default ``jsonb_ops``.
JSONB_PATH_OPERATORS = frozenset({"@>", "@?", "@@"})
#: Types whose default GIN operator class serves ``@>``/``<@``/``&&``/``?`` (arrays are recognised by ``[]``).
GIN_DEFAULT_TYPES = ("jsonb", "tsvector", "hstore")
#: BRIN is offered for a range column only when the rows' physical order follows it this closely (|correlation|)...
BRIN_MIN_CORRELATION = 0.9
#: ... on a table at least this large (below it a btree is small anyway, and a BRIN range of pages is most of it).
BRIN_MIN_ROWS = 100_000


@dataclass(slots=True)
class Candidate:
    """One proposed index and the statements that suggested it."""

    index: IndexDefinition
    key: str
    table: TableKey
    statements: set[str] = field(default_factory=set)

    @property
    def leading(self) -> str:
        first = self.index.columns[0]
        return first.name or f"({first.expression})"

    @property
    def touched_columns(self) -> set[str]:
        """Columns whose change forces index maintenance (keys, INCLUDE, predicate; expressions by name)."""
        names = {c.name for c in self.index.columns if c.name} | set(self.index.include)
        texts = [c.expression for c in self.index.columns if c.expression] + [self.index.where or ""]
        return names | {word for text in texts for word in _words(text)}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))


def generate(
    usages: Iterable[tuple[str, TableUsage]],
    tables: dict[TableKey, Table],
    indexes: Sequence[Index],
    server: Server,
) -> list[Candidate]:
    """Candidates for all ``(statement key, usage)`` pairs, merged by definition, minus what existing indexes cover."""
    merged: dict[str, Candidate] = {}
    for statement_key, usage in usages:
        table = tables.get(usage.table)
        if table is None:
            continue
        for index in _shapes(usage, table, server):
            try:
                render_create(index)  # never propose what could not be applied
            except UnsafeDefinition:
                continue
            key = definition_key(index)
            candidate = merged.get(key)
            if candidate is None:
                candidate = merged[key] = Candidate(index, key, usage.table)
            candidate.statements.add(statement_key)
    existing = [i for i in indexes if i.valid]
    return [c for c in merged.values() if not any(covers(e, c.index) for e in existing if e.table_key == c.table)]


def _shapes(usage: TableUsage, table: Table, server: Server) -> list[IndexDefinition]:
    rows = max(table.rows, 1.0)

    def distinct(name: str) -> float:
        column = table.column(name)
        return column.distinct_values(rows) if column else rows**0.5

    ranked = sorted(dict.fromkeys([*usage.equality, *usage.joins]), key=distinct, reverse=True)
    # Equality columns, most selective first, until the rows per value are down to about one: past that, more
    # keys (and any range or sort column after them) only make the index wider.
    equality: list[str] = []
    rows_per_value = rows
    for name in ranked[:MAX_EQUALITY_COLUMNS]:
        if rows_per_value <= UNIQUE_ROWS:
            break
        equality.append(name)
        rows_per_value /= max(distinct(name), 1.0)
    unique = rows_per_value <= UNIQUE_ROWS
    eq_keys = [IndexColumn(name=n) for n in equality]
    tails: list[list[IndexColumn]] = [[IndexColumn(name=n)] for n in usage.ranges]
    tails += [[_like_key(table, n, server)] for n in usage.likes]
    tails += [[IndexColumn(expression=e)] for e in usage.expressions]
    if usage.order_by and not all(name in equality for name, _ in usage.order_by):
        tails.append(
            [IndexColumn(name=n, order="desc" if desc else None) for n, desc in usage.order_by if n not in equality]
        )
    if usage.group_by and not usage.order_by:
        tails.append([IndexColumn(name=n) for n in usage.group_by if n not in equality])

    keysets: list[list[IndexColumn]] = [[IndexColumn(name=n)] for n in ranked[:MAX_EQUALITY_COLUMNS]]
    if len(eq_keys) > 1:
        keysets.append(eq_keys)
    for tail in tails:
        if not tail:
            continue
        keysets.append(tail)
        if eq_keys and not unique:
            keysets.append(eq_keys + tail)
    keysets = [k[:MAX_KEY_COLUMNS] for k in keysets]

    predicates = _partial_predicates(usage, table)
    shapes: list[IndexDefinition] = _search_shapes(usage, table, server) + _brin_shapes(usage, table)
    for keys in keysets:
        for where in [None, *predicates]:
            pruned = [k for k in keys if not (where and k.name and _is_null_test(where, k.name))]
            if not pruned:
                continue
            shapes.append(_index(table, pruned, where))
            include = _include_columns(usage, table, pruned, where)
            if include:
                shapes.append(_index(table, pruned, where, include))
    return shapes


def _search_shapes(usage: TableUsage, table: Table, server: Server) -> list[IndexDefinition]:
    """GIN indexes for the searches a btree cannot serve (containment, substrings, words)."""
    shapes = []
    for name, operators in usage.contains.items():
        column = table.column(name)
        if column is None:
            continue
        if column.type == "jsonb":
            opclass = "jsonb_path_ops" if set(operators) <= JSONB_PATH_OPERATORS else None
        elif column.type.endswith("[]") or column.type in GIN_DEFAULT_TYPES:
            opclass = None
        else:
            continue  # json (no GIN operator class), or a type we cannot vouch for
        shapes.append(_gin(table, IndexColumn(name=name, opclass=opclass)))
    if "pg_trgm" in server.extensions:
        schema = server.extension_schemas.get("pg_trgm")
        for text, is_expression in usage.substrings:
            if is_expression:
                key = IndexColumn(expression=text, opclass="gin_trgm_ops", opclass_schema=schema)
            elif (column := table.column(text)) is not None and column.type.startswith(TEXT_TYPES):
                key = IndexColumn(name=text, opclass="gin_trgm_ops", opclass_schema=schema)
            else:
                continue
            shapes.append(_gin(table, key))
    for expression in usage.fulltext:
        if fixed_configuration(expression):
            shapes.append(_gin(table, IndexColumn(expression=expression)))
    return shapes


def fixed_configuration(expression: str) -> bool:
    """Whether a ``to_tsvector`` call names its configuration: without it the function depends on the
    ``default_text_search_config`` setting, is not IMMUTABLE, and PostgreSQL refuses it in an index."""
    match = re.match(r"\s*to_tsvector\s*\((.*)\)\s*$", expression, re.IGNORECASE | re.DOTALL)
    if match is None:
        return False
    depth, quoted = 0, False
    for char in match.group(1):  # a comma at the top level: two arguments
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            return True
    return False


def _brin_shapes(usage: TableUsage, table: Table) -> list[IndexDefinition]:
    if table.rows < BRIN_MIN_ROWS:
        return []
    shapes = []
    for name in usage.ranges:
        column = table.column(name)
        if column is not None and column.correlation is not None and abs(column.correlation) >= BRIN_MIN_CORRELATION:
            shapes.append(
                IndexDefinition(schema_=table.schema, table=table.name, method="brin", columns=[IndexColumn(name=name)])
            )
    return shapes


def _gin(table: Table, key: IndexColumn) -> IndexDefinition:
    return IndexDefinition(schema_=table.schema, table=table.name, method="gin", columns=[key])


def search_notes(usages: Iterable[tuple[str, TableUsage]], server: Server) -> list[str]:
    """What the analysis should tell a person about searches it could not propose an index for."""
    notes = []
    if "pg_trgm" not in server.extensions:
        searched = sorted({f"{u.table[1]}.{text}" for _, u in usages for text, _ in u.substrings})
        if searched:
            notes.append(
                f"{', '.join(searched[:5])} {'is' if len(searched) == 1 else 'are'} searched by substring, regular "
                "expression or similarity, which only a trigram index serves: pg_trgm is not installed in this "
                "database (CREATE EXTENSION pg_trgm), so no index is proposed for those searches."
            )
    return notes


def _index(
    table: Table, keys: list[IndexColumn], where: str | None, include: list[str] | None = None
) -> IndexDefinition:
    return IndexDefinition(schema_=table.schema, table=table.name, columns=keys, include=include or [], where=where)


def _like_key(table: Table, name: str, server: Server) -> IndexColumn:
    column = table.column(name)
    textual = column is not None and column.type.startswith(TEXT_TYPES)
    if server.collation_is_c or not textual:
        return IndexColumn(name=name)
    opclass = "varchar_pattern_ops" if column is not None and column.type.startswith("character varying") else None
    return IndexColumn(name=name, opclass=opclass or "text_pattern_ops")


def _partial_predicates(usage: TableUsage, table: Table) -> list[str]:
    predicates = []
    for name, is_null in usage.nulls:
        column = table.column(name)
        null_frac = column.null_frac if column and column.null_frac is not None else None
        if null_frac is None:
            continue
        if is_null and null_frac <= PARTIAL_NULL_FRACTION:
            predicates.append(f"{_ident(name)} IS NULL")
        elif not is_null and null_frac >= PARTIAL_NULL_FRACTION:
            predicates.append(f"{_ident(name)} IS NOT NULL")
    for name in usage.equality:
        column = table.column(name)
        if column is None or not column.most_common_freqs:
            continue
        top_value, top_freq = column.most_common_vals[0], column.most_common_freqs[0]
        seen = usage.constants.get(name, [])
        # Statements look for the rare values; an index that leaves out the dominant one is small and cheap.
        if top_freq >= DOMINANT_VALUE_FREQUENCY and seen and top_value not in seen:
            predicates.append(f"{_ident(name)} <> {literal(top_value)}")
    return list(dict.fromkeys(predicates))


def _include_columns(usage: TableUsage, table: Table, keys: list[IndexColumn], where: str | None) -> list[str] | None:
    """Narrow columns to carry in the index, when an index-only scan would save many heap visits per call.

    Only for lookups that read several rows (an aggregate per customer, not a fetch by email): the equality keys
    must leave at least ``INCLUDE_MIN_ROWS`` rows per value, and no LIMIT may cut the scan short. A single row
    costs one heap visit either way, and a wider index costs on every write and in cache.
    """
    if usage.limit or any(k.expression or k.opclass for k in keys):
        return None
    equality = [k.name for k in keys if k.name and k.name in usage.equality + usage.joins]
    if not equality:
        return None
    distinct = 1.0
    for name in equality:
        column = table.column(name)
        distinct *= column.distinct_values(max(table.rows, 1.0)) if column else 1.0
    if max(table.rows, 1.0) / max(distinct, 1.0) < INCLUDE_MIN_ROWS:
        return None
    key_names = {k.name for k in keys if k.name}
    extra = sorted(usage.referenced - key_names - (_words(where) if where else set()))
    if not extra or len(extra) > MAX_INCLUDE_COLUMNS:
        return None
    widths = [c.avg_width or 8 for n in extra if (c := table.column(n)) is not None]
    if len(widths) != len(extra) or sum(widths) > MAX_INCLUDE_WIDTH * len(extra):
        return None
    return extra


def _is_null_test(where: str, name: str) -> bool:
    return where.startswith((f"{_ident(name)} IS NULL", f"{_ident(name)} IS NOT NULL"))


def _ident(name: str) -> str:
    """A column name in a predicate as PostgreSQL prints it back (``quote_ident``): bare when it would not fold or
    misread it, quoted otherwise (a keyword such as ``order`` too), so ``covers`` compares like with like."""
    return quote_ident_minimal(name)


def as_index(definition: IndexDefinition) -> Index:
    """A proposed index seen as an existing one, to ask whether it covers another."""
    return Index(
        schema=definition.schema_,
        table=definition.table,
        name=definition.name or "(proposed)",
        definition="",
        method=definition.method,
        keys=tuple(
            IndexKey(c.name, c.expression, c.opclass, None, c.order == "desc", c.nulls == "first")
            for c in definition.columns
        ),
        include=tuple(definition.include),
        predicate=definition.where,
    )


def covers(existing: Index, wanted: IndexDefinition) -> bool:
    """Whether ``existing`` already serves every lookup ``wanted`` could (same method and predicate, ``wanted``'s
    keys a prefix of its keys, and nothing in ``wanted``'s INCLUDE that it lacks)."""
    if existing.method != wanted.method or _norm(existing.predicate or "") != _norm(wanted.where or ""):
        return False
    if len(wanted.columns) > len(existing.keys):
        return False
    for want, have in zip(wanted.columns, existing.keys, strict=False):
        if want.name is not None and want.name != have.column:
            return False
        if want.expression is not None and (
            have.expression is None or _norm(want.expression) != _norm(have.expression)
        ):
            return False
        if (want.opclass or None) != (have.opclass or None):
            return False
        if (want.order == "desc") != have.descending:
            return False
    available = {k.column for k in existing.keys if k.column} | set(existing.include)
    return set(wanted.include) <= available


def _norm(expression: str) -> str:
    """Expression text compared loosely: pg_get_indexdef adds parentheses and casts of literals (``'a'::text``)."""
    text = re.sub(r"('(?:[^']|'')*')::[a-z ]+", r"\1", expression.lower())
    return "".join(text.split()).strip("()")
