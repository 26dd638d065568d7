"""Attacks on the sandbox, on real PostgreSQL: each test tries one and asserts what did not happen.

The attacker is a database role with nothing but CREATE on a schema of the target (any application role has as
much). What it must not get: SQL of its choosing run as the sandbox's superuser, a program started or a server file
read on the machine hosting the sandbox. The marker file each attack would create lives in a directory the server's
system user may write to, and a control step shows that the same code, run with power, does create it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from devcluster import LocalPostgres
from optischema.analysis.suggestions import Rejection, RewriteSuggestion, check_rewrite
from optischema.api.target import Sandbox
from optischema.changes.quoting import quote_ident
from optischema.flows.benchmark import benchmark, prepare_bench_role
from optischema.flows.sandbox import LocalProvider
from optischema.postgres import clone

from .conftest import run_sql
from .test_sandbox import create_index, rewrite, statement_id

#: The sequence name from the report: closes setval's literal, ends the statement, calls f().
CRAFTED = "x'::text::regclass,1)WHERE false;SELECT f();--"
SHOP = [
    "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL)",
    "INSERT INTO orders (customer_id, status) SELECT g % 500, CASE WHEN g % 10 = 0 THEN 'new' ELSE 'done' END "
    "FROM generate_series(1, 20000) g",
    "VACUUM ANALYZE",
]


@pytest.fixture
def marker() -> Iterator[Path]:
    """A file path the sandbox's server (the ``postgres`` system user) could create, and nobody has yet."""
    directory = Path(f"/tmp/optischema-attack-{uuid.uuid4().hex[:12]}")
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)  # past the umask: the server runs as another user
    try:
        yield directory / "ran"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def shop(pg_database: str) -> str:
    await run_sql(pg_database, SHOP)
    await run_sql(pg_database, [f"SELECT * FROM orders WHERE customer_id = {c}" for c in range(1, 12)])
    return pg_database


async def plant(pg_server: LocalPostgres, dsn: str, marker: Path) -> str:
    """As a role with only CREATE on ``public``: a function that records its call (a row in ``calls``, and a
    program that creates ``marker`` when run with power), and a sequence named to call it, owned by a column."""
    database = dsn.rsplit("/", 1)[1]
    role = f"mallory_{uuid.uuid4().hex[:8]}"
    pg_server.psql(f"CREATE ROLE {role} LOGIN NOSUPERUSER; GRANT CREATE ON SCHEMA public TO {role}", database=database)
    conn = await asyncpg.connect(pg_server.dsn(database, user=role))
    try:
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        await conn.execute(
            f"""
            CREATE TABLE calls (at timestamptz NOT NULL DEFAULT now(), by_role text NOT NULL DEFAULT current_user);
            CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $body$
            BEGIN
                INSERT INTO public.calls DEFAULT VALUES;
                COPY (SELECT 1) TO PROGRAM 'touch {marker}';
            END $body$;
            CREATE TABLE t (id integer);
            INSERT INTO t SELECT generate_series(1, 7);
            CREATE SEQUENCE "{CRAFTED.replace('"', '""')}" OWNED BY t.id;
            """
        )
    finally:
        await conn.close()
    return role


