"""SQL rendered from structured changes. The only place DDL text is made.

Identifiers are quoted by sqlglot, never by string formatting. Expressions and partial-index predicates are parsed
before they are used: exactly one expression, no subquery, no function outside an allow-list of built-ins and no
type outside one (a function or a domain's CHECK could be a user's code that writes, declared IMMUTABLE; being known
to sqlglot says nothing about PostgreSQL), and the DDL runs with only ``pg_catalog`` on the search path (a user's
exact-type overload of a built-in is never picked). The expression text itself is kept as written, because
PostgreSQL matches an index expression with the query's by its parse tree, and re-rendering could change it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import sqlglot
from sqlglot import exp
from sqlglot.tokenizer_core import TokenType

from optischema.api.index import MAX_IDENTIFIER_BYTES, IndexColumn, IndexDefinition
from optischema.api.indexchange import IndexChangeSpec
from optischema.api.operations import SettingChange, TableRef
from optischema.changes.parsing import PARSE_ERRORS, nesting_problem
from optischema.changes.settings import InvalidSettingValue, check_value

# Names and values are quoted in one module (see its docstring); these names stay importable from here.
from . import cnpg
from .quoting import qualified
from .quoting import quote_ident as quote
from .quoting import quote_literal as literal

__all__ = ["literal", "qualified", "quote"]  # re-exported: callers of the renderer quote with the same functions

DIALECT = "postgres"


#: The search path every statement rendered here runs under (apply, the ownership probe, the captured definition):
#: the built-ins only. With a schema others may create in on the path, a function of theirs taking the column's exact
#: type (``public.lower(varchar)``) is preferred to ``pg_catalog.lower(text)``, and the index would call it on every
#: write. ``pg_temp`` comes last so that a temporary object never shadows a built-in.
BUILT_INS_ONLY = "pg_catalog, pg_temp"


class UnsafeDefinition(ValueError):
    """A structured change that must not be rendered; the message names the field and the reason."""


#: Longest index expression or predicate accepted: far above any real one, low enough to parse at once.
MAX_EXPRESSION_CHARS = 4096


def check_expression(text: str, field: str) -> exp.Expr:
    """Parse one SQL expression and refuse anything that could do more than compute a value."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise UnsafeDefinition(f"{field}: is longer than {MAX_EXPRESSION_CHARS} characters")
    too_deep = nesting_problem(text)
    if too_deep is not None:
        raise UnsafeDefinition(f"{field}: is {too_deep}")
    try:
        statements = [s for s in sqlglot.parse(text, dialect=DIALECT) if s is not None]
    except PARSE_ERRORS as error:  # a lone quote is a TokenError, not a ParseError
        raise UnsafeDefinition(f"{field}: is not a valid SQL expression ({_first_line(error)})") from error
    if len(statements) != 1:
        raise UnsafeDefinition(f"{field}: must be exactly one SQL expression")
    tree = statements[0]
    if isinstance(tree, exp.Query | exp.Command | exp.DDL | exp.DML) or tree.find(exp.Query):
        raise UnsafeDefinition(f"{field}: must not contain a query or a statement")
    calls, types = outside_allow_lists(text)
    # sqlglot reads a function it has no class for (to_tsvector) as Anonymous: allowed only by name, as a call is.
    anonymous = {f.name for f in tree.find_all(exp.Anonymous) if f.name.lower() not in INDEX_FUNCTIONS}
    unknown = sorted(anonymous | set(calls))
    if unknown:
        raise UnsafeDefinition(
            f"{field}: function {', '.join(unknown)} is not known to be free of side effects; "
            "only built-in functions are accepted"
        )
    if types:
        raise UnsafeDefinition(f"{field}: type {', '.join(types)} is not a built-in type an index may cast to")
    if tree.find(exp.Operator) or any(t.this == exp.DataType.Type.USERDEFINED for t in tree.find_all(exp.DataType)):
        raise UnsafeDefinition(f"{field}: must not name an operator or a type of its own (only built-in ones)")
    return tree


