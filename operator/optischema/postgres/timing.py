"""Statements run for real in the sandbox, with parameters bound from the sandbox's own rows, and timed.

Each statement is prepared once, warmed up once, then run ``runs`` times with a different row's values each time;
the same values are used before and after the change, so the two sets of timings are paired. Write statements run
inside a transaction that is rolled back, so the sandbox stays as loaded; an LLM's rewrite (and the original it is
compared with) only inside READ ONLY transactions. A statement that fails records its error, its values redacted,
and the benchmark goes on with the others. The connection is the sandbox's unprivileged role's
(:func:`optischema.postgres.clone.create_bench_role`): nothing here runs as a superuser.

The time of a run is the server's own (``EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON)``: planning plus execution),
never a clock in our process: the operator's process also runs kopf, the webhook server and analyses (one GIL),
and a client-side clock once turned a 20x speed-up into 1.02x. The same EXPLAIN says which indexes the plan used.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from optischema.analysis.latency import Timing
from optischema.analysis.parameters import (
    TYPICAL_LIMIT,
    Parameter,
    ParameterError,
    Source,
    plan_parameters,
    runnable,
)
from optischema.analysis.redact import redact_error, redact_value
from optischema.analysis.statements import Catalog, typed_parameters
from optischema.changes.quoting import qualified, quote_ident

SAMPLE_ROWS = 64
#: Prefixed to a statement to run it for real and have the server time it. ``TIMING OFF``: no clock per plan node
#: (their overhead is what makes EXPLAIN ANALYZE slower than the statement); ``SUMMARY ON``: the totals.
EXPLAIN = "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, FORMAT JSON) "
#: A statement's repetitions stop early once they have taken this long (at least MIN_RUNS are kept).
PHASE_BUDGET_SECONDS = 10.0
MIN_RUNS = 3
_DEFAULTS: dict[str, Any] = {
    "int2": 1,
    "int4": 1,
    "int8": 1,
    "numeric": 0,
    "float4": 0.0,
    "float8": 0.0,
    "text": "",
    "varchar": "",
    "bool": True,
}


@dataclass(frozen=True, slots=True)
class Run:
    """One run as the server timed it: planning plus execution in milliseconds, and the indexes its plan used."""

    ms: float
    indexes: frozenset[str] = frozenset()
    plan: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)  # EXPLAIN's top "Plan" node


def read_explain(document: Any) -> Run:
    """A :class:`Run` from ``EXPLAIN (ANALYZE, SUMMARY ON, FORMAT JSON)`` output (its text or its parsed value).
    Planning counts: every run is planned anew with its own values (a custom plan), as the client's were."""
    parsed = json.loads(document) if isinstance(document, str | bytes) else document
    top = parsed[0] if isinstance(parsed, list) else parsed
    if not isinstance(top, dict) or "Execution Time" not in top:
        raise ValueError("EXPLAIN ANALYZE returned no execution time")
    names: set[str] = set()
    nodes = [top.get("Plan") or {}]
    while nodes:
        node = nodes.pop()
        if isinstance(node.get("Index Name"), str):
            names.add(node["Index Name"])
        nodes.extend(node.get("Plans") or [])
    plan = top.get("Plan") if isinstance(top.get("Plan"), dict) else None
    return Run(float(top["Execution Time"]) + float(top.get("Planning Time") or 0.0), frozenset(names), plan)


@dataclass(slots=True)
class Prepared:
    """One statement made ready to run: its text, its parameter plan and the values for each run."""

    query_id: str
    query: str
    calls: int
    write: bool
    arguments: list[list[Any]]
    error: str | None = None


async def catalog_of(conn: asyncpg.Connection) -> Catalog:
    rows = await conn.fetch(
        "SELECT n.nspname, c.relname, array_agg(a.attname::text) AS cols FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
        "AND NOT a.attisdropped WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') GROUP BY 1, 2"
    )
    path = await conn.fetchval("SELECT current_schemas(false)")
    return Catalog({(r[0], r[1]): set(r["cols"]) for r in rows}, tuple(path or ("public",)))


async def write_statements(conn: asyncpg.Connection, table: str, limit: int = 5) -> list[tuple[str, str, int]]:
    """The target's most frequent INSERT/UPDATE/DELETE statements naming ``table``: (query id, text, calls). They
    show what an index costs the writers; a statement run once (a bulk load, a migration) is not the workload."""
    rows = await conn.fetch(
        "SELECT queryid::text AS id, query, calls FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND calls > 1 AND query ~* $1 AND query ~* '^\\s*(insert|update|delete)\\M' ORDER BY calls DESC LIMIT $2",
        rf"\m{re.escape(table)}\M",  # a name, matched literally (a backslash before a symbol is one in ARE too)
        limit,
    )
    return [(row["id"], row["query"], int(row["calls"])) for row in rows]


