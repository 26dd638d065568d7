"""`optischema analyze` names its database as psql does: -h -p -U -d, libpq's PG* environment for whatever is not
given, -d as a whole connection string (URL or key=value), -o for --format; and no part can rewrite another."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from optischema.cli.main import main

from .test_cli_analyze import analyze, load

PG_VARIABLES = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE", "PGSERVICE", "PGPASSFILE")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PG_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def parts(dsn: str) -> tuple[str, int, str, str]:
    url = urlsplit(dsn)
    return url.hostname or "", url.port or 5432, url.username or "", url.path.lstrip("/")


def recommended(out: str) -> list[str]:
    return [r["sql"] for r in json.loads(out)["recommendations"] if r["kind"] == "createIndex"]


def test_psql_flags_after_the_subcommand(
    pg_database: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    load(pg_database)
    host, port, user, database = parts(pg_database)
    assert main(analyze("-h", host, "-p", str(port), "-U", user, "-d", database, "-o", "json")) == 0
    assert any("invoices" in sql for sql in recommended(capsys.readouterr().out))


def test_libpq_environment_fills_what_is_not_given(
    pg_database: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    load(pg_database)
    host, port, user, database = parts(pg_database)
    for name, value in (("PGHOST", host), ("PGPORT", str(port)), ("PGUSER", user), ("PGDATABASE", database)):
        clean_env.setenv(name, value)
    clean_env.setenv("PGSSLMODE", "disable")
    assert main(analyze("-o", "json")) == 0  # no --dsn at all
    assert any("invoices" in sql for sql in recommended(capsys.readouterr().out))


@pytest.mark.parametrize("form", ["url", "conninfo"])
def test_d_may_be_a_whole_connection_string(
    pg_database: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    load(pg_database)
    host, port, user, database = parts(pg_database)
    given = pg_database if form == "url" else f"host={host} port = {port} user='{user}' dbname={database}"
    assert main(analyze("-d", given, "--format", "json")) == 0
    assert any("invoices" in sql for sql in recommended(capsys.readouterr().out))


def test_a_crafted_host_stays_a_host_and_never_reaches_another_database(
    pg_database: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-h 'db/postgres?sslmode=disable#'`` would, formatted into a URL, name another database and turn TLS off;
    encoded, it is a host name nobody resolves: exit 3 naming it, nothing analysed."""
    load(pg_database)
    _, port, user, _ = parts(pg_database)
    code = main(analyze("-h", "127.0.0.1/postgres?sslmode=disable#", "-p", str(port), "-U", user, "-d", "x"))
    captured = capsys.readouterr()
    assert code == 3, captured.err
    assert captured.out == ""
    assert "127.0.0.1/postgres?sslmode=disable#" in captured.err


def test_an_unreadable_connection_string_is_bad_input_in_one_line(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(analyze("-d", "host=db dbname='unterminated")) == 2
    err = capsys.readouterr().err
    assert err.startswith("optischema analyze: --dsn/-d: cannot read the connection string")
    assert "Traceback" not in err


@pytest.mark.parametrize("form", ["url", "conninfo"])
def test_h_p_u_beside_a_connection_string_win_over_it(
    pg_database: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    """As in psql: ``-d 'host=elsewhere dbname=x' -h real -p 5433`` connects to the real host and port."""
    load(pg_database)
    host, port, user, database = parts(pg_database)
    given = (
        f"postgresql://nobody@nowhere.invalid:1/{database}"
        if form == "url"
        else f"host=nowhere.invalid port=1 user=nobody dbname={database}"
    )
    assert main(analyze("-d", given, "-h", host, "-p", str(port), "-U", user, "-o", "json")) == 0
    assert any("invoices" in sql for sql in recommended(capsys.readouterr().out))
