"""An index on a partitioned table applied end to end on a real PostgreSQL 15 (``flows.apply`` → ``_rollout``):
``ON ONLY`` the parent, then per partition a concurrent build and an attach, each a step recorded in the change's
status. Interrupted between any two steps (the operator killed), in the middle of a concurrent build, or by the
window's end, it resumes where it was and leaves no INVALID index behind.

The Kubernetes API is the dictionary of ``test_apply_attacks`` (merge-patching status as the API server does); a
crash is an exception raised out of a status write, so nothing of the step after it runs, as when the process is
killed at that point (the next operator starts from what the status and the catalog say).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from optischema.api.recommendation import TuningRecommendationSpec
from optischema.flows import apply as apply_flow
from optischema.flows.analyze import analyze
from optischema.flows.decisions import rendered_sql

from .test_apply_attacks import (
    Api,
    Recorder,
    admit,
    change_doc,
    context,
    drive,
    force_regression,
    invalid_indexes,
    ready,
    target_doc,
)
from .test_engine import NO_SAMPLES, setup

LEAVES = ["posts_2022", "posts_2023", "posts_2024_01", "posts_2024_02"]

SCHEMA = """
CREATE TABLE posts (id bigint, author_id int, body text, created date NOT NULL) PARTITION BY RANGE (created);
CREATE TABLE posts_old PARTITION OF posts FOR VALUES FROM ('2000-01-01') TO ('2024-01-01')
    PARTITION BY RANGE (created);
CREATE TABLE posts_2022 PARTITION OF posts_old FOR VALUES FROM ('2022-01-01') TO ('2023-01-01');
CREATE TABLE posts_2023 PARTITION OF posts_old FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE posts_2024_01 PARTITION OF posts FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE posts_2024_02 PARTITION OF posts FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO posts SELECT g, g % 500, md5(g::text), DATE '2022-01-01' + (g % 790) FROM generate_series(1, 40000) g;
ANALYZE posts;
"""
INDEX = {"table": "posts", "columns": [{"name": "author_id"}]}


class Killed(BaseException):
    """The operator process dying: not an ``Exception``, so no handler of the apply path takes it for an error."""


class CrashingApi(Api):
    """The dictionary API, with a hook run on every status write of an IndexChange, before it is stored: it may
    raise :class:`Killed` (the write never lands, nothing after it runs) or edit other objects (a window closing)."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Callable[[dict[str, Any]], None] | None = None

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        if plural == "indexchanges" and self.hook is not None:
            self.hook(status)
        await super().patch_status(plural, namespace, name, status)


def step_written(status: dict[str, Any], kind: str, state: str, number: int) -> bool:
    """Whether this status write records the ``number``-th step of ``kind`` (1-based, in rollout order) as ``state``."""
    steps = [s for s in (status.get("execution") or {}).get("steps", []) if s["step"].startswith(kind + ":")]
    return len(steps) >= number and steps[number - 1]["state"] == state


@pytest.fixture
def api() -> CrashingApi:
    return CrashingApi()


@pytest.fixture
def events() -> Recorder:
    return Recorder()


async def start(conn: asyncpg.Connection, api: CrashingApi, dsn: str, name: str = "rollout", **target: Any) -> str:
    await conn.execute(SCHEMA)
    api.put("postgrestargets", target_doc(dsn, **target))
    api.put("indexchanges", change_doc(name, operation="create", index=INDEX, schedule="nextWindow"))
    status = await admit(api, name)
    assert status["phase"] == "WaitingForWindow", status
    return name


async def indexes(conn: asyncpg.Connection) -> list[tuple[str, str, bool, str | None]]:
    """Every index on the posts tree: (table, index, valid, the index it is attached to)."""
    rows = await conn.fetch(
        "SELECT t.relname AS table, i.relname AS index, x.indisvalid AS valid, p.relname AS parent "
        "  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "  LEFT JOIN pg_inherits h ON h.inhrelid = i.oid LEFT JOIN pg_class p ON p.oid = h.inhparent "
        " WHERE t.relname LIKE 'posts%' ORDER BY 1, 2"
    )
    return [(r["table"], r["index"], bool(r["valid"]), r["parent"]) for r in rows]


async def assert_rolled_out(conn: asyncpg.Connection, parent: str) -> None:
    """The parent's index valid, exactly one valid index per leaf, each attached (through posts_old's for the
    sub-partitioned ones) to it, and no INVALID index anywhere."""
    found = await indexes(conn)
    assert await invalid_indexes(conn) == [], found
    by_table = {table: (index, valid, up) for table, index, valid, up in found}
    assert len(found) == len(by_table), f"one index per table: {found}"
    assert by_table["posts"][:2] == (parent, True)
    middle = by_table["posts_old"][0]
    assert by_table["posts_old"][2] == parent
    for leaf in LEAVES:
        _, valid, up = by_table[leaf]
        assert valid
        assert up == (middle if leaf in ("posts_2022", "posts_2023") else parent), (leaf, found)


