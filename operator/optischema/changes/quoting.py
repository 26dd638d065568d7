"""The one place SQL text is made from a name or a value: identifiers and literals quoted by sqlglot.

Why one module: a catalog name is data that any database user chooses (a sequence may be called
``x'::text::regclass,1)WHERE false;SELECT f();--``), and a spec value is data a person or an LLM chose. Text built
from either by string formatting ran SQL of their choosing once (``advance_sequences``); everything that puts a name
or a value into SQL text goes through these functions, or passes it as a bind parameter, and
``tests/unit/test_sql_building.py`` fails when an f-string, ``%`` or ``.format`` builds SQL any other way.

The semantics are PostgreSQL's ``quote_ident`` / ``quote_literal``; the quoting itself is sqlglot's
(``exp.to_identifier(..., quoted=True)``, ``exp.Literal.string``), as CloudNativePG leaves it to a library.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from sqlglot import exp

DIALECT = "postgres"

#: PostgreSQL's keywords that are not "unreserved" (reserved, type/function-name and column-name keywords, from
#: ``src/include/parser/kwlist.h``): ``quote_ident`` quotes them, so :func:`quote_ident_minimal` does too. The union
#: over the majors we support (``json_*`` and ``system_user`` came in 16): quoting a word an older server does not
#: reserve is harmless, leaving one bare that it does is not. ``tests/postgres/test_quoting.py`` compares with the
#: server's own ``quote_ident`` for every word of ``pg_get_keywords()``.
_KWLIST = """
    all analyse analyze and any array as asc asymmetric authorization between bigint binary bit boolean both case
    cast char character check coalesce collate collation column concurrently constraint create cross current_catalog
    current_date current_role current_schema current_time current_timestamp current_user dec decimal default
    deferrable desc distinct do else end except exists extract false fetch float for foreign freeze from full grant
    greatest group grouping having ilike in initially inner inout int integer intersect interval into is isnull join
    json json_array json_arrayagg json_object json_objectagg json_scalar json_serialize lateral leading least left
    like limit localtime localtimestamp merge_action national natural nchar none normalize not notnull null nullif
    numeric offset on only or order out outer overlaps overlay placing position precision primary real references
    returning right row select session_user setof similar smallint some substring symmetric system_user table
    tablesample then time timestamp to trailing treat trim true union unique user using values varchar variadic
    verbose when where window with xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi
    xmlroot xmlserialize xmltable
"""
_NOT_UNRESERVED = frozenset(_KWLIST.split())
_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")


@functools.lru_cache(maxsize=4096)
def quote_ident(name: str) -> str:
    """An identifier, always double-quoted (embedded quotes doubled): what ``quote_ident`` returns for any name
    that needs quoting, and still correct for one that does not. Cached: an analysis renders the same few names
    for every candidate it makes hypothetical (sqlglot's rendering is the cost)."""
    return exp.to_identifier(name, quoted=True).sql(dialect=DIALECT)


def quote_ident_minimal(name: str) -> str:
    """An identifier as PostgreSQL's ``quote_ident`` (and ``pg_get_indexdef``) prints it: bare when it is lower
    case, plain and no keyword, quoted otherwise. For text compared with what the server prints back (a partial
    index's predicate); anywhere else :func:`quote_ident` is simpler."""
    if _PLAIN.fullmatch(name) and name not in _NOT_UNRESERVED:
        return name
    return quote_ident(name)


def quote_literal(value: str) -> str:
    """A string literal (embedded quotes doubled; backslashes are plain characters, as with
    ``standard_conforming_strings``, on since PostgreSQL 9.1)."""
    return exp.Literal.string(value).sql(dialect=DIALECT)


def qualified(schema: str, name: str) -> str:
    """``"schema"."name"``."""
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def column_list(names: Iterable[str]) -> str:
    """``"a", "b"``: names for a SELECT list, a COPY column list or an INCLUDE."""
    return ", ".join(quote_ident(n) for n in names)


def regclass_text(schema: str, name: str) -> str:
    """A relation's name in the form ``$1::regclass`` reads: pass it as a bind parameter, never in the text.

    (Better still, pass the relation's OID and cast ``$1::oid::regclass``: no parsing of a name at all.)"""
    return qualified(schema, name)
