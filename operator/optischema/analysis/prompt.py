"""The advisor's prompt: the workload as the engine sees it, and nothing that could carry a user's data.

The text lives in versioned files beside this module (``prompts/advisor-v<N>.md``); the version is part of the
cache key, so a new prompt never answers from an old cache. With ``pii_safe`` (the default) the prompt holds the
normalised statements (constants already ``$n`` in pg_stat_statements), the tables' column names and types, sizes,
existing indexes and the engine's findings — no sample row, literal, most common value or histogram bound. Without
it, each column's most common values are added, which helps with partial indexes. Statements that still carry a
literal (a sampled statement from pg_stat_activity) are never sent: only pg_stat_statements' normalised text is.

pg_stat_statements' text is not free of values, though: it keeps comments (an ORM's sqlcommenter tag names the
user, ``/*user='a@b.c'*/``) and does not normalise utility statements; an existing partial index's definition and
a finding's SQL keep their predicate's literals (``WHERE email = 'vip@example.com'``). With ``pii_safe`` each of
them is redacted (:func:`optischema.analysis.redact.redact`) before it is written into the prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from optischema.changes.ddl import SETTINGS_ALLOWED

from .redact import redact
from .snapshot import Index, Table

PROMPT_VERSION = 1
SYSTEM = "You are a careful PostgreSQL performance engineer. Answer with JSON only."
MAX_STATEMENTS = 40
MAX_QUERY_CHARS = 2000


@dataclass(frozen=True, slots=True)
class PromptStatement:
    query_id: str
    query: str  # normalised text from pg_stat_statements
    calls: int
    mean_ms: float


@dataclass(frozen=True, slots=True)
class Prompt:
    system: str
    text: str
    version: int
    fingerprint: str  # of the workload's shape and the schema: the cache key's input part


def template(version: int = PROMPT_VERSION) -> str:
    return resources.files("optischema.analysis").joinpath(f"prompts/advisor-v{version}.md").read_text()


def build(
    statements: Sequence[PromptStatement],
    tables: Sequence[Table],
    indexes: Sequence[Index],
    findings: Sequence[str],
    *,
    pii_safe: bool = True,
    version: int = PROMPT_VERSION,
) -> Prompt:
    shown = redact if pii_safe else (lambda sql: sql)
    busiest = sorted(statements, key=lambda s: -s.calls * s.mean_ms)[:MAX_STATEMENTS]
    queries = {s.query_id: " ".join(shown(s.query).split()) for s in busiest}
    statement_lines = [
        f"- id {s.query_id}: {s.calls} calls, mean {s.mean_ms:.3f} ms\n  {queries[s.query_id][:MAX_QUERY_CHARS]}"
        for s in busiest
    ]
    table_lines = []
    for table in sorted(tables, key=lambda t: t.key):
        columns = []
        for column in table.columns:
            text = f"{column.name} {column.type}{' NOT NULL' if column.not_null else ''}"
            if column.n_distinct is not None:
                distinct = -column.n_distinct * table.rows if column.n_distinct < 0 else column.n_distinct
                text += f" (distinct≈{distinct:.0f}, nulls {100 * (column.null_frac or 0):.0f}%"
                if not pii_safe and column.most_common_vals:
                    common = ", ".join(
                        f"{v!r}: {100 * f:.0f}%"
                        for v, f in zip(column.most_common_vals[:5], column.most_common_freqs, strict=False)
                    )
                    text += f"; common values {common}"
                text += ")"
            columns.append(text)
        table_lines.append(
            f"- {table.schema}.{table.name}: {table.rows:.0f} rows, {table.size_bytes / 2**20:.1f} MiB\n  "
            + "\n  ".join(columns)
        )
    definitions = [shown(i.definition) for i in sorted(indexes, key=lambda i: (i.schema, i.table, i.name))]
    index_lines = [f"- {d}" for d in definitions]
    text = (
        template(version)
        .replace("{settings}", ", ".join(sorted(SETTINGS_ALLOWED)))
        .replace("{statements}", "\n".join(statement_lines) or "(none)")
        .replace("{tables}", "\n".join(table_lines) or "(none)")
        .replace("{indexes}", "\n".join(index_lines) or "(none)")
        .replace("{findings}", "\n".join(f"- {f}" for f in findings) or "(none)")
    )
    # The cache key covers the workload's shape and the schema, not its live numbers (calls, timings, sizes move
    # between two analyses of the same system): the same statements over the same tables ask the same question.
    shape = [
        version,
        SYSTEM,
        template(version),
        pii_safe,
        sorted(queries.items()),
        sorted((t.schema, t.name, [(c.name, c.type, c.not_null) for c in t.columns]) for t in tables),
        sorted(definitions),
        sorted(findings),
    ]
    digest = hashlib.sha256(json.dumps(shape).encode()).hexdigest()
    return Prompt(SYSTEM, text, version, digest)
