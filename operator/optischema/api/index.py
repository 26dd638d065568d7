"""The structured index definition shared by recommendations and index changes.

Changes are described as data, never as SQL: the operator renders (and quotes) the DDL itself, so a change that
went through Git review cannot smuggle in a second statement. The checks here are the ones that need no database;
expressions and predicates are parsed again by the renderer before anything runs.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .base import ApiModel, cel_rules

#: PostgreSQL's NAMEDATALEN - 1.
MAX_IDENTIFIER_BYTES = 63
#: PostgreSQL's INDEX_MAX_KEYS (key and INCLUDE columns together).
MAX_INDEX_COLUMNS = 32
IDENTIFIER_PATTERN = r'^[^";\x00-\x1f]+$'


def _identifier(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"must be at most {MAX_IDENTIFIER_BYTES} bytes (PostgreSQL truncates longer names)")
    if any(ch in value for ch in '";') or any(ord(ch) < 0x20 for ch in value):
        raise ValueError("must not contain double quotes, semicolons or control characters")
    return value


def _sql_fragment(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if ";" in value or "\x00" in value:
        raise ValueError("must be a single SQL expression: ';' is not allowed")
    return value


#: A PostgreSQL identifier, unquoted: the renderer quotes it.
Identifier = Annotated[
    str,
    AfterValidator(_identifier),
    Field(min_length=1, json_schema_extra={"maxLength": MAX_IDENTIFIER_BYTES, "pattern": IDENTIFIER_PATTERN}),
]
#: One SQL expression (an index expression or a partial index predicate), without a statement terminator.
SqlExpression = Annotated[
    str, AfterValidator(_sql_fragment), Field(min_length=1, max_length=4096, json_schema_extra={"pattern": r"^[^;]+$"})
]

IndexMethod = Literal["btree", "hash", "gist", "spgist", "gin", "brin"]
_INCLUDE_METHODS = {"btree", "gist", "spgist"}


class IndexColumn(ApiModel):
    """One key of an index: a column or an expression, with optional operator class, order and nulls placement."""

    model_config = cel_rules(
        ("has(self.name) != has(self.expression)", "set exactly one of name or expression"),
    )

    name: Identifier | None = None
    """Column name. Exactly one of ``name`` and ``expression`` is set."""
    expression: SqlExpression | None = None
    """An expression over the table's columns, e.g. ``lower(email)``; it must match the queries' expression
    exactly for the planner to use the index."""
    opclass: Identifier | None = None
    """Operator class, e.g. ``text_pattern_ops`` so that ``LIKE 'abc%'`` can use a btree under a non-C collation,
    ``jsonb_path_ops`` for a GIN index serving only ``@>``, ``gin_trgm_ops`` (pg_trgm) for substring searches."""
    opclass_schema: Identifier | None = None
    """Schema of ``opclass`` when it is not a built-in one, e.g. where the ``pg_trgm`` extension is installed
    (usually ``public``): the operator builds indexes with only ``pg_catalog`` on its search path."""
    collation: Identifier | None = None
    """Collation of this key, when it must differ from the column's."""
    order: Literal["asc", "desc"] | None = None
    """Sort order (btree only); omitted means ascending."""
    nulls: Literal["first", "last"] | None = None
    """Placement of NULLs (btree only); omitted means PostgreSQL's default for the order."""

    @model_validator(mode="after")
    def _one_of_name_or_expression(self) -> IndexColumn:
        if (self.name is None) == (self.expression is None):
            raise ValueError("set exactly one of name or expression")
        return self


class IndexDefinition(ApiModel):
    """An index described as data, from which the operator renders ``CREATE``/``DROP``/``REINDEX`` itself."""

    model_config = cel_rules(
        (
            "!has(self.include) || size(self.include) == 0 || self.method in ['btree', 'gist', 'spgist']",
            "include is supported by btree, gist and spgist indexes only",
        ),
        (
            "self.method == 'btree' || self.columns.all(c, !has(c.order) && !has(c.nulls))",
            "order and nulls apply to btree indexes only",
        ),
    )

    schema_: Identifier = Field(default="public", alias="schema")
    """Schema of the table (and of the index, which PostgreSQL always puts beside its table)."""
    table: Identifier
    """Table the index is on."""
    name: Identifier | None = None
    """Index name. Required to drop or reindex; when creating, omit it and the operator derives a stable name
    from the table and keys (``<table>_<keys>_idx``, shortened with a hash past 63 bytes)."""
    method: IndexMethod = "btree"
    """Access method."""
    unique: bool = False
    """Whether the index enforces uniqueness. Advisors never propose one; a Git change may."""
    columns: list[IndexColumn] = Field(min_length=1, max_length=MAX_INDEX_COLUMNS)
    """Keys, most selective equality columns first, then range or sort columns."""
    include: list[Identifier] = Field(default_factory=list, max_length=MAX_INDEX_COLUMNS)
    """Non-key columns stored in the index so that queries reading only these can use an index-only scan."""
    where: SqlExpression | None = None
    """Predicate of a partial index, e.g. ``paid_at IS NULL``: smaller and cheaper to maintain when queries
    always filter on it."""

    @model_validator(mode="after")
    def _consistent(self) -> IndexDefinition:
        if self.include and self.method not in _INCLUDE_METHODS:
            raise ValueError("include is supported by btree, gist and spgist indexes only")
        if self.method != "btree" and any(c.order or c.nulls for c in self.columns):
            raise ValueError("order and nulls apply to btree indexes only")
        if len(self.columns) + len(self.include) > MAX_INDEX_COLUMNS:
            raise ValueError(f"an index has at most {MAX_INDEX_COLUMNS} columns, keys and include together")
        if self.unique and self.method != "btree":
            raise ValueError("only btree indexes can be unique")
        return self


class PartitionRef(ApiModel):
    """A partition of a partitioned table, as the analysis saw it: where it sits in the partition tree."""

    schema_: Identifier = Field(default="public", alias="schema")
    """Schema of the partition."""
    table: Identifier
    """The partition."""
    parent_schema: Identifier = "public"
    """Schema of the partitioned table it is a partition of."""
    parent_table: Identifier
    """The partitioned table it is a partition of (the index's table, or a partition partitioned in turn)."""
    partitioned: bool = False
    """Whether it is itself partitioned (its index is made ``ON ONLY`` it, then of its own partitions)."""
