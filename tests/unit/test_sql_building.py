"""No SQL is built from a name or a value except through the quoting module (or as a bind parameter).

An AST scan of ``operator/optischema/**/*.py``: every f-string, ``%`` formatting and ``.format`` call whose literal
text looks like SQL must interpolate only what is known to be safe — a call of
:mod:`optischema.changes.quoting` (or the renderer's names for it), a number (``int(...)``, ``float(...)``), a
module constant (UPPER_CASE), a literal, or a fragment on the short allow-list below, each with why it is safe.
Anything else fails the test with file, line and the expression: quote it, or bind it as a parameter.

The scan was written against the code that let a crafted sequence name run SQL in the sandbox
(``advance_sequences`` building ``setval('<regclass text>')``); :func:`test_the_scan_catches_the_old_sequence_code`
keeps it honest.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "optischema"

#: Upper-case SQL words (our SQL is written in upper case; prose in messages is not) and a few lower-case calls
#: that only SQL has.
SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|SET|RESET|FROM|WHERE|JOIN|ANALYZE|VACUUM|REINDEX|GRANT|"
    r"REVOKE|COPY|TRUNCATE|LIMIT|ORDER BY|INDEX|ROLE|DATABASE|EXPLAIN|PREPARE|EXECUTE|DEALLOCATE)\b"
    r"|\b(setval|regclass|nextval|pg_[a-z_]+)\s*\("
)
#: Three lower-case words in a row: a message for people that happens to name an SQL word ("rows changed since
#: the last ANALYZE"), not SQL (whose keywords we write in upper case and whose names rarely come three in a row).
PROSE = re.compile(r"\b[a-z]{2,}[,;:]? [a-z]{2,}[,;:]? [a-z]{2,}\b")
#: Functions of the quoting module, under every name they are imported as.
QUOTING = {
    "quote_ident",
    "quote_ident_minimal",
    "quote_literal",
    "qualified",
    "column_list",
    "regclass_text",
    "quote",  # changes.ddl re-exports quote_ident under this name
    "literal",  # and quote_literal under this one
    "_ident",  # analysis.candidates: quote_ident_minimal
    "quoted",  # postgres.clone: qualified(*table)
}
#: Calls whose result is a number: nothing to quote.
NUMERIC = {"int", "float", "round", "len"}

#: Interpolations that are neither names nor values, each with why it is safe. Keyed by (file, expression).
ALLOWED: dict[tuple[str, str], str] = {
    # changes/ddl.py: the renderer. Its parts are rendered by its own helpers from validated fields.
    ("changes/ddl.py", "keys"): "index keys rendered by _column_sql (quoted names, check_expression'ed expressions)",
    ("changes/ddl.py", "column.expression"): "an index expression, parsed by check_expression before use",
    ("changes/ddl.py", "index.method"): "a Literal of the API model: btree, hash, gist, gin, brin, spgist",
    ("changes/ddl.py", "index.where"): "a partial index's predicate, parsed by check_expression before use",
    ("changes/ddl.py", "column.order.upper()"): "a Literal of the API model: asc or desc",
    ("changes/ddl.py", "column.nulls.upper()"): "a Literal of the API model: first or last",
    ("changes/ddl.py", "keyword"): "one of two fixed strings chosen above it",
    # The sandbox's sampling: expressions of the statement being benchmarked, from its parse tree, run only by the
    # sandbox's unprivileged role (they are the statement's own SQL, not a name that could be quoted).
    ("postgres/timing.py", "selected"): "the benchmarked statement's own expressions, run as the bench role",
    ("postgres/timing.py", "s.expression"): "the benchmarked statement's own expression, run as the bench role",
    ("postgres/timing.py", "source.expression"): "the benchmarked statement's own expression, run as the bench role",
    ("postgres/timing.py", "where"): "conditions built above from the same expressions and the checked predicate",
    ("postgres/timing.py", "predicate"): "a partial index's predicate, rendered (checked) by changes.ddl",
    ("postgres/timing.py", "not_null"): "conditions built above from the statement's own expressions",
    ("postgres/timing.py", "relation"): "qualified(...) AS quote_ident(alias), built the line before",
    ("postgres/clone.py", "highest"): "a SELECT built the line before from quote_ident and qualified",
    ("postgres/clone.py", "verb"): "CREATE or ALTER, chosen the line before",
    ("postgres/clone.py", "role"): "quote_ident(BENCH_ROLE)",
    ("postgres/clone.py", "attributes"): "a fixed list of role attributes",
    # The what-if planner: the workload's own statement, planned (PREPARE/EXPLAIN, never executed) on the
    # read-only analysis connection; parameter types are fixed names chosen by _type_guesses.
    ("postgres/planner.py", "text"): "the workload statement itself, planned and never executed",
    ("postgres/planner.py", "text.strip().rstrip(';')"): "the workload statement itself, under EXPLAIN",
    ("postgres/planner.py", "declared"): "type names from _type_guesses (unknown, numeric, text) or the server",
    ("postgres/planner.py", "nulls"): "NULL, once per parameter",
    ("postgres/catalog.py", "qname"): "the server's own quote_ident output, to strip from pg_get_indexdef's; not run",
    ("postgres/collect.py", "total"): "one of two column names, fixed strings chosen the line before",
    ("postgres/collect.py", "view"): "qualified(schema, 'pg_stat_statements'), the line before",
    ("changes/maintenance.py", "assignments"): "quote_ident'ed allow-listed parameter names = checked plain numbers",
    ("changes/maintenance.py", "names"): "parameter names from PARAMETERS_ALLOWED, each through quote_ident",
}


@dataclass(frozen=True, slots=True)
class Finding:
    path: str
    line: int
    expression: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {{{self.expression}}} builds SQL without the quoting module"


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _safe(node: ast.expr, path: str) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Call):
        called = _name(node.func)
        if called in QUOTING or called in NUMERIC:
            return True
    if isinstance(node, ast.Name | ast.Attribute) and re.fullmatch(r"_?[A-Z][A-Z0-9_]*", _name(node)):
        return True  # a module constant
    if isinstance(node, ast.IfExp):
        return _safe(node.body, path) and _safe(node.orelse, path)
    if isinstance(node, ast.JoinedStr):
        return all(_safe(v.value, path) for v in node.values if isinstance(v, ast.FormattedValue))
    return (path, ast.unparse(node)) in ALLOWED


def _literal_text(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return " ".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    return ""


def _looks_like_sql(text: str) -> bool:
    return bool(SQL_WORDS.search(text)) and not PROSE.search(text)


def scan(source: str, path: str) -> list[Finding]:
    """Every interpolation into SQL-looking text in ``source`` that is not known to be safe."""
    found: list[Finding] = []
    for node in ast.walk(ast.parse(source)):
        values: list[ast.expr] = []
        if isinstance(node, ast.JoinedStr) and _looks_like_sql(_literal_text(node)):
            values = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and _looks_like_sql(_literal_text(node.left)):
            values = list(node.right.elts) if isinstance(node.right, ast.Tuple) else [node.right]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and _looks_like_sql(_literal_text(node.func.value))
        ):
            values = [*node.args, *(k.value for k in node.keywords)]
        for value in values:
            if not _safe(value, path):
                found.append(Finding(path, value.lineno, ast.unparse(value)))
    return found


def test_no_sql_is_built_from_a_name_or_value_outside_the_quoting_module() -> None:
    findings = [
        finding
        for file in sorted(PACKAGE.rglob("*.py"))
        if file.name != "quoting.py"
        for finding in scan(file.read_text(), file.relative_to(PACKAGE).as_posix())
    ]
    assert not findings, "\n".join(map(str, findings))


OLD_ADVANCE_SEQUENCES = """
async def advance_sequences(sandbox):
    owned = await sandbox.fetch("SELECT s.oid::regclass::text AS seq FROM pg_class s")
    for item in owned:
        await sandbox.execute(
            f"SELECT setval('{item['seq']}', coalesce((SELECT max({item['col']}) FROM {item['tab']}), 0) + 1, false)"
        )
