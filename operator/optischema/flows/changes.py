"""Admitting an IndexChange: the target must exist (same namespace), be the database the change was written for,
allow the operation in its policy, and have room in its storage budget; the index must be one we can render, a new
index's name must be free, and an index to drop must be droppable (see ``drop_problem``).

``gather`` collects the facts (API server and a read-only connection); ``judge`` decides on them without I/O, for
the operator (``admit``, which records the verdict) and for the validating webhook (which refuses the object). The
pure checks here (``policy_problem``, ``drop_problem``, ``resume_problem``) are asked again by ``flows.apply``
right before the statements run: admission is days earlier, and the database or the policy may have changed.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from optischema.analysis.errors import AnalysisError
from optischema.api import describe
from optischema.api.conditions import Reason
from optischema.api.index import IndexDefinition
from optischema.api.indexchange import IndexChangeSpec
from optischema.api.quantity import quantity_bytes
from optischema.api.target import PostgresTargetSpec
from optischema.changes import partitioned
from optischema.changes.ddl import UnsafeDefinition, index_name, statements_for
from optischema.flows import target as target_flow
from optischema.lifecycle import indexchange as lifecycle
from optischema.postgres import catalog, partitions
from optischema.postgres.connect import DATABASE_ERRORS, connect

KIND_OF = {
    "create": "createIndex",
    "drop": "dropIndex",
    "reindex": "createIndex",
    "analyze": "analyze",
    "setting": "setting",
}
#: Phases in which a create change holds part of the storage budget.
HOLDS_BUDGET = {"WaitingForWindow", "Applying", "Verifying", "Applied"}


@dataclass(slots=True)
class Facts:
    """What admission looks at besides the change itself."""

    target: dict[str, Any] | None
    committed_bytes: int = 0
    """Estimated size of the target's other admitted create changes."""
    estimated_bytes: int | None = None
    """This change's index, estimated on the database (create only)."""
    table_error: str | None = None
    """Why the index cannot be built there (missing table or column), from the database itself."""
    unreachable: str | None = None
    """Set when the database could not be asked: admission waits and retries rather than deciding blind."""
    problem: tuple[str, str] | None = None
    """(reason, message) found on the database: a create's name already taken, an index to drop that is not there,
    not the one described, or protected."""
    partitions: partitioned.Partition | None = None
    """The partition tree when the index's table is partitioned: the SQL shown is then the whole rollout
    (``changes.partitioned``); the apply path reads the tree again when it runs."""


@dataclass(slots=True)
class Verdict:
    accepted: bool
    reason: str
    message: str
    status: dict[str, Any]


def committed_bytes(others: list[dict[str, Any]], name: str, target: str) -> int:
    """Estimated size of the target's other admitted create changes (the storage budget already promised)."""
    total = 0
    for other in others:
        status, other_spec = other.get("status") or {}, other.get("spec") or {}
        if (
            other["metadata"]["name"] != name
            and other_spec.get("targetRef", {}).get("name") == target
            and other_spec.get("operation") == "create"
            and status.get("phase") in HOLDS_BUDGET
        ):
            total += int(status.get("estimatedBytes") or 0)
    return total


async def gather(
    kube: Any, namespace: str, name: str, spec: dict[str, Any], *, connect_timeout: float | None = None
) -> Facts:
    """The facts ``judge`` needs: the target, the budget its other changes hold, and what a read-only connection
    finds (``connect_timeout`` caps the target's own, for the admission webhook)."""
    try:
        target = await kube.get("postgrestargets", namespace, spec["targetRef"]["name"])
    except LookupError:
        return Facts(None)
    facts = Facts(target)
    if spec.get("operation") not in ("create", "drop"):
        return facts
    facts.committed_bytes = committed_bytes(await kube.list("indexchanges", namespace), name, spec["targetRef"]["name"])
    check = await target_flow.check_target(
        namespace, dict(target["spec"]), kube.read_secret, clusters=kube.clusters, connect_timeout=connect_timeout
    )
    if check.dsn is None or check.database is None:
        facts.unreachable = check.message
        return facts
    try:
        change = IndexChangeSpec.model_validate(spec)
        statements_for(change)
    except (ValidationError, UnsafeDefinition):
        return facts  # admit() reports it, and nothing is sent to the database
    index = change.index
    if index is None:
        return facts
    hypopg = any(e.name == "hypopg" for e in check.database.extensions)
    try:
        timeout = check.spec.connection.connect_timeout_seconds if check.spec else 10
        conn = await connect(check.dsn, timeout=min(timeout, connect_timeout or timeout))
    except AnalysisError as error:
        facts.unreachable = error.message
        return facts
    try:
        facts.partitions = await partitions.partition_tree(conn, index.schema_, index.table)
        if change.operation == "create":
            facts.estimated_bytes = await catalog.estimate_index_bytes(conn, index, hypopg)
            facts.problem = name_problem(index, await catalog.relation_exists(conn, index.schema_, index_name(index)))
        else:
            found = await catalog.index_info(conn, index.schema_, index.name or "")
            kept_by = await catalog.same_uniqueness(conn, found) if found is not None and found.unique else None
            shape = None
            if found is not None:
                # A standby (or a role without TEMP) cannot probe: the pre-check on the writer compares then.
                with contextlib.suppress(*DATABASE_ERRORS):
                    shape = await catalog.rendered_shape(conn, index)
            facts.problem = drop_problem(index, found, other_unique=kept_by, expected_shape=shape)
    except DATABASE_ERRORS as error:
        facts.table_error = str(error).splitlines()[0]
    finally:
        await conn.close()
    return facts


