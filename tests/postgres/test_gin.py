"""Beyond btree on real PostgreSQL: partitioned parents priced on their partitions, and GIN candidates, which
HypoPG cannot simulate, left unpriced (with a note saying how to price them) unless the analysis measures."""

from __future__ import annotations

from optischema.flows.analyze import AnalyzeOptions, analyze

from .conftest import run_sql
from .test_engine import NO_SAMPLES, creates, setup

POSTS = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE posts (id bigint NOT NULL, author_id bigint NOT NULL, meta jsonb NOT NULL, created_at date NOT NULL,
                    PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);
CREATE TABLE posts_1 PARTITION OF posts FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE posts_2 PARTITION OF posts FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
CREATE TABLE posts_3 PARTITION OF posts FOR VALUES FROM ('2026-03-01') TO ('2026-04-01');
INSERT INTO posts SELECT g, 1 + g % 100000, jsonb_build_object('client', 'c' || g % 5000),
                         date '2026-01-01' + (g % 90) FROM generate_series(1, 150000) g;
CREATE TABLE users (id bigint PRIMARY KEY, handle text NOT NULL);
INSERT INTO users SELECT g, 'user_' || md5(g::text) FROM generate_series(1, 50000) g;
VACUUM ANALYZE;
"""


async def test_an_index_on_a_partitioned_table_is_proposed_on_the_parent_and_priced_on_its_partitions(
    pg_database: str,
) -> None:
    await setup(pg_database, POSTS, [f"SELECT meta FROM posts WHERE author_id = {a}" for a in (7, 11, 42)])
    result = await analyze(pg_database, NO_SAMPLES)
    # One index, on the parent: each partition gets its own when it is built (the per-partition rollout).
    assert creates(result, "posts") == ['CREATE INDEX "x" ON "public"."posts" ("author_id")']
    assert creates(result, "posts_1") == creates(result, "posts_2") == []
    (proposed,) = [r for r in result.recommendations if r.kind == "createIndex"]
    evidence = proposed.evidence
    assert evidence.cost_before
    assert evidence.cost_after
    assert evidence.cost_after < evidence.cost_before / 10
    assert (evidence.estimated_size_bytes or 0) > 1_000_000  # the sum over the partitions, not an empty parent


async def test_gin_candidates_are_not_proposed_unpriced_and_a_note_says_how_to_price_them(pg_database: str) -> None:
    await setup(
        pg_database,
        POSTS,
        [f"""SELECT id FROM posts WHERE meta @> '{{"client": "c{n}"}}'""" for n in (1, 2, 3)]
        + [f"SELECT id FROM users WHERE handle ILIKE '%{h}%'" for h in ("abc", "d3f", "99a")],
    )
    result = await analyze(pg_database, NO_SAMPLES)
    assert [r for r in result.recommendations if r.kind == "createIndex"] == []
    (note,) = [n for n in result.notes if "were not priced" in n]
    assert "GIN" in note
    assert "public.posts" in note
    assert "public.users" in note
    assert "--measure" in note


async def test_without_pg_trgm_a_substring_search_gets_a_note_not_an_index(pg_database: str) -> None:
    await setup(
        pg_database,
        POSTS.replace("CREATE EXTENSION IF NOT EXISTS pg_trgm;\n", ""),
        [f"SELECT id FROM users WHERE handle ILIKE '%{h}%'" for h in ("abc", "d3f", "99a")],
    )
    result = await analyze(pg_database, AnalyzeOptions(sample_seconds=0))
    assert [r for r in result.recommendations if r.kind == "createIndex"] == []
    assert any("users.handle" in n and "CREATE EXTENSION pg_trgm" in n for n in result.notes), result.notes


async def test_without_hypopg_every_candidate_is_measured_and_the_same_indexes_are_chosen(pg_database: str) -> None:
    """Where HypoPG is missing (CloudNativePG's images, most managed services), a sandbox stands in for it: every
    candidate, btree included, is built on the copy and the statements timed, and the selection is the one HypoPG
    would make, each recommendation saying it was measured (not left to statement shapes)."""
    from optischema.flows.measuring import local_sandbox

    workload = [f"SELECT meta FROM posts WHERE author_id = {a}" for a in (7, 11, 42)]
    workload += [f"SELECT id FROM users WHERE handle = 'user_{h}'" for h in ("a1", "b2", "c3")]
    await setup(pg_database, POSTS, workload)
    with_hypopg = await analyze(pg_database, NO_SAMPLES)
    await run_sql(pg_database, ["DROP EXTENSION hypopg"])
    without = await analyze(pg_database, AnalyzeOptions(sample_seconds=0, measure=local_sandbox))
    assert without.mode == "measured"
    assert any("HypoPG is not installed" in n and "sandbox copy" in n for n in without.notes), without.notes
    for table in ("posts", "users"):
        assert creates(without, table) == creates(with_hypopg, table), table
        assert creates(without, table), table
    created = [r for r in without.recommendations if r.kind == "createIndex"]
    assert {r.source for r in created} == {"measured"}
    for recommendation in created:
        top = recommendation.evidence.statements[0]
        assert top.measured_before_ms is not None
        assert top.measured_after_ms is not None
        assert top.measured_after_ms < top.measured_before_ms / 5, top
        assert top.plan_after is not None
        assert "Index Scan using" in top.plan_after
        if recommendation.change.index and recommendation.change.index.table == "users":  # partitions: their own
            assert f"{recommendation.change.index.name} (measured in the sandbox)" in top.plan_after
