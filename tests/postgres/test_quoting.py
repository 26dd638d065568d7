"""The quoting module against PostgreSQL's own quote_ident / quote_literal, on real PostgreSQL.

Every keyword the server knows (``pg_get_keywords()``) and a set of hostile names: what the module prints must be
what the server prints (``quote_ident_minimal``), or at least read back as the same name (``quote_ident``), and a
literal must read back as the same string.
"""

from __future__ import annotations

import asyncpg

from optischema.changes.quoting import qualified, quote_ident, quote_ident_minimal, quote_literal

HOSTILE = [
    "x'::text::regclass,1)WHERE false;SELECT f();--",
    'a"b',
    '"',
    "'",
    "Mixed",
    "with space",
    "dollar$sign",
    "$1",
    "1abc",
    "é",
    "back\\slash",
    "semi;colon",
    "new\nline",
    "plain_name",
    "_leading",
]


async def test_identifiers_read_back_as_the_same_name_and_print_as_the_server_prints_them(
    conn: asyncpg.Connection,
) -> None:
    keywords = [r["word"] for r in await conn.fetch("SELECT word FROM pg_get_keywords()")]
    for name in keywords + HOSTILE:
        server = await conn.fetchval("SELECT quote_ident($1)", name)
        assert quote_ident_minimal(name) == server, name
        # Read back through the parser: the quoted form names exactly this identifier.
        assert await conn.fetchval(f"SELECT (parse_ident({quote_literal(quote_ident(name))}))[1]") == name


async def test_literals_read_back_as_the_same_string(conn: asyncpg.Connection) -> None:
    for value in [*HOSTILE, "", "''", "\\'", "E'\\x41'"]:
        assert await conn.fetchval(f"SELECT {quote_literal(value)}::text") == value


async def test_a_qualified_name_with_hostile_parts_names_its_own_relation(conn: asyncpg.Connection) -> None:
    schema, table = 'we"ird', "x'::text::regclass,1)WHERE false;SELECT f();--"
    await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
    await conn.execute(f"CREATE TABLE {qualified(schema, table)} (id int)")
    found = await conn.fetchrow(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = $1::regclass",
        qualified(schema, table),
    )
    assert tuple(found) == (schema, table)
