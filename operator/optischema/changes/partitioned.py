"""An index on a partitioned table, rendered as the steps PostgreSQL accepts: pure, the partitions passed in.

PostgreSQL refuses ``CREATE INDEX CONCURRENTLY`` on a partitioned table, and a plain ``CREATE INDEX`` on it builds
every partition's index in one transaction under a ``SHARE`` lock on all of them: writes to the whole table stop
for the whole build. The way that blocks no writes (PostgreSQL's documentation, "Partition Maintenance"):

1. ``CREATE INDEX parent_idx ON ONLY parent (...)``: the parent's index alone, catalog work only, INVALID;
2. per partition, ``CREATE INDEX CONCURRENTLY child_idx ON partition (...)`` then
   ``ALTER INDEX parent_idx ATTACH PARTITION child_idx``; a partition that is itself partitioned gets step 1 on
   it, its own partitions, and is attached once its index is complete;
3. the parent's index becomes valid by itself when the last partition's index is attached.

Every step is short or concurrent, so each is one step of the apply path (``flows.apply``): re-checked before it
runs, recorded when done, resumable after a crash between any two. Partitions are read from the catalog at apply
time (``postgres.partitions``), not from the analysis snapshot: partitions come and go between the two. A
partition created after the rollout gets the index from PostgreSQL itself (``CREATE TABLE … PARTITION OF`` builds
and attaches one for every index of the parent). Names go through ``changes.quoting`` like every identifier.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from optischema.api.index import IndexDefinition, PartitionRef
from optischema.api.indexchange import IndexChangeSpec

from .ddl import (
    index_name,
    partition_index_name,
    render_create,
    render_drop,
    render_drop_partitioned,
    statements_for,
    undo_for,
)
from .quoting import qualified


@dataclass(frozen=True, slots=True)
class Partition:
    """A table of a partition tree: a leaf (an ordinary table) or itself partitioned, with its partitions."""

    schema: str
    table: str
    partitioned: bool = False
    partitions: tuple[Partition, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


def tree(rows: Iterable[tuple[str, str | None, str, str, bool]]) -> Partition | None:
    """The tree from ``pg_partition_tree`` rows ``(relid, parentrelid, schema, table, partitioned)`` (relids as
    text, the root's parent ``None``), partitions ordered by name so that steps come in a stable order."""
    nodes: dict[str, tuple[str | None, str, str, bool]] = {}
    children: dict[str, list[str]] = {}
    root = None
    for relid, parent, schema, table, partitioned in rows:
        nodes[relid] = (parent, schema, table, partitioned)
        if parent is None:
            root = relid
        else:
            children.setdefault(parent, []).append(relid)

    def build(relid: str) -> Partition:
        _, schema, table, partitioned = nodes[relid]
        kids = sorted(children.get(relid, []), key=lambda r: (nodes[r][1], nodes[r][2]))
        return Partition(schema, table, partitioned, tuple(build(k) for k in kids))

    return None if root is None else build(root)


def from_refs(schema: str, table: str, refs: Iterable[PartitionRef]) -> Partition | None:
    """The tree under ``schema.table`` from the partitions a recommendation carries (``None`` without any)."""
    refs = list(refs)
    if not refs:
        return None

    def key(s: str, t: str) -> str:
        return f"{s}\x00{t}"  # identifiers never hold a control character (api.index.Identifier)

    rows: list[tuple[str, str | None, str, str, bool]] = [(key(schema, table), None, schema, table, True)]
    rows += [(key(r.schema_, r.table), key(r.parent_schema, r.parent_table), r.schema_, r.table, r.partitioned)
             for r in refs]  # fmt: skip
    return tree(rows)


def index_sql(index: IndexDefinition, refs: Iterable[PartitionRef]) -> tuple[str, str]:
    """A new index's SQL and rollback, as a recommendation shows them: the whole rollout on a partitioned table
    (``refs``), else ``CREATE INDEX CONCURRENTLY`` and its drop. One statement per line."""
    root = from_refs(index.schema_, index.table, refs)
    if root is None:
        return render_create(index), render_drop(index)
    return shown(s.sql for s in rollout(index, root)), render_drop_partitioned(index)


#: Longest rollout text a recommendation shows (its ``sql`` holds at most 64 KiB): past it, the first steps and a
#: count of the rest, which are the same two statements per partition.
MAX_SHOWN_SQL = 60_000


def shown(statements: Iterable[str], limit: int = MAX_SHOWN_SQL) -> str:
    """The statements one per line, cut after the last whole statement within ``limit`` characters and followed by
    a comment counting the ones left out (the apply path renders and runs every step itself)."""
    lines = list(statements)
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 2 > limit - 200:
            break
        kept.append(line)
        size += len(line) + 2
    if len(kept) == len(lines):
        return ";\n".join(lines)
    rest = len(lines) - len(kept)
    return (
        ";\n".join(kept)
        + f";\n-- and {int(rest)} more steps: CREATE INDEX CONCURRENTLY and ATTACH PARTITION per partition"
    )


StepKind = Literal["only", "build", "attach"]


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a rollout, with what it makes: ``only`` (the index of a partitioned table alone),
    ``build`` (a leaf partition's index, concurrently) or ``attach`` (``index`` becomes a partition of
    ``parent_index``). ``schema``/``index`` name the index the step creates or attaches (an index sits in its
    table's schema), ``table`` the table it is on; ``parent_schema``/``parent_index`` the index it is (to be)
    attached to (``None`` for the root's own index), and ``under`` the partitioned tables between the root and
    ``table`` (``schema.table``), so that a subtree PostgreSQL already covered can be skipped whole."""

    kind: StepKind
    sql: str
    schema: str
    index: str
    table: str
    parent_schema: str | None = None
    parent_index: str | None = None
    under: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """What the step is recorded under in the change's status: ``kind:schema.index``."""
        return f"{self.kind}:{self.schema}.{self.index}"


def rollout(index: IndexDefinition, root: Partition, name: str | None = None) -> list[Step]:
    """Every statement that builds ``index`` on the partitioned table ``root`` without blocking writes, in order
    (see the module's docstring). ``name`` is the parent's index name (default: :func:`ddl.index_name`)."""
    parent = name or index_name(index)
    first = Step("only", render_create(index, concurrently=False, name=parent, only=True), index.schema_, parent,
                 root.table)  # fmt: skip
    return [first, *_below(index, root, index.schema_, parent, ())]


def _below(index: IndexDefinition, node: Partition, schema: str, parent: str, under: tuple[str, ...]) -> Iterator[Step]:
    for partition in node.partitions:
        child = partition_index_name(index, parent, partition.schema, partition.table)
        on = index.model_copy(update={"schema_": partition.schema, "table": partition.table, "name": child})
        where = (partition.schema, child, partition.table, schema, parent, under)
        if partition.partitioned:
            yield Step("only", render_create(on, concurrently=False, name=child, only=True), *where)
            yield from _below(index, partition, partition.schema, child, (*under, partition.qualified))
        else:
            yield Step("build", render_create(on, name=child), *where)
        attach = f"ALTER INDEX {qualified(schema, parent)} ATTACH PARTITION {qualified(partition.schema, child)}"
        yield Step("attach", attach, *where)


def statements(spec: IndexChangeSpec, root: Partition | None) -> list[str]:
    """``ddl.statements_for``, for a table that may be partitioned (``root``, from the catalog): a create is the
    whole rollout, a drop of a partitioned index a plain ``DROP INDEX`` (see ``ddl.render_drop_partitioned``)."""
    if root is None or not root.partitioned or spec.index is None:
        return statements_for(spec)
    if spec.operation == "create":
        return [step.sql for step in rollout(spec.index, root)]
    if spec.operation == "drop":
        return [render_drop_partitioned(spec.index)]
    return statements_for(spec)


def undo(spec: IndexChangeSpec, name: str | None, root: Partition | None) -> list[str] | None:
    """``ddl.undo_for`` for a table that may be partitioned: a new partitioned index is dropped with its
    partitions' indexes; a dropped one is rolled out again."""
    if root is None or not root.partitioned or spec.index is None:
        return undo_for(spec, name)
    if spec.operation == "create":
        return [render_drop_partitioned(spec.index, name=name)]
    if spec.operation == "drop":
        return [step.sql for step in rollout(spec.index, root)]
    return undo_for(spec, name)
