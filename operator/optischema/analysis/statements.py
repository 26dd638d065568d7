"""What a statement asks of each table: the columns it filters, joins, sorts and reads, parsed with sqlglot.

This is the raw material for index candidates. It is deliberately a description, not a decision: equality,
range, IN, prefix LIKE, join keys, IS [NOT] NULL, ORDER BY, GROUP BY and expressions such as ``lower(email)`` are
recorded per table, with aliases and correlated references resolved against the catalog; the what-if planner
decides later what is worth an index.

Text from ``pg_stat_statements`` keeps the application's spacing, and sqlglot reads ``$1,$2`` as dollar quoting;
a space after punctuation and operators (``,``, ``(``, ``[``, ``=``, ``||``, ``%``…) fixes that without changing
the statement.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError, TokenError
from sqlglot.tokens import Tokenizer

from optischema.changes.parsing import nesting_problem

DIALECT = "postgres"
#: Longest statement text analysed. sqlglot's time grows faster than the text (a 27,000-character ``IN`` list takes
#: seconds), and a statement this long is generated, not written: it is skipped with this reason. The collector
#: reads at most one character more (``postgres/collect``), so a longer text is known to be longer without being
#: read whole.
MAX_STATEMENT_CHARS = 8192
TableKey = tuple[str, str]
StatementKind = Literal["select", "insert", "update", "delete", "other"]

_DOLLAR_AFTER_PUNCTUATION = re.compile(r"([,(\[|%=<>+\-*/^~!&#:])\$(\d)")
_UTILITY = re.compile(
    r"^\s*(copy|do|begin|commit|rollback|savepoint|release|set|reset|show|vacuum|analy[sz]e|create|alter|drop|"
    r"grant|revoke|truncate|lock|listen|notify|unlisten|prepare|execute|deallocate|discard|fetch|close|declare|"
    r"explain|checkpoint|reindex|cluster|refresh|comment|security|load|import|call)\b",
    re.IGNORECASE,
)
_TYPED_PARAMETER = re.compile(
    r"\b(date|time(?:tz)?|timestamp(?:tz)?|timestamp\s+with(?:out)?\s+time\s+zone|time\s+with(?:out)?\s+time\s+zone|"
    r"interval|inet|cidr|uuid|jsonb?|numeric|money|bool(?:ean)?)\s+\$(\d+)",
    re.IGNORECASE,
)
#: The name prefix of statements the analysis itself prepares (postgres.planner): never part of the workload.
_OWN_PREPARE = re.compile(r"^\s*prepare\s+optischema_", re.IGNORECASE)
_PREPARE = re.compile(r'^\s*prepare\s+(?:"(?:[^"]|"")+"|[a-z_][\w$]*)\s*', re.IGNORECASE)
#: ``$n`` outside string literals and quoted names (group 1), and whether a cast already follows it (group 2).
_PARAMETER_OUTSIDE_QUOTES = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$(\d+)(?!\d)(\s*::)?")
_RANGE = (exp.GT, exp.GTE, exp.LT, exp.LTE)
_FLIPPED: dict[type[exp.Expr], type[exp.Expr]] = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE}


@dataclass(slots=True)
class TableUsage:
    """How one statement uses one table (columns by name, expressions as the statement wrote them)."""

    table: TableKey
    equality: list[str] = field(default_factory=list)  # col = const, col IN (...), col = ANY(...)
    expressions: list[str] = field(default_factory=list)  # f(col) = const: candidates for expression indexes
    ranges: list[str] = field(default_factory=list)  # <, <=, >, >=, BETWEEN
    likes: list[str] = field(default_factory=list)  # col LIKE pattern (prefix-indexable when the pattern is)
    joins: list[str] = field(default_factory=list)  # col = other_table.col
    nulls: list[tuple[str, bool]] = field(default_factory=list)  # (col, True) for IS NULL, False for IS NOT NULL
    not_equal: list[str] = field(default_factory=list)  # col <> const
    order_by: list[tuple[str, bool]] = field(default_factory=list)  # (col, descending), when all of ORDER BY is here
    group_by: list[str] = field(default_factory=list)
    referenced: set[str] = field(default_factory=set)  # every column of this table the statement touches
    constants: dict[str, list[str]] = field(default_factory=dict)  # col -> literal values compared with = / IN
    limit: bool = False
    # Searches only a GIN (or GiST) index can serve:
    contains: dict[str, list[str]] = field(default_factory=dict)  # col -> operators: @>, <@, &&, ?, ?|, ?&, @?, @@
    substrings: list[tuple[str, bool]] = field(default_factory=list)  # (col or expression, is expression): trigram
    fulltext: list[str] = field(default_factory=list)  # to_tsvector(config, col) as written, matched with @@

    def filtered(self) -> list[str]:
        """Columns that restrict rows (in the order met), joins included."""
        seen: dict[str, None] = {}
        searched = [*self.contains, *(c for c, expression in self.substrings if not expression)]
        for name in [*self.equality, *self.joins, *self.ranges, *self.likes, *(c for c, _ in self.nulls), *searched]:
            seen.setdefault(name)
        return list(seen)


@dataclass(slots=True)
class ParsedStatement:
    kind: StatementKind
    fingerprint: str
    usages: dict[TableKey, TableUsage] = field(default_factory=dict)
    written_table: TableKey | None = None  # INSERT/UPDATE/DELETE target
    updated_columns: tuple[str, ...] = ()
    skip_reason: str | None = None  # set when the statement cannot be analysed (and why)

    @property
    def tables(self) -> set[TableKey]:
        return set(self.usages) | ({self.written_table} if self.written_table else set())


class Catalog:
    """Table and column names, to resolve unqualified names the way PostgreSQL's search path would.

    ``views`` holds each view's definition (``pg_get_viewdef``): a statement that reads a view is analysed against
    the view's base tables, as PostgreSQL's rewriter and planner see it."""

    def __init__(
        self,
        columns: Mapping[TableKey, set[str] | frozenset[str]],
        search_path: tuple[str, ...] = ("public",),
        views: Mapping[TableKey, str] | None = None,
    ):
        self.columns = dict(columns)
        self.search_path = search_path
        self.views = {key: text for key, text in (views or {}).items() if key not in self.columns}
        self._by_name: dict[str, list[TableKey]] = {}
        for key in self.columns:
            self._by_name.setdefault(key[1], []).append(key)
        self._views_by_name: dict[str, list[TableKey]] = {}
        for key in self.views:
            self._views_by_name.setdefault(key[1], []).append(key)
        self._view_trees: dict[TableKey, exp.Query | None] = {}

    def relation(self, schema: str | None, name: str) -> tuple[TableKey, bool] | None:
        """The table or view a name means (``(key, is_view)``): tables and views share a schema's namespace, so
        the first schema of the search path holding either wins."""
        if schema:
            if (schema, name) in self.columns:
                return (schema, name), False
            return ((schema, name), True) if (schema, name) in self.views else None
        tables, views = self._by_name.get(name, []), self._views_by_name.get(name, [])
        for path_schema in self.search_path:
            if (path_schema, name) in tables:
                return (path_schema, name), False
            if (path_schema, name) in views:
                return (path_schema, name), True
        if len(tables) + len(views) != 1:
            return None
        return (tables[0], False) if tables else (views[0], True)

    def view_tree(self, key: TableKey) -> exp.Query | None:
        """The view's definition, parsed once per catalog (None when sqlglot cannot read it as a query)."""
        if key not in self._view_trees:
            tree: exp.Query | None = None
            text = self.views.get(key, "")
            if text and len(text) <= MAX_STATEMENT_CHARS and nesting_problem(text) is None:
                try:
                    parsed = sqlglot.parse_one(text, dialect=DIALECT)
                    tree = parsed if isinstance(parsed, exp.Query) else None
                except Exception:  # see parse_failure: an unreadable view is read as opaque, never raised
                    tree = None
            self._view_trees[key] = tree
        return self._view_trees[key]

    def resolve(self, schema: str | None, name: str) -> TableKey | None:
        if schema:
            return (schema, name) if (schema, name) in self.columns else None
        candidates = self._by_name.get(name, [])
        for path_schema in self.search_path:
            if (path_schema, name) in candidates:
                return (path_schema, name)
        return candidates[0] if len(candidates) == 1 else None


