"""What-if planning on the real server with HypoPG: hypothetical indexes live in this session only.

Statements with samples from pg_stat_activity are planned as they ran, constants included, which is what lets a
partial index (``WHERE state <> 'done'``) or a prefix LIKE show its value. Others get a generic plan: ``PREPARE``
with ``plan_cache_mode = force_generic_plan`` and ``EXPLAIN EXECUTE`` with NULLs. This route is used on every
version (``EXPLAIN (GENERIC_PLAN)`` of 16+ plans the same text but cannot be told a parameter's type, which some
normalised statements need: ``$2 * $3 % $4`` is "operator is not unique: unknown % unknown" until the parameters
are declared numeric). A generic plan cached before ``hypopg_create_index`` is not invalidated by it, so each
statement is prepared afresh for each configuration.

Nothing here writes: HypoPG keeps its indexes in backend memory, and the connection is read-only.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import TokenType

from optischema.analysis.statements import TableKey, prepare_text, typed_parameters
from optischema.analysis.whatif import Plan, PlanRequest
from optischema.api.index import IndexDefinition
from optischema.changes.ddl import definition_key, render_create

_HYPOTHETICAL = re.compile(r"^<(\d+)>")
_PARAMETER = re.compile(r"\$(\d+)")
_STATEMENT = "optischema_whatif"
#: Names of the functions someone created (outside pg_catalog and not an extension's): a call by one of these names
#: may resolve to that function, and planning may run it (constant folding) as the analysis role.
_OWN_FUNCTIONS = (
    "SELECT DISTINCT p.proname AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND NOT EXISTS ("
    "  SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')"
)


def own_calls(text: str, names: frozenset[str]) -> list[str]:
    """The names among ``names`` that ``text`` calls (a name before a parenthesis, quoted names as written,
    others folded to lower case as PostgreSQL does), and ``OPERATOR(`` (a schema's operator, whose function may
    be anyone's); ``["(unreadable)"]`` when the text cannot be tokenised (it is then not known what it calls)."""
    try:
        tokens = sqlglot.Dialect.get_or_raise("postgres").tokenize(text)
    except SqlglotError:
        return ["(unreadable)"]
    found = []
    for token, following in itertools.pairwise(tokens):
        if following.token_type != TokenType.L_PAREN:
            continue
        name = token.text if token.token_type == TokenType.IDENTIFIER else token.text.lower()
        if name in names or name == "operator":
            found.append(name)
    return sorted(set(found))


def _not_planned(calls: list[str]) -> str:
    return (
        f"not planned: it calls {', '.join(calls)}, a function someone created (planning could run it as the "
        "analysis role)"
    )


class HypoPGPlanner:
    """Implements :class:`optischema.analysis.whatif.Planner` on one connection."""

    #: PostgreSQL keeps the cheapest plan it finds: another index never raises a cost (whatif.Planner).
    monotone = True

    def __init__(
        self, conn: asyncpg.Connection, partitions: Mapping[TableKey, Sequence[TableKey]] | None = None
    ) -> None:
        self.conn = conn
        #: Leaf partitions of each partitioned table: an index proposed on the parent is simulated on each of them,
        #: since the planner plans partitions and never uses an index on the parent itself.
        self.partitions = dict(partitions or {})
        self._live: dict[str, list[int]] = {}  # definition key -> hypothetical index oids (one per partition)
        self._by_oid: dict[int, str] = {}
        self._types: dict[str, list[str]] = {}  # statement key -> parameter types that PREPARE accepted
        self._unplannable: dict[str, str] = {}
        self._sizes: dict[str, int] = {}
        self._own_functions: frozenset[str] = frozenset()
        self.explains = 0

    async def start(self) -> HypoPGPlanner:
        await self.conn.execute("SET plan_cache_mode = force_generic_plan")
        await self.conn.execute("SELECT hypopg_reset()")
        # Planning folds an IMMUTABLE call with constant arguments (``public.f()``, ``f('x')`` in a sample, an
        # overload of a built-in): a function someone created would run as the analysis role. Statements calling
        # one by name are not planned here; strings read as the tokenizer reads them.
        await self.conn.execute("SET standard_conforming_strings = on")
        self._own_functions = frozenset(r["name"] for r in await self.conn.fetch(_OWN_FUNCTIONS))
        return self

    async def close(self) -> None:
        await self.conn.execute("SELECT hypopg_reset()")

    async def explain_generic(self, query: str, config: Sequence[IndexDefinition]) -> dict[str, Any] | None:
        """For the plans shown before and after a recommendation (``postgres.plans``): the top node of the generic
        plan of ``query`` as written (its ``$n`` never bound to values, samples never used) with exactly ``config``
        hypothetical, each hypothetical ``Index Name`` replaced by its definition key. None when it cannot be
        planned."""
        await self._sync(config)
        text = typed_parameters(query).strip().rstrip(";")
        if own_calls(text, self._own_functions):
            return None
        count = max((int(n) for n in _PARAMETER.findall(text)), default=0)

        def named(node: dict[str, Any]) -> dict[str, Any]:
            match = _HYPOTHETICAL.match(str(node.get("Index Name", "")))
            if match and int(match.group(1)) in self._by_oid:
                node = {**node, "Index Name": self._by_oid[int(match.group(1))]}
            return {**node, "Plans": [named(child) for child in node.get("Plans", [])]}

        for types in _type_guesses(text, count):
            try:
                raw = await self._prepare_and_explain(text, types)
            except asyncpg.PostgresError:
                continue
            return named((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
        return None

    # -- the protocol ------------------------------------------------------------------------------------------

    async def plan(self, requests: Sequence[PlanRequest], config: Sequence[IndexDefinition]) -> list[Plan]:
        await self._sync(config)
        return [await self._plan_one(request) for request in requests]

    async def size(self, index: IndexDefinition) -> int:
        key = definition_key(index)
        if key not in self._sizes:
            oids = self._live.get(key)
            created = oids is None
            if oids is None:
                oids = await self._create(index)
            sizes = [int(await self.conn.fetchval("SELECT hypopg_relation_size($1)", oid)) for oid in oids]
            self._sizes[key] = sum(sizes)
            if created:
                await self._drop(key)
        return self._sizes[key]

    # -- hypothetical indexes ------------------------------------------------------------------------------------

    async def _sync(self, config: Sequence[IndexDefinition]) -> None:
        wanted = {definition_key(i): i for i in config}
        for key in [k for k in self._live if k not in wanted]:
            await self._drop(key)
        for key, index in wanted.items():
            if key not in self._live:
                await self._create(index)

    async def _create(self, index: IndexDefinition) -> list[int]:
        key = definition_key(index)
        leaves = self.partitions.get((index.schema_, index.table)) or [(index.schema_, index.table)]
        oids = []
        for schema, table in leaves:
            on_leaf = index.model_copy(update={"schema_": schema, "table": table})
            sql = render_create(on_leaf, concurrently=False, name="hypothetical")
            oid = int(await self.conn.fetchval("SELECT indexrelid FROM hypopg_create_index($1)", sql))
            oids.append(oid)
            self._by_oid[oid] = key
        self._live[key] = oids
        return oids

    async def _drop(self, key: str) -> None:
        for oid in self._live.pop(key):
            await self.conn.fetchval("SELECT hypopg_drop_index($1)", oid)

    # -- planning ------------------------------------------------------------------------------------------------

    async def _plan_one(self, request: PlanRequest) -> Plan:
        if request.samples:
            plans = [await self._explain_sample(text) for text in request.samples]
            good = [p for p in plans if p.cost is not None]
            if good:
                return Plan(sum(p.cost or 0.0 for p in good) / len(good), frozenset().union(*(p.uses for p in good)))
        return await self._explain_generic(request)

    async def _explain_sample(self, text: str) -> Plan:
        calls = own_calls(text, self._own_functions)
        if calls:
            return Plan(None, error=_not_planned(calls))
        try:
            self.explains += 1
            raw = await self.conn.fetchval(f"EXPLAIN (FORMAT JSON) {text.strip().rstrip(';')}")
        except asyncpg.PostgresError as error:
            return Plan(None, error=str(error))
        return self._read(raw)

    async def _explain_generic(self, request: PlanRequest) -> Plan:
        if request.key in self._unplannable:
            return Plan(None, error=self._unplannable[request.key])
        text = typed_parameters(request.bound or request.query).strip().rstrip(";")
        calls = own_calls(text, self._own_functions)
        if calls:
            self._unplannable[request.key] = _not_planned(calls)
            return Plan(None, error=self._unplannable[request.key])
        count = max((int(n) for n in _PARAMETER.findall(text)), default=0)
        attempts = [self._types[request.key]] if request.key in self._types else _type_guesses(text, count)
        error, tried = "no attempt", list[list[str]]()
        arithmetic: set[int] | None = None
        while attempts and len(tried) < len(attempts) + count + _MORE_ATTEMPTS:
            types = attempts.pop(0)
            if types in tried:
                continue
            tried.append(types)
            try:
                self.explains += 1
                raw = await self._prepare_and_explain(text, types)
            except asyncpg.PostgresError as failure:
                error = str(failure)
                if arithmetic is None:
                    arithmetic = _arithmetic_parameters(text)
                refined = refine_types(types, error, arithmetic)
                if refined is not None:  # what PostgreSQL said it could not type: typed, the rest left to it
                    attempts.insert(0, refined)
                continue
            self._types[request.key] = types
            return self._read(raw)
        self._unplannable[request.key] = error
        return Plan(None, error=error)

    async def _prepare_and_explain(self, text: str, types: list[str]) -> Any:
        declared = f"({', '.join(types)})" if types else ""
        nulls = f"({', '.join(['NULL'] * len(types))})" if types else ""
        await self.conn.execute(f"PREPARE {_STATEMENT}{declared} AS {text}")
        try:
            return await self.conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {_STATEMENT}{nulls}")
        finally:
            await self.conn.execute(f"DEALLOCATE {_STATEMENT}")

    def _read(self, raw: Any) -> Plan:
        document = json.loads(raw) if isinstance(raw, str) else raw
        top = document[0]["Plan"]
        uses = set()
        for name in _index_names(top):
            match = _HYPOTHETICAL.match(name)
            if match:
                key = self._by_oid.get(int(match.group(1)))
                if key:
                    uses.add(key)
            else:
                uses.add(name)
        return Plan(float(top["Total Cost"]), frozenset(uses))


class ExplainPlanner(HypoPGPlanner):
    """Planning where HypoPG is not installed: each statement as it is, the baseline that measured costs scale
    (``analysis.pricing.MeasuredPlanner`` with every candidate measured). It plans no hypothetical index."""

    async def start(self) -> ExplainPlanner:
        await self.conn.execute("SET plan_cache_mode = force_generic_plan")
        return self

    async def close(self) -> None:
        return None

    async def size(self, index: IndexDefinition) -> int:
        raise ValueError("without HypoPG an index's size is measured, not estimated")

    async def _sync(self, config: Sequence[IndexDefinition]) -> None:
        if config:
            raise ValueError("without HypoPG no hypothetical index can be planned")


def _index_names(node: dict[str, Any]) -> list[str]:
    names = [node["Index Name"]] if "Index Name" in node else []
    for child in node.get("Plans", []):
        names += _index_names(child)
    return names


#: Attempts allowed beyond one per parameter and the fixed guesses (PostgreSQL names one untyped parameter a time).
_MORE_ATTEMPTS = 2
_UNDETERMINED = re.compile(r"could not determine data type of parameter \$(\d+)")
_UNKNOWN_OPERANDS = re.compile(r"operator (?:is not unique|does not exist): (?:unknown \S+ |\S+ )?unknown\b")


def refine_types(types: Sequence[str], error: str, arithmetic: set[int]) -> list[str] | None:
    """The parameter types to try after ``PREPARE`` refused ``types`` with ``error``, or None when the error is not
    about a parameter's type.

    Each guess for all parameters at once can fail on one statement: in ``INSERT INTO t (id, meta) VALUES ($1,
    jsonb_build_object($2, md5($3::text)))`` PostgreSQL types ``$1`` from the column but cannot type ``$2``, and
    declaring every parameter text breaks ``$1`` (a bigint column). So the parameter PostgreSQL names is typed
    text, an ambiguous operator over unknowns makes the unknown ones in arithmetic numeric, and every other
    parameter is still left for PostgreSQL to infer from where it stands (a column, a comparison, a cast)."""
    undetermined = _UNDETERMINED.search(error)
    if undetermined:
        number = int(undetermined.group(1))
        if 1 <= number <= len(types) and types[number - 1] == "unknown":
            return [("text" if n == number else t) for n, t in enumerate(types, 1)]
        return None
    if _UNKNOWN_OPERANDS.search(error):
        refined = [("numeric" if n in arithmetic and t == "unknown" else t) for n, t in enumerate(types, 1)]
        return refined if refined != list(types) else None
    return None


def _type_guesses(text: str, count: int) -> list[list[str]]:
    """Parameter types to try, in order: all inferred by PostgreSQL; parameters in arithmetic as numeric and the
    rest inferred; then every still-unknown one as text."""
    if count == 0:
        return [[]]
    present = {int(n) for n in _PARAMETER.findall(text)}  # bound parameters are gone from the text: type them
    absent = "text"
    unknown = [("unknown" if n + 1 in present else absent) for n in range(count)]
    arithmetic = _arithmetic_parameters(text)
    numeric = [("numeric" if n + 1 in arithmetic else t) for n, t in enumerate(unknown)]
    as_text = [("numeric" if n + 1 in arithmetic else "text") for n in range(count)]
    guesses = [unknown]
    for guess in (numeric, as_text):
        if guess not in guesses:
            guesses.append(guess)
    return guesses


def _arithmetic_parameters(text: str) -> set[int]:
    try:
        tree = sqlglot.parse_one(prepare_text(text), dialect="postgres")
    except SqlglotError:
        return set()
    found = set()
    for node in tree.find_all(exp.Parameter):
        parent = node.parent
        while isinstance(parent, exp.Paren):
            parent = parent.parent
        if isinstance(parent, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod | exp.Pow):
            found.add(int(node.name))
    return found