async def _samples(
    conn: asyncpg.Connection, sources: set[Source], filters: Mapping[tuple[str, str], str]
) -> dict[Source, list[Any]]:
    """Values of each source expression from random sandbox rows (one row per run, the same row for all the
    expressions of one table alias, so that ``a = $1 AND b = $2`` looks for a pair that exists). Rows come from
    those that satisfy ``filters[table]`` when there are any: a partial index's predicate, since the statements
    it helps are the ones that look for such rows."""
    by_table: dict[tuple[tuple[str, str], str], list[Source]] = {}
    for source in sources:
        by_table.setdefault((source.table, source.alias), []).append(source)
    values: dict[Source, list[Any]] = {}
    await conn.execute("SELECT setseed(0.42)")
    for (table, alias), group in by_table.items():
        # Expressions are the statement's own (the parameter planner took them from its parse tree); the table
        # and alias are names, quoted. Runs as the sandbox's unprivileged role.
        selected = ", ".join(s.expression for s in group)
        relation = f"{qualified(*table)} AS {quote_ident(alias)}"
        not_null = " AND ".join(f"({s.expression}) IS NOT NULL" for s in group)
        predicate = filters.get(table)
        attempts = [f"({predicate}) AND {not_null}", f"({predicate})"] if predicate else []
        found: list[asyncpg.Record] = []
        for where in [*attempts, not_null, "true"]:
            with contextlib.suppress(asyncpg.PostgresError):
                found = await conn.fetch(
                    f"SELECT {selected} FROM {relation} WHERE {where} ORDER BY random() LIMIT {SAMPLE_ROWS}"
                )
            if found:
                break
        for position, source in enumerate(group):
            values[source] = [row[position] for row in found]
    return values