#: Functions an index expression or predicate may call, by the name PostgreSQL resolves: ``pg_catalog`` built-ins
#: with an IMMUTABLE overload and none VOLATILE or SECURITY DEFINER (``tests/postgres/test_apply_attacks.py``
#: checks each against ``pg_proc``). Being known to sqlglot is not enough: it maps hundreds of other dialects'
#: names (``ifnull``, ``nvl``, ``xor``, ``sha2``…) to classes of its own, which PostgreSQL resolves through the
#: search path to whatever function someone created under that name.
INDEX_FUNCTIONS = frozenset(
    {
        *("lower", "upper", "btrim", "ltrim", "rtrim", "substr", "left", "right", "length", "char_length"),
        *("octet_length", "md5", "replace", "split_part", "reverse", "initcap", "lpad", "rpad", "strpos"),
        *("starts_with", "regexp_replace", "translate", "abs", "round", "trunc", "floor", "ceil", "ceiling"),
        *("sign", "mod", "div", "power", "sqrt", "date_trunc", "date_part", "jsonb_extract_path_text"),
        *("json_extract_path_text", "jsonb_extract_path", "jsonb_array_length", "array_length", "cardinality"),
        "to_tsvector",  # full-text GIN indexes; only its (regconfig, text) form is IMMUTABLE, as an index requires
    }
)
#: Words PostgreSQL's grammar itself reads before a parenthesis (no ``pg_proc`` lookup by that name), and the type
#: names that take a modifier (``varchar(20)``).
INDEX_SYNTAX = frozenset(
    {"coalesce", "nullif", "greatest", "least", "cast", "extract", "trim", "substring", "position", "overlay"}
    | {"in", "any", "all", "some", "and", "or", "not", "is", "when", "then", "else", "case", "between", "like"}
    | {"ilike", "similar", "escape", "row", "array"}
    | {"varchar", "char", "character", "varying", "numeric", "decimal", "timestamp", "time", "interval", "bit"}
)

#: Types an expression may cast to: built-ins by the first word of their name. sqlglot reads other dialects' type
#: names (``int64``, ``string``) as its own; PostgreSQL resolves them, like a quoted ``"Int4"``, to someone's domain.
INDEX_TYPES = frozenset(
    {"int", "int2", "int4", "int8", "integer", "smallint", "bigint", "numeric", "decimal", "real", "float4"}
    | {"float8", "double", "text", "varchar", "char", "character", "bpchar", "boolean", "bool", "date", "time"}
    | {"timestamp", "timestamptz", "timetz", "interval", "json", "jsonb", "uuid", "bytea", "name"}
)


