"""Statements the parser cannot handle cost only themselves: each is skipped with its reason, the others analysed.

Attacks: a 60-deep parenthesis (RecursionError inside sqlglot), an unterminated quote (sqlglot's TokenError), a
statement too long to parse in reasonable time, a catastrophic ``ignoreStatements`` pattern. Before, the first of
these raised out of the analysis and stopped every later one.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlglot.errors import ParseError, TokenError

from optischema.analysis.snapshot import Column, Server, Snapshot, Statement, Table
from optischema.analysis.statements import (
    MAX_STATEMENT_CHARS,
    Catalog,
    fingerprint,
    is_unreadable,
    parse_failure,
    parse_statement,
)
from optischema.analysis.workload import build_workload, compile_pattern
from optischema.api import describe
from optischema.api.target import Analysis
from optischema.cli.main import main

CATALOG = Catalog({("public", "orders"): {"id", "customer_id", "status"}})
GOOD = "SELECT id FROM orders WHERE customer_id = $1"
DEEP = "SELECT id FROM orders WHERE customer_id = " + "(" * 60 + "$1" + ")" * 60
UNTERMINATED = "SELECT id FROM orders WHERE status = 'open"
HUGE = "SELECT id FROM orders WHERE customer_id IN (" + ", ".join(f"${n}" for n in range(1, 4000)) + ")"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (DEEP, "nested too deeply to parse (60 levels of parentheses, more than 32)"),
        (UNTERMINATED, "cannot tokenize: "),
        (HUGE, f"longer than {MAX_STATEMENT_CHARS} characters"),
        ("SELECT id FROM orders WHERE (customer_id = $1", "cannot parse: "),
    ],
    ids=["60-deep parentheses", "unterminated quote", "huge statement", "unbalanced"],
)
def test_a_statement_the_parser_cannot_handle_is_skipped_with_its_reason(query: str, reason: str) -> None:
    parsed = parse_statement(query, CATALOG)  # never raises
    assert parsed.skip_reason is not None
    assert parsed.skip_reason.startswith(reason)
    assert is_unreadable(parsed.skip_reason)
    assert not parsed.usages  # nothing half-read is passed on
    assert len(fingerprint(query)) == 16  # still identified (the statement history keys on it)


def _snapshot(*queries: str) -> Snapshot:
    table = Table("public", "orders", 1e6, 80_000_000, tuple(Column(c, "bigint") for c in ("id", "customer_id")))
    statements = [
        Statement(query_id=n, query=q, calls=100, total_time_ms=1000.0 - n, mean_time_ms=1.0)
        for n, q in enumerate(queries, 1)
    ]
    return Snapshot(Server("15.18", 150018), statements, {table.key: table}, [], {})


def test_the_other_statements_are_analysed_and_the_unreadable_ones_listed() -> None:
    workload = build_workload(_snapshot(DEEP, GOOD, UNTERMINATED, HUGE))
    assert [s.key for s in workload.statements] == ["2"]
    reasons = {s.query_id: s.reason for s in workload.skipped}
    assert reasons[1].startswith("nested too deeply")
    assert reasons[3].startswith("cannot tokenize")
    assert reasons[4].startswith("longer than")
    assert workload.seen == 4


def test_a_catastrophic_ignore_pattern_runs_in_linear_time() -> None:
    # With Python's backtracking `re`, `(a+)+$` against 5,000 a's followed by a b would not finish in a lifetime;
    # RE2 answers at once. The test finishing is the assertion.
    hostile = "SELECT id FROM orders WHERE status = '" + "a" * 5000 + "b'"
    workload = build_workload(_snapshot(GOOD, hostile), ignore_patterns=[r"(a+)+$", r"(a+)+b'$"])
    assert [s.key for s in workload.statements] == ["1"]  # the good one is analysed
    (skipped,) = workload.skipped
    assert skipped.reason == 'matches ignoreStatements pattern "(a+)+b\'$"'
    assert compile_pattern(r"^\s*SELECT").search(GOOD) is not None  # patterns still match as before


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?<=select)\s", r"(?!x)y"])
def test_a_pattern_re2_cannot_run_is_refused_naming_the_field(pattern: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Analysis.model_validate({"ignoreStatements": [pattern]})
    (message,) = describe(refused.value, "spec.analysis")
    assert message.startswith("spec.analysis.ignoreStatements[0]")
    assert "RE2" in message
    with pytest.raises(ValueError, match="RE2"):
        compile_pattern(pattern)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RecursionError("maximum recursion depth exceeded"), "nested too deeply to parse (RecursionError)"),
        (TokenError("Error tokenizing 'x"), "cannot tokenize: Error tokenizing 'x"),
        (ParseError("Invalid expression"), "cannot parse: Invalid expression"),
        (KeyError("this"), "the analyser failed on it (KeyError: 'this')"),
    ],
)
def test_whatever_the_parser_raises_becomes_a_reason(error: Exception, reason: str) -> None:
    assert parse_failure(error) == reason
    assert is_unreadable(reason)


def test_nesting_within_the_limit_is_analysed() -> None:
    query = "SELECT id FROM orders WHERE customer_id = " + "(" * 30 + "$1" + ")" * 30
    parsed = parse_statement(query, CATALOG)
    assert parsed.skip_reason is None
    assert parsed.usages[("public", "orders")].equality == ["customer_id"]


def test_the_cli_refuses_a_pattern_re2_cannot_run_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["analyze", "--dsn", "postgresql://nobody@127.0.0.1:1/x", "--ignore-statement", r"(a)\1"])
    assert exited.value.code == 2
    assert "argument --ignore-statement: not a regular expression RE2 accepts: invalid escape sequence: \\1" in (
        capsys.readouterr().err
    )
