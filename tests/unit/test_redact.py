"""Redaction with PostgreSQL's own scanner, table-driven from fixtures/redact.yaml: every form of constant and
comment goes, names and ``$n`` parameters stay, unreadable text is hidden whole; and an error message quoting one
of those statements keeps none of its values either."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from optischema.analysis.redact import HIDDEN, redact, redact_error, redact_value

CASES: list[dict[str, Any]] = yaml.safe_load((Path(__file__).parent / "fixtures" / "redact.yaml").read_text())["cases"]
IDS = [c["title"] for c in CASES]

#: The shapes in which a statement or its values reach an error message.
MESSAGES = [
    "{sql}",
    'syntax error at or near "{sql}"',
    "statement failed: {sql}",
    'invalid input syntax for type integer: "{sql}"',
    'duplicate key value violates unique constraint "k" Key (email)=({sql}) already exists.',
]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_redact(case: dict[str, Any]) -> None:
    redacted = redact(case["sql"])
    assert redacted == case["redacted"]
    leaked = [s for s in case["secrets"] if s in redacted]
    assert not leaked, f"{leaked} passed through"


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("shape", MESSAGES)
def test_an_error_quoting_a_hostile_statement_keeps_none_of_its_values(case: dict[str, Any], shape: str) -> None:
    redacted = redact_error(shape.format(sql=case["sql"]))
    leaked = [s for s in case["secrets"] if s in redacted]
    assert not leaked, f"{leaked} passed through: {redacted}"


def test_every_case_holds_a_secret_and_the_fixture_covers_each_form() -> None:
    assert all(c["secrets"] for c in CASES)
    text = "\n".join(c["sql"] for c in CASES)
    for form in ("$$", "$outer$", "E'", "e'", "--", "/*", "/*user=", "U&'", "B'", "X'", "$1", "@example.com"):
        assert form in text, form


@pytest.mark.parametrize(
    ("message", "redacted"),
    [
        ("speed-up 3.9x in the sandbox", "speed-up … in the sandbox"),
        ('value "99999999999" is out of range for type integer', 'value "…" is out of range for type integer'),
        (
            'new row for relation "t" violates check constraint "c" Failing row contains (1, alice, 4111).',
            'new row for relation "t" violates check constraint "c" Failing row contains (…).',
        ),
        ('relation "orders" does not exist', 'relation "orders" does not exist'),
        ("unterminated 'alice@example.com", "unterminated …"),
    ],
)
def test_messages_keep_names_and_lose_values(message: str, redacted: str) -> None:
    assert redact_error(message) == redacted


def test_nothing_the_scanner_cannot_read_passes_through() -> None:
    assert redact("SELECT 'never closed") == HIDDEN
    assert redact("SELECT E'never\\0'") == HIDDEN  # an invalid byte sequence: the scanner names no place
    assert redact("SELECT '\ud800never'") == HIDDEN  # a lone surrogate
    assert "never" not in redact_error("failed: E'never\\0' and '\ud800never'")
    assert "never" not in HIDDEN
    assert "unreadable" in HIDDEN


@pytest.mark.parametrize(
    ("value", "shown"),
    [("O'Brien", "'…'"), ('say "alice@example.com"', "'…'"), (4111, "…"), (2.5, "…"), (None, "NULL"), (True, "true")],
)
def test_a_bound_parameter_is_shown_without_its_value(value: object, shown: str) -> None:
    # redact(repr("O'Brien")) would read '"O'Brien"' as a quoted identifier and keep it
    assert redact_value(value) == shown


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab1 '\"$\\/*-eEU&xX(),.:=\n")) | st.characters(), max_size=60))
def test_redaction_never_raises_and_never_returns_a_secret_it_was_given_in_a_literal(text: str) -> None:
    assert isinstance(redact(text), str)
    assert isinstance(redact_error(text), str)
    secret = f"SELECT $q$zz-secret-{text.replace('$q$', '')}$q$, E'zz-\\'{text.replace(chr(39), '')}'"
    assert "zz-" not in redact(secret)
    assert "zz-" not in redact_error(secret)


BOMBS = [
    # pg_stat_statements keeps a statement's whole text: anyone who may run SQL on the target can leave one there,
    # and libpg_query's scanner takes quadratic time over nested comments (100,000 deep: about a minute)
    ("nested comments", lambda: "/*" * 100_000 + " */" * 100_000 + " SELECT 'secret'", redact),
    ("a long statement", lambda: "SELECT " + "'secret', " * 200_000 + "1", redact),
    # cut, a statement written for standard_conforming_strings = off ('x\', secret, ' is one string there) would
    # show the scanner's reading of its head, where the whole text is hidden
    ("a long statement for backslash escapes", lambda: "SELECT 'x\\', secret, '" + "a" * 9000 + "'", redact),
    # an error message is read on after each number with letters after it: the rest was scanned again each time
    ("a message of junk", lambda: "3x " * 40_000 + "'secret'", redact_error),
    ("a message of junk, quoted", lambda: "failed: " + "1a " * 40_000 + "'secret' and E'secret'", redact_error),
]


@pytest.mark.parametrize(("title", "make", "redactor"), BOMBS, ids=[b[0] for b in BOMBS])
def test_a_huge_or_pathological_text_is_redacted_in_bounded_time(title: str, make: Any, redactor: Any) -> None:
    """Redaction runs in the operator's event loop (statement history) and the analysis: a text made to be slow must
    not stall it (the webhook server, every handler) for minutes. It is hidden or cut, never shown unread."""
    import time

    text = make()
    started = time.process_time()
    shown = redactor(text)
    assert time.process_time() - started < 3.0, title
    assert "secret" not in shown
