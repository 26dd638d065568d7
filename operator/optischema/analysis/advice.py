"""Index recommendations with their evidence, from the what-if selection or, without HypoPG, from shapes alone;
and the plans before and after each, in compact text, for the reviewer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optischema.api.index import IndexDefinition, PartitionRef
from optischema.api.recommendation import PLAN_CHARS, Evidence, RecommendedChange, StatementEvidence
from optischema.api.target import Risk
from optischema.changes import partitioned
from optischema.changes.ddl import definition_key, index_name

from .candidates import Candidate
from .redact import redact
from .report import Recommendation, Source, make
from .selection import Choice, Selection, WorkloadStatement
from .snapshot import Snapshot, Statement

#: Tables above this size make an index build long enough to call the change medium risk (high above the next).
MEDIUM_RISK_TABLE_BYTES = 1 << 30
HIGH_RISK_TABLE_BYTES = 100 << 30
#: Statements listed as evidence, largest share first.
EVIDENCE_STATEMENTS = 10
#: Without HypoPG, only tables at least this large get an index proposal (small tables are scanned cheaply).
HEURISTIC_MIN_ROWS = 10_000
#: Statements of each proposed index whose plans before and after are shown (its largest first).
PLAN_STATEMENTS = 3
#: Plan nodes shown at most per plan; deeper or further nodes are cut (the size cap is PLAN_CHARS).
PLAN_NODES = 25
#: Conditions shown on a plan line, in this order. Planned from the normalised text, they hold ``$n``, not values.
_CONDITIONS = ("Index Cond", "Recheck Cond", "Hash Cond", "Merge Cond", "Join Filter", "Filter")


def index_recommendations(
    selection: Selection, workload: Sequence[WorkloadStatement], snapshot: Snapshot
) -> list[Recommendation]:
    by_key = {s.key: s for s in workload}
    queries = {s.query_id: s for s in snapshot.statements}
    found = []
    taken = [i.name for i in snapshot.indexes]
    for choice in selection.chosen:
        users = _users(choice, selection, by_key)
        before = sum(by_key[k].weight * (selection.base[k].cost or 0.0) for k in users)
        after = sum(by_key[k].weight * (selection.final[k].cost or 0.0) for k in users)
        improvement = 100.0 * (before - after - choice.penalty) / before if before > 0 else None
        evidence = Evidence(
            statements=[
                _statement_evidence(by_key[k], queries, selection.base[k].cost, selection.final[k].cost)
                for k in users[:EVIDENCE_STATEMENTS]
            ],
            cost_before=round(before, 2),
            cost_after=round(after, 2),
            estimated_improvement_percent=None if improvement is None else round(max(min(improvement, 100), -100), 2),
            estimated_size_bytes=choice.size_bytes,
        )
        found.append(
            _create(
                choice.candidate.index,
                taken,
                evidence=evidence,
                improvement=improvement,
                rationale=_rationale(choice, users, by_key, before, after),
                source="whatif",
                risk=_risk(choice, snapshot, before),
                partitions=partition_refs(snapshot, choice.candidate.table),
            )
        )
    return found


def _users(choice: Choice, selection: Selection, by_key: Mapping[str, WorkloadStatement]) -> list[str]:
    """The statements whose final plan uses the chosen index, the largest weighted cost first."""
    users = [k for k, plan in selection.final.items() if choice.candidate.key in plan.uses and k in by_key]
    return sorted(users, key=lambda k: -by_key[k].weight * (selection.base[k].cost or 0.0))


# -- plans before and after ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanPair:
    """A statement's generic plan (EXPLAIN's JSON top node) without and with the proposed indexes."""

    before: dict[str, Any] | None
    after: dict[str, Any] | None


def plan_targets(selection: Selection, workload: Sequence[WorkloadStatement]) -> dict[str, str]:
    """Statement key → normalised text, for the top :data:`PLAN_STATEMENTS` statements of every chosen index:
    those to EXPLAIN before and after. The normalised text (``$n`` parameters), never samples or bound values, so
    that no plan shows a value from the data."""
    by_key = {s.key: s for s in workload}
    return {
        k: by_key[k].request.query
        for choice in selection.chosen
        for k in _users(choice, selection, by_key)[:PLAN_STATEMENTS]
    }


def render_plan(node: Mapping[str, Any], names: Mapping[str, str], *, pii_safe: bool = True) -> str:
    """A plan in a few lines: one node a line (type, index, relation, estimated rows and cost, its conditions),
    indented by depth, cut to :data:`PLAN_CHARS`. ``names`` maps a hypothetical index's definition key to the name
    its recommendation gives it; with ``pii_safe`` every condition is redacted (a generic plan's hold ``$n`` only,
    but a condition a view or a default put there may hold a literal)."""
    lines: list[str] = []

    def visit(item: Mapping[str, Any], depth: int) -> None:
        if len(lines) >= PLAN_NODES:
            return
        line = "  " * depth + ("-> " if depth else "") + str(item.get("Node Type", "?"))
        index = item.get("Index Name")
        if index:
            line += f" using {names[index]} (hypothetical)" if index in names else f" using {index}"
        if item.get("Relation Name"):
            line += f" on {item['Relation Name']}"
        line += f"  rows={item.get('Plan Rows', '?')} cost={item.get('Startup Cost', 0)}..{item.get('Total Cost', 0)}"
        for condition in _CONDITIONS:
            if item.get(condition):
                text = str(item[condition])
                line += f"  {condition.lower()}: {redact(text) if pii_safe else text}"
        lines.append(line)
        for child in item.get("Plans", []):
            visit(child, depth + 1)

    visit(node, 0)
    text = "\n".join(lines)
    if len(text) > PLAN_CHARS:
        text = text[: PLAN_CHARS - 1].rsplit("\n", 1)[0] + "\n…"
    return text


def attach_plans(
    recommendations: Sequence[Recommendation],
    pairs: Mapping[str, PlanPair],
    *,
    pii_safe: bool = True,
    measured_after: Mapping[tuple[str, str], str] | None = None,
) -> None:
    """Write each createIndex recommendation's plans before and after into its statement evidence (the first
    :data:`PLAN_STATEMENTS`), hypothetical indexes named as the recommendations name them.

    ``measured_after`` is the hook for indexes HypoPG cannot simulate (GIN, GiST), priced by building them in a
    sandbox: (index definition key, statement key) → the compact plan measured there. Without one, such an
    index's statements get no after plan rather than one that does not show it."""
    creates = [r for r in recommendations if r.kind == "createIndex" and r.change.index is not None]
    names = {_unnamed_key(r.change.index): r.change.index.name or "" for r in creates if r.change.index}
    for recommendation in creates:
        assert recommendation.change.index is not None
        key = _unnamed_key(recommendation.change.index)
        simulated = recommendation.change.index.method in HYPOTHETICAL_METHODS
        for number, statement in enumerate(recommendation.evidence.statements[:PLAN_STATEMENTS]):
            pair = pairs.get(statement.query_id)
            before = render_plan(pair.before, names, pii_safe=pii_safe) if pair and pair.before else None
            after = render_plan(pair.after, names, pii_safe=pii_safe) if pair and pair.after and simulated else None
            if measured_after and (key, statement.query_id) in measured_after:
                after = measured_after[(key, statement.query_id)][:PLAN_CHARS]
            recommendation.evidence.statements[number] = statement.model_copy(
                update={"plan_before": before, "plan_after": after}
            )