"""


def test_the_scan_catches_the_old_sequence_code() -> None:
    findings = scan(OLD_ADVANCE_SEQUENCES, "postgres/clone.py")
    assert [f.expression for f in findings] == ["item['seq']", "item['col']", "item['tab']"]


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ('f"DROP INDEX {name}"', True),
        ('"SELECT * FROM %s" % table', True),
        ('"SELECT * FROM {}".format(table)', True),
        ('"ALTER ROLE %s PASSWORD %s" % (quote_ident(r), password)', True),
        ('f"DROP INDEX {quote_ident(name)}"', False),
        ('f"SELECT 1 LIMIT {int(limit)}"', False),
        ('f"SELECT 1 LIMIT {SAMPLE_ROWS}"', False),
        ('f"cannot reach {where}: no answer"', False),  # prose, not SQL
    ],
)
def test_the_scan_reads_each_way_of_formatting(source: str, caught: bool) -> None:
    assert bool(scan(source, "x.py")) is caught


def test_every_allowed_fragment_is_still_there() -> None:
    """An allow-list entry whose code is gone is removed, so the list stays short and true."""
    used = {
        (file.relative_to(PACKAGE).as_posix(), ast.unparse(node))
        for file in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(file.read_text()))
        if isinstance(node, ast.expr)
    }
    assert sorted(set(ALLOWED) - used) == []
