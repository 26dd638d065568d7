"""`optischema analyze` in every format, and every bad input the issue lists, against real servers."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
import yaml

from devcluster import LocalPostgres
from optischema.api.resources import TuningRecommendation
from optischema.cli.main import main
from optischema.postgres.local import free_port

from .conftest import run_sql
from .test_engine import ORDERS

WORKLOAD = [f"SELECT sum(amount) FROM invoices WHERE customer_id = {c}" for c in (3, 14, 159)]


def load(dsn: str, statements: list[str] = WORKLOAD, times: int = 10) -> None:
    asyncio.run(run_sql(dsn, [s for s in ORDERS.split(";\n") if s.strip()]))
    asyncio.run(run_sql(dsn, statements, times))


def analyze(*args: str) -> list[str]:
    return ["analyze", "--sample-seconds", "0", "--quiet", *args]


def test_table_report(pg_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    load(pg_database)
    assert main(analyze("--dsn", pg_database)) == 0
    out = capsys.readouterr().out
    assert "what-if planning with HypoPG" in out
    assert re.search(r'CREATE INDEX CONCURRENTLY "invoices_customer_id_[0-9a-f]{8}_idx" ON "public"."invoices"', out)
    assert "rollback: DROP INDEX CONCURRENTLY" in out


def test_json_is_stable_for_scripts(pg_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    load(pg_database)
    assert main(analyze("--dsn", pg_database, "--format", "json")) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["version"] == 1
    assert document["mode"] == "whatif"
    assert document["statements_analysed"] == 1  # the three constants are one statement to pg_stat_statements
    first = document["recommendations"][0]
    assert {"id", "kind", "sql", "rollback_sql", "table", "estimated_improvement_percent"} <= set(first)
    assert first["kind"] == "createIndex"
    assert first["table"] == "public.invoices"
    assert first["evidence"]["statements"][0]["calls"] == 30


def test_yaml(pg_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    load(pg_database)
    assert main(analyze("--dsn", pg_database, "--format", "yaml")) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert document["recommendations"][0]["kind"] == "createIndex"


def test_emit_crs_writes_valid_resources_with_stable_names(pg_database: str, tmp_path: Path) -> None:
    load(pg_database)
    first, second = tmp_path / "a", tmp_path / "b"
    assert (
        main(analyze("--dsn", pg_database, "--emit-crs", str(first), "--target", "shop-db", "--namespace", "shop")) == 0
    )
    assert main(analyze("--dsn", pg_database, "--emit-crs", str(second), "--target", "shop-db")) == 0
    names = sorted(p.name for p in first.glob("*.yaml"))
    assert names
    assert names == sorted(p.name for p in second.glob("*.yaml"))
    for path in first.glob("*.yaml"):
        resource = TuningRecommendation.model_validate(yaml.safe_load(path.read_text()))
        assert resource.metadata.namespace == "shop"
        assert resource.spec.target_ref.name == "shop-db"
        assert resource.spec.approval.state == "Pending"
        assert path.name == f"{resource.metadata.name}.yaml"
        assert resource.metadata.name is not None
        assert resource.metadata.name.startswith("shop-db-")


def test_budget_limits_what_is_proposed(pg_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    load(pg_database)
    assert main(analyze("--dsn", pg_database, "--format", "json", "--budget", "1KiB")) == 0
    document = json.loads(capsys.readouterr().out)
    assert [r for r in document["recommendations"] if r["kind"] == "createIndex"] == []


# -- bad input -----------------------------------------------------------------------------------------------------


def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(analyze("--dsn", f"postgresql://postgres@127.0.0.1:{free_port()}/db")) == 3
    assert "cannot reach postgres@127.0.0.1" in capsys.readouterr().err


def test_wrong_password(pg_server: LocalPostgres, capsys: pytest.CaptureFixture[str]) -> None:
    pg_server.psql("DO $$ BEGIN CREATE ROLE secure LOGIN PASSWORD 'right'; EXCEPTION WHEN duplicate_object THEN END $$")
    assert main(analyze("--dsn", f"postgresql://secure:wrong@127.0.0.1:{pg_server.port}/postgres")) == 3
    err = capsys.readouterr().err
    assert 'password authentication failed for user "secure"' in err
    assert "wrong" not in err.replace("wrong password", "")  # the password is never echoed


def test_invalid_dsn(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(analyze("--dsn", "postgresql://host:notaport/db")) == 2
    assert "the DSN is not valid" in capsys.readouterr().err


def test_invalid_budget(pg_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(analyze("--dsn", pg_database, "--budget", "lots")) == 2
    assert "--budget: 'lots' is not a quantity" in capsys.readouterr().err


def test_missing_pg_stat_statements_says_how_to_enable_it(
    pg_server: LocalPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    pg_server.psql("CREATE DATABASE no_pgss")
    try:
        assert main(analyze("--dsn", pg_server.dsn("no_pgss"))) == 4
    finally:
        pg_server.psql("DROP DATABASE no_pgss")
    err = capsys.readouterr().err
    assert "pg_stat_statements is not installed in database 'no_pgss'" in err
    assert "CREATE EXTENSION pg_stat_statements" in err
    assert "shared_preload_libraries" in err


def test_pg_stat_statements_not_preloaded(capsys: pytest.CaptureFixture[str]) -> None:
    with LocalPostgres(preload=()) as server:
        server.psql("CREATE EXTENSION pg_stat_statements")
        assert main(analyze("--dsn", server.dsn())) == 4
    err = capsys.readouterr().err
    assert "pg_stat_statements is installed but not loaded" in err
    assert "restart" in err


def test_missing_hypopg_falls_back_to_heuristics(pg_server: LocalPostgres, capsys: pytest.CaptureFixture[str]) -> None:
    pg_server.psql("CREATE DATABASE no_hypopg")
    dsn = pg_server.dsn("no_hypopg")
    try:
        pg_server.psql("CREATE EXTENSION pg_stat_statements", database="no_hypopg")
        load(dsn)
        assert main(analyze("--dsn", dsn, "--format", "json")) == 0
    finally:
        pg_server.psql("DROP DATABASE no_hypopg WITH (FORCE)")
    document = json.loads(capsys.readouterr().out)
    assert document["mode"] == "heuristic"
    assert any("HypoPG is not installed" in note for note in document["notes"])
    creates = [r for r in document["recommendations"] if r["kind"] == "createIndex"]
    assert [r["sql"] for r in creates] == [
        'CREATE INDEX CONCURRENTLY "invoices_customer_id_ef6c876c_idx" ON "public"."invoices" ("customer_id")'
    ]
    assert all(r["source"] == "heuristic" and "not costed" in r["rationale"] for r in creates)


def test_statements_of_other_users_need_pg_read_all_stats(
    pg_server: LocalPostgres, pg_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    load(pg_database)
    pg_server.psql("DO $$ BEGIN CREATE ROLE analyst LOGIN; EXCEPTION WHEN duplicate_object THEN END $$")
    dsn = pg_database.replace("postgres@", "analyst@")
    # Nothing it can see to analyse is a normal outcome since issue 20 (it was exit 4): exit 0, and the note says
    # why, with the grant to make.
    assert main(analyze("--dsn", dsn, "--format", "json")) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any(n.startswith("nothing to analyse") and "pg_read_all_stats" in n for n in notes)
    pg_server.psql("GRANT pg_read_all_stats TO analyst")
    try:
        assert main(analyze("--dsn", dsn, "--format", "json")) == 0
    finally:
        pg_server.psql("REVOKE pg_read_all_stats FROM analyst")
    assert json.loads(capsys.readouterr().out)["statements_analysed"] >= 1


def test_empty_workload(pg_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A workload with nothing to analyse is a normal outcome (issue 20; it was exit 4): exit 0, a note, no index."""
    assert main(analyze("--dsn", pg_database)) == 0
    out = capsys.readouterr().out
    assert "note: nothing to analyse" in out
    assert "CREATE INDEX" not in out


def test_more_than_ten_thousand_statements(pg_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    columns = ", ".join(f"c{i} int" for i in range(101))
    statements = [f"SELECT c{i} FROM wide WHERE c{j} = 1" for i in range(101) for j in range(100)]
    asyncio.run(run_sql(pg_database, [f"CREATE TABLE wide ({columns})", *statements]))
    assert main(analyze("--dsn", pg_database, "--top", "20000", "--min-calls", "1")) == 2
    err = capsys.readouterr().err
    assert "more than 10000 at once is refused" in err
    assert "Lower --top" in err
