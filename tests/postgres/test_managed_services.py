"""A real PostgreSQL dressed as each managed service by what the provider leaves on it — its role, a provider
setting (a dotted placeholder set with ``ALTER DATABASE … SET`` or in the configuration file), Aurora's
``aurora_version()`` — is recognised; its settings findings come out as advice only, which nothing runs; its index
work goes on as usual.

A server of its own: the provider roles are cluster-wide, and other tests must keep seeing a self-managed server.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from optischema.analysis.platform import classify
from optischema.api.indexchange import IndexChangeSpec
from optischema.changes.ddl import UnsafeDefinition, statements_for
from optischema.changes.managed import advice_only
from optischema.flows.analyze import AnalyzeOptions, analyze
from optischema.flows.target import check_target
from optischema.postgres.local import LocalPostgres, find_bindir
from optischema.postgres.platform import read_signals

from .conftest import run_sql

pytestmark = pytest.mark.postgres

ACCOUNTS = """
CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, region text NOT NULL, plan text NOT NULL);
INSERT INTO accounts SELECT g, 'a' || g || '@example.org', 'r' || (g % 30), 'p' || (g % 3)
  FROM generate_series(1, 100000) g;
VACUUM ANALYZE;
"""
#: What each platform's simulation creates: roles (cluster-wide, dropped afterwards), database settings, functions.
PLATFORMS = {
    "rds": (["rds_superuser"], {"rds.extensions": "pg_stat_statements,hypopg"}, []),
    "aurora": (
        ["rds_superuser"],
        {"rds.extensions": "pg_stat_statements"},
        ["CREATE FUNCTION aurora_version() RETURNS text LANGUAGE sql AS $$SELECT '15.4.3'$$"],
    ),
    "cloudSql": (["cloudsqlsuperuser"], {"cloudsql.iam_authentication": "off"}, []),
    "azure": (["azure_pg_admin"], {"azure.extensions": "pg_stat_statements,hypopg"}, []),
}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPostgres]:
    local = LocalPostgres()
    try:
        local.start()
    except Exception as exc:  # a missing server is a failure, never a skip
        pytest.fail(f"could not start PostgreSQL: {exc}")
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def database(server: LocalPostgres, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"m_{request.node.name.split('[')[-1].rstrip(']').lower()}"[:40].replace("-", "_").replace(".", "_")
    server.psql(f"CREATE DATABASE {name}")
    server.psql("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;", database=name)
    yield name
    server.psql(f"DROP DATABASE {name} WITH (FORCE)")


def dress(server: LocalPostgres, database: str, platform: str) -> None:
    roles, settings, functions = PLATFORMS[platform]
    for role in roles:
        server.psql(f"CREATE ROLE {role} NOLOGIN")
    for name, value in settings.items():
        server.psql(f"ALTER DATABASE {database} SET {name} = '{value}'")
    for function in functions:
        server.psql(function, database=database)


def undress(server: LocalPostgres, platform: str) -> None:
    for role in PLATFORMS[platform][0]:
        server.psql(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
async def conn(server: LocalPostgres, database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(server.dsn(database))
    try:
        yield connection
    finally:
        await connection.close()


async def test_a_plain_server_is_self_managed(conn: asyncpg.Connection) -> None:
    detection = classify(await read_signals(conn))
    assert (detection.platform, detection.evidence) == ("selfManaged", ())


@pytest.mark.parametrize("platform", list(PLATFORMS))
async def test_each_platform_is_recognised_from_the_server(server: LocalPostgres, database: str, platform: str) -> None:
    dress(server, database, platform)
    try:
        connection = await asyncpg.connect(server.dsn(database))  # database settings apply to new sessions
        try:
            detection = classify(await read_signals(connection))
        finally:
            await connection.close()
        assert detection.platform == platform
        roles, settings, _ = PLATFORMS[platform]
        assert {f"role {r}" for r in roles} | {f"setting {s}" for s in settings} <= set(detection.evidence)
    finally:
        undress(server, platform)


async def test_a_provider_setting_in_the_configuration_file_is_seen() -> None:
    """A placeholder set in postgresql.conf (as a provider's image would) is hidden from pg_settings but seen by
    current_setting(name, true). ALTER SYSTEM cannot stand in: PostgreSQL 15 refuses a placeholder it does not
    know ("unrecognized configuration parameter"), while ALTER DATABASE … SET accepts one."""
    with LocalPostgres(settings={"azure.extensions": "hypopg"}) as local:
        connection = await asyncpg.connect(local.dsn())
        try:
            listed = await connection.fetchval("SELECT count(*) FROM pg_settings WHERE name = 'azure.extensions'")
            detection = classify(await read_signals(connection))
        finally:
            await connection.close()
    assert listed == 0  # why the probe asks current_setting too
    assert (detection.platform, detection.evidence) == ("azure", ("setting azure.extensions",))


@pytest.mark.parametrize("major", [13, 14, 15, 16, 17, 18])
async def test_the_probe_reads_every_major(major: int) -> None:
    """The probe's catalog queries on every major the operator supports; and what each accepts for a provider's
    placeholder: ALTER DATABASE … SET on all, ALTER SYSTEM SET only from 17 on (13–16 refuse a name they do not
    know)."""
    with LocalPostgres(major=major) as local:
        local.psql("CREATE DATABASE app")
        local.psql("CREATE ROLE cloudsqlsuperuser NOLOGIN")
        local.psql("ALTER DATABASE app SET cloudsql.iam_authentication = 'off'")
        connection = await asyncpg.connect(local.dsn("app"))
        try:
            version = await connection.fetchval("SHOW server_version_num")
            detection = classify(await read_signals(connection))
        finally:
            await connection.close()
        if major >= 17:
            local.psql("ALTER SYSTEM SET azure.extensions = 'hypopg'")
        else:
            with pytest.raises(RuntimeError, match=r'unrecognized configuration parameter "azure\.extensions"'):
                local.psql("ALTER SYSTEM SET azure.extensions = 'hypopg'")
    assert int(version) // 10000 == major
    assert detection.platform == "cloudSql"
    assert detection.evidence == ("role cloudsqlsuperuser", "setting cloudsql.iam_authentication")


@pytest.mark.parametrize("platform", list(PLATFORMS))
async def test_settings_are_advice_only_and_index_work_goes_on(
    server: LocalPostgres, database: str, platform: str
) -> None:
    dsn = server.dsn(database)
    await run_sql(dsn, [s for s in ACCOUNTS.split(";\n") if s.strip()])
    await run_sql(dsn, [f"ALTER DATABASE {database} SET effective_cache_size = '64MB'"])
    dress(server, database, platform)
    try:
        await run_sql(dsn, [f"SELECT id FROM accounts WHERE email = 'a{n}@example.org'" for n in (1, 2, 3)], 20)
        result = await analyze(dsn, AnalyzeOptions(sample_seconds=0))
        settings = [r for r in result.recommendations if r.kind == "setting"]
        assert {r.change.setting.name for r in settings if r.change.setting} >= {"effective_cache_size"}
        for recommendation in settings:
            setting = recommendation.change.setting
            assert setting is not None
            assert setting.platform == platform
            assert all(line.startswith("-- ") for line in recommendation.sql.splitlines())
            assert "refuses ALTER SYSTEM; the operator never runs this" in recommendation.sql
            assert "advice only" in recommendation.rationale
        assert any("settings recommendations are advice only" in note for note in result.notes)
        creates = [r for r in result.recommendations if r.kind == "createIndex" and r.change.index]
        assert [[c.name for c in r.change.index.columns] for r in creates if r.change.index] == [["email"]]

        # Approving it runs nothing: the handler makes no IndexChange (it says why), and an IndexChange made by
        # hand is refused by the apply path; the advice itself, run as SQL, is comments and changes nothing.
        cache = next(r for r in settings if r.change.setting and r.change.setting.name == "effective_cache_size")
        assert cache.change.setting is not None
        spec = cache.to_custom_resource("shop").spec.to_wire()
        assert "nothing was run" in (advice_only(spec) or "")
        change = IndexChangeSpec.model_validate(
            {"targetRef": {"name": "shop"}, "operation": "setting", "setting": cache.change.setting.to_wire()}
        )
        with pytest.raises(UnsafeDefinition, match="advice only"):
            statements_for(change)
        files = "SELECT count(*) FROM pg_file_settings"
        before = server.psql(files, database=database)
        server.psql(cache.sql, database=database)
        assert server.psql("SHOW effective_cache_size", database=database).strip() == "64MB"
        assert server.psql(files, database=database) == before
    finally:
        undress(server, platform)


async def test_the_target_s_status_records_the_platform(server: LocalPostgres, database: str) -> None:
    dress(server, database, "cloudSql")
    try:

        async def secrets(namespace: str, name: str) -> dict[str, str] | None:
            return {"username": "postgres", "password": "unused"}

        spec = {
            "connection": {
                "host": "127.0.0.1",
                "port": server.port,
                "database": database,
                "sslmode": "disable",
                "credentialsSecret": {"name": "pg"},
            }
        }
        check = await check_target("shop", spec, secrets)
        assert check.ready, check.message
        assert check.database is not None
        assert check.database.platform == "cloudSql"
        assert "role cloudsqlsuperuser" in check.database.platform_evidence
        assert "on Cloud SQL for PostgreSQL (settings are advice only)" in check.message
    finally:
        undress(server, "cloudSql")


# -- the least-privilege setup scripts of docs/managed, run as written ---------------------------------------------

SCRIPTS = Path(__file__).resolve().parents[2] / "docs" / "managed"


def run_script(
    server: LocalPostgres, database: str, script: Path, **variables: str
) -> subprocess.CompletedProcess[str]:
    """``psql -f`` as the README says, as the administrator (here the local superuser over the Unix socket)."""
    psql = find_bindir(15, "psql") / "psql"
    command = [str(psql), "-X", "-q", "-d", f"host={server.dir} port={server.port} dbname={database} user=postgres"]
    for name, value in variables.items():
        command += ["-v", f"{name}={value}"]
    return subprocess.run([*command, "-f", str(script)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("script", ["rds.sql", "cloudsql.sql", "azure.sql"])
async def test_the_setup_script_grants_what_the_operator_needs_and_no_more(
    server: LocalPostgres, database: str, script: str
) -> None:
    server.psql("CREATE ROLE app_owner LOGIN")
    # The application's owner as applications have it: its tables, and CREATE on their schema (CREATE INDEX checks it)
    server.psql("GRANT CREATE ON SCHEMA public TO app_owner", database)
    server.psql(
        "CREATE TABLE orders (id int PRIMARY KEY, customer int); ALTER TABLE orders OWNER TO app_owner", database
    )
    try:
        done = run_script(
            server, database, SCRIPTS / script, analysis_password="a-secret", write_password="w-secret",
            table_owner="app_owner",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        owner = await asyncpg.connect(server.dsn(database, user="app_owner"))
        try:
            await owner.execute("SELECT count(*) FROM orders WHERE customer = 42")
        finally:
            await owner.close()

        analysis = await asyncpg.connect(server.dsn(database, user="optischema_analysis"))
        try:  # every user's statement text, the system identifier; and no write
            texts = await analysis.fetch("SELECT query FROM pg_stat_statements WHERE query LIKE '%FROM orders%'")
            assert texts
            assert all("insufficient privilege" not in r["query"] for r in texts)
            assert await analysis.fetchval("SELECT system_identifier FROM pg_control_system()") > 0
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await analysis.execute("CREATE TEMP TABLE nope (id int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await analysis.execute("BEGIN READ WRITE; INSERT INTO orders VALUES (1, 1)")
        finally:
            await analysis.close()

        write = await asyncpg.connect(server.dsn(database, user="optischema_write"))
        try:  # the index work, as the tables' owner; never a server setting
            await write.execute("CREATE INDEX CONCURRENTLY orders_customer ON orders (customer)")
            await write.execute("ANALYZE orders")
            await write.execute("DROP INDEX CONCURRENTLY orders_customer")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await write.execute("ALTER SYSTEM SET work_mem = '64MB'")
        finally:
            await write.close()
    finally:
        server.psql("DROP OWNED BY optischema_analysis, optischema_write, app_owner CASCADE", database)
        server.psql("DROP ROLE IF EXISTS optischema_analysis")
        server.psql("DROP ROLE IF EXISTS optischema_write")
        server.psql("DROP ROLE IF EXISTS app_owner")
