"""What an LLM may suggest, read defensively, and checked before anything else sees it.

The answer should be one JSON object matching :class:`Suggestions`. Models wrap it in code fences, add prose
around it, or stop mid-object; :func:`parse_reply` takes the first balanced object out of the text, and tries one
repair of a truncated one (closing what was left open). Whatever still fails is rejected with the reason.

Each suggestion is then checked on its own (:func:`check`): the tables and columns must exist, an index must be a
definition the renderer accepts (so no DDL, no second statement, no function outside the allow-list hides in an
expression), a setting must be on the allow-list with a value in range, a rewrite must parse as one read-only
SELECT. What passes becomes a candidate that the what-if engine (indexes) or the sandbox (rewrites) still has to
prove; what fails is kept as a :class:`Rejection` with its reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import sqlglot
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlglot import exp
from sqlglot.errors import SqlglotError

from optischema.api.index import IndexDefinition
from optischema.changes.ddl import INDEX_TYPES, SETTINGS_ALLOWED, UnsafeDefinition, outside_allow_lists, render_create

from .statements import DIALECT, TableKey

Kind = Literal["index", "rewrite", "setting"]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class IndexSuggestion(_Loose):
    table: str = Field(min_length=1, max_length=130)
    columns: list[str] = Field(min_length=1, max_length=8)
    include: list[str] = Field(default_factory=list, max_length=8)
    where: str | None = Field(default=None, max_length=1000)
    method: Literal["btree", "hash", "gin", "gist", "brin"] = "btree"
    why: str = Field(default="", max_length=2000)


class RewriteSuggestion(_Loose):
    query_id: str = Field(pattern=r"^-?[0-9]+$")
    sql: str = Field(min_length=1, max_length=20000)
    why: str = Field(default="", max_length=2000)


class SettingSuggestion(_Loose):
    name: str = Field(min_length=1, max_length=100)
    value: str = Field(min_length=1, max_length=100)
    why: str = Field(default="", max_length=2000)


class Suggestions(_Loose):
    indexes: list[IndexSuggestion] = Field(default_factory=list, max_length=20)
    rewrites: list[RewriteSuggestion] = Field(default_factory=list, max_length=20)
    settings: list[SettingSuggestion] = Field(default_factory=list, max_length=20)


@dataclass(frozen=True, slots=True)
class Rejection:
    kind: Kind | Literal["reply"]
    what: str
    reason: str


def _first_object(text: str) -> tuple[str | None, bool]:
    """The first ``{…}`` of ``text`` (strings and escapes respected) and whether it was closed."""
    start = text.find("{")
    if start < 0:
        return None, False
    depth, in_string, escaped = 0, False, False
    for position in range(start, len(text)):
        char = text[position]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return text[start : position + 1], True
    return text[start:], False


def _repair(fragment: str) -> str:
    """Close a truncated object: end an open string, drop a dangling key or comma, close brackets in order."""
    stack, in_string, escaped = [], False, False
    for char in fragment:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]" and stack:
            stack.pop()
    text = fragment + ('"' if in_string else "")
    text = re.sub(r'(,\s*"[^"]*"\s*:?\s*|,\s*|:\s*)$', "", text.rstrip())
    return text + "".join(reversed(stack))


def parse_reply(text: str) -> tuple[Suggestions | None, str | None]:
    """(suggestions, None), or (None, why the answer could not be read)."""
    if not text.strip():
        return None, "empty answer"
    fragment, closed = _first_object(text)
    if fragment is None:
        return None, "no JSON object in the answer"
    try:
        document = json.loads(fragment if closed else _repair(fragment))
    except json.JSONDecodeError as problem:
        why = f"malformed JSON ({problem.msg} at character {problem.pos})"
        return None, why if closed else f"truncated JSON, and one repair did not help: {why}"
    if not isinstance(document, dict):
        return None, "the answer is not a JSON object"
    if not closed:  # the last item of a list may have been cut short: keep the items that are whole
        for kind, model in (
            ("indexes", IndexSuggestion),
            ("rewrites", RewriteSuggestion),
            ("settings", SettingSuggestion),
        ):
            items = document.get(kind)
            if isinstance(items, list):
                document[kind] = [i for i in items if _valid(model, i)]
    try:
        return Suggestions.model_validate(document), None
    except ValidationError as problem:
        first = problem.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return None, f"the JSON does not match the schema: {where}: {first['msg']}"


def _valid(model: type[BaseModel], item: object) -> bool:
    try:
        model.model_validate(item)
    except ValidationError:
        return False
    return True


# -- checks ----------------------------------------------------------------------------------------------------------

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
#: Settings an LLM may propose, with the range a value must fall in (memory in kB, as pg_settings reports it).
SETTING_RANGES: dict[str, tuple[float, float]] = {
    "random_page_cost": (1.0, 10.0),
    "effective_io_concurrency": (0, 1000),
    "work_mem": (1024, 4 * 1024 * 1024),
    "maintenance_work_mem": (16 * 1024, 16 * 1024 * 1024),
    "effective_cache_size": (8 * 1024, 1024 * 1024 * 1024),
    "default_statistics_target": (10, 10000),
    "jit": (0, 1),
}
_UNITS = {"kb": 1, "mb": 1024, "gb": 1024 * 1024, "tb": 1024 * 1024 * 1024}


def _setting_number(name: str, value: str) -> float | None:
    text = value.strip().lower()
    if name == "jit":
        return {"on": 1.0, "off": 0.0, "true": 1.0, "false": 0.0}.get(text)
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*(kb|mb|gb|tb)?", text)
    if match is None:
        return None
    number = float(match.group(1))
    return number * _UNITS[match.group(2)] if match.group(2) else number


def resolve(name: str, columns: Mapping[TableKey, set[str] | frozenset[str]]) -> TableKey | None:
    schema, _, table = name.rpartition(".")
    matches = [k for k in columns if k[1] == table and (not schema or k[0] == schema)]
    return matches[0] if len(matches) == 1 else None


def check_index(
    suggestion: IndexSuggestion, columns: Mapping[TableKey, set[str] | frozenset[str]]
) -> IndexDefinition | Rejection:
    what = f"{suggestion.table} ({', '.join(suggestion.columns)})"
    key = resolve(suggestion.table, columns)
    if key is None:
        return Rejection("index", what, f"table {suggestion.table} does not exist")
    known = columns[key]
    keys = []
    for column in suggestion.columns:
        if _IDENT.match(column):
            if column not in known:
                return Rejection("index", what, f"column {column} does not exist in {key[0]}.{key[1]}")
            keys.append({"name": column})
        else:
            keys.append({"expression": _unwrapped(column)})
    missing = [c for c in suggestion.include if c not in known]
    if missing:
        return Rejection("index", what, f"column {missing[0]} does not exist in {key[0]}.{key[1]}")
    try:
        definition = IndexDefinition.model_validate(
            {
                "schema": key[0],
                "table": key[1],
                "method": suggestion.method,
                "columns": keys,
                "include": suggestion.include,
                **({"where": suggestion.where} if suggestion.where else {}),
            }
        )
        render_create(definition)
    except (ValidationError, UnsafeDefinition) as error:
        reason = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error)
        return Rejection("index", what, f"not an index the operator would build: {reason}")
    for expression in [c["expression"] for c in keys if "expression" in c] + [suggestion.where or ""]:
        if not expression:
            continue
        try:
            named = {c.name for c in sqlglot.parse_one(expression, dialect=DIALECT).find_all(exp.Column)}
        except SqlglotError:
            return Rejection("index", what, f"expression {expression!r} does not parse")
        unknown = sorted(named - set(known))
        if unknown:
            return Rejection("index", what, f"column {unknown[0]} does not exist in {key[0]}.{key[1]}")
    return definition


def _unwrapped(expression: str) -> str:
    """``((a + b))`` → ``a + b``: the engine keys expressions without their outer parentheses."""
    text = expression.strip()
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for position, char in enumerate(text):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0 and position < len(text) - 1:
                return text  # "(a) + (b)": the first parenthesis closes early
        text = text[1:-1].strip()
    return text


def check_setting(suggestion: SettingSuggestion) -> tuple[str, str] | Rejection:
    name = suggestion.name.strip().lower()
    what = f"{name} = {suggestion.value}"
    if name not in SETTINGS_ALLOWED or name not in SETTING_RANGES:
        return Rejection("setting", what, f"{name} is not on the allow-list of settings the operator changes")
    number = _setting_number(name, suggestion.value)
    low, high = SETTING_RANGES[name]
    if number is None or not low <= number <= high:
        return Rejection("setting", what, f"value {suggestion.value!r} is out of range for {name}")
    return name, suggestion.value.strip()


#: Functions a rewrite may call: PostgreSQL built-ins (``pg_catalog``) that are IMMUTABLE or STABLE in every
#: overload and not SECURITY DEFINER, chosen from what a rewrite of an application's SELECT plausibly needs
#: (aggregates, window functions, arithmetic, text, date/time, JSON, arrays, set-returning series). Left out on
#: purpose, although some are STABLE: anything that reads or writes server files or large objects (``pg_read_file``,
#: ``pg_ls_dir``, ``lo_export``), runs a query given as text (``query_to_xml`` and the ``*_to_xml`` family,
#: ``dblink*``), reads or changes settings (``current_setting``, ``set_config``), sleeps, locks or advances
#: sequences. ``tests/postgres/test_sandbox_attacks.py`` checks every name against ``pg_proc``: it exists in
#: ``pg_catalog``, no overload is VOLATILE or SECURITY DEFINER.
REWRITE_FUNCTIONS = frozenset(
    {
        # aggregates
        *("count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "string_agg", "array_agg"),
        *("json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "mode", "percentile_cont"),
        *("percentile_disc", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp"),
        # window functions
        *("row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead"),
        *("first_value", "last_value", "nth_value"),
        # arithmetic
        *("abs", "ceil", "ceiling", "floor", "round", "trunc", "sqrt", "power", "mod", "sign", "ln", "log", "exp"),
        "div",
        # text
        *("lower", "upper", "length", "char_length", "substring", "substr", "position", "strpos", "btrim"),
        *("ltrim", "rtrim", "lpad", "rpad", "replace", "concat", "concat_ws", "left", "right", "split_part"),
        *("starts_with", "reverse", "initcap", "md5", "regexp_replace", "regexp_match", "to_char", "format"),
        "translate",
        # date and time
        *("now", "date_trunc", "date_part", "extract", "age", "to_timestamp", "to_date", "make_interval"),
        *("make_date", "date"),
        # JSON
        *("json_build_object", "jsonb_build_object", "json_build_array", "jsonb_build_array", "to_json"),
        *("to_jsonb", "json_array_elements", "jsonb_array_elements", "json_extract_path_text"),
        *("jsonb_extract_path_text", "jsonb_array_length", "jsonb_typeof"),
        # arrays and series
        *("array_length", "cardinality", "unnest", "array_position", "array_to_string", "string_to_array"),
        "generate_series",
    }
)
#: SQL constructs sqlglot parses as functions, which PostgreSQL evaluates itself (no ``pg_proc`` entry to call).
REWRITE_SYNTAX = frozenset(
    {"case", "cast", "coalesce", "nullif", "greatest", "least", "exists", "array", "row", "trim"}
    | {"current_date", "current_time", "current_timestamp", "localtime", "localtimestamp"}
)
_CALLED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Words a SELECT's own grammar puts before a parenthesis (a subquery, a list, a window), which call nothing.
REWRITE_GRAMMAR = frozenset(
    {"from", "join", "in", "any", "all", "some", "over", "filter", "group", "as", "using", "on", "where", "and"}
    | {"or", "not", "select", "having", "by", "lateral", "union", "intersect", "except", "values", "when", "then"}
    | {"else", "is", "between", "like", "ilike", "distinct", "varchar", "char", "character", "varying", "numeric"}
    | {"decimal", "timestamp", "time", "interval", "bit"}
)


def _function_name(node: exp.Func) -> str:
    """The name PostgreSQL will resolve: sqlglot's own classes render to it (``TimestampTrunc`` → date_trunc)."""
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    called = _CALLED.match(node.sql(dialect=DIALECT))
    return called.group(0).lower() if called else type(node).__name__.lower()