def _value(parameter: Parameter, samples: dict[Source, list[Any]], run: int, type_name: str) -> Any:
    if parameter.role == "limit":
        return TYPICAL_LIMIT
    if parameter.role == "offset":
        return 0
    pool = samples.get(parameter.source) if parameter.source else None
    if not pool:
        return _DEFAULTS.get(type_name)
    pick = pool[(run + parameter.slot) % len(pool)]
    if parameter.role == "prefix":
        text = str(pick)
        prefix = text[: max(3, len(text) * 3 // 4)]  # a selective prefix, as searches by prefix usually are
        prefix = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return prefix + "%"
    if parameter.role == "array":
        return [pool[(run + k) % len(pool)] for k in range(min(5, len(pool)))]
    if parameter.role == "member":
        return member_value(pick, run + parameter.slot, type_name)
    if parameter.role in ("lower", "upper"):
        other = pool[(run + 1) % len(pool)]
        try:
            low, high = sorted((pick, other))
        except TypeError:
            low, high = pick, other
        return low if parameter.role == "lower" else high
    return pick


def member_value(value: Any, turn: int, type_name: str) -> Any:
    """A part of one row's value, for a containment, overlap or key test: a key and its value of a JSON object
    (a key alone where the parameter is text, a one-key array where it is text[]), one element of an array."""
    document = value
    if isinstance(value, str) and type_name in ("jsonb", "json", "text", "_text"):
        with contextlib.suppress(ValueError):
            document = json.loads(value)
    if isinstance(document, dict) and document:
        keys = sorted(document)
        key = keys[turn % len(keys)]
        if type_name == "text":
            return key
        if type_name == "_text":
            return [key]
        return json.dumps({key: document[key]})
    if isinstance(document, list) and document:
        element = document[turn % len(document)]
        return json.dumps([element]) if type_name in ("jsonb", "json") else [element]
    return value


async def _quantiles(
    conn: asyncpg.Connection, plans: Sequence[tuple[str, Sequence[Parameter]]], shape: Shape
) -> dict[tuple[str, int], Any]:
    """For ``column > $n`` (or ``<``) of a statement whose rows per call on the target are known: the column's value
    that keeps the same share of the table, from the sandbox's data."""
    found: dict[tuple[str, int], Any] = {}
    for query_id, plan in plans:
        rows = shape.rows_per_call.get(query_id)
        for parameter in plan:
            if rows is None or parameter.source is None or parameter.role not in ("above", "below"):
                continue
            source = parameter.source
            total = shape.table_rows.get(source.table)
            if not total:
                continue
            share = min(1.0, rows / total)
            q = 1 - share if parameter.role == "above" else share
            relation = f"{qualified(*source.table)} AS {quote_ident(source.alias)}"
            with contextlib.suppress(asyncpg.PostgresError):
                found[(query_id, parameter.number)] = await conn.fetchval(
                    f"SELECT percentile_disc($1::float8) WITHIN GROUP (ORDER BY {source.expression}) FROM {relation}",
                    min(1.0, max(0.0, q)),
                )
    return found


@dataclass(slots=True)
class Shape:
    """What the target says of its statements and tables, for range parameters: rows each call returned (of
    statements without LIMIT, where that count means something) and the tables' row counts."""

    rows_per_call: dict[str, float] = field(default_factory=dict)
    table_rows: dict[tuple[str, str], float] = field(default_factory=dict)


async def shape_of(conn: asyncpg.Connection, query_ids: Sequence[str], tables: Sequence[tuple[str, str]]) -> Shape:
    """Read from the target (pg_stat_statements and pg_class), never from the sandbox."""
    shape = Shape()
    with contextlib.suppress(asyncpg.PostgresError, ValueError):
        rows = await conn.fetch(
            "SELECT queryid::text AS id, sum(rows)::float8 / greatest(sum(calls), 1) AS per_call, "
            "bool_or(query ~* '\\mlimit\\M') AS limited FROM pg_stat_statements "
            "WHERE queryid = ANY($1::bigint[]) GROUP BY queryid",
            [int(q) for q in query_ids],
        )
        shape.rows_per_call = {r["id"]: r["per_call"] for r in rows if not r["limited"]}
    for table in tables:
        count = await conn.fetchval(
            "SELECT greatest(c.reltuples, 0)::float8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname = $2",
            *table,
        )
        if count:
            shape.table_rows[table] = float(count)
    return shape


async def prepare(
    conn: asyncpg.Connection,
    statements: Sequence[tuple[str, str, int, bool]],
    runs: int,
    shape: Shape | None = None,
    filters: Mapping[tuple[str, str], str] | None = None,
) -> list[Prepared]:
    """Bind each ``(query_id, query, calls, write)`` for ``runs`` runs; a statement that cannot be bound is
    returned with its error."""
    catalog = await catalog_of(conn)
    plans: list[tuple[tuple[str, str, int, bool], list[Parameter] | str]] = []
    for query_id, query, calls, write in statements:
        statement = (query_id, runnable(query), calls, write)
        try:
            plans.append((statement, plan_parameters(statement[1], catalog)))
        except ParameterError as error:
            plans.append((statement, str(error)))
    sources = {p.source for _, plan in plans if not isinstance(plan, str) for p in plan if p.source}
    samples = await _samples(conn, sources, filters or {}) if sources else {}
    readable = [(statement[0], plan) for statement, plan in plans if not isinstance(plan, str)]
    quantiles = await _quantiles(conn, readable, shape or Shape())
    prepared = []
    for (query_id, query, calls, write), plan in plans:
        # ``interval $1`` as pg_stat_statements prints a typed literal is no valid SQL; ``$1::interval`` is.
        item = Prepared(query_id, typed_parameters(query), calls, write, [])
        if isinstance(plan, str):
            item.error = plan
        else:
            try:
                types = [t.name for t in (await conn.prepare(query)).get_parameters()]
            except asyncpg.PostgresError as error:
                item.error = _first_line(error)
            else:
                by_number = {p.number: p for p in plan}
                item.arguments = [
                    [
                        quantiles[(query_id, n + 1)]
                        if (query_id, n + 1) in quantiles
                        else _value(by_number.get(n + 1, Parameter(n + 1, "unknown")), samples, run, types[n])
                        for n in range(len(types))
                    ]
                    for run in range(runs)
                ]
        prepared.append(item)
    return prepared


async def compare_rows(
    conn: asyncpg.Connection, original: Prepared, rewritten: Prepared, sets: int, *, ordered: bool
) -> str | None:
    """None when both return the same rows for the first ``sets`` parameter sets (as multisets unless the original
    orders them), else what differed. Runs in a read-only transaction: a rewrite cannot change the sandbox."""
    for arguments in original.arguments[:sets]:
        try:
            async with conn.transaction(readonly=True):
                want = [tuple(r) for r in await conn.fetch(original.query, *arguments)]
                got = [tuple(r) for r in await conn.fetch(rewritten.query, *arguments)]
        except (asyncpg.PostgresError, asyncpg.InterfaceError, TypeError, ValueError) as error:
            return f"different rows: the rewrite failed ({_first_line(error)})"
        same = want == got if ordered else sorted(map(repr, want)) == sorted(map(repr, got))
        if not same:
            shown = ", ".join(redact_value(a) for a in arguments)
            return (
                f"different rows: for parameters [{shown}] the original returned "
                f"{len(want)} row(s), the rewrite {len(got)}" + ("" if len(want) != len(got) else " with other values")
            )
    return None


async def time_pair(conn: asyncpg.Connection, first: Prepared, second: Prepared) -> tuple[Result, Result]:
    """Two statements with the same arguments, interleaved (and the order swapped each run), so that neither gains
    from caches the other warmed: how a rewrite is compared with its original."""
    if first.error is not None or second.error is not None:
        return first.error or "", second.error or ""
    try:
        a, b = await conn.prepare(EXPLAIN + first.query), await conn.prepare(EXPLAIN + second.query)
        await _once(conn, a, first.arguments[0], False, read_only=True)
        await _once(conn, b, first.arguments[0], False, read_only=True)
        times_a: list[float] = []
        times_b: list[float] = []
        for run, arguments in enumerate(first.arguments):
            order = [(a, times_a), (b, times_b)] if run % 2 == 0 else [(b, times_b), (a, times_a)]
            for statement, into in order:
                into.append((await _once(conn, statement, arguments, False, read_only=True)).ms)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, TypeError, ValueError, OverflowError) as error:
        return _first_line(error), _first_line(error)
    return times_a, times_b


async def time_all(conn: asyncpg.Connection, prepared: Sequence[Prepared]) -> list[list[float] | str]:
    """Timings in milliseconds per statement, or its error."""
    results: list[list[float] | str] = []
    for item in prepared:
        if item.error is not None:
            results.append(item.error)
            continue
        try:
            results.append([run.ms for run in await time_runs(conn, item)])
        except (asyncpg.PostgresError, asyncpg.InterfaceError, TypeError, ValueError, OverflowError) as error:
            results.append(_first_line(error))
    return results


async def time_runs(
    conn: asyncpg.Connection, item: Prepared, budget_seconds: float = PHASE_BUDGET_SECONDS
) -> list[Run]:
    """Run ``item`` once to warm the caches, then once per argument set (at least ``MIN_RUNS``, fewer than all
    once ``budget_seconds`` have passed); raises what the statement raises."""
    statement = await conn.prepare(EXPLAIN + item.query)
    # A read runs in a READ ONLY transaction: a statement taken as a read (a sample from pg_stat_activity, a
    # data-modifying CTE the parser read as a SELECT) can then change nothing, not even the sandbox's copy.
    read_only = not item.write
    await _once(conn, statement, item.arguments[0], item.write, read_only=read_only)  # warm-up: caches
    runs: list[Run] = []
    started = time.monotonic()
    for arguments in item.arguments:
        runs.append(await _once(conn, statement, arguments, item.write, read_only=read_only))
        if len(runs) >= MIN_RUNS and time.monotonic() - started > budget_seconds:
            break
    return runs


async def _once(
    conn: asyncpg.Connection, statement: Any, arguments: list[Any], write: bool, *, read_only: bool = False
) -> Run:
    """One run of ``statement`` (the EXPLAIN ANALYZE of one, prepared), as the server timed it. A write runs in a
    transaction rolled back afterwards; with ``read_only`` (an LLM's rewrite, and the original it is compared
    with) in a READ ONLY transaction, so that nothing it calls can write."""
    if not write and not read_only:
        return read_explain(await statement.fetchval(*arguments))
    transaction = conn.transaction(readonly=read_only)
    await transaction.start()
    try:
        return read_explain(await statement.fetchval(*arguments))
    finally:
        await transaction.rollback()


#: One statement's timings in milliseconds, or its error.
Result = list[float] | str


def timings(prepared: Sequence[Prepared], before: Sequence[Result], after: Sequence[Result]) -> list[Timing]:
    """Paired results as :class:`Timing` (an error on either side is the statement's error)."""
    result = []
    for item, b, a in zip(prepared, before, after, strict=True):
        timing = Timing(item.query_id, item.calls, write=item.write)
        if isinstance(b, str) or isinstance(a, str):
            timing.error = b if isinstance(b, str) else str(a)
        else:
            runs = min(len(b), len(a))
            timing.before, timing.after = b[:runs], a[:runs]
        result.append(timing)
    return result


def _first_line(error: BaseException) -> str:
    """The first line of a statement's error, its values redacted (it is recorded in the recommendation's status;
    the sandbox holds copies of real rows)."""
    text = str(error).strip()
    return (redact_error(text.splitlines()[0]) if text else type(error).__name__)[:500]