#: Index methods HypoPG (1.3) simulates; the after plans of others come from the sandbox (``measured_after``).
HYPOTHETICAL_METHODS = frozenset({"btree", "hash", "brin"})


def _unnamed_key(index: IndexDefinition) -> str:
    return definition_key(index.model_copy(update={"name": None}))


def _create(
    index: IndexDefinition,
    taken: list[str],
    *,
    rationale: str,
    source: Source,
    risk: Risk,
    evidence: Evidence | None = None,
    improvement: float | None = None,
    partitions: Sequence[PartitionRef] = (),
) -> Recommendation:
    """A createIndex recommendation, its index named so that no existing (or already proposed) name is reused. On
    a partitioned table its SQL is the whole rollout over ``partitions`` (``changes.partitioned``)."""
    definition = index.model_copy(update={"name": index_name(index, taken)})
    taken.append(definition.name or "")
    sql, rollback = partitioned.index_sql(definition, partitions)
    return make(
        "createIndex",
        RecommendedChange(index=definition, partitions=list(partitions) or None),
        sql=sql,
        rollback_sql=rollback,
        table=f"{definition.schema_}.{definition.table}",
        evidence=evidence,
        improvement=improvement,
        rationale=rationale,
        source=source,
        risk=risk,
    )


#: Partitions a recommendation lists (``RecommendedChange.partitions``), nearest the table first: enough to show
#: the rollout, which is cut well before (``changes.partitioned.MAX_SHOWN_SQL``); the apply path reads them all.
MAX_PARTITION_REFS = 1024


def partition_refs(snapshot: Snapshot, table: tuple[str, str]) -> list[PartitionRef]:
    """Every partition under ``table`` (partitions of partitions too), each with the table it is a partition of;
    empty for a table that is not partitioned."""
    below: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, found in snapshot.tables.items():
        if found.partition_of is not None:
            below.setdefault(found.partition_of, []).append(key)
    refs: list[PartitionRef] = []
    pending = [table]
    while pending and len(refs) < MAX_PARTITION_REFS:
        parent = pending.pop(0)
        for schema, name in sorted(below.get(parent, [])):
            nested = bool(below.get((schema, name)) or snapshot.tables[(schema, name)].partitions)
            ref = {"schema": schema, "table": name, "parentSchema": parent[0], "parentTable": parent[1]}
            refs.append(PartitionRef.model_validate({**ref, "partitioned": nested}))
            pending.append((schema, name))
    return refs[:MAX_PARTITION_REFS]


