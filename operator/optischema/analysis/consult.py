"""An LLM's answer turned into what the engine can weigh: candidates, settings, rewrites — or rejections.

The LLM never decides. Its index suggestions join the engine's own candidates and go through the same what-if
selection (a suggestion the engine had already is merged into it, not doubled); only those the selection chooses
become recommendations with ``source: llm``. Its settings must pass the allow-list and range checks, and its
rewrites the static checks here and then the sandbox (same rows, faster). Everything turned down is kept, with the
reason, for ``kubectl optischema status`` and the rejections metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlglot.tokens import Tokenizer

from optischema.api.operations import SettingChange
from optischema.api.recommendation import QueryRewrite, RecommendedChange
from optischema.changes.ddl import definition_key, render_setting, render_setting_rollback
from optischema.changes.parsing import nesting_problem

from .candidates import Candidate
from .prompt import Prompt, PromptStatement, build
from .redact import redact
from .report import Recommendation, make
from .selection import Selection, WorkloadStatement
from .snapshot import Snapshot
from .statements import DIALECT, TableKey, parse_failure
from .suggestions import Kind, Rejection, check_index, check_rewrite, check_setting, parse_reply

T = TypeVar("T")


@dataclass(slots=True)
class Consultation:
    """What one call brought: the reply's fate, and the suggestions sorted into accepted and rejected."""

    model: str | None = None
    cached: bool = False
    tokens: int = 0
    note: str | None = None  # why there was no advice (off, budget spent, every provider failed)
    budget_spent: str | None = None  # "target" or "cluster" when a daily token budget stopped the call
    candidates: list[Candidate] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)  # definition keys the engine had proposed itself
    recommendations: list[Recommendation] = field(default_factory=list)  # settings and rewrites
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.candidates) + len(self.merged) + len(self.recommendations)


def prompt_for(
    snapshot: Snapshot,
    workload: Sequence[WorkloadStatement],
    findings: Sequence[Recommendation],
    *,
    pii_safe: bool,
) -> Prompt:
    """The prompt from pg_stat_statements' normalised text only (never a sampled statement with its literals)."""
    normalised = {str(s.query_id): s for s in snapshot.statements}
    statements = [
        PromptStatement(s.key, normalised[s.key].query, s.calls, normalised[s.key].mean_time_ms)
        for s in workload
        if s.key in normalised
    ]
    used: set[TableKey] = {t for s in workload for t in s.parsed.tables}
    tables = [t for key, t in snapshot.tables.items() if key in used]
    indexes = [i for i in snapshot.indexes if (i.schema, i.table) in used]
    # a finding's SQL may keep a predicate's literal (a duplicate of a partial index): redacted with PII-safe on
    shown = [f"{f.kind}: {redact(f.sql) if pii_safe else f.sql}" for f in findings]
    return build(statements, tables, indexes, shown, pii_safe=pii_safe)


def check_reply(text: str) -> str | None:
    """Why an LLM's answer cannot be used as a whole, or None; checked before the answer is cached.

    An answer is cached only when it reads as JSON of the expected shape and none of its SQL is garbled: every
    piece tokenizes (an unterminated quote or identifier means the text was cut or mangled) and none is nested too
    deeply for the parser. A garbled answer is asked again next time instead of being served from the cache. What
    a well-formed suggestion means (its tables and columns, whether it is one read-only SELECT, the allow-lists)
    is judged afterwards, one suggestion at a time, against the database (:func:`digest`), where a bad one is
    rejected with its reason and the others kept.
    """
    suggestions, problem = parse_reply(text)
    if suggestions is None:
        return problem or "unreadable"
    for rewrite in suggestions.rewrites:
        found = _garbled(rewrite.sql)
        if found:
            return f"rewrite of {rewrite.query_id}: {found}"
    for index in suggestions.indexes:
        for piece in [*index.columns, *index.include, index.where or ""]:
            found = _garbled(piece)
            if found:
                return f"index on {index.table}: {piece[:100]!r}: {found}"
    return None


def _garbled(sql: str) -> str | None:
    too_deep = nesting_problem(sql)
    if too_deep:
        return too_deep
    try:
        Tokenizer(dialect=DIALECT).tokenize(sql)
    except Exception as error:  # TokenError, or anything else the tokenizer raises: see parse_failure
        return parse_failure(error)
    return None