# -- pure checks, asked at admission and again before the statements run --------------------------------------


def policy_problem(
    change: IndexChangeSpec, target: PostgresTargetSpec, *, estimated_bytes: int | None, committed_bytes: int
) -> tuple[str, str] | None:
    """The target's policy still allows this change: its kind, ``immediate`` if asked, room in the budget."""
    policy = target.policy
    kind = KIND_OF[change.operation]
    if kind not in policy.allowed_kinds:
        return (
            Reason.POLICY_VIOLATION,
            f"spec.operation: the target's policy does not allow {kind} (allowedKinds: "
            f"{', '.join(policy.allowed_kinds)})",
        )
    if change.schedule == "immediate" and not policy.allow_immediate:
        return (
            Reason.POLICY_VIOLATION,
            "spec.schedule: immediate is not allowed by the target's policy (allowImmediate)",
        )
    budget = quantity_bytes(policy.index_storage_budget)
    if change.operation == "create" and estimated_bytes is not None and committed_bytes + estimated_bytes > budget:
        return (
            Reason.OVER_BUDGET,
            f"spec.index: the new index needs about {_size(estimated_bytes)}, and {_size(committed_bytes)}"
            f" of the target's indexStorageBudget ({policy.index_storage_budget}) is already committed",
        )
    return None


def cluster_problem(change: IndexChangeSpec, target: PostgresTargetSpec) -> str | None:
    """A setting for a CloudNativePG Cluster patches the target's own Cluster and no other; and a target that is a
    Cluster takes its settings only that way (CloudNativePG turns ``ALTER SYSTEM`` off)."""
    if change.setting is None:
        return None
    own = target.connection.cluster.name if target.connection.cluster else None
    if change.setting.cluster == own:
        return None
    if own is None:
        return (
            f"spec.setting.cluster: target {change.target_ref.name} names a host, not a CloudNativePG Cluster; "
            f"Cluster {change.setting.cluster} is never patched through it"
        )
    if change.setting.cluster is None:
        return (
            f"spec.setting.cluster: target {change.target_ref.name} is CloudNativePG Cluster {own}, which turns "
            f"ALTER SYSTEM off: write cluster: {own} to have the operator patch the Cluster"
        )
    return (
        f"spec.setting.cluster: {change.setting.cluster} is not the target's Cluster ({own}); the operator patches "
        "only the Cluster its target names"
    )


def name_problem(index: IndexDefinition, taken_by: str | None) -> tuple[str, str] | None:
    """A new index's name must be free: an existing relation of that name is someone else's (ours is only ever
    found after our own marker was written, which ``resume_problem`` judges)."""
    if taken_by is None:
        return None
    return (
        Reason.INDEX_NAME_TAKEN,
        f"spec.index: a {taken_by} named {index.schema_}.{index_name(index)} already exists; the operator builds "
        "and drops only indexes of its own (omit index.name to get a name derived from the definition, or choose "
        "a free one)",
    )


def drop_problem(
    index: IndexDefinition,
    found: catalog.IndexInfo | None,
    *,
    other_unique: str | None,
    expected_shape: str | None,
) -> tuple[str, str] | None:
    """An index may be dropped only when it is the one the change describes (on the spec's table, same
    uniqueness and, when ``expected_shape`` is known, the same keys, INCLUDE and predicate), backs no constraint,
    is not the replica identity, and — if unique — another valid index (``other_unique``) enforces the same."""
    where = f"{index.schema_}.{index.name}"
    if found is None:
        return Reason.INDEX_NOT_FOUND, f"spec.index.name: index {where} does not exist"
    if (found.table_schema, found.table) != (index.schema_, index.table):
        return (
            Reason.INDEX_MISMATCH,
            f"spec.index.table: index {where} is on {found.table_schema}.{found.table}, not {index.schema_}."
            f"{index.table}",
        )
    if found.constraint:
        return Reason.PROTECTED_INDEX, f"spec.index.name: index {where} backs constraint {found.constraint}"
    if found.replica_identity:
        return Reason.PROTECTED_INDEX, f"spec.index.name: index {where} is the table's replica identity"
    if found.unique != index.unique:
        return (
            Reason.INDEX_MISMATCH,
            f"spec.index.unique: index {where} is {'' if found.unique else 'not '}unique, the change says "
            f"{'unique' if index.unique else 'not unique'}",
        )
    if expected_shape is not None and _without_options(found.shape) != expected_shape:
        return (
            Reason.INDEX_MISMATCH,
            f"spec.index: index {where} is {found.shape!r}, the change describes {expected_shape!r}",
        )
    if found.unique and other_unique is None:
        return (
            Reason.PROTECTED_INDEX,
            f"spec.index.name: index {where} is unique and no other valid index enforces the same uniqueness",
        )
    return None