async def calls_on(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM calls"))
    finally:
        await conn.close()


async def test_a_crafted_sequence_name_stays_a_name_even_on_a_superuser_session(
    pg_server: LocalPostgres, shop: str, marker: Path
) -> None:
    """The quoting: advance_sequences on a superuser's connection to a database holding the crafted sequence."""
    await plant(pg_server, shop, marker)
    superuser = await asyncpg.connect(shop)
    try:
        await clone.advance_sequences(superuser)
        advanced = await superuser.fetchval("SELECT nextval($1::regclass)", quote_ident(CRAFTED))
        calls = await superuser.fetchval("SELECT count(*) FROM calls")
    finally:
        await superuser.close()
    assert calls == 0, "f() was called"
    assert not marker.exists(), "a program ran on the database's host"
    assert advanced == 8  # the sequence itself was advanced past max(t.id) = 7, as intended


async def test_a_crafted_sequence_name_runs_nothing_through_the_sandbox_benchmark(
    pg_server: LocalPostgres, shop: str, marker: Path
) -> None:
    """The whole path of ``optischema benchmark``: dump, restore, load, advance sequences, build, time."""
    await plant(pg_server, shop, marker)
    helped = await statement_id(shop, "SELECT * FROM orders WHERE customer_id")
    outcome = await benchmark(LocalProvider(), shop, create_index("customer_id", [helped]), Sandbox(), runs=3)

    assert outcome.reason == "Measured", outcome.benchmark.error
    assert not marker.exists(), "f() ran a program on the sandbox's host"
    assert await calls_on(shop) == 0  # and the target was only read

    # Control: the same function, called with power, does leave its marks, so their absence above means something.
    superuser = await asyncpg.connect(shop)
    try:
        await superuser.execute("SELECT f()")
    finally:
        await superuser.close()
    assert marker.exists()
    assert await calls_on(shop) == 1


#: Rewrites an LLM (or whoever writes a recommendation by hand) could propose, each a SELECT doing more than read
#: the table: (rewrite, why the sandbox's run fails, a file whose content the statement returns when run with power).
ATTACKS = {
    # query_to_xml is STABLE: PostgreSQL itself refuses a COPY inside it. The allow-list refuses it first.
    "copy-to-program": (
        "SELECT id, status, query_to_xml('COPY (SELECT 1) TO PROGRAM ''touch {marker}''', true, false, '') "
        "FROM orders WHERE id = $1",
        "COPY is not allowed in a non-volatile function",
        None,
    ),
    # Through the same function, a read of a server file: a superuser gets its content back, the role does not.
    "read-file": (
        "SELECT id, status, query_to_xml('SELECT pg_read_file(''/etc/hostname'') AS f', true, false, '')::text "
        "FROM orders WHERE id = $1",
        "permission denied for function pg_read_file",
        "/etc/hostname",
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_a_rewrite_calling_query_to_xml_is_refused_and_fails_even_if_forced_into_the_sandbox(
    shop: str, marker: Path, attack: str
) -> None:
    template, failure, control = ATTACKS[attack]
    sql = template.format(marker=marker)
    original = "SELECT id, status FROM orders WHERE id + 0 = $1"
    columns = {("public", "orders"): {"id", "customer_id", "status"}}

    checked = check_rewrite(RewriteSuggestion(query_id="5", sql=sql), {"5": original}, columns)
    assert isinstance(checked, Rejection)
    assert "query_to_xml is not on the allow-list" in checked.reason

    # Forced past the check (as a hand-made recommendation would be): the sandbox runs it as its unprivileged
    # role, in a READ ONLY transaction, and it fails there.
    outcome = await benchmark(LocalProvider(), shop, rewrite(original, sql), Sandbox(), runs=3)
    error = outcome.benchmark.error or ""
    assert outcome.reason == "RowsDiffer", outcome.benchmark
    assert "the rewrite failed" in error, error
    assert failure in error, error
    assert not marker.exists(), "the rewrite ran a program on the sandbox's host"

    if control is not None:  # run with power, the same statement does what it was written for
        superuser = await asyncpg.connect(shop)
        try:
            row = await superuser.fetchrow(sql, 1)
        finally:
            await superuser.close()
        assert row is not None
        assert Path(control).read_text().strip() in row[2]


#: What a superuser may do and the benchmark role must not: files, programs, other roles, the server's settings.
ESCAPES = {
    "pg_read_file": "SELECT pg_read_file('/etc/hostname')",
    "pg_ls_dir": "SELECT pg_ls_dir('.')",
    "copy to program": "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    "copy to file": "COPY (SELECT 1) TO '{marker}'",
    "lo_export": "SELECT lo_export(lo_from_bytea(0, 'x'), '{marker}')",
    "set role": "SET ROLE sandbox",
    "alter system": "ALTER SYSTEM SET work_mem = '1GB'",
}


async def test_the_benchmark_role_is_no_superuser_and_reaches_no_file_or_program(shop: str, marker: Path) -> None:
    provider = LocalProvider()
    sandbox = await provider.start({}, Sandbox(), 15)
    try:
        bench_dsn = await prepare_bench_role(sandbox.dsn)
        dump = clone.SchemaDump(15)
        await dump.take(shop)
        warnings = await dump.restore(bench_dsn, "pre-data") + await dump.restore(bench_dsn, "post-data")
        dump.remove()
        conn = await asyncpg.connect(bench_dsn)
        try:
            role = await conn.fetchrow(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
                "ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid "
                "WHERE m.member = r.oid) AS member_of FROM pg_roles r WHERE rolname = current_user"
            )
            power = await clone.power_of(conn)
            owners = await conn.fetch(
                "SELECT DISTINCT relowner::regrole::text AS owner FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace"
            )
            refused = {}
            for name, sql in ESCAPES.items():
                try:
                    await conn.execute(sql.format(marker=marker))
                except asyncpg.PostgresError as error:
                    refused[name] = type(error).__name__
        finally:
            await conn.close()
        superuser = await asyncpg.connect(sandbox.dsn)
        try:
            readable_with_power = await superuser.fetchval("SELECT pg_read_file('/etc/hostname') IS NOT NULL")
            superuser_power = await clone.power_of(superuser)
        finally:
            await superuser.close()
    finally:
        await provider.stop(sandbox)

    assert warnings == []
    assert role["rolname"] == clone.BENCH_ROLE
    assert not role["rolsuper"]
    for attribute in ("rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls"):
        assert not role[attribute], attribute
    assert role["member_of"] == []  # no pg_read_server_files, pg_write_server_files, pg_execute_server_program
    assert power == []
    assert [r["owner"] for r in owners] == [clone.BENCH_ROLE]  # the restored objects are the role's
    assert refused == dict.fromkeys(ESCAPES, "InsufficientPrivilegeError"), refused
    assert not marker.exists()
    assert readable_with_power  # control: the sandbox's superuser could have
    assert superuser_power == ["superuser", *clone.SERVER_ACCESS_ROLES]


async def test_every_allow_listed_rewrite_function_is_a_side_effect_free_built_in(conn: asyncpg.Connection) -> None:
    """The allow-list is checked against PostgreSQL's own catalog, not trusted as written: each name exists in
    ``pg_catalog``, and none of its overloads is VOLATILE or SECURITY DEFINER (a VOLATILE overload could be the
    one the planner resolves a rewrite's call to)."""
    from optischema.analysis.suggestions import REWRITE_FUNCTIONS

    rows = await conn.fetch(
        """
        SELECT p.proname, bool_or(p.provolatile = 'v') AS volatile, bool_or(p.prosecdef) AS definer
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg_catalog' AND p.proname = ANY($1::text[])
        GROUP BY p.proname
        """,
        sorted(REWRITE_FUNCTIONS),
    )
    found = {row["proname"]: row for row in rows}
    assert sorted(REWRITE_FUNCTIONS - found.keys()) == [], "allow-listed names that are no built-in function"
    assert sorted(name for name, row in found.items() if row["volatile"] or row["definer"]) == []
