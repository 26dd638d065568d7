"""A recommendation on a partitioned table: its partitions from the snapshot, its SQL the whole rollout, and the
admission check (``flows.decisions.check_sql``) rendering the same from the change it carries."""

from __future__ import annotations

from optischema.analysis.advice import partition_refs
from optischema.analysis.report import recommendation_id
from optischema.analysis.snapshot import Server, Snapshot, Table
from optischema.api.index import IndexDefinition, PartitionRef
from optischema.api.recommendation import RecommendedChange, TuningRecommendationSpec
from optischema.changes import partitioned
from optischema.changes.ddl import render_create, render_drop
from optischema.flows.decisions import rendered_sql


def test_a_recommendation_on_a_partitioned_table_shows_the_rollout_and_passes_its_sql_check() -> None:
    # The snapshot's view of the forum's posts (a partition of a partition too), as the collector reads it.
    leaf = {"rows": 10.0, "size_bytes": 8192}
    tables = {
        ("public", "posts"): Table("public", "posts", 30.0, 0, partitions=(("archive", "p2023"), ("public", "p2024"),
                                   ("archive", "p2022"))),
        ("archive", "old"): Table("archive", "old", 20.0, 0, partitions=(("archive", "p2022"), ("archive", "p2023")),
                                  partition_of=("public", "posts")),
        ("archive", "p2022"): Table("archive", "p2022", **leaf, partition_of=("archive", "old")),
        ("archive", "p2023"): Table("archive", "p2023", **leaf, partition_of=("archive", "old")),
        ("public", "p2024"): Table("public", "p2024", **leaf, partition_of=("public", "posts")),
        ("public", "other"): Table("public", "other", **leaf),
    }  # fmt: skip
    snapshot = Snapshot(Server("15.18", 150018), [], tables, [], {})
    refs = partition_refs(snapshot, ("public", "posts"))
    assert [(r.schema_, r.table, r.parent_table, r.partitioned) for r in refs] == [
        ("archive", "old", "posts", True),
        ("public", "p2024", "posts", False),
        ("archive", "p2022", "old", False),
        ("archive", "p2023", "old", False),
    ]
    assert partition_refs(snapshot, ("public", "other")) == []
    index = IndexDefinition.model_validate({"table": "posts", "name": "posts_a", "columns": [{"name": "a"}]})
    sql, rollback = partitioned.index_sql(index, refs)
    lines = sql.split(";\n")
    assert lines[0] == 'CREATE INDEX "posts_a" ON ONLY "public"."posts" ("a")'
    assert lines[1].startswith('CREATE INDEX "old_a_')
    assert ' ON ONLY "archive"."old"' in lines[1]
    assert sum(line.startswith("CREATE INDEX CONCURRENTLY") for line in lines) == 3
    assert sum(" ATTACH PARTITION " in line for line in lines) == 4
    assert rollback == 'DROP INDEX IF EXISTS "public"."posts_a"'
    # The recommendation's admission check renders the same from the change it carries.
    spec = TuningRecommendationSpec.model_validate(
        {
            "targetRef": {"name": "db"},
            "kind": "createIndex",
            "change": RecommendedChange(index=index, partitions=refs).to_wire(),
            "sql": sql,
            "rollbackSql": rollback,
            "rationale": "r",
        }
    )
    assert rendered_sql(spec) == sql
    plain = IndexDefinition.model_validate({"table": "other", "columns": [{"name": "a"}]})
    assert partitioned.index_sql(plain, []) == (render_create(plain), render_drop(plain))


def test_a_new_partition_does_not_make_the_same_index_a_new_recommendation() -> None:
    index = IndexDefinition.model_validate({"table": "posts", "columns": [{"name": "a"}]})
    ref = PartitionRef.model_validate({"table": "posts_2024_01", "parentTable": "posts"})
    later = PartitionRef.model_validate({"table": "posts_2024_02", "parentTable": "posts"})
    january = RecommendedChange(index=index, partitions=[ref])
    february = RecommendedChange(index=index, partitions=[ref, later])
    assert recommendation_id("createIndex", january) == recommendation_id("createIndex", february)
    assert recommendation_id("createIndex", january) == recommendation_id("createIndex", RecommendedChange(index=index))
    other = IndexDefinition.model_validate({"table": "posts", "columns": [{"name": "b"}]})
    assert recommendation_id("createIndex", january) != recommendation_id("createIndex", RecommendedChange(index=other))