def _without_options(shape: str) -> str:
    """A definition without its storage parameters (``WITH (fillfactor='70')``), which a structured definition
    cannot state: a drop matches on method, keys, INCLUDE, uniqueness and predicate (and the rollback re-creates
    the options from the captured definition)."""
    return re.sub(r" WITH \([^()]*\)", "", shape, count=1)


def resume_problem(
    name: str,
    found: catalog.IndexInfo,
    *,
    marker_sql: str | None,
    sql: str,
    table: tuple[str, str],
    expected_shape: str,
) -> tuple[str, str] | None:
    """An index found under the name this change builds is its own only when the change had written its marker
    (the rendered SQL) before executing, and the catalog shows that very definition on that very table."""
    if marker_sql is None:
        return (
            Reason.INDEX_NAME_TAKEN,
            f"index {name} exists but this change never started building it: it is someone else's; nothing was touched",
        )
    if marker_sql != sql:
        return Reason.INDEX_NAME_TAKEN, f"index {name} was started from other SQL ({marker_sql}); nothing was touched"
    if (found.table_schema, found.table) != table or found.shape != expected_shape:
        return (
            Reason.INDEX_NAME_TAKEN,
            f"index {name} is {found.definition!r}, not the definition this change builds "
            f"({expected_shape!r} on {table[0]}.{table[1]}); nothing was touched",
        )
    return None


@dataclass(slots=True)
class Admissible:
    """What ``judge`` found admissible: the change, its rendered SQL and rollback, and the database it is for."""

    change: IndexChangeSpec
    sql: str
    rollback: str | None
    identity: str | None


def judge(spec: dict[str, Any], facts: Facts) -> Admissible | tuple[str, str]:
    """Every check admission makes, without I/O: a valid spec with a definition we can render, a target of this
    namespace on the database the change was written for, its table there, the target's policy and budget, and
    what ``gather`` found on the database. A refusal is ``(reason, message)``, the message naming the field.

    Asked by the operator when a change arrives (``admit``, which records the verdict in the status) and by the
    validating webhook (``handlers.admission``), which refuses the object before it is stored."""
    try:
        change = IndexChangeSpec.model_validate(spec)
    except ValidationError as error:
        return Reason.INVALID_SPEC, "; ".join(describe(error, "spec"))
    try:
        sql = partitioned.shown(partitioned.statements(change, facts.partitions))
        undo = partitioned.undo(change, change.index.name if change.index else None, facts.partitions)
        rollback = ";\n".join(undo) if undo else None
    except UnsafeDefinition as error:
        return Reason.INVALID_SPEC, str(error)
    if facts.target is None:
        return (
            Reason.TARGET_MISMATCH,
            f"spec.targetRef.name: PostgresTarget {change.target_ref.name} does not exist in this namespace "
            "(an IndexChange can only change a target of its own namespace)",
        )
    target_spec = PostgresTargetSpec.model_validate(facts.target["spec"])
    identity = ((facts.target.get("status") or {}).get("database") or {}).get("systemIdentifier")
    if change.system_identifier and identity and change.system_identifier != identity:
        return (
            Reason.DATABASE_MISMATCH,
            f"spec.systemIdentifier: the change was written for database {change.system_identifier}, but target "
            f"{change.target_ref.name} now points at database {identity}",
        )
    mismatch = cluster_problem(change, target_spec)
    if mismatch is not None:
        return Reason.TARGET_MISMATCH, mismatch
    if facts.table_error:
        return Reason.TABLE_NOT_FOUND, f"spec.index: {facts.table_error}"
    problem = (
        policy_problem(
            change, target_spec, estimated_bytes=facts.estimated_bytes, committed_bytes=facts.committed_bytes
        )
        or facts.problem
    )
    if problem is not None:
        return problem
    return Admissible(change, sql, rollback, identity)


def admit(
    spec: dict[str, Any],
    facts: Facts,
    *,
    now: datetime,
    generation: int | None,
    status: dict[str, Any] | None = None,
) -> Verdict:
    """``judge``'s verdict as the status patch that records it."""
    current = lifecycle.parse(status)
    judged = judge(spec, facts)
    if isinstance(judged, tuple):
        reason, message = judged
        return Verdict(
            False, reason, message, lifecycle.refused(current, reason, message, now=now, generation=generation)
        )
    message = "accepted; waiting for the target's next maintenance window"
    patch = lifecycle.admitted(
        current,
        sql=judged.sql,
        rollback_sql=judged.rollback,
        estimated_bytes=facts.estimated_bytes,
        message=message,
        now=now,
        generation=generation,
        system_identifier=judged.change.system_identifier or judged.identity,
    )
    return Verdict(True, Reason.WAITING_FOR_WINDOW, message, patch)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