async def builds_sent(conn: asyncpg.Connection) -> dict[str, int]:
    """How many times a concurrent build of each partition reached the server (pg_stat_statements)."""
    rows = await conn.fetch(
        "SELECT query, calls FROM pg_stat_statements WHERE query ~ '^CREATE INDEX CONCURRENTLY' "
        "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    sent: dict[str, int] = {}
    for row in rows:
        table = row["query"].split(" ON ")[1].split(".")[1].split()[0].strip('"')
        sent[table] = sent.get(table, 0) + int(row["calls"])
    return sent


# -- end to end ---------------------------------------------------------------------------------------------------


async def test_a_partitioned_index_is_rolled_out_inherited_by_new_partitions_and_rolled_back(
    conn: asyncpg.Connection, pg_database: str, api: CrashingApi, events: Recorder
) -> None:
    name = await start(conn, api, pg_database)
    status = api.status(name)
    # The reviewed SQL is the whole rollout, never CONCURRENTLY on the parent, and its undo a plain DROP INDEX.
    sql = status["sql"].split(";\n")
    parent = sql[0].split('"')[1]
    assert sql[0] == f'CREATE INDEX "{parent}" ON ONLY "public"."posts" ("author_id")'
    assert sum(s.startswith("CREATE INDEX CONCURRENTLY") for s in sql) == len(LEAVES)
    assert sum(" ATTACH PARTITION " in s for s in sql) == len(LEAVES) + 1
    assert status["rollbackSql"] == f'DROP INDEX IF EXISTS "public"."{parent}"'
    await conn.execute("SELECT pg_stat_statements_reset()")

    ctx = context(api, events)
    status = await drive(ctx, api, name, "Verifying", "Failed")
    assert status["phase"] == "Verifying", status
    await assert_rolled_out(conn, parent)
    assert await builds_sent(conn) == dict.fromkeys(LEAVES, 1)
    assert all(s["state"] == "Done" for s in status["execution"]["steps"])
    assert await conn.fetchval("SELECT count(*) FROM pg_stat_statements WHERE query ~* 'concurrently.* on only'") == 0

    # A partition created afterwards gets the index from PostgreSQL itself, attached and valid.
    await conn.execute(
        "CREATE TABLE posts_2024_03 PARTITION OF posts FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');"
        "INSERT INTO posts VALUES (1, 7, 'x', '2024-03-05')"
    )
    new = [(index, valid, up) for table, index, valid, up in await indexes(conn) if table == "posts_2024_03"]
    assert len(new) == 1
    assert new[0][1:] == (True, parent)
    plan = await conn.fetchval("EXPLAIN (FORMAT TEXT) SELECT * FROM posts_2024_03 WHERE author_id = 7")
    assert plan is not None

    # A regression rolls it back: one DROP INDEX of the parent takes every partition's index with it.
    await force_regression(api, conn, name)
    status = await drive(ctx, api, name, "RolledBack", "Applied", "Failed")
    assert status["phase"] == "RolledBack", status
    assert await indexes(conn) == []
    rollback = [h for h in status["history"] if h["action"] == "Rollback"]
    assert rollback[-1]["sql"] == f'DROP INDEX IF EXISTS "public"."{parent}"'


# -- a crash between two steps --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "state", "number"),
    [
        ("build", "Started", 1),  # killed right before the first build was sent
        ("attach", "Done", 1),  # killed after the first attach ran, before it was recorded
        ("build", "Done", 3),  # killed after the third build (posts_2022, under posts_old), before its attach
        ("attach", "Started", 5),  # killed right before posts_old's own index is attached to the parent's
    ],
    ids=["before build 1", "after attach 1", "after build 3", "before the sub-partition's attach"],
)
async def test_a_rollout_killed_between_two_steps_resumes_there_and_leaves_no_invalid_index(
    conn: asyncpg.Connection, pg_database: str, api: CrashingApi, events: Recorder, kind: str, state: str, number: int
) -> None:
    name = await start(conn, api, pg_database)
    parent = api.status(name)["sql"].split('"')[1]
    await conn.execute("SELECT pg_stat_statements_reset()")

    def kill(status: dict[str, Any]) -> None:
        if step_written(status, kind, state, number):
            api.hook = None
            raise Killed

    api.hook = kill
    with pytest.raises(Killed):
        await drive(context(api, events), api, name, "Verifying", "Failed")
    assert api.status(name)["phase"] == "Applying"
    # Only the partitioned tables' indexes (INVALID until their last partition is attached) may be INVALID here.
    assert [t for t, _, valid, _ in await indexes(conn) if not valid and t in LEAVES] == []

    # A new operator (new context, nothing in memory) resumes from the status and the catalog.
    status = await drive(context(api, events), api, name, "Verifying", "Failed")
    assert status["phase"] == "Verifying", status
    await assert_rolled_out(conn, parent)
    assert await builds_sent(conn) == dict.fromkeys(LEAVES, 1), "no partition was built twice"