def outside_allow_lists(
    text: str, functions: frozenset[str] = INDEX_FUNCTIONS | INDEX_SYNTAX, types: frozenset[str] = INDEX_TYPES
) -> tuple[list[str], list[str]]:
    """Every word directly followed by ``(`` (a call, as PostgreSQL reads it) that is not in ``functions``, and
    every type cast to (after ``::``, or ``AS`` inside ``CAST(``) whose first word is not in ``types``; read from
    the tokens rather than sqlglot's tree, whose classes do not say which name the text calls (``ifnull`` is a
    Coalesce to it, ``xor`` an operator). A quoted name (``"ABS"(a)``: case kept, someone's function or type) or
    one qualified by a schema other than ``pg_catalog`` (``public.abs(a)``) is always refused."""
    tokens = sqlglot.Dialect.get_or_raise(DIALECT).tokenize(text)
    refused: list[str] = []
    cast_to_types: list[str] = []
    opened: list[str] = []  # the word before each open parenthesis
    for position, token in enumerate(tokens):
        before = tokens[position - 1] if position > 0 else None
        after = tokens[position + 1] if position + 1 < len(tokens) else None
        kind = before.token_type if before is not None else None
        if token.token_type == TokenType.L_PAREN:
            opened.append(before.text.lower() if before is not None else "")
        elif token.token_type == TokenType.R_PAREN and opened:
            opened.pop()
        cast_to = kind == TokenType.DCOLON or (kind == TokenType.ALIAS and opened[-1:] == ["cast"])
        type_name = token.text.lower().split()[0] if token.text.strip() else ""
        if cast_to and (token.token_type == TokenType.IDENTIFIER or type_name not in types):
            cast_to_types.append(token.text)  # a domain of that name could CHECK with any function
        if after is None or after.token_type != TokenType.L_PAREN or not re.fullmatch(r"\w+", token.text):
            continue
        name = token.text if token.token_type == TokenType.IDENTIFIER else token.text.lower()
        schema = tokens[position - 2].text.lower() if kind == TokenType.DOT and position > 1 else None
        if schema not in (None, "pg_catalog") or name not in functions:
            refused.append(name if schema is None else f"{schema}.{name}")
    return refused, cast_to_types


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _column_sql(column: IndexColumn, field: str) -> str:
    if column.expression is not None:
        check_expression(column.expression, f"{field}.expression")
        sql = f"({column.expression})"
    else:
        sql = quote(column.name or "")
    if column.collation:
        sql += f" COLLATE {quote(column.collation)}"
    if column.opclass:
        # An extension's operator class (gin_trgm_ops) lives in the extension's schema, which is not on the search
        # path the operator builds under (BUILT_INS_ONLY): it is named with its schema.
        schema = f"{quote(column.opclass_schema)}." if column.opclass_schema else ""
        sql += f" {schema}{quote(column.opclass)}"
    if column.order:
        sql += f" {column.order.upper()}"
    if column.nulls:
        sql += f" NULLS {column.nulls.upper()}"
    return sql