def digest(
    text: str,
    model: str,
    snapshot: Snapshot,
    workload: Sequence[WorkloadStatement],
    engine_keys: set[str],
    engine_settings: set[str],
) -> Consultation:
    consultation = Consultation(model=model)
    suggestions, problem = parse_reply(text)
    if suggestions is None:
        consultation.rejections.append(Rejection("reply", "the whole answer", problem or "unreadable"))
        return consultation
    columns = {key: {c.name for c in table.columns} for key, table in snapshot.tables.items()}
    by_table: dict[TableKey, set[str]] = {}
    for statement in workload:
        for table_key in statement.parsed.tables:
            by_table.setdefault(table_key, set()).add(statement.key)
    seen: set[str] = set()
    for suggestion in suggestions.indexes:
        pieces = [*suggestion.columns, suggestion.where or ""]
        what = f"{suggestion.table} ({', '.join(suggestion.columns)})"
        checked = _guarded("index", what, pieces, check_index, suggestion, columns)
        if isinstance(checked, Rejection):
            consultation.rejections.append(checked)
            continue
        key = definition_key(checked)
        if key in seen:
            continue
        seen.add(key)
        if key in engine_keys:
            consultation.merged.append(key)
            continue
        table = (checked.schema_, checked.table)
        consultation.candidates.append(Candidate(checked, key, table, set(by_table.get(table, set()))))
    for setting in suggestions.settings:
        accepted = check_setting(setting)
        if isinstance(accepted, Rejection):
            consultation.rejections.append(accepted)
            continue
        name, value = accepted
        if name in engine_settings:
            continue  # the engine proposes this setting from the measurements already
        current = snapshot.settings.get(name)
        setting_change = SettingChange(name=name, value=value, current_value=current.value if current else None)
        consultation.recommendations.append(
            _llm(
                make(
                    "setting",
                    RecommendedChange(setting=setting_change),
                    sql=render_setting(setting_change),
                    rollback_sql=render_setting_rollback(setting_change),
                    table=None,
                    rationale=f"Suggested by {model}: {setting.why}".strip(),
                    source="llm",
                    risk="medium",
                ),
                model,
            )
        )
    normalised = {str(s.query_id): s.query for s in snapshot.statements}
    known = {s.key: normalised.get(s.key, s.request.query) for s in workload}
    fingerprints = {s.key: s.parsed.fingerprint for s in workload}
    for rewrite in suggestions.rewrites:
        what = f"rewrite of {rewrite.query_id}"
        checked_sql = _guarded("rewrite", what, [rewrite.sql], check_rewrite, rewrite, known, columns)
        if isinstance(checked_sql, Rejection):
            consultation.rejections.append(checked_sql)
            continue
        change = RecommendedChange(
            query_rewrite=QueryRewrite(
                query_id=rewrite.query_id,
                fingerprint=fingerprints[rewrite.query_id],
                original=known[rewrite.query_id][:65536],
                rewritten=checked_sql,
            )
        )
        consultation.recommendations.append(
            _llm(
                make(
                    "queryRewrite",
                    change,
                    sql=checked_sql,
                    rollback_sql=None,
                    table=None,
                    rationale=f"Suggested by {model}, for the application's developers: {rewrite.why}".strip(),
                    source="llm",
                    risk="low",
                ),
                model,
            )
        )
    return consultation


def _guarded(kind: Kind, what: str, sql: Sequence[str], check: Callable[..., T], *args: Any) -> T | Rejection:
    """A check that may meet SQL the parser cannot handle: its failure rejects the suggestion, not the analysis
    (and SQL nested too deeply for the parser is rejected before it tries)."""
    for piece in sql:
        too_deep = nesting_problem(piece)
        if too_deep:
            return Rejection(kind, what, too_deep)
    try:
        return check(*args)
    except Exception as error:  # see parse_failure
        return Rejection(kind, what, parse_failure(error))


def _llm(recommendation: Recommendation, model: str) -> Recommendation:
    recommendation.model = model
    return recommendation


def settle(consultation: Consultation, selection: Selection, recommendations: list[Recommendation]) -> None:
    """After the final selection: mark the chosen LLM indexes, and reject the ones the engine did not choose."""
    chosen = {c.candidate.key for c in selection.chosen}
    ours = {c.key: c for c in consultation.candidates}
    for recommendation in recommendations:
        index = recommendation.change.index
        if recommendation.kind == "createIndex" and index is not None and definition_key(index) in ours:
            recommendation.source = "llm"
            recommendation.model = consultation.model
    for key, candidate in ours.items():
        if key not in chosen:
            keys = ", ".join(c.name or c.expression or "" for c in candidate.index.columns)
            what = f"{candidate.table[0]}.{candidate.table[1]} ({keys})"
            consultation.rejections.append(
                Rejection("index", what, "the what-if planner found no gain for the workload worth its cost")
            )