# -- a crash in the middle of a concurrent build ----------------------------------------------------------------


async def build_waiting(conn: asyncpg.Connection, table: str) -> int | None:
    pid = await conn.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'optischema-apply' "
        "AND query ~ ('^CREATE INDEX CONCURRENTLY .* ON \"public\".\"' || $1 || '\"')",
        table,
    )
    return None if pid is None else int(pid)


@pytest.mark.parametrize("how", ["operator killed", "backend terminated"])
async def test_a_build_interrupted_midway_leaves_an_invalid_index_that_the_resume_drops_and_rebuilds(
    conn: asyncpg.Connection, pg_database: str, api: CrashingApi, events: Recorder, how: str
) -> None:
    name = await start(conn, api, pg_database)
    parent = api.status(name)["sql"].split('"')[1]
    # A writer's open transaction on one partition: its concurrent build creates its INVALID index, then waits for
    # that transaction to end — the moment to interrupt it.
    holder = await asyncpg.connect(pg_database)
    ctx = context(api, events)
    ctx.lock_timeout_ms = 60_000
    try:
        await holder.execute("BEGIN; INSERT INTO posts_2024_01 VALUES (0, 1, 'held', '2024-01-02')")
        stepping = asyncio.create_task(drive(ctx, api, name, "Verifying", "Failed", "WaitingForWindow"))
        for _ in range(400):
            pid = await build_waiting(conn, "posts_2024_01")
            if pid is not None or stepping.done():
                break
            await asyncio.sleep(0.05)
        assert pid is not None, "the build of posts_2024_01 started"
        if how == "operator killed":
            stepping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stepping
        else:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
            await asyncio.wait_for(stepping, 60)
            assert ready(api.status(name))["reason"] == "ConnectionLost"
        for _ in range(100):  # the server ends the build (cancelled, or its client gone)
            if await build_waiting(conn, "posts_2024_01") is None:
                break
            await asyncio.sleep(0.1)
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()
    leftovers = [i for t, i, valid, _ in await indexes(conn) if t == "posts_2024_01" and not valid]
    assert len(leftovers) == 1, "the interrupted build left its INVALID index"

    status = await drive(context(api, events), api, name, "Verifying", "Failed", steps=80)
    assert status["phase"] == "Verifying", status
    await assert_rolled_out(conn, parent)
    cleanups = [h for h in status["history"] if h["action"] == "Cleanup"]
    assert len(cleanups) == 1
    assert leftovers[0] in cleanups[0]["sql"]
    assert cleanups[0]["sql"].startswith("DROP INDEX CONCURRENTLY")


# -- windows --------------------------------------------------------------------------------------------------------


WINDOW_ENDS = [
    pytest.param(timedelta(seconds=-1), "WindowClosed", "WaitingForWindow", id="window closed"),
    # 100 s left: no build fits (an estimate of at least a second plus the two-minute margin), the next window's do.
    pytest.param(timedelta(seconds=100), "WindowTooShort", "WindowTooShort", id="too short for the next partition"),
]