def typed_parameters(query: str) -> str:
    """``interval $1`` → ``$1::interval`` (likewise ``date $1``, ``timestamp with time zone $1``, ...).

    pg_stat_statements replaces the string of a typed literal (``interval '30 days'``) by a parameter, which leaves
    text that neither PostgreSQL nor sqlglot accepts; a cast says the same and is valid.
    """
    return _TYPED_PARAMETER.sub(lambda m: f"${m.group(2)}::{' '.join(m.group(1).split())}", query)


def prepared_statement(query: str) -> str | None:
    """The statement that ``PREPARE name [(types)] AS statement`` prepares, its declared parameters cast to their
    types (``$1`` → ``$1::int``, so that the text plans alone); None when ``query`` is no such PREPARE.

    pg_stat_statements records a statement prepared in SQL under the PREPARE's text, and it is the work the
    EXECUTEs do: it is analysed as the statement it prepares. (``PREPARE TRANSACTION`` has no ``AS``: not matched.)
    """
    match = _PREPARE.match(query)
    if match is None:
        return None
    position, types = match.end(), []
    if query[position : position + 1] == "(":
        closing = _closing_paren(query, position)
        if closing is None:
            return None
        types = [t.strip() for t in _top_level_split(query[position + 1 : closing - 1]) if t.strip()]
        position = closing
    rest = re.match(r"\s*AS\s+", query[position:], re.IGNORECASE)
    if rest is None:
        return None
    body = query[position + rest.end() :]

    def cast(found: re.Match[str]) -> str:
        number = found.group(1)
        if number is None or int(number) > len(types) or found.group(2):
            return found.group(0)
        return f"${number}::{types[int(number) - 1]}"

    return _PARAMETER_OUTSIDE_QUOTES.sub(cast, body)