def _statement_evidence(
    statement: WorkloadStatement, queries: Mapping[int, Statement], before: float | None, after: float | None
) -> StatementEvidence:
    stat = queries.get(int(statement.key))
    total = stat.total_time_ms if stat else 0.0
    return StatementEvidence(
        query_id=statement.key,
        fingerprint=statement.parsed.fingerprint,
        query=statement.request.query[:4096],
        calls=statement.calls,
        total_time_ms=round(total, 3),
        mean_time_ms=round(total / statement.calls, 3) if statement.calls else 0.0,
        cost_before=None if before is None else round(before, 2),
        cost_after=None if after is None else round(after, 2),
    )


def _rationale(
    choice: Choice, users: list[str], by_key: dict[str, WorkloadStatement], before: float, after: float
) -> str:
    index = choice.candidate.index
    calls = sum(by_key[k].calls for k in users)
    text = (
        f"{len(users)} statement{'s' if len(users) != 1 else ''} ({calls} calls) would use it: their weighted planner "
        f"cost falls from {before:.0f} to {after:.0f} (HypoPG what-if, with the other proposed indexes in place)."
    )
    if index.where:
        text += f" Partial (WHERE {index.where}): the statements using it all filter on that, so the index holds "
        text += "only the rows they can return and is cheaper to maintain."
    if index.include:
        text += f" INCLUDE ({', '.join(index.include)}) lets them read everything from the index (index-only scan)."
    if any(c.opclass for c in index.columns):
        text += " The operator class serves LIKE 'prefix%' under the database's non-C collation."
    if any(c.expression for c in index.columns):
        text += " The expression is written exactly as the statements write it, which the planner needs to match it."
    if choice.penalty > 0:
        text += f" Write cost charged: {choice.penalty:.0f} (inserts, and updates of indexed columns)."
    return text


def _risk(choice: Choice, snapshot: Snapshot, benefit: float) -> Risk:
    table = snapshot.tables.get(choice.candidate.table)
    size = table.size_bytes if table else 0
    if size >= HIGH_RISK_TABLE_BYTES:
        return "high"
    if size >= MEDIUM_RISK_TABLE_BYTES or (benefit > 0 and choice.penalty > 0.1 * benefit):
        return "medium"
    return "low"


def heuristic_recommendations(
    workload: Sequence[WorkloadStatement], candidates: Sequence[Candidate], snapshot: Snapshot, max_per_table: int
) -> list[Recommendation]:
    """Without HypoPG: for each heavy statement on a large table, the candidate that serves most of its filters.

    Nothing is costed, so little is proposed: one index per statement at most, only on tables of at least
    ``HEURISTIC_MIN_ROWS`` rows, and the recommendations say that they are estimates from shape alone.
    """
    by_statement: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        for key in candidate.statements:
            by_statement.setdefault(key, []).append(candidate)
    picked: dict[str, tuple[Candidate, float]] = {}
    for statement in sorted(workload, key=lambda s: -s.calls):
        options = [
            c
            for c in by_statement.get(statement.key, [])
            if (t := snapshot.tables.get(c.table)) is not None and t.rows >= HEURISTIC_MIN_ROWS and not c.index.include
        ]
        if not options:
            continue
        best = max(options, key=lambda c: (len(c.index.columns), c.index.where is not None))
        weight = picked.get(best.key, (best, 0.0))[1] + statement.calls
        picked[best.key] = (best, weight)
    per_table: dict[tuple[str, str], int] = {}
    found = []
    taken = [i.name for i in snapshot.indexes]
    for candidate, calls in sorted(picked.values(), key=lambda p: -p[1]):
        existing = len(snapshot.indexes_on(candidate.table))
        if existing + per_table.get(candidate.table, 0) >= max_per_table:
            continue
        per_table[candidate.table] = per_table.get(candidate.table, 0) + 1
        found.append(
            _create(
                candidate.index,
                taken,
                rationale=(
                    f"Heuristic only (HypoPG is not installed, so this is not costed): {len(candidate.statements)} "
                    f"statement(s), {calls:.0f} calls, filter the large table {candidate.index.table} on these "
                    "columns with no index to serve them. Install HypoPG for what-if costing."
                ),
                source="heuristic",
                risk="medium",
                partitions=partition_refs(snapshot, candidate.table),
            )
        )
    return found