@pytest.mark.parametrize(("end", "reason", "then"), WINDOW_ENDS)
async def test_a_window_closing_between_partitions_stops_there_and_the_next_window_finishes(
    conn: asyncpg.Connection,
    pg_database: str,
    api: CrashingApi,
    events: Recorder,
    end: timedelta,
    reason: str,
    then: str,
) -> None:
    name = await start(conn, api, pg_database)
    parent = api.status(name)["sql"].split('"')[1]
    doc = api.objects[("postgrestargets", "shop")]
    await conn.execute("SELECT pg_stat_statements_reset()")

    def close_window(status: dict[str, Any]) -> None:
        if step_written(status, "attach", "Done", 2):  # two partitions done: the window ends (edited, as a person)
            now = datetime.now(UTC)
            doc["spec"]["oneOffWindows"] = [
                {"start": (now - timedelta(hours=2)).isoformat(), "end": (now + end).isoformat()}
            ]
            api.hook = None

    api.hook = close_window
    ctx = context(api, events)
    status = await drive(ctx, api, name, "WaitingForWindow", "Verifying", "Failed")
    assert status["phase"] == "WaitingForWindow", status
    assert ready(status)["reason"] == reason
    baseline = status["baseline"]
    found = await indexes(conn)
    # Stopped between partitions: only partitioned tables' indexes are INVALID (as they are until their last
    # partition is attached; posts_old's ON ONLY is catalog work, done before the build the window cannot fit),
    # and no partition holds a half-built index.
    assert {t for t, _, valid, _ in found if not valid} <= {"posts", "posts_old"}, found
    built = {t for t, _, valid, up in found if valid and up is not None and t in LEAVES}
    assert built == {"posts_2024_01", "posts_2024_02"}, found  # partitions in name order; posts_old's come next
    for _ in range(3):  # the window stays closed (or too short): nothing more runs, and the change stays waiting
        await apply_flow.step(ctx, "ns", name)
    assert await indexes(conn) == found
    assert api.status(name)["phase"] == "WaitingForWindow"
    assert ready(api.status(name))["reason"] == then

    # The next window finishes the rollout, judged against the baseline taken before it began.
    now = datetime.now(UTC)
    doc["spec"]["oneOffWindows"] = [
        {"start": (now - timedelta(minutes=1)).isoformat(), "end": (now + timedelta(hours=2)).isoformat()}
    ]
    status = await drive(ctx, api, name, "Verifying", "Failed")
    assert status["phase"] == "Verifying", status
    await assert_rolled_out(conn, parent)
    assert status["baseline"] == baseline
    assert await builds_sent(conn) == dict.fromkeys(LEAVES, 1)


async def test_a_target_repointed_mid_rollout_stalls_before_the_next_statement(
    conn: asyncpg.Connection, pg_database: str, api: CrashingApi, events: Recorder
) -> None:
    name = await start(conn, api, pg_database)
    parent = api.status(name)["sql"].split('"')[1]
    target = api.objects[("postgrestargets", "shop")]
    actual = await conn.fetchval("SELECT system_identifier::text FROM pg_control_system()")

    def repoint(status: dict[str, Any]) -> None:
        if step_written(status, "build", "Done", 1):  # the target's recorded database changes under the rollout
            target["status"] = {"database": {"systemIdentifier": "1234567890"}}
            api.hook = None

    api.hook = repoint
    ctx = context(api, events)
    await conn.execute("SELECT pg_stat_statements_reset()")
    status = await drive(ctx, api, name, "WaitingForWindow", "Verifying", "Failed")
    assert status["phase"] == "WaitingForWindow", status
    assert ready(status)["reason"] == "DatabaseMismatch"
    assert any(c["type"] == "Stalled" for c in status["conditions"])
    # The statement after the check never ran: the first partition's index is built but not attached.
    assert await conn.fetchval("SELECT count(*) FROM pg_stat_statements WHERE query ~ '^ALTER INDEX'") == 0
    assert await builds_sent(conn) == {"posts_2024_01": 1}
    target["status"] = {"database": {"systemIdentifier": actual}}  # pointed back
    status = await drive(ctx, api, name, "Verifying", "Failed")
    assert status["phase"] == "Verifying", status
    await assert_rolled_out(conn, parent)


# -- ownership and drops ----------------------------------------------------------------------------------------


async def test_a_partition_index_name_someone_else_took_fails_the_change_before_anything_runs(
    conn: asyncpg.Connection, pg_database: str, api: CrashingApi, events: Recorder
) -> None:
    name = await start(conn, api, pg_database)
    taken = next(s for s in api.status(name)["sql"].split(";\n") if "posts_2024_02" in s).split('"')[1]
    await conn.execute(f'CREATE INDEX "{taken}" ON posts_2024_02 (body)')
    before = await indexes(conn)
    status = await drive(context(api, events), api, name, "Verifying", "Failed")
    assert status["phase"] == "Failed"
    assert ready(status)["reason"] == "IndexNameTaken"
    assert "never started building it" in ready(status)["message"]
    assert await indexes(conn) == before, "nothing was built, attached or dropped"