def _refused_function(tree: exp.Expr) -> str | None:
    """The first function call of ``tree`` outside the allow-list (or qualified by a schema other than
    ``pg_catalog``: ``public.lower`` is someone's function), else None. Operators are not calls here."""
    for node in tree.find_all(exp.Func):
        if isinstance(node, exp.Binary | exp.Unary | exp.Connector | exp.Predicate):
            continue
        name = _function_name(node)
        parent = node.parent
        if isinstance(parent, exp.Dot) and parent.expression is node:
            schema = parent.this.name.lower() if isinstance(parent.this, exp.Identifier | exp.Column) else ""
            if schema != "pg_catalog":
                return f"{parent.this.sql(dialect=DIALECT)}.{name}"
        if name not in REWRITE_FUNCTIONS and name not in REWRITE_SYNTAX:
            return name
    return None


def check_rewrite(
    suggestion: RewriteSuggestion,
    known_queries: Mapping[str, str],
    columns: Mapping[TableKey, set[str] | frozenset[str]],
) -> str | Rejection:
    """The rewritten SQL when it is one read-only SELECT over known tables, for a statement of the workload, that
    calls only functions on :data:`REWRITE_FUNCTIONS`. An allow-list, not a deny-list: a SELECT can write, read
    files or run programs through a function (``query_to_xml('COPY … TO PROGRAM …')``), and nobody can list
    every such function. The sandbox then runs it as an unprivileged role, in a READ ONLY transaction."""
    what = f"rewrite of {suggestion.query_id}"
    if suggestion.query_id not in known_queries:
        return Rejection("rewrite", what, f"no statement {suggestion.query_id} in the workload")
    try:
        trees = [t for t in sqlglot.parse(suggestion.sql, dialect=DIALECT) if t is not None]
    except (SqlglotError, RecursionError) as error:
        return Rejection("rewrite", what, f"does not parse: {(str(error) or type(error).__name__).splitlines()[0]}")
    if len(trees) != 1:
        return Rejection("rewrite", what, "must be exactly one statement")
    tree = trees[0]
    if not isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except)) or tree.find(
        exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter, exp.Command, exp.Into, exp.Lock
    ):
        return Rejection("rewrite", what, "must be a read-only SELECT")
    # sqlglot's tree says what it understood (``ifnull`` is a Coalesce); PostgreSQL resolves the text as written.
    calls, types = outside_allow_lists(
        suggestion.sql, REWRITE_FUNCTIONS | REWRITE_SYNTAX | REWRITE_GRAMMAR, INDEX_TYPES
    )
    if types:
        return Rejection("rewrite", what, f"type {types[0]} is not a built-in type a rewrite may cast to")
    refused = _refused_function(tree) or (calls[0] if calls else None)
    if refused is not None:
        return Rejection(
            "rewrite", what, f"function {refused} is not on the allow-list of side-effect-free built-in functions"
        )
    for table in tree.find_all(exp.Table):
        name = f"{table.db}.{table.name}" if table.db else table.name
        is_cte = any(cte.alias == table.name for cte in tree.find_all(exp.CTE))
        if table.name and not is_cte and resolve(name, columns) is None:
            return Rejection("rewrite", what, f"table {table.name} does not exist")
    return suggestion.sql