def _top_level_split(text: str) -> list[str]:
    """``numeric(10, 2), int`` → ``["numeric(10, 2)", " int"]``: commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    return [*parts, text[start:]]


def prepare_text(query: str) -> str:
    """The statement as sqlglot can read it: typed parameters as casts, and ``,$1`` → ``, $1`` (also after
    ``(`` and ``[``)."""
    return _DOLLAR_AFTER_PUNCTUATION.sub(r"\1 $\2", typed_parameters(query))


def fingerprint(query: str) -> str:
    """A stable id of a statement's shape: constants and parameters are replaced, spacing and case folded.

    The same for the normalised text from pg_stat_statements and for the statement as it ran with its constants,
    which is how samples from pg_stat_activity are matched when the server gives no query id.
    """
    text = prepare_text(query)
    shape = None
    if len(text) <= MAX_STATEMENT_CHARS and nesting_problem(text) is None:
        try:
            tree = sqlglot.parse_one(text, dialect=DIALECT)
            shape = tree.transform(_placeholder).sql(dialect=DIALECT, normalize=True)
        except Exception:  # any parser failure (see parse_failure): the textual shape serves
            shape = None
    if shape is None:
        shape = re.sub(r"\s+", " ", re.sub(r"'(?:[^']|'')*'|\$\d+|\b\d+(\.\d+)?\b", "?", text)).strip().lower()
    return hashlib.sha256(shape.encode()).hexdigest()[:16]


def parse_failure(error: BaseException) -> str:
    """The reason a statement is skipped when reading it raised ``error``, in one line.

    sqlglot does not only raise its own errors: 50 nested parentheses exhaust Python's recursion limit
    (``RecursionError``), and odd input has raised ``ValueError``, ``KeyError`` or ``AttributeError`` from inside
    it. One such statement must cost only itself, never the analysis of all the others.
    """
    first = (str(error).splitlines() or [""])[0][:200]
    if isinstance(error, RecursionError):
        return "nested too deeply to parse (RecursionError)"
    if isinstance(error, TokenError):
        return f"cannot tokenize: {first}"
    if isinstance(error, SqlglotError):
        return f"cannot parse: {first}"
    return f"the analyser failed on it ({type(error).__name__}: {first})"


def _placeholder(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.Literal | exp.Parameter | exp.Placeholder | exp.Boolean | exp.Null):
        return exp.Placeholder()
    # pg_stat_statements turns `interval '1 day'` into `interval $1` and `date '2026-01-01'` into `date $1`,
    # which parse to other shapes than the typed literal they came from: fold the whole value.
    if isinstance(node, exp.Interval) or (
        isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal | exp.Parameter | exp.Placeholder)
    ):
        return exp.Placeholder()
    return node


#: How :func:`parse_failure` and the length cap begin their reasons: a statement skipped for one of these could not
#: be read at all (the others were read and found not worth analysing: utility, no table, more than one).
UNREADABLE = ("nested too deeply", "cannot tokenize", "cannot parse", "the analyser failed", "longer than ")


def is_unreadable(reason: str) -> bool:
    """Whether a skip reason says the statement could not be read (what status lists by query id)."""
    return reason.startswith(UNREADABLE)


def parse_statement(query: str, catalog: Catalog) -> ParsedStatement:
    """Parse one statement; never raises: what cannot be analysed comes back with ``skip_reason``."""
    fp = fingerprint(query)
    if len(query) > MAX_STATEMENT_CHARS:
        return ParsedStatement("other", fp, skip_reason=f"longer than {MAX_STATEMENT_CHARS} characters")
    if _OWN_PREPARE.match(query):  # pg_stat_statements.track = all records the what-if planner's own PREPAREs
        return ParsedStatement("other", fp, skip_reason="the analysis's own what-if planning (PREPARE optischema_...)")
    prepared = prepared_statement(query)
    if prepared is not None:  # PREPARE name AS statement: the statement it prepares (EXECUTE stays a utility)
        parsed = parse_statement(prepared, catalog)
        parsed.fingerprint = fp
        return parsed
    if _UTILITY.match(query):
        return ParsedStatement("other", fp, skip_reason=f"utility statement ({query.split(None, 1)[0].upper()})")
    too_deep = nesting_problem(query)
    if too_deep:
        return ParsedStatement("other", fp, skip_reason=too_deep)
    try:
        return _parse(query, catalog, fp)
    except Exception as error:  # see parse_failure: skipped with the reason, never raised
        return ParsedStatement("other", fp, skip_reason=parse_failure(error))


def _parse(query: str, catalog: Catalog, fp: str) -> ParsedStatement:
    text = prepare_text(query)
    trees = [t for t in sqlglot.parse(text, dialect=DIALECT) if t is not None]
    if len(trees) != 1:
        return ParsedStatement("other", fp, skip_reason="more than one statement")
    tree = trees[0]
    kind = _kind(tree)
    if kind == "other":
        return ParsedStatement("other", fp, skip_reason=f"not a query ({type(tree).__name__})")
    parsed = ParsedStatement(kind, fp)
    _Walker(catalog, text, parsed).walk(tree)
    return parsed


def _kind(tree: exp.Expr) -> StatementKind:
    if isinstance(tree, exp.Query):
        return "select"
    if isinstance(tree, exp.Insert):
        return "insert"
    if isinstance(tree, exp.Update):
        return "update"
    if isinstance(tree, exp.Delete):
        return "delete"
    return "other"


# -- the walk ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Side:
    kind: Literal["column", "expr", "const"]
    table: TableKey = ("", "")
    text: str = ""  # column name, or the expression's source text


@dataclass(slots=True)
class _Derived:
    """A relation built from a query — a view, a CTE, a subquery in FROM — by what its columns are.

    PostgreSQL flattens a simple one into the statement that reads it (a view always, a CTE when 12+ inlines it,
    a subquery when it is simple), so a predicate or ORDER BY on its column acts on the base table's column: that
    column is ``columns[name]``. None for a column that is an expression, or for every column of a relation that is
    not flattened (a MATERIALIZED CTE, one with GROUP BY or LIMIT...); ``opaque`` when even its names are unknown.
    """

    columns: dict[str, tuple[TableKey, str] | None] = field(default_factory=dict)
    tables: tuple[TableKey, ...] = ()  # base tables it reads when flattened (for LIMIT)
    opaque: bool = False
    flattened: bool = False
    #: Outputs that are an expression over one base table (``lower(email) AS email_lc``), as an expression index
    #: would be written: once flattened, a predicate on the output is one on the expression. (HypoPG 1.3.1 does not
    #: match a hypothetical expression index through a flattened view or subquery, a real one PostgreSQL does: such
    #: a candidate shows its gain when measured, not in the what-if plan.)
    expressions: dict[str, _Side] = field(default_factory=dict)


#: What a name in FROM stands for in a scope: a table, or a relation built from a query.
_Source = TableKey | _Derived


class _Scope:
    """The tables visible in one SELECT (or UPDATE/DELETE), by the name the statement uses for them; ``derived``
    holds the views, CTEs and subqueries it reads, by the same kind of name."""

    def __init__(
        self, aliases: dict[str, TableKey], parent: _Scope | None, derived: dict[str, _Derived] | None = None
    ) -> None:
        self.aliases = aliases
        self.parent = parent
        self.derived = derived or {}

    def lookup(self, qualifier: str) -> _Source | None:
        scope: _Scope | None = self
        while scope is not None:
            if qualifier in scope.aliases:
                return scope.aliases[qualifier]
            if qualifier in scope.derived:
                return scope.derived[qualifier]
            scope = scope.parent
        return None

    def tables(self) -> Iterator[tuple[_Source, int]]:
        depth, scope = 0, self
        while True:
            for key in scope.aliases.values():
                yield key, depth
            for derived in scope.derived.values():
                yield derived, depth
            if scope.parent is None:
                return
            depth, scope = depth + 1, scope.parent

    def base_tables(self) -> set[TableKey]:
        """Tables this scope reads, through the relations it flattens."""
        return {*self.aliases.values(), *(key for derived in self.derived.values() for key in derived.tables)}


class _Walker:
    def __init__(
        self, catalog: Catalog, text: str, parsed: ParsedStatement, views: dict[TableKey, _Derived] | None = None
    ) -> None:
        self.catalog = catalog
        self.text = text
        self.parsed = parsed
        self.ctes: dict[str, exp.CTE] = {}
        self._tokens: list[tuple[int, int]] | None = None
        self._tree: exp.Expr | None = None
        self._cte_relations: dict[int, _Derived] = {}
        self._relations: dict[int, _Derived] = {}  # by id of the body
        self._view_root: int | None = None  # id of the definition this walker reads, when the view is flattened
        self._views = views if views is not None else {}  # shared with the walkers of view definitions

    # scopes

    def walk(self, tree: exp.Expr) -> None:
        self._start(tree)
        scopes: dict[int, _Scope] = {}
        for node in tree.walk():  # pre-order: a parent's scope exists before its children's
            if isinstance(node, exp.Select | exp.Update | exp.Delete | exp.Insert):
                parent = self._enclosing_scope(node, scopes)
                aliases, derived = self._sources(node)
                scope = _Scope(aliases, parent, derived)
                scopes[id(node)] = scope
                self._analyse(node, scope)

    def _enclosing_scope(self, node: exp.Expr, scopes: dict[int, _Scope]) -> _Scope | None:
        parent = node.parent
        while parent is not None:
            if isinstance(parent, exp.With):  # a CTE sees the CTEs, not the FROM of the query that owns the WITH
                parent = parent.parent.parent if parent.parent is not None else None
                continue
            if id(parent) in scopes:
                return scopes[id(parent)]
            parent = parent.parent
        return None

    def _sources(self, node: exp.Expr) -> tuple[dict[str, TableKey], dict[str, _Derived]]:
        """The tables a scope reads by name, and the views, CTEs and subqueries in its FROM (see _Derived)."""
        items: list[exp.Expr] = []
        if isinstance(node, exp.Select):
            from_ = node.args.get("from_") or node.args.get("from")
            if from_ is not None:
                items += [from_.this, *from_.expressions]
            items += [j.this for j in node.args.get("joins") or []]
        elif isinstance(node, exp.Update | exp.Delete | exp.Insert):
            target = node.this.this if isinstance(node.this, exp.Schema) else node.this
            if isinstance(target, exp.Table):
                items.append(target)
            from_ = node.args.get("from_") or node.args.get("from")
            if from_ is not None:
                items.append(from_.this)
            items += list(node.args.get("using") or [])
            items += [j.this for j in node.args.get("joins") or []]
        aliases: dict[str, TableKey] = {}
        derived: dict[str, _Derived] = {}
        for item in items:
            if isinstance(item, exp.Subquery) and item.alias:
                derived[item.alias] = self._relation_of(item.this, item.args.get("alias"))
            if not isinstance(item, exp.Table) or not item.name:
                continue
            if not item.db and item.name in self.ctes:
                derived[item.alias_or_name] = self._cte_relation(self.ctes[item.name])
                continue
            found = self.catalog.relation(item.db or None, item.name)
            if found is None:
                continue
            key, is_view = found
            if is_view:
                derived[item.alias_or_name] = self._view_relation(key)
            else:
                aliases[item.alias_or_name] = key
        return aliases, derived

    def _start(self, tree: exp.Expr) -> None:
        self._tree = tree
        self.ctes = {cte.alias_or_name: cte for cte in tree.find_all(exp.CTE)}

    # views, CTEs and subqueries in FROM

    def _view_relation(self, key: TableKey) -> _Derived:
        """A view, analysed once per statement: its own WHERE and joins count on its base tables (walked from the
        definition's text, by a walker of its own), its columns resolve to theirs."""
        if key not in self._views:
            self._views[key] = _Derived(opaque=True)  # while walking it (a view never reads itself; be safe)
            tree = self.catalog.view_tree(key)
            if tree is not None and len(self._views) <= _MAX_VIEWS:
                walker = _Walker(self.catalog, self.catalog.views[key], self.parsed, self._views)
                walker._start(tree)
                relation = walker._relation_of(tree, None)
                walker._view_root = id(tree) if relation.flattened else None
                walker.walk(tree)
                self._views[key] = relation
        return self._views[key]

    def _cte_relation(self, cte: exp.CTE) -> _Derived:
        """A CTE as PostgreSQL 12+ plans it: inlined (flattened like a subquery) unless it is MATERIALIZED, read
        twice or more without NOT MATERIALIZED, recursive, not a SELECT, or calls a volatile function."""
        if id(cte) not in self._cte_relations:
            self._cte_relations[id(cte)] = _Derived(opaque=True)  # while building it: a self-reference is opaque
            body, name = cte.this, cte.alias_or_name
            references = sum(
                1
                for table in (self._tree or cte).find_all(exp.Table)
                if not table.db and table.name == name and not _inside(table, body)
            )
            recursive = any(not t.db and t.name == name for t in body.find_all(exp.Table))
            materialized = cte.args.get("materialized")
            inlined = (
                isinstance(body, exp.Select)
                and not recursive
                and materialized is not True
                and (references <= 1 or materialized is False)
                and not _volatile(body)
            )
            relation = self._relation_of(body, cte.args.get("alias"))
            if not inlined:
                relation = _Derived(dict.fromkeys(relation.columns), opaque=relation.opaque, flattened=False)
            self._cte_relations[id(cte)] = relation
        return self._cte_relations[id(cte)]

    def _relation_of(self, body: exp.Expr, alias: exp.Expr | None) -> _Derived:
        """What each output column of ``body`` is; base columns only when PostgreSQL flattens ``body`` into the
        query that reads it (a simple SELECT: no aggregate, GROUP BY, DISTINCT, LIMIT, window or volatile call)."""
        if id(body) in self._relations:
            return self._relations[id(body)]
        if not isinstance(body, exp.Select):
            return _Derived(opaque=True)
        aliases, derived = self._sources(body)
        scope = _Scope(aliases, None, derived)
        flattened = not _volatile(body) and not any(
            body.args.get(arg) for arg in ("group", "having", "distinct", "limit", "offset", "qualify", "windows")
        )
        flattened = flattened and not any(e.find(exp.AggFunc, exp.Window) for e in body.expressions)
        relation = _Derived(tables=tuple(sorted(scope.base_tables())) if flattened else (), flattened=flattened)
        for expression in body.expressions:
            if isinstance(expression, exp.Star) or (
                isinstance(expression, exp.Column) and isinstance(expression.this, exp.Star)
            ):
                qualifier = expression.table if isinstance(expression, exp.Column) else ""
                sources = [scope.lookup(qualifier)] if qualifier else [s for s, _ in scope.tables()]
                for source in sources:
                    if isinstance(source, _Derived):
                        relation.opaque = relation.opaque or source.opaque
                        relation.columns.update(source.columns)
                    elif source is not None:
                        for column in sorted(self.catalog.columns.get(source, ())):
                            relation.columns.setdefault(column, (source, column))
                    else:
                        relation.opaque = True
                continue
            name = expression.alias_or_name
            inner = _unparen(expression.this if isinstance(expression, exp.Alias) else expression)
            relation.columns[name] = self._resolve(inner, scope) if isinstance(inner, exp.Column) else None
            if flattened and not isinstance(inner, exp.Column):
                side = self._side(inner, scope)
                if side is not None and side.kind == "expr":
                    relation.expressions[name] = side
        if not flattened:
            kept = self._pushed_down(body, scope)
            relation.columns = {name: (t if t in kept else None) for name, t in relation.columns.items()}
        renamed = [c.name for c in alias.args.get("columns") or []] if alias is not None else []
        if renamed:  # WITH x (a, b) AS (...) / FROM (...) AS s (a, b): the outputs renamed in order
            names = list(relation.columns)
            old = [names[n] if n < len(names) else "" for n in range(len(renamed))]
            relation.expressions = {
                new: relation.expressions[was]
                for new, was in zip(renamed, old, strict=True)
                if was in relation.expressions
            }
            relation.columns = {new: relation.columns.get(was) for new, was in zip(renamed, old, strict=True)}
        self._relations[id(body)] = relation
        return relation

    def _pushed_down(self, body: exp.Select, scope: _Scope) -> set[tuple[TableKey, str] | None]:
        """Base columns of a query that is not flattened but whose reader's predicates on them PostgreSQL still
        pushes into it (a GROUP BY key, a DISTINCT output): then they filter the base table before aggregating.
        Nothing with LIMIT/OFFSET, window functions or a volatile call, where pushing down changes the result."""
        if _volatile(body) or any(body.args.get(arg) for arg in ("limit", "offset", "qualify", "windows")):
            return set()
        if any(e.find(exp.Window) for e in body.expressions):
            return set()
        distinct = body.args.get("distinct")
        keys: list[exp.Expr] = []
        if distinct is not None:
            on = distinct.args.get("on")
            keys += list(on.expressions) if on is not None else list(body.expressions)
        group = body.args.get("group")
        if group is not None:
            keys = [*group.expressions] if distinct is None else [k for k in keys if k in group.expressions]
        kept: set[tuple[TableKey, str] | None] = set()
        for key in keys:
            inner = _unparen(key.this if isinstance(key, exp.Alias) else key)
            target = self._resolve(inner, scope) if isinstance(inner, exp.Column) else None
            if target is None:  # a GROUP BY position or output name
                output = _output_column(body, inner)
                target = self._resolve(output, scope) if isinstance(output, exp.Column) else None
            if target is not None:
                kept.add(target)
        return kept

    def _join_across_names(self, conjunct: exp.Expr, scope: _Scope) -> None:
        """Join keys that comparing base columns alone cannot see: a table joined with itself under two names
        (``e.manager_id = m.id``), and a table joined with a relation that is not flattened, such as the
        recursive CTE of a tree walk (``c.parent_id = tree.id``): the base column is a join key all the same."""
        conjunct = _unparen(conjunct)
        if not isinstance(conjunct, exp.EQ):
            return
        left, right = _unparen(conjunct.this), _unparen(conjunct.expression)
        if not (isinstance(left, exp.Column) and isinstance(right, exp.Column) and left.table and right.table):
            return
        if left.table == right.table:
            return
        sides = [(column, scope.lookup(column.table), self._resolve(column, scope)) for column in (left, right)]
        (_, left_source, left_base), (_, right_source, right_base) = sides
        if left_base is not None and right_base is not None:
            if left_base[0] == right_base[0] and left_base[1] != right_base[1]:  # the same table under two names
                for table, column in (left_base, right_base):
                    self._add_unique(self._usage(table).joins, column)
            return
        for base, other in ((left_base, right_source), (right_base, left_source)):
            if base is not None and isinstance(other, _Derived):  # the other side is no base column
                self._add_unique(self._usage(base[0]).joins, base[1])

    def _flattened_body(self, node: exp.Expr) -> bool:
        """Whether ``node`` is the query of a view, CTE or subquery that PostgreSQL flattens into its reader: then
        the columns it only passes on are read where the reader uses them, not all of them."""
        parent = node.parent
        if isinstance(parent, exp.CTE):
            return self._cte_relation(parent).flattened
        if isinstance(parent, exp.Subquery) and isinstance(parent.parent, exp.From | exp.Join):
            return self._relation_of(node, parent.args.get("alias")).flattened
        return id(node) == self._view_root

    # what one scope does

    def _analyse(self, node: exp.Expr, scope: _Scope) -> None:
        if isinstance(node, exp.Insert):
            self._analyse_insert(node, scope)
            return
        if isinstance(node, exp.Update | exp.Delete):
            self._analyse_write(node, scope)
        for key in scope.aliases.values():
            self._usage(key)  # read, even when nothing filters it (a full scan is part of the workload too)
        where = node.args.get("where")
        conditions = [where.this] if where is not None else []
        conditions += [j.args["on"] for j in node.args.get("joins") or [] if j.args.get("on") is not None]
        for condition in conditions:
            for conjunct in _conjuncts(condition):
                self._predicate(conjunct, scope)
                self._join_across_names(conjunct, scope)
        if isinstance(node, exp.Select):
            self._order_group_limit(node, scope)
        passed_on: set[int] = set()  # output columns of a flattened body: referenced where the reader uses them
        if isinstance(node, exp.Select) and self._flattened_body(node):
            for output in node.expressions:
                inner = output.this if isinstance(output, exp.Alias) else output
                passed_on.add(id(inner))
        for column in _own_columns(node):
            resolved = self._resolve(column, scope) if id(column) not in passed_on else None
            if resolved:
                self._usage(resolved[0]).referenced.add(resolved[1])
        if isinstance(node, exp.Select) and not passed_on and any(isinstance(e, exp.Star) for e in node.expressions):
            for key in scope.aliases.values():
                self._usage(key).referenced.update(self.catalog.columns.get(key, ()))
            for derived in scope.derived.values():
                for target in derived.columns.values():
                    if target is not None:
                        self._usage(target[0]).referenced.add(target[1])

    def _analyse_insert(self, node: exp.Insert, scope: _Scope) -> None:
        target = next(iter(scope.aliases.values()), None)
        self.parsed.written_table = target

    def _analyse_write(self, node: exp.Update | exp.Delete, scope: _Scope) -> None:
        target = node.this.this if isinstance(node.this, exp.Schema) else node.this
        if isinstance(target, exp.Table):
            self.parsed.written_table = scope.aliases.get(target.alias_or_name)
        if isinstance(node, exp.Update):
            self.parsed.updated_columns = tuple(
                eq.this.name for eq in node.expressions if isinstance(eq, exp.EQ) and isinstance(eq.this, exp.Column)
            )

    def _usage(self, key: TableKey) -> TableUsage:
        usage = self.parsed.usages.get(key)
        if usage is None:
            usage = self.parsed.usages[key] = TableUsage(key)
        return usage

    # predicates

    def _predicate(self, node: exp.Expr, scope: _Scope) -> None:
        node = _unparen(node)
        if _is_similarity(node):
            self._similarity(node, scope)
        elif isinstance(node, exp.EQ):
            self._comparison(node.this, node.expression, scope, "eq")
        elif isinstance(node, _RANGE):
            self._comparison(node.this, node.expression, scope, "range")
        elif isinstance(node, exp.NEQ):
            self._comparison(node.this, node.expression, scope, "neq")
        elif isinstance(node, exp.In):
            side = self._side(node.this, scope)
            if side and side.kind == "column" and node.args.get("query") is not None:
                self._add_unique(self._usage(side.table).joins, side.text)  # a semi-join on this column
            elif side and side.kind == "column":
                self._add_unique(self._usage(side.table).equality, side.text)
                self._remember_constants(side.table, side.text, node.expressions)
        elif isinstance(node, exp.Between):
            side = self._side(node.this, scope)
            if side and side.kind == "column":
                self._add_unique(self._usage(side.table).ranges, side.text)
        elif isinstance(node, exp.Like | exp.ILike | exp.RegexpLike | exp.RegexpILike):
            self._pattern(node, scope)
        elif isinstance(node, tuple(_CONTAINMENT)):
            side = self._side(node.this, scope)
            if side and side.kind == "column" and self._is_constant(node.expression, scope):
                operators = self._usage(side.table).contains.setdefault(side.text, [])
                self._add_unique(operators, _CONTAINMENT[type(node)])
        elif isinstance(node, exp.MatchAgainst) and len(node.expressions) == 1:
            # sqlglot reads `a @@ b` as MatchAgainst(this=b, expressions=[a]); either side may be the document.
            left, right = node.expressions[0], node.this
            if not right.find(exp.Column):
                self._text_search(left, right, scope)
            elif not left.find(exp.Column):
                self._text_search(right, left, scope)
        elif isinstance(node, exp.Mod):
            self._similarity(node, scope)
        elif isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            side = self._side(node.this, scope)
            if side and side.kind == "column":
                self._usage(side.table).nulls.append((side.text, not node.args.get("negate")))
        elif isinstance(node, exp.Not) and isinstance(_unparen(node.this), exp.Is):
            inner = _unparen(node.this)
            side = self._side(inner.this, scope)
            if side and side.kind == "column" and isinstance(inner.expression, exp.Null):
                self._usage(side.table).nulls.append((side.text, bool(inner.args.get("negate"))))

    def _pattern(self, node: exp.Expr, scope: _Scope) -> None:
        """``LIKE``/``ILIKE``/``~``: a btree (with ``text_pattern_ops`` where needed) serves a case-sensitive prefix; a
        trigram GIN serves any substring, either case, and regular expressions. A pattern whose start is a
        parameter could be either, so both are recorded and the pricing decides."""
        if not self._is_constant(node.expression, scope):
            return
        side = self._side(node.this, scope)
        if side is None or side.kind == "const":
            return
        start = _pattern_start(node.expression)
        prefix = isinstance(node, exp.Like) and start != "wildcard"
        if prefix and side.kind == "column":
            self._add_unique(self._usage(side.table).likes, side.text)
        if not prefix or start == "unknown":
            usage = self._usage(side.table)
            entry = (side.text, side.kind == "expr")
            if entry not in usage.substrings:
                usage.substrings.append(entry)

    def _similarity(self, node: exp.Expr, scope: _Scope) -> None:
        """pg_trgm's ``col % 'text'`` and ``similarity(col, 'text') > x``: a trigram index serves both."""
        if isinstance(node, exp.Mod):
            column, other = node.this, node.expression
        else:
            call = _unparen(node.this) if _is_similarity_call(node.this) else _unparen(node.expression)
            arguments = [*call.expressions] if isinstance(call, exp.Anonymous) else []
            if len(arguments) != 2:
                return
            column, other = arguments
        side = self._side(column, scope)
        if side and side.kind == "column" and self._is_constant(other, scope):
            usage = self._usage(side.table)
            if (side.text, False) not in usage.substrings:
                usage.substrings.append((side.text, False))

    def _text_search(self, document: exp.Expr, query: exp.Expr, scope: _Scope) -> None:
        """``to_tsvector(config, col) @@ query``: a GIN index on exactly that expression (PostgreSQL matches index
        expressions by their parse tree, so the configuration must be the statement's). A ``tsvector`` column is
        indexed as it is."""
        if not self._is_constant(query, scope):
            return
        side = self._side(document, scope)
        if side is None or side.kind == "const":
            return
        if side.kind == "column":
            self._add_unique(self._usage(side.table).contains.setdefault(side.text, []), "@@")
        else:
            self._add_unique(self._usage(side.table).fulltext, side.text)

    def _comparison(self, left: exp.Expr, right: exp.Expr, scope: _Scope, op: str) -> None:
        lhs, rhs = self._side(left, scope), self._side(right, scope)
        if lhs is None or rhs is None:
            return
        for this, other, other_node in ((lhs, rhs, right), (rhs, lhs, left)):
            if this.kind == "column" and other.kind == "const":
                usage = self._usage(this.table)
                if op == "eq":
                    self._add_unique(usage.equality, this.text)
                    self._remember_constants(this.table, this.text, [other_node])
                elif op == "range":
                    self._add_unique(usage.ranges, this.text)
                else:
                    self._add_unique(usage.not_equal, this.text)
            elif this.kind == "column" and other.kind in ("column", "expr") and other.table != this.table:
                usage = self._usage(this.table)
                self._add_unique(usage.joins if op == "eq" else usage.ranges, this.text)
            elif this.kind == "expr" and other.kind == "const" and op in ("eq", "range"):
                self._add_unique(self._usage(this.table).expressions, this.text)

    def _side(self, node: exp.Expr, scope: _Scope) -> _Side | None:
        """One side of a comparison: a column, an expression over one table, a constant, or None (unusable)."""
        node = _unparen(node)
        if isinstance(node, exp.Column):
            meaning = self._meaning(node, scope)
            if isinstance(meaning, _Side):  # an expression output of a flattened view, CTE or subquery
                return meaning
            return _Side("column", meaning[0], meaning[1]) if meaning else None
        columns = list(node.find_all(exp.Column))
        if not columns:
            return None if node.find(exp.Query) else _Side("const")
        tables = {self._resolve(c, scope) for c in columns}
        keys = {r[0] for r in tables if r is not None}
        if None in tables or len(keys) != 1 or node.find(exp.Query):
            return None
        text = self._source_text(node, scope)
        return _Side("expr", keys.pop(), text) if text else None

    def _is_constant(self, node: exp.Expr, scope: _Scope) -> bool:
        side = self._side(node, scope)
        return side is not None and side.kind == "const"

    def _resolve(self, column: exp.Column, scope: _Scope) -> tuple[TableKey, str] | None:
        """The base table and column a column reference means; through a flattened view, CTE or subquery to the
        column it reads. None when ambiguous or not a base column."""
        meaning = self._meaning(column, scope)
        return meaning if isinstance(meaning, tuple) else None

    def _meaning(self, column: exp.Column, scope: _Scope) -> tuple[TableKey, str] | _Side | None:
        """What a column reference stands for: a base column, an expression over one base table (an output of a
        flattened view, CTE or subquery), or None (ambiguous, unknown, or an output that is neither)."""
        name = column.name
        if column.table:
            source = scope.lookup(column.table)
            if isinstance(source, _Derived):
                return source.columns.get(name) or source.expressions.get(name)
            return (source, name) if source is not None else None
        matches: list[tuple[tuple[TableKey, str] | _Side | None, int]] = []
        for source, depth in scope.tables():
            if isinstance(source, _Derived):
                if name in source.columns or source.opaque:
                    matches.append((source.columns.get(name) or source.expressions.get(name), depth))
            elif name in self.catalog.columns.get(source, ()):
                matches.append(((source, name), depth))
        if not matches:
            return None
        nearest = min(depth for _, depth in matches)
        found = {target for target, depth in matches if depth == nearest}
        return found.pop() if len(found) == 1 else None

    def _remember_constants(self, key: TableKey, column: str, values: list[exp.Expr]) -> None:
        for value in values:
            value = _unparen(value)
            if isinstance(value, exp.Cast):
                value = _unparen(value.this)
            if isinstance(value, exp.Literal):
                self._usage(key).constants.setdefault(column, []).append(value.this)

    # ORDER BY, GROUP BY, LIMIT

    def _order_group_limit(self, node: exp.Select, scope: _Scope) -> None:
        order = node.args.get("order")
        if order is not None:
            keys: list[tuple[TableKey, str, bool]] = []
            for ordered in order.expressions:
                if not isinstance(ordered, exp.Ordered):
                    side = None
                else:  # an output column's name or position first, then an input column (PostgreSQL's order)
                    output = _output_column(node, ordered.this)
                    side = self._side(output if output is not None else ordered.this, scope)
                if side is None or side.kind != "column":
                    keys = []
                    break
                keys.append((side.table, side.text, bool(ordered.args.get("desc"))))
            if keys and len({k[0] for k in keys}) == 1:
                self._usage(keys[0][0]).order_by = [(name, desc) for _, name, desc in keys]
        group = node.args.get("group")
        if group is not None:
            for expression in group.expressions:
                side = self._side(expression, scope)  # an input column first, then an output's name or position
                output = _output_column(node, expression) if side is None or side.kind == "const" else None
                side = self._side(output, scope) if output is not None else side
                if side and side.kind == "column":
                    self._add_unique(self._usage(side.table).group_by, side.text)
        if node.args.get("limit") is not None:
            for key in scope.base_tables():
                self._usage(key).limit = True

    # expression text

    def _source_text(self, node: exp.Expr, scope: _Scope) -> str | None:
        """The expression as the statement wrote it, without table qualifiers; None if it cannot be recovered.

        PostgreSQL matches an expression index by parse tree, so constants must stay as written (sqlglot would
        print ``date_trunc('day', x)`` as ``DATE_TRUNC('DAY', x)``, which is another expression to PostgreSQL).
        """
        if node.find(exp.Parameter, exp.Placeholder):
            return None  # a parameter inside the expression: no index can be built from the normalised text
        if self._tokens is None:
            self._tokens = tokens_of(self.text)
        qualifiers = {c.table for c in node.find_all(exp.Column) if c.table}

        def unqualified(text: str) -> str:
            for qualifier in qualifiers:
                text = re.sub(rf'(?<![\w"]){re.escape(qualifier)}\s*\.\s*', "", text)
            return text

        found = source_span(node.transform(_unqualify), node, self.text, self._tokens, unqualified)
        return found[2].strip() if found else None

    @staticmethod
    def _add_unique(items: list[str], name: str) -> None:
        if name not in items:
            items.append(name)


def tokens_of(text: str) -> list[tuple[int, int]]:
    """Character spans of the statement's tokens."""
    return [(t.start, t.end + 1) for t in Tokenizer(dialect=DIALECT).tokenize(text)]


def source_span(
    target: exp.Expr,
    node: exp.Expr,
    text: str,
    tokens: list[tuple[int, int]],
    normalise: Callable[[str], str] = lambda t: t,
) -> tuple[int, int, str] | None:
    """Where ``node`` stands in ``text``: a span whose text (after ``normalise``) parses back to ``target``.

    sqlglot keeps the position of some tokens only, so the span they give is grown token by token, up to 3 tokens
    before and 12 after, until it reads back as the same expression.
    """
    core = _span(node, text)
    if core is None:
        return None
    wanted = _unparen(target)
    # The token holding the span's start: sqlglot places a parameter's ``$2`` at its number, inside the token.
    first = next((i for i, (_, e) in enumerate(tokens) if e > core[0]), None)
    last = max((i for i, (_, e) in enumerate(tokens) if e <= core[1]), default=None)
    if first is None or last is None:
        return None
    spans = [core, (tokens[first][0], tokens[max(first, last)][1])] + [
        (tokens[first - left][0], tokens[last + right][1])
        for left in range(4)
        for right in range(13)
        if (left or right) and first - left >= 0 and last + right < len(tokens)
    ]
    for start, end in spans:
        candidate = normalise(text[start:end])
        if not _balanced(candidate):
            continue  # sqlglot forgives a missing ")"; PostgreSQL would not
        try:
            reparsed = sqlglot.parse_one(candidate, dialect=DIALECT)
        except SqlglotError:
            continue
        if reparsed is not None and _unparen(reparsed) == wanted:
            return start, end, candidate
    return None


def _unqualify(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.Column) and node.table:
        return exp.column(node.name)
    return node


def _span(node: exp.Expr, text: str) -> tuple[int, int] | None:
    """Character span of ``node`` in ``text``, from the token positions sqlglot keeps."""
    starts, ends = [], []
    for sub in node.walk():
        meta = sub.meta
        if "start" in meta:
            starts.append(meta["start"])
            end = meta["end"] + 1
            if isinstance(sub, exp.Func) and not isinstance(sub, exp.Cast):  # meta covers the name: add the (...)
                end = _closing_paren(text, meta["end"] + 1) or end
            ends.append(end)
    if not starts:
        return None
    return min(starts), max(ends)


def _balanced(text: str) -> bool:
    depth = 0
    for char in re.sub(r"'(?:[^']|'')*'", "", text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _closing_paren(text: str, position: int) -> int | None:
    """Index after the parenthesis that closes the first ``(`` at or after ``position`` (quotes respected)."""
    opening = text.find("(", position)
    if opening < 0 or text[position:opening].strip():
        return None
    depth, index = 0, opening
    while index < len(text):
        char = text[index]
        if char == "'":
            closing = text.find("'", index + 1)
            while closing >= 0 and text[closing + 1 : closing + 2] == "'":  # '' is an escaped quote
                closing = text.find("'", closing + 2)
            if closing < 0:
                return None
            index = closing
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return None


#: Operators a GIN index serves on jsonb and arrays, by the node sqlglot reads them as.
_CONTAINMENT: dict[type[exp.Expr], str] = {
    exp.ArrayContainsAll: "@>",
    exp.ArrayContainedBy: "<@",
    exp.ArrayOverlaps: "&&",
    exp.JSONBContainsTopKey: "?",
    exp.JSONBContainsAnyTopKeys: "?|",
    exp.JSONBContainsAllTopKeys: "?&",
    exp.JSONBPathExists: "@?",
}
_SIMILARITY_FUNCTIONS = {"similarity", "word_similarity", "strict_word_similarity"}


def _is_similarity_call(node: exp.Expr) -> bool:
    node = _unparen(node)
    return isinstance(node, exp.Anonymous) and str(node.this).lower() in _SIMILARITY_FUNCTIONS


def _is_similarity(node: exp.Expr) -> bool:
    """``similarity(col, x) > t`` (either side)."""
    return isinstance(node, _RANGE) and (_is_similarity_call(node.this) or _is_similarity_call(node.expression))


def _pattern_start(pattern: exp.Expr) -> Literal["wildcard", "fixed", "unknown"]:
    """How a LIKE pattern begins: with ``%``/``_`` (no btree can serve it), with fixed text, or unknown (a
    parameter: pg_stat_statements hides the ``'%'`` of ``'%' || $1 || '%'``)."""
    node = _unparen(pattern)
    while isinstance(node, exp.DPipe):
        node = _unparen(node.this)
    if isinstance(node, exp.Literal) and node.is_string:
        return "wildcard" if node.this[:1] in ("%", "_") else "fixed"
    return "unknown"


#: Views walked per statement at most (a view reading views reading views...): the rest are read as opaque.
_MAX_VIEWS = 32
#: Built-in functions PostgreSQL marks volatile that queries call: a CTE that calls one is not inlined, a subquery
#: that does is not flattened. (A user's function may be volatile too; the what-if planner has the last word.)
_VOLATILE = {
    "random", "nextval", "setval", "currval", "lastval", "clock_timestamp", "timeofday", "gen_random_uuid",
    "uuid_generate_v1", "uuid_generate_v4", "setseed", "txid_current", "pg_sleep", "dblink", "random_normal",
}  # fmt: skip


def _volatile(node: exp.Expr) -> bool:
    """Whether ``node`` calls a function known to be volatile."""
    for call in node.find_all(exp.Func):
        name = (call.name if isinstance(call, exp.Anonymous) else call.sql_name()).lower()
        if isinstance(call, exp.Rand) or name in _VOLATILE:
            return True
    return False


def _inside(node: exp.Expr, ancestor: exp.Expr) -> bool:
    parent: exp.Expr | None = node
    while parent is not None:
        if parent is ancestor:
            return True
        parent = parent.parent
    return False


def _output_column(select: exp.Select, key: exp.Expr) -> exp.Expr | None:
    """The output column an ORDER BY or GROUP BY key names, if it names one: ``2`` is the second output column, and
    a bare name that is an output's alias is that output's expression. (PostgreSQL reads a bare name as the output
    first in ORDER BY, as the input column first in GROUP BY: the caller decides which to try first.)"""
    key = _unparen(key)
    outputs: list[exp.Expr] = list(select.expressions)
    if isinstance(key, exp.Literal) and not key.is_string and key.this.isdigit():
        position = int(key.this)
        if 1 <= position <= len(outputs) and not isinstance(outputs[position - 1], exp.Star):
            chosen = outputs[position - 1]
            return _aliased(chosen)
        return None
    if isinstance(key, exp.Column) and not key.table:
        aliased = [_aliased(e) for e in outputs if isinstance(e, exp.Alias) and e.alias == key.name]
        if len(aliased) == 1:
            return aliased[0]
    return None


def _aliased(output: exp.Expr) -> exp.Expr:
    """An output column's expression, without its alias."""
    inner: exp.Expr = output.this if isinstance(output, exp.Alias) else output
    return inner


def _conjuncts(node: exp.Expr) -> Iterator[exp.Expr]:
    node = _unparen(node)
    if isinstance(node, exp.And):
        yield from _conjuncts(node.this)
        yield from _conjuncts(node.expression)
    else:
        yield node


def _unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _own_columns(node: exp.Expr) -> Iterator[exp.Column]:
    """Columns of this scope, not of nested queries (they are walked as scopes of their own)."""
    for sub in node.walk(prune=lambda n: n is not node and isinstance(n, exp.Query | exp.Subquery)):
        if isinstance(sub, exp.Column):
            yield sub