async def test_a_drop_of_a_partitioned_index_and_its_rollback_rolled_out_again(
    conn: asyncpg.Connection, pg_database: str, api: CrashingApi, events: Recorder
) -> None:
    await conn.execute(SCHEMA)
    await conn.execute("CREATE INDEX posts_author ON posts (author_id)")  # someone's, built the blocking way
    api.put("postgrestargets", target_doc(pg_database))
    index = {**INDEX, "name": "posts_author"}
    api.put("indexchanges", change_doc("drop", operation="drop", index=index, schedule="nextWindow"))
    status = await admit(api, "drop")
    assert status["phase"] == "WaitingForWindow", status
    assert status["sql"] == 'DROP INDEX IF EXISTS "public"."posts_author"'
    ctx = context(api, events)
    status = await drive(ctx, api, "drop", "Verifying", "Failed")
    assert status["phase"] == "Verifying", status
    assert await indexes(conn) == [], "the parent's index went with every partition's"
    assert status["rollbackSql"].startswith('CREATE INDEX "posts_author" ON ONLY "public"."posts"')
    await force_regression(api, conn, "drop")
    status = await drive(ctx, api, "drop", "RolledBack", "Applied", "Failed")
    assert status["phase"] == "RolledBack", status
    await assert_rolled_out(conn, "posts_author")


# -- a build that times out on its lock ---------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["plain", "posts"], ids=["ordinary table", "partitioned table"])
async def test_a_concurrent_build_timing_out_on_older_writers_is_retried_without_a_leftover(
    conn: asyncpg.Connection, pg_database: str, api: CrashingApi, events: Recorder, table: str
) -> None:
    # CREATE INDEX CONCURRENTLY times out on lock_timeout also while waiting for older writers, after its catalog
    # entry exists: an INVALID index is left, and a retry of the same statement would fail ("already exists").
    await conn.execute(SCHEMA + "CREATE TABLE plain (id int, author_id int); INSERT INTO plain VALUES (1, 1);")
    api.put("postgrestargets", target_doc(pg_database))
    index = {"table": table, "columns": [{"name": "author_id"}]}
    api.put("indexchanges", change_doc("held", operation="create", index=index, schedule="nextWindow"))
    assert (await admit(api, "held"))["phase"] == "WaitingForWindow"
    ctx = context(api, events)  # lock_timeout 2 s, backoff from 0.2 s
    holder = await asyncpg.connect(pg_database)
    write = {
        "plain": "INSERT INTO plain VALUES (0, 0)",
        "posts": "INSERT INTO posts_2024_01 VALUES (0, 0, 'held', '2024-01-02')",  # the first partition built
    }[table]
    try:
        await holder.execute("BEGIN")
        await holder.execute(write)
        stepping = asyncio.create_task(drive(ctx, api, "held", "Verifying", "Failed", steps=200))
        await asyncio.sleep(5)  # two lock timeouts at least
        assert not stepping.done()
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()
    status = await asyncio.wait_for(stepping, 120)
    assert status["phase"] == "Verifying", status
    assert await invalid_indexes(conn) == []
    actions = [h["action"] for h in status["history"]]
    assert "Retry" in actions
    assert "Cleanup" in actions
    if table == "posts":
        await assert_rolled_out(conn, status["sql"].split('"')[1])
    else:
        assert len(await conn.fetch("SELECT 1 FROM pg_indexes WHERE tablename = 'plain'")) == 1


# -- the recommendation a reviewer sees ------------------------------------------------------------------------------


async def test_a_recommendation_on_a_partitioned_table_shows_the_whole_rollout(pg_database: str) -> None:
    await setup(pg_database, SCHEMA, [f"SELECT body FROM posts WHERE author_id = {a}" for a in (7, 11, 42)])
    result = await analyze(pg_database, NO_SAMPLES)
    (proposed,) = [r for r in result.recommendations if r.kind == "createIndex"]
    assert proposed.change.index is not None
    assert proposed.change.index.table == "posts"
    lines = proposed.sql.split(";\n")
    name = proposed.change.index.name
    assert lines[0] == f'CREATE INDEX "{name}" ON ONLY "public"."posts" ("author_id")'
    assert sum(line.startswith("CREATE INDEX CONCURRENTLY") for line in lines) == len(LEAVES)
    assert sum(' ON ONLY "public"."posts_old"' in line for line in lines) == 1
    assert sum(" ATTACH PARTITION " in line for line in lines) == len(LEAVES) + 1
    assert proposed.rollback_sql == f'DROP INDEX IF EXISTS "public"."{name}"'
    # What the recommendation's admission check renders from the change it carries is the same text.
    spec = TuningRecommendationSpec.model_validate(
        {
            "targetRef": {"name": "db"},
            "kind": "createIndex",
            "change": proposed.change.to_wire(),
            "sql": proposed.sql,
            "rollbackSql": proposed.rollback_sql,
            "rationale": proposed.rationale,
        }
    )
    assert rendered_sql(spec) == proposed.sql
