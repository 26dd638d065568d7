"""Which statements are analysed, and why each of the others is not.

Statements are weighted by their calls; the ``top`` statements by total time are kept. Each statement is parsed
from a sample as it ran when there is one (constants in place: expressions keep their literals, and the values
compared show which partial predicate would serve), else from its normalised text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]

from .binding import bind_from_statistics
from .selection import WorkloadStatement
from .snapshot import Snapshot, Statement
from .statements import Catalog, ParsedStatement, parse_failure, parse_statement, prepared_statement
from .whatif import PlanRequest

#: A compiled RE2 pattern (google-re2 ships no type information).
Pattern = Any
#: Samples planned per statement (their costs are averaged).
SAMPLES_PER_STATEMENT = 3


@dataclass(frozen=True, slots=True)
class Skipped:
    query_id: int
    query: str
    calls: int
    reason: str


@dataclass(slots=True)
class Workload:
    statements: list[WorkloadStatement] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seen: int = 0

    def skip_summary(self) -> dict[str, int]:
        """How many statements were skipped for each kind of reason."""
        summary: dict[str, int] = {}
        for item in self.skipped:
            kind = item.reason.split(":")[0].split(" (")[0]
            summary[kind] = summary.get(kind, 0) + 1
        return summary


def catalog_of(snapshot: Snapshot) -> Catalog:
    return Catalog(
        {key: {c.name for c in table.columns} for key, table in snapshot.tables.items()}, views=snapshot.views
    )


def build_workload(
    snapshot: Snapshot,
    *,
    min_calls: int = 1,
    top: int = 500,
    ignore_patterns: Sequence[str] = (),
) -> Workload:
    catalog = catalog_of(snapshot)
    patterns = [compile_pattern(p) for p in ignore_patterns]
    workload = Workload(seen=len(snapshot.statements))
    ranked = sorted(snapshot.statements, key=lambda s: s.total_time_ms, reverse=True)
    kept = 0
    for statement in ranked:
        reason = _reason_to_skip(statement, min_calls, patterns)
        if reason is None and kept >= top:  # before parsing: the rest is never read (parsing is the cost)
            reason = f"outside the top {top} statements by total time"
        chosen: WorkloadStatement | None = None
        if reason is None:
            try:
                chosen, reason = _statement(statement, snapshot, catalog)
            except Exception as error:  # one statement never stops the analysis of the others
                chosen, reason = None, parse_failure(error)
        if reason is not None or chosen is None:
            workload.skipped.append(Skipped(statement.query_id, statement.query, statement.calls, reason or ""))
            continue
        kept += 1
        workload.statements.append(chosen)
    return workload


def compile_pattern(pattern: str) -> Pattern:
    """A ``spec.analysis.ignoreStatements`` pattern, compiled by RE2: matching takes time linear in the text, so
    a pattern such as ``(a+)+$`` cannot stall the analysis on a long statement (Python's ``re`` backtracks
    exponentially on it). Raises :class:`ValueError` for what RE2 does not support (backreferences,
    lookaround); the API refuses those patterns at admission already."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        detail = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
        raise ValueError(f"not a regular expression RE2 accepts: {detail}") from error


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is raised, with its text; RE2 would print it to stderr as well


def _statement(
    statement: Statement, snapshot: Snapshot, catalog: Catalog
) -> tuple[WorkloadStatement | None, str | None]:
    """The statement as the selection sees it, or why it is skipped."""
    parsed = _parse(statement, snapshot.samples.get(statement.query_id, []), catalog)
    reason = parsed.skip_reason or _reason_without_tables(parsed)
    if reason is not None:
        return None, reason
    samples = tuple(snapshot.samples.get(statement.query_id, [])[:SAMPLES_PER_STATEMENT])
    # A statement prepared in SQL is planned as the statement it prepares (its samples are EXECUTEs: not plannable).
    prepared = prepared_statement(statement.query)
    query = prepared if prepared is not None else statement.query
    samples = () if prepared is not None else samples
    bound = None
    if not samples:
        rows_per_call = statement.rows / statement.calls if statement.calls else 0.0
        bound = bind_from_statistics(query, catalog, snapshot.tables, rows_per_call)
        if bound is not None:
            rebound = parse_statement(bound, catalog)  # its constants show which partial predicate serves
            parsed = rebound if rebound.skip_reason is None else parsed
    key = str(statement.query_id)
    return (
        WorkloadStatement(
            key=key,
            calls=statement.calls,
            rows=statement.rows,
            parsed=parsed,
            request=PlanRequest(key, query, samples, frozenset(parsed.tables), bound),
        ),
        None,
    )


def _reason_to_skip(statement: Statement, min_calls: int, patterns: list[Pattern]) -> str | None:
    if statement.calls < min_calls:
        return f"called {statement.calls} times, fewer than minCalls ({min_calls})"
    for pattern in patterns:
        if pattern.search(statement.query):
            return f"matches ignoreStatements pattern {pattern.pattern!r}"
    return None


def _parse(statement: Statement, samples: list[str], catalog: Catalog) -> ParsedStatement:
    for sample in samples:
        parsed = parse_statement(sample, catalog)
        if parsed.skip_reason is None:
            for other in samples:  # constants seen across all samples, for partial-index predicates
                if other is not sample:
                    _merge_constants(parsed, parse_statement(other, catalog))
            return parsed
    return parse_statement(statement.query, catalog)


def _merge_constants(into: ParsedStatement, other: ParsedStatement) -> None:
    for key, usage in other.usages.items():
        target = into.usages.get(key)
        if target is None:
            continue
        for column, values in usage.constants.items():
            target.constants.setdefault(column, []).extend(v for v in values if v not in target.constants[column])


def _reason_without_tables(parsed: ParsedStatement) -> str | None:
    if parsed.usages or parsed.written_table:
        return None
    return "reads no table of the analysed schemas (system catalogs, functions or ignored schemas only)"