def _slug(column: IndexColumn) -> str:
    if column.name is not None:
        return column.name
    # PostgreSQL's own default names an expression column after its outermost function, or "expr".
    call = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(", column.expression or "")
    return call.group(1).lower() if call else "expr"


def index_name(index: IndexDefinition, taken: Sequence[str] = ()) -> str:
    """``index.name``, or a stable name of our own: ``<table>_<keys>[_part]_<hash>_idx``.

    The hash (8 hex digits of :func:`definition_key`: method, uniqueness, keys, INCLUDE and predicate) is always
    there, so that a name we generate says which definition it stands for: an index someone else built under
    PostgreSQL's default name (``<table>_<cols>_idx``, maybe UNIQUE) never looks like one of ours. Too long a name
    keeps its hash and loses the end of its head; a name already ``taken`` gets a longer hash. The same definition
    always gets the same name.
    """
    if index.name:
        return index.name
    return _derived_name(index, definition_key(index), taken)


def partition_index_name(index: IndexDefinition, parent: str, schema: str, table: str) -> str:
    """The name of a partitioned index's own index on one partition: ``<partition>_<keys>[_part]_<hash>_idx``,
    hashed over the parent index's qualified name and the definition on that partition.

    Derived as :func:`index_name` derives one (within 63 bytes, never PostgreSQL's default name), but the parent's
    name is in the hash: an index the same definition would get from a change on the partition alone is not taken
    for this rollout's, and two partitioned indexes with one definition (a Git change naming its own) never share a
    child name. The same parent and partition always give the same name, which is what lets a resumed rollout find
    what it built before a crash."""
    child = index.model_copy(update={"schema_": schema, "table": table, "name": None})
    return _derived_name(child, f"{index.schema_}.{parent}|{definition_key(child)}")


def _derived_name(index: IndexDefinition, key: str, taken: Sequence[str] = ()) -> str:
    parts = [index.table, *(_slug(c) for c in index.columns)]
    if index.where:
        parts.append("part")
    digest = hashlib.sha256(key.encode()).hexdigest()
    for width in (8, 16):
        tail = f"_{digest[:width]}_idx"
        head = "_".join(parts).encode()[: MAX_IDENTIFIER_BYTES - len(tail)].decode(errors="ignore").rstrip("_")
        name = head + tail
        if name not in taken:
            break
    return name


def definition_key(index: IndexDefinition) -> str:
    """A canonical text of what the index is (not what it is called): equal keys mean the same index."""
    columns = ",".join(
        f"{c.name or '(' + (c.expression or '') + ')'}:{c.opclass or ''}:{c.collation or ''}:{c.order or ''}:"
        f"{c.nulls or ''}"
        for c in index.columns
    )
    return (
        f"{index.schema_}.{index.table}|{index.method}|{int(index.unique)}|{columns}|"
        f"{','.join(index.include)}|{index.where or ''}"
    )


def render_create(
    index: IndexDefinition, *, concurrently: bool = True, name: str | None = None, only: bool = False
) -> str:
    """``CREATE [UNIQUE] INDEX [CONCURRENTLY] name ON [ONLY] schema.table USING method (...) [INCLUDE (...)]
    [WHERE ...]``.

    ``only`` is the first step on a partitioned table (``changes.partitioned``): the index of the parent alone,
    INVALID until an index of every partition is attached; PostgreSQL refuses ``CONCURRENTLY`` there."""
    if only and concurrently:
        raise UnsafeDefinition("index: CREATE INDEX ... ON ONLY cannot be CONCURRENTLY (PostgreSQL refuses it)")
    keys = ", ".join(_column_sql(c, f"index.columns[{i}]") for i, c in enumerate(index.columns))
    sql = "CREATE UNIQUE INDEX" if index.unique else "CREATE INDEX"
    if concurrently:
        sql += " CONCURRENTLY"
    sql += f" {quote(name or index_name(index))} ON {'ONLY ' if only else ''}{qualified(index.schema_, index.table)}"
    if index.method != "btree":
        sql += f" USING {index.method}"
    sql += f" ({keys})"
    if index.include:
        sql += f" INCLUDE ({', '.join(quote(c) for c in index.include)})"
    if index.where:
        check_expression(index.where, "index.where")
        sql += f" WHERE {index.where}"
    return sql


def render_drop(index: IndexDefinition, *, concurrently: bool = True, name: str | None = None) -> str:
    """``DROP INDEX [CONCURRENTLY] IF EXISTS schema.name``: idempotent, so a retried rollback is harmless."""
    keyword = "DROP INDEX CONCURRENTLY" if concurrently else "DROP INDEX"
    return f"{keyword} IF EXISTS {qualified(index.schema_, name or index_name(index))}"


def render_drop_partitioned(index: IndexDefinition, *, name: str | None = None) -> str:
    """``DROP INDEX IF EXISTS schema.name`` of a partitioned table's index, which takes its partitions' indexes
    with it.

    Never ``CONCURRENTLY``: PostgreSQL refuses it on a partitioned index ("cannot drop partitioned index
    concurrently"), and a partition's attached index cannot be dropped on its own first ("index … requires it"),
    nor detached. So the drop takes ``ACCESS EXCLUSIVE`` on the parent table and every partition (and their
    indexes) for the moment it runs: reads and writes of the whole table wait behind it. The tradeoff taken: the
    drop is catalog work and file unlinks, over in milliseconds once the locks are held, and the apply path runs it
    under ``lock_timeout`` (retried with backoff while the window lasts) so it never queues behind a long
    transaction holding everyone else up behind it; the alternative, leaving the index, is not a rollback."""
    return render_drop(index, concurrently=False, name=name)


def render_reindex(index: IndexDefinition) -> str:
    if not index.name:
        raise UnsafeDefinition("index.name: is required to reindex")
    return f"REINDEX INDEX CONCURRENTLY {qualified(index.schema_, index.name)}"


def render_analyze(table: TableRef) -> str:
    """``ANALYZE`` (or ``VACUUM (ANALYZE)`` when the table also carries many dead rows)."""
    keyword = "VACUUM (ANALYZE)" if table.vacuum else "ANALYZE"
    return f"{keyword} {qualified(table.schema_, table.table)}"


#: Settings the operator may change: reloadable (no restart), per-session planner and memory knobs whose worst
#: case is a slower plan, never lost data or a server that will not start.
SETTINGS_ALLOWED = frozenset(
    {
        "work_mem",
        "maintenance_work_mem",
        "random_page_cost",
        "seq_page_cost",
        "effective_cache_size",
        "effective_io_concurrency",
        "default_statistics_target",
        "jit",
        "jit_above_cost",
    }
)


def render_cluster_setting(setting: SettingChange) -> str:
    """A CloudNativePG Cluster's setting (``setting.cluster``) as SQL shows it: comments only (nothing a SQL client
    could run), the merge patch the operator makes as the ``kubectl patch`` a person would type. The value is
    checked as for ``ALTER SYSTEM`` (allow-list, grammar, safe range): what is refused there is refused here."""
    cluster = _cluster(setting)
    _checked_setting(setting.name, setting.value)
    return "\n".join(
        [
            f"-- CloudNativePG Cluster {cluster}: ALTER SYSTEM is off there; the operator merge-patches the Cluster's",
            f"-- spec.postgresql.parameters and CloudNativePG rolls it out ({setting.name} = {setting.value}):",
            f"-- {cnpg.kubectl_patch(cluster, setting.name, setting.value)}",
        ]
    )


def render_cluster_setting_rollback(setting: SettingChange) -> str:
    """Its rollback as comments: the value seen at analysis time patched back, or the parameter removed when that
    was PostgreSQL's default or its configuration file's (``changes.cnpg.undo_value``). The value restored is the
    Cluster's own, so it is not held to the caps a proposed value is (a Cluster may run with more ``work_mem``
    than the operator would ever propose); JSON and shell quoting keep it one inert line whatever it holds."""
    cluster = _cluster(setting)
    if setting.name not in SETTINGS_ALLOWED:
        raise UnsafeDefinition(f"setting.name: {setting.name} is not among the settings the operator may change")
    value = cnpg.undo_value(setting.current_value, setting.current_source or "") if setting.current_value else None
    return "\n".join(
        [
            f"-- To undo: {cnpg.describe(cluster, setting.name, value)}",
            f"-- {cnpg.kubectl_patch(cluster, setting.name, value)}",
        ]
    )


def _cluster(setting: SettingChange) -> str:
    if setting.cluster is None:
        raise UnsafeDefinition("setting.cluster: not set; only a CloudNativePG Cluster's setting is a Cluster patch")
    return setting.cluster


def _checked_setting(name: str, value: str) -> None:
    if name not in SETTINGS_ALLOWED:
        raise UnsafeDefinition(
            f"setting.name: {name} is not among the settings the operator may change "
            f"({', '.join(sorted(SETTINGS_ALLOWED))})"
        )
    try:
        check_value(name, value)
    except InvalidSettingValue as error:
        raise UnsafeDefinition(str(error)) from error


def render_setting(setting: SettingChange) -> str:
    """``ALTER SYSTEM SET`` then a reload; the two statements run separately (ALTER SYSTEM refuses a transaction).

    The value is checked against the setting's grammar and safe range (``changes.settings``) here, so every path
    that renders it (analysis, IndexChange admission, the apply engine) refuses the same values. A setting for a
    managed service (``platform`` set) is advice and never SQL (``changes.managed``): refused here, so the apply
    engine cannot run it whoever created the IndexChange."""
    _not_managed(setting)
    _checked_setting(setting.name, setting.value)
    return f"ALTER SYSTEM SET {quote(setting.name)} = {literal(setting.value)};\nSELECT pg_reload_conf()"


#: ``pg_settings.source`` values that ``ALTER SYSTEM RESET`` restores: the built-in default and the server's own
#: configuration file. A value someone set with ``ALTER SYSTEM`` (reported as ``ALTER SYSTEM`` by the collector, from
#: ``sourcefile``) is set back instead: a reset would drop their setting too.
RESET_SOURCES = frozenset({"default", "configuration file"})


def render_setting_rollback(setting: SettingChange) -> str:
    """Back to where the value came from at analysis time: ``ALTER SYSTEM RESET`` when it was the default or the
    configuration file (or no value was seen), else the old value set again."""
    _not_managed(setting)
    if setting.current_value is None or setting.current_source in RESET_SOURCES:
        return f"ALTER SYSTEM RESET {quote(setting.name)};\nSELECT pg_reload_conf()"
    return f"ALTER SYSTEM SET {quote(setting.name)} = {literal(setting.current_value)};\nSELECT pg_reload_conf()"


def _not_managed(setting: SettingChange) -> None:
    if setting.cluster is not None:
        raise UnsafeDefinition(
            f"setting.cluster: CloudNativePG Cluster {setting.cluster} turns ALTER SYSTEM off; its setting is applied "
            "by patching the Cluster's spec.postgresql.parameters, never as SQL"
        )
    if setting.platform is not None:
        raise UnsafeDefinition(
            f"setting.platform: {setting.platform} refuses ALTER SYSTEM; a setting for it is advice only and is never "
            "run (make the change with the provider's command the recommendation shows)"
        )


# -- a whole IndexChange -----------------------------------------------------------------------------------------


def table_of(spec: IndexChangeSpec) -> tuple[str, str] | None:
    """(schema, table) the change works on; ``None`` for a server setting."""
    if spec.index is not None:
        return spec.index.schema_, spec.index.table
    if spec.table is not None:
        return spec.table.schema_, spec.table.table
    return None


def statements_for(spec: IndexChangeSpec) -> list[str]:
    """The statements to run, rendered here from the structured change (never taken from the object)."""
    if spec.table is not None:
        return [render_analyze(spec.table)]
    if spec.setting is not None and spec.setting.cluster is not None:
        return [render_cluster_setting(spec.setting)]  # comments: the apply path patches the Cluster instead
    if spec.setting is not None:
        return render_setting(spec.setting).split(";\n")
    assert spec.index is not None
    return [{"create": render_create, "drop": render_drop, "reindex": render_reindex}[spec.operation](spec.index)]


def undo_for(spec: IndexChangeSpec, name: str | None) -> list[str] | None:
    """What reverses the change, when something can: a new index is dropped, a dropped one re-created, a setting
    restored. ``ANALYZE`` and ``REINDEX`` have nothing to undo."""
    if spec.setting is not None and spec.setting.cluster is not None:
        return [render_cluster_setting_rollback(spec.setting)]
    if spec.setting is not None:
        return render_setting_rollback(spec.setting).split(";\n")
    if spec.index is not None and spec.operation == "create":
        return [render_drop(spec.index.model_copy(update={"name": name}))]
    if spec.index is not None and spec.operation == "drop":
        return [render_create(spec.index)]
    return None


def recreate(definition: str) -> str:
    """The statement re-creating a dropped index from its captured ``pg_get_indexdef`` (PostgreSQL's own text, so
    it is exactly what was dropped, options included), built ``CONCURRENTLY`` so the rollback blocks no writes."""
    try:  # the status is data someone with status rights could write: one statement, nothing appended
        tokens = sqlglot.Dialect.get_or_raise(DIALECT).tokenize(definition)
    except PARSE_ERRORS as error:
        raise UnsafeDefinition(f"status.droppedDefinition: cannot be read ({_first_line(error)})") from error
    if any(token.token_type == TokenType.SEMICOLON for token in tokens):
        raise UnsafeDefinition("status.droppedDefinition: must be one statement")
    for head in ("CREATE UNIQUE INDEX ", "CREATE INDEX "):
        if definition.startswith(head):
            return f"{head}CONCURRENTLY {definition.removeprefix(head)}"
    raise UnsafeDefinition(f"status.droppedDefinition: not an index definition: {definition[:80]!r}")
