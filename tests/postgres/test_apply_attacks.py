"""Attacks on the apply path, tried on a real PostgreSQL: each test asserts what did *not* happen to the database.

``flows.apply.step`` and admission (``flows.changes``) run as the operator runs them, against real servers; only the
Kubernetes API is a dictionary here (:class:`Api`, merge-patching status as the API server does), so that a test
can put a change in exactly the state an attack needs. The same attacks against the real API server and operator
process are in ``tests/k8s/test_apply_attacks.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import structlog
from prometheus_client import REGISTRY

from devcluster import LocalPostgres
from optischema.flows import apply as apply_flow
from optischema.flows import changes as admission

_names = itertools.count()


def merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch, as the API server applies a status patch."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


class Api:
    """The few calls ``flows.apply`` makes of the Kubernetes API, over a dictionary of objects."""

    clusters = None  # no CloudNativePG Clusters here: the targets name hosts (flows.target.locate)

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets = {"shop-db": {"username": "postgres", "password": "pw"}}

    def put(self, plural: str, body: dict[str, Any]) -> None:
        body.setdefault("metadata", {}).setdefault("namespace", "ns")
        body["metadata"].setdefault("uid", f"uid-{next(_names)}")
        body["metadata"].setdefault("generation", 1)
        body["metadata"].setdefault("creationTimestamp", datetime.now(UTC).isoformat())
        self.objects[(plural, body["metadata"]["name"])] = body

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        try:
            return copy.deepcopy(self.objects[(plural, name)])
        except KeyError:
            raise LookupError(f"{plural}/{name} not found") from None

    async def list(self, plural: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        return [copy.deepcopy(body) for (kind, _), body in self.objects.items() if kind == plural]

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        body = self.objects[(plural, name)]
        merge(body.setdefault("status", {}), status)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.secrets.get(name)

    def status(self, name: str) -> dict[str, Any]:
        return self.objects[("indexchanges", name)].get("status") or {}


def target_doc(dsn: str, **spec: Any) -> dict[str, Any]:
    where = urlsplit(dsn)
    now = datetime.now(UTC)
    return {
        "metadata": {"name": "shop"},
        "spec": {
            "connection": {
                "host": where.hostname,
                "port": where.port,
                "database": where.path.lstrip("/"),
                "sslmode": "disable",
                "connectTimeoutSeconds": 3,
                "credentialsSecret": {"name": "shop-db"},
                "writeCredentialsSecret": {"name": "shop-db"},
            },
            "policy": {"allowImmediate": True, "allowedKinds": ["createIndex", "dropIndex", "analyze", "setting"]},
            "maintenanceWindows": [],
            "oneOffWindows": [
                {"start": (now - timedelta(minutes=5)).isoformat(), "end": (now + timedelta(hours=2)).isoformat()}
            ],
            **spec,
        },
    }


def change_doc(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"name": "shop"},
            "verification": {"observeSeconds": 0, "minCalls": 5, "maxRegressionPercent": 10},
            **spec,
        },
    }


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def __call__(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))


def context(api: Api, events: Recorder) -> apply_flow.Context:
    return apply_flow.Context(
        kube=api,
        now=lambda: datetime.now(UTC),
        actor="test",
        emit=events,
        log=structlog.get_logger("test"),
        lock_timeout_ms=2000,
        retry_backoff=0.2,
        check_seconds=0.2,
    )


async def admit(api: Api, name: str) -> dict[str, Any]:
    """Admission as the handler runs it (facts from the API and the database, then the pure decision)."""
    body = api.objects[("indexchanges", name)]
    facts = await admission.gather(api, "ns", name, body["spec"])
    assert facts.unreachable is None, facts.unreachable
    verdict = admission.admit(body["spec"], facts, now=datetime.now(UTC), generation=1, status=body.get("status"))
    await api.patch_status("indexchanges", "ns", name, verdict.status)
    return api.status(name)


async def drive(ctx: apply_flow.Context, api: Api, name: str, *until: str, steps: int = 40) -> dict[str, Any]:
    """Step the change until its phase is one of ``until`` (or it is final)."""
    for _ in range(steps):
        wait = await apply_flow.step(ctx, "ns", name)
        if api.status(name).get("phase") in until or wait is None:
            break
        await asyncio.sleep(min(wait, 0.2))
    return api.status(name)


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


async def ran(conn: asyncpg.Connection, pattern: str) -> list[str]:
    """Statements matching ``pattern`` that reached this database (pg_stat_statements, all sessions), but for the
    ownership probe's own (a temporary table and index, rolled back: ``catalog.rendered_shape``)."""
    rows = await conn.fetch(
        "SELECT query FROM pg_stat_statements WHERE query ~* $1 AND query !~ 'optischema_shape_probe' "
        "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        pattern,
    )
    return [r["query"] for r in rows]


async def indexdef(conn: asyncpg.Connection, name: str) -> str | None:
    value = await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = $1", name)
    return None if value is None else str(value)


async def invalid_indexes(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid WHERE NOT x.indisvalid"
    )
    return [r["relname"] for r in rows]


def executed(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "optischema_statements_executed_total", {"namespace": "ns", "target": "shop", "outcome": outcome}
        )
        or 0.0
    )


async def force_regression(api: Api, conn: asyncpg.Connection, name: str) -> None:
    """Make verification see a regression: the baseline says a statement took a microsecond, then it runs (for a
    couple of milliseconds, well above the noise floor) enough times for a verdict."""
    query = "SELECT pg_sleep(0.002), $1::int AS forced_regression"
    for _ in range(3):
        await conn.fetch(query, 1)
    query_id = await conn.fetchval(
        "SELECT queryid::text FROM pg_stat_statements WHERE query ~ 'AS forced_regression' "
        "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY calls DESC LIMIT 1"
    )
    assert query_id is not None
    baseline = api.status(name)["baseline"]
    baseline["reads"] = [{"queryId": query_id, "calls": 1, "totalMs": 0.0001}]
    baseline["writes"] = []
    await api.patch_status("indexchanges", "ns", name, {"baseline": baseline})
    for _ in range(30):
        await conn.fetch(query, 1)


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def events() -> Recorder:
    return Recorder()


# -- 1. the name collision ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("named", [True, False], ids=["names the index", "default name"])
async def test_an_existing_unique_index_is_never_taken_as_built_nor_dropped(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder, named: bool
) -> None:
    # Someone's plain UNIQUE index under PostgreSQL's default name; a Git IndexChange for the same column.
    await conn.execute("CREATE TABLE t (id int, a int)")
    await conn.execute("INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g")
    await conn.execute("CREATE UNIQUE INDEX t_a_idx ON t (a)")
    before = await indexdef(conn, "t_a_idx")
    api.put("postgrestargets", target_doc(pg_database))
    index = {"table": "t", "columns": [{"name": "a"}], **({"name": "t_a_idx"} if named else {})}
    api.put("indexchanges", change_doc("collide", operation="create", index=index, schedule="immediate"))
    ctx = context(api, events)

    status = await admit(api, "collide")
    if named:  # refused at admission: the name is taken
        assert status["phase"] == "Failed"
        assert ready(status)["reason"] == "IndexNameTaken"
        # Admission skipped or raced (the index created after it): the pre-check refuses the same way.
        api.objects[("indexchanges", "collide")]["status"] = {"phase": "WaitingForWindow", "conditions": []}
        status = await drive(ctx, api, "collide", "Failed", "Verifying", "Applied")
        assert status["phase"] == "Failed"
        assert ready(status)["reason"] == "IndexNameTaken"
        # And a forged status claiming it was applied: a forced regression's rollback must not drop it.
        await conn.execute("SELECT pg_stat_statements_reset()")
        api.objects[("indexchanges", "collide")]["status"] = {
            "phase": "Verifying",
            "appliedAt": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            "baseline": {"takenAt": datetime.now(UTC).isoformat(), "reads": [], "writes": []},
            "conditions": [],
        }
        await force_regression(api, conn, "collide")
        status = await drive(ctx, api, "collide", "Failed", "RolledBack", "Applied")
        assert status["phase"] == "Failed", status
        assert "nothing was touched" in ready(status)["message"]
    else:  # a generated name is the definition's own: it builds its own index beside the unique one
        assert status["phase"] == "WaitingForWindow"
        status = await drive(ctx, api, "collide", "Verifying", "Failed")
        assert status["phase"] == "Verifying", status
        await force_regression(api, conn, "collide")
        status = await drive(ctx, api, "collide", "RolledBack", "Applied", "Failed")
        assert status["phase"] == "RolledBack", status
    # What did not happen: the unique index is there, unchanged, still unique, and no statement dropped it.
    assert await indexdef(conn, "t_a_idx") == before
    assert before is not None
    assert before.startswith("CREATE UNIQUE INDEX")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute("INSERT INTO t VALUES (0, 1)")
    dropped = await ran(conn, r"drop index")
    assert all('t_a_idx"' not in q and " t_a_idx" not in q for q in dropped), dropped


# -- 2. drops of what must never go ---------------------------------------------------------------------------------


PROTECTED = [
    pytest.param("t_pkey", {"columns": [{"name": "id"}], "unique": True}, "ProtectedIndex", "backs constraint",
                 id="primary key"),
    pytest.param("t_code_key", {"columns": [{"name": "code"}], "unique": True}, "ProtectedIndex", "backs constraint",
                 id="unique constraint"),
    pytest.param("t_ref_idx", {"columns": [{"name": "ref"}], "unique": True}, "ProtectedIndex", "replica identity",
                 id="replica identity"),
    pytest.param("t_lone_unique", {"columns": [{"name": "b"}], "unique": True}, "ProtectedIndex",
                 "no other valid index enforces", id="lone unique index"),
    pytest.param("t_b_plain", {"columns": [{"name": "code"}]}, "IndexMismatch", "the change describes",
                 id="another definition"),
    pytest.param("t_b_plain", {"columns": [{"name": "b"}], "table": "other"}, "IndexMismatch", "is on public.t",
                 id="another table"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "index", "reason", "why"), PROTECTED)
async def test_a_drop_of_a_protected_or_mismatched_index_is_refused(
    conn: asyncpg.Connection,
    pg_database: str,
    api: Api,
    events: Recorder,
    name: str,
    index: dict[str, Any],
    reason: str,
    why: str,
) -> None:
    await conn.execute(
        "CREATE TABLE t (id int PRIMARY KEY, code text UNIQUE, ref int NOT NULL, b int);"
        "CREATE TABLE other (b int);"
        "CREATE UNIQUE INDEX t_ref_idx ON t (ref); ALTER TABLE t REPLICA IDENTITY USING INDEX t_ref_idx;"
        "CREATE UNIQUE INDEX t_lone_unique ON t (b); CREATE INDEX t_b_plain ON t (b);"
    )
    before = {row["indexname"]: row["indexdef"] for row in await conn.fetch("SELECT * FROM pg_indexes")}
    api.put("postgrestargets", target_doc(pg_database))
    spec = {"table": "t", "name": name, **index}
    api.put("indexchanges", change_doc("drop", operation="drop", index=spec, schedule="immediate"))
    status = await admit(api, "drop")
    assert status["phase"] == "Failed"
    assert (ready(status)["reason"], why in ready(status)["message"]) == (reason, True), ready(status)
    # The same refusal right before the statement (admission skipped, or the database changed since).
    api.objects[("indexchanges", "drop")]["status"] = {"phase": "WaitingForWindow", "conditions": []}
    status = await drive(context(api, events), api, "drop", "Failed", "Verifying")
    assert status["phase"] == "Failed"
    assert ready(status)["reason"] == reason
    after = {row["indexname"]: row["indexdef"] for row in await conn.fetch("SELECT * FROM pg_indexes")}
    assert after == before, "no index was dropped"
    assert await ran(conn, r"^drop index") == []


async def test_a_unique_index_may_go_when_another_enforces_the_same(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder
) -> None:
    await conn.execute("CREATE TABLE t (a int, b int); CREATE UNIQUE INDEX t_a ON t (a)")
    await conn.execute("CREATE UNIQUE INDEX t_a_b ON t (a, b)")  # implied by t_a: redundant
    api.put("postgrestargets", target_doc(pg_database))
    spec = {"table": "t", "name": "t_a_b", "unique": True, "columns": [{"name": "a"}, {"name": "b"}]}
    api.put("indexchanges", change_doc("redundant", operation="drop", index=spec, schedule="immediate"))
    assert (await admit(api, "redundant"))["phase"] == "WaitingForWindow"
    status = await drive(context(api, events), api, "redundant", "Verifying", "Failed")
    assert status["phase"] == "Verifying", status
    assert await indexdef(conn, "t_a_b") is None
    assert await indexdef(conn, "t_a") is not None


async def test_a_drops_rollback_recreates_the_captured_definition(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder
) -> None:
    await conn.execute("CREATE TABLE t (id int, b int, c text)")
    await conn.execute("INSERT INTO t SELECT g, g % 50, md5(g::text) FROM generate_series(1, 5000) g")
    # Options the structured definition cannot express (fillfactor): the rollback must bring them back too.
    await conn.execute("CREATE INDEX t_b_part ON t (b) INCLUDE (c) WITH (fillfactor = 70) WHERE b > 0")
    captured = await indexdef(conn, "t_b_part")
    api.put("postgrestargets", target_doc(pg_database))
    spec = {"table": "t", "name": "t_b_part", "columns": [{"name": "b"}], "include": ["c"], "where": "b > 0"}
    api.put("indexchanges", change_doc("unused", operation="drop", index=spec, schedule="immediate"))
    assert (await admit(api, "unused"))["phase"] == "WaitingForWindow"
    ctx = context(api, events)
    status = await drive(ctx, api, "unused", "Verifying", "Failed")
    assert status["phase"] == "Verifying", status
    assert status["droppedDefinition"] == captured
    assert await indexdef(conn, "t_b_part") is None
    await force_regression(api, conn, "unused")
    status = await drive(ctx, api, "unused", "RolledBack", "Applied", "Failed")
    assert status["phase"] == "RolledBack", status
    assert await indexdef(conn, "t_b_part") == captured, "re-created exactly as it was, options included"
    assert status["history"][-1]["sql"] == captured.replace("CREATE INDEX ", "CREATE INDEX CONCURRENTLY ", 1)


# -- 3. checked right before each statement -----------------------------------------------------------------------


OPERATIONS = [
    pytest.param({"operation": "create", "index": {"table": "t", "columns": [{"name": "a"}]}}, id="create"),
    pytest.param({"operation": "drop", "index": {"table": "t", "name": "t_b", "columns": [{"name": "b"}]}}, id="drop"),
    pytest.param({"operation": "setting", "setting": {"name": "work_mem", "value": "77MB"}}, id="ALTER SYSTEM"),
]


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_a_window_that_closes_between_precheck_and_execute_runs_nothing(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder, operation: dict[str, Any]
) -> None:
    await conn.execute("CREATE TABLE t (a int, b int); CREATE INDEX t_b ON t (b)")
    doc = target_doc(pg_database)
    api.put("postgrestargets", doc)
    api.put("indexchanges", change_doc("late", **operation))
    assert (await admit(api, "late"))["phase"] == "WaitingForWindow"
    ctx = context(api, events)
    await apply_flow.step(ctx, "ns", "late")  # pre-checks pass in the open window
    assert api.status("late")["phase"] == "Applying"
    await conn.execute("SELECT pg_stat_statements_reset()")
    indexes = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 't'")
    work_mem = await conn.fetchval("SELECT setting FROM pg_settings WHERE name = 'work_mem'")
    counted = executed("Succeeded") + executed("Failed")
    # The window closes (edited away, as a person shortening it would) before the statement is sent.
    now = datetime.now(UTC)
    doc["spec"]["oneOffWindows"] = [
        {"start": (now - timedelta(hours=2)).isoformat(), "end": (now - timedelta(seconds=1)).isoformat()}
    ]
    await apply_flow.step(ctx, "ns", "late")
    status = api.status("late")
    assert status["phase"] == "WaitingForWindow"
    assert ready(status)["reason"] == "WindowClosed"
    assert status["history"][-1]["action"] == "Recheck"
    # Nothing ran: no DDL and no ALTER SYSTEM reached the server, the catalogs and settings are as they were.
    assert await ran(conn, r"^(create|drop|alter|reindex)") == []
    assert await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 't'") == indexes
    assert await conn.fetchval("SELECT setting FROM pg_settings WHERE name = 'work_mem'") == work_mem
    auto = await conn.fetchval("SELECT count(*) FROM pg_file_settings WHERE name = 'work_mem' AND sourcefile ~ 'auto'")
    assert auto == 0, "postgresql.auto.conf was not written"
    assert executed("Succeeded") + executed("Failed") == counted


async def test_an_operator_clock_behind_the_database_never_stretches_a_window(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder
) -> None:
    # The window ended a minute ago by the database's clock; the operator's clock is ten minutes behind and
    # believes it open for nine more. Judged by both clocks, nothing starts, and the skew is said.
    await conn.execute("CREATE TABLE t (a int)")
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(hours=1)).isoformat(), "end": (now - timedelta(minutes=1)).isoformat()}
    api.put("postgrestargets", target_doc(pg_database, oneOffWindows=[window]))
    api.put("indexchanges", change_doc("skewed", operation="create", index={"table": "t", "columns": [{"name": "a"}]}))
    assert (await admit(api, "skewed"))["phase"] == "WaitingForWindow"
    ctx = context(api, events)
    ctx.now = lambda: datetime.now(UTC) - timedelta(minutes=10)
    await conn.execute("SELECT pg_stat_statements_reset()")
    for _ in range(3):
        await apply_flow.step(ctx, "ns", "skewed")
    status = api.status("skewed")
    assert status["phase"] == "WaitingForWindow"
    assert ready(status)["reason"] == "WindowClosed"
    assert "the operator's clock is about 10 min behind the database's" in ready(status)["message"]
    assert "history" not in status, "a pre-check saying 'not yet' is not an audit entry"
    assert await ran(conn, r"^(create|drop|alter)") == []
    assert await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 't'") == []


# -- 4. a target whose database was replaced ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_server() -> Iterator[LocalPostgres]:
    """A second PostgreSQL cluster (its own system_identifier): the database a target gets repointed to."""
    server = LocalPostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def twin(server: LocalPostgres) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A database of the same name and schema on another cluster."""
    name = f"twin{next(_names)}"
    server.psql(f"CREATE DATABASE {name}")
    server.psql("CREATE EXTENSION pg_stat_statements", database=name)
    dsn = server.dsn(name)
    conn = await asyncpg.connect(dsn)
    try:
        yield dsn, conn
    finally:
        await conn.close()
        server.psql(f"DROP DATABASE {name} WITH (FORCE)")


async def test_a_target_repointed_to_another_database_stalls_and_nothing_runs(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder, other_server: LocalPostgres
) -> None:
    await conn.execute("CREATE TABLE t (a int)")
    doc = target_doc(pg_database)
    api.put("postgrestargets", doc)
    api.put("indexchanges", change_doc("moved", operation="create", index={"table": "t", "columns": [{"name": "a"}]}))
    assert (await admit(api, "moved"))["phase"] == "WaitingForWindow"
    ctx = context(api, events)
    await apply_flow.step(ctx, "ns", "moved")
    assert api.status("moved")["phase"] == "Applying"
    async with twin(other_server) as (dsn, replaced):
        await replaced.execute("CREATE TABLE t (a int)")
        await replaced.execute("SELECT pg_stat_statements_reset()")
        where = urlsplit(dsn)
        doc["spec"]["connection"] |= {"host": where.hostname, "port": where.port, "database": where.path[1:]}
        for _ in range(3):  # re-checked every time; never runs
            await apply_flow.step(ctx, "ns", "moved")
        status = api.status("moved")
        assert status["phase"] == "WaitingForWindow"
        stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
        assert stalled["reason"] == "DatabaseMismatch"
        assert any(kind == "Warning" and reason == "DatabaseMismatch" for kind, reason, _ in events.events)
        assert await ran(replaced, r"^(create|drop|alter)") == []
        assert await replaced.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 't'") == []
    assert await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 't'") == []


# -- 5. lost connections mid-build --------------------------------------------------------------------------------


class Proxy:
    """A TCP relay in front of the server, whose connections the test can cut (a network failure)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


async def building(conn: asyncpg.Connection) -> int | None:
    pid = await conn.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'optischema-apply' AND query ILIKE 'CREATE INDEX%'"
    )
    return None if pid is None else int(pid)


@pytest.mark.parametrize("how", ["pg_terminate_backend", "connection dropped"])
async def test_a_build_whose_connection_is_lost_waits_then_drops_its_leftover_and_builds(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder, how: str
) -> None:
    await conn.execute("CREATE TABLE big (id bigint, a bigint, c text)")
    await conn.execute("INSERT INTO big SELECT g, g % 1000, md5(g::text) FROM generate_series(1, 1500000) g")
    await conn.execute("VACUUM ANALYZE big")
    where = urlsplit(pg_database)
    proxy = Proxy(where.hostname or "127.0.0.1", where.port or 5432)
    port = await proxy.start()
    doc = target_doc(pg_database)
    doc["spec"]["connection"]["port"] = port
    api.put("postgrestargets", doc)
    index = {"table": "big", "columns": [{"name": "c"}, {"name": "a"}]}
    api.put("indexchanges", change_doc("lost", operation="create", index=index, schedule="immediate"))
    try:
        assert (await admit(api, "lost"))["phase"] == "WaitingForWindow"
        ctx = context(api, events)
        await apply_flow.step(ctx, "ns", "lost")
        assert api.status("lost")["phase"] == "Applying"
        name = api.status("lost")["sql"].split('"')[1]
        failed_before = executed("Failed")
        stepping = asyncio.create_task(apply_flow.step(ctx, "ns", "lost"))
        for _ in range(200):
            pid = await building(conn)
            if pid is not None:
                break
            await asyncio.sleep(0.05)
        assert pid is not None, "the build started"
        if how == "pg_terminate_backend":
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        else:
            proxy.cut()
        await asyncio.wait_for(stepping, 60)
        status = api.status("lost")
        # Back to waiting, not Failed; the marker written before the build says the leftover is ours.
        assert status["phase"] == "WaitingForWindow", status
        assert ready(status)["reason"] == "ConnectionLost"
        assert status["execution"]["indexName"] == name
        assert executed("Failed") == failed_before + 1
        for _ in range(100):  # the server notices the client is gone (client_connection_check_interval)
            if await building(conn) is None:
                break
            await asyncio.sleep(0.1)
        assert await invalid_indexes(conn) == [name], "the interrupted build left an INVALID index"
        # The next attempt drops the INVALID leftover, then builds.
        status = await drive(ctx, api, "lost", "Verifying", "Failed", steps=200)
        assert status["phase"] == "Verifying", status
    finally:
        await proxy.close()
    assert await invalid_indexes(conn) == [], "no INVALID index remains"
    valid = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'big'")
    assert [r["indexname"] for r in valid] == [name], "one valid index, no duplicate"
    actions = [(h["action"], h["outcome"]) for h in status["history"]]
    assert actions == [
        ("Precheck", "Succeeded"),
        ("Execute", "Failed"),
        ("Precheck", "Succeeded"),
        ("Cleanup", "Succeeded"),
        ("Execute", "Succeeded"),
    ], actions


# -- 6. a verification across a statistics reset ------------------------------------------------------------------


async def test_a_verification_across_a_statistics_reset_is_inconclusive_and_rolls_nothing_back(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder
) -> None:
    await conn.execute("CREATE TABLE t (id int, a int)")
    await conn.execute("INSERT INTO t SELECT g, g % 100 FROM generate_series(1, 10000) g")
    api.put("postgrestargets", target_doc(pg_database))
    api.put("indexchanges", change_doc("reset", operation="create", index={"table": "t", "columns": [{"name": "a"}]}))
    assert (await admit(api, "reset"))["phase"] == "WaitingForWindow"
    ctx = context(api, events)
    status = await drive(ctx, api, "reset", "Verifying", "Failed")
    assert status["phase"] == "Verifying", status
    name = status["execution"]["indexName"]
    assert status["baseline"]["statsReset"], "the baseline records when the statistics were last reset"
    # Without the reset this is a regression (test_an_existing_unique_index_...[default name] rolls back on it).
    await asyncio.sleep(0.01)
    await conn.execute("SELECT pg_stat_statements_reset()")
    await force_regression(api, conn, "reset")
    status = await drive(ctx, api, "reset", "Applied", "RolledBack", "Failed")
    assert status["phase"] == "Applied", status
    assert status["verification"]["verdict"] == "Inconclusive"
    assert "reset" in ready(status)["message"]
    assert await indexdef(conn, name) is not None, "the index stays"
    assert await ran(conn, r"^drop index") == []


@pytest.mark.parametrize(
    "column",
    [
        pytest.param({"expression": "lower('abc"}, id="unterminated quote"),
        pytest.param({"expression": "(" * 60 + "a" + ")" * 60}, id="60-deep parentheses"),
        pytest.param({"expression": "a || $$x"}, id="open dollar quote"),
    ],
)
async def test_a_change_whose_expression_does_not_parse_fails_at_admission_with_the_reason(
    conn: asyncpg.Connection, pg_database: str, api: Api, column: dict[str, Any]
) -> None:
    """sqlglot raises TokenError (not a ParseError) or RecursionError on these: admission must end ``Failed``
    naming the field, never raise into kopf's endless retry."""
    await conn.execute("CREATE TABLE t (a text)")
    before = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 't'")
    api.put("postgrestargets", target_doc(pg_database))
    api.put("indexchanges", change_doc("bad", operation="create", index={"table": "t", "columns": [column]}))
    status = await admit(api, "bad")
    assert status["phase"] == "Failed"
    assert "index.columns[0].expression:" in ready(status)["message"], ready(status)
    assert await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 't'") == before
    assert await ran(conn, r"^create index") == []


# -- a name sqlglot knows that PostgreSQL resolves to someone's function -------------------------------------------


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("columns", "ifnull(a, 0)"),  # sqlglot: exp.Coalesce; PostgreSQL: no such built-in, so public.ifnull
        ("columns", "nvl(a, 0)"),
        ("where", "xor(a > 0, a < 5)"),  # sqlglot: exp.Xor, an operator to it; PostgreSQL: public.xor
        ("columns", "a::counted"),  # a domain whose CHECK calls the function
        ("columns", "a::int64"),  # sqlglot: BIGINT; PostgreSQL: no such built-in type, so public.int64
        ("columns", 'a::"Int4"'),  # quoted: a domain called Int4, not int4
        ("columns", "public.abs(a)"),  # qualified: public's abs, not pg_catalog's
        ("columns", '"ABS"(a)'),  # quoted: a function called ABS, not abs
    ],
)
async def test_an_expression_calling_a_users_function_under_a_known_name_is_refused(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder, field: str, text: str
) -> None:
    """Any database user with CREATE on a schema of the search path can define ``ifnull``, ``nvl`` or ``xor``
    (names sqlglot maps to classes of its own, but no PostgreSQL built-in) as IMMUTABLE: an index on it would run
    their code for every row built and every later write, as whoever writes. The call is counted by a sequence
    (``nextval`` is allowed in an IMMUTABLE function, and survives the admission probe's rollback)."""
    await conn.execute("CREATE SEQUENCE calls")
    counted = "$$ SELECT nextval('calls') > 0 $$"
    for signature, returns, body in [
        ("public.ifnull(a int, b int)", "int", "$$ SELECT nextval('calls')::int $$"),
        ("public.nvl(a int, b int)", "int", "$$ SELECT nextval('calls')::int $$"),
        ("public.xor(a bool, b bool)", "bool", counted),
        ("public.abs(a int)", "int", "$$ SELECT nextval('calls')::int $$"),
        ('public."ABS"(a int)', "int", "$$ SELECT nextval('calls')::int $$"),
    ]:
        await conn.execute(f"CREATE FUNCTION {signature} RETURNS {returns} IMMUTABLE LANGUAGE sql AS {body}")
    for domain in ("counted", "int64", '"Int4"'):
        await conn.execute(f"CREATE DOMAIN public.{domain} AS int CHECK (VALUE + public.abs(VALUE) IS NOT NULL)")
    await conn.execute("CREATE TABLE t (a int); INSERT INTO t SELECT generate_series(1, 10)")
    index: dict[str, Any] = {"table": "t", "columns": [{"name": "a"}]}
    if field == "columns":
        index["columns"] = [{"expression": text}]
    else:
        index["where"] = text
    api.put("postgrestargets", target_doc(pg_database))
    api.put("indexchanges", change_doc("users-function", operation="create", index=index))
    status = await admit(api, "users-function")
    if status.get("phase") != "Failed":
        status = await drive(context(api, events), api, "users-function", "Applied", "Failed", "RolledBack")
        await conn.execute("INSERT INTO t VALUES (11)")
    assert status["phase"] == "Failed", status
    assert f"index.{'columns[0].expression' if field == 'columns' else 'where'}:" in ready(status)["message"]
    assert await conn.fetchval("SELECT is_called FROM calls") is False  # the function never ran
    assert await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 't'") == []


async def test_every_allow_listed_index_function_and_type_is_a_built_in(conn: asyncpg.Connection) -> None:
    """``changes.ddl``'s allow-lists are checked against PostgreSQL's own catalog: each function exists in
    ``pg_catalog`` with an IMMUTABLE overload (an index accepts nothing else) and none VOLATILE or SECURITY
    DEFINER; each type name is a ``pg_catalog`` type or a name PostgreSQL's grammar maps to one."""
    from optischema.changes.ddl import INDEX_FUNCTIONS, INDEX_TYPES

    rows = await conn.fetch(
        """
        SELECT p.proname, bool_or(p.provolatile = 'i') AS immutable, bool_or(p.provolatile = 'v') AS volatile,
               bool_or(p.prosecdef) AS definer
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg_catalog' AND p.proname = ANY($1::text[])
        GROUP BY p.proname
        """,
        sorted(INDEX_FUNCTIONS),
    )
    found = {row["proname"]: row for row in rows}
    assert sorted(INDEX_FUNCTIONS - found.keys()) == [], "allow-listed names that are no built-in function"
    assert sorted(n for n, r in found.items() if not r["immutable"] or r["volatile"] or r["definer"]) == []
    grammar = {"int", "integer", "smallint", "bigint", "decimal", "real", "double", "character", "boolean", "timestamp"}
    types = await conn.fetch(
        "SELECT typname FROM pg_type WHERE typnamespace = 'pg_catalog'::regnamespace AND typname = ANY($1::text[])",
        sorted(INDEX_TYPES - grammar),
    )
    assert sorted(INDEX_TYPES - grammar - {r["typname"] for r in types}) == []


async def test_a_users_overload_of_a_built_in_never_becomes_the_index_s_function(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder
) -> None:
    """``lower(e)`` on a varchar column: a ``public.lower(varchar)`` is an exact match, which PostgreSQL prefers to
    ``pg_catalog.lower(text)`` wherever public is on the search path (CVE-2018-1058's pattern). The operator builds
    under ``search_path = pg_catalog, pg_temp``: the index calls the built-in, and the user's function never runs,
    neither while building nor on later writes."""
    await conn.execute("CREATE SEQUENCE calls")
    await conn.execute(
        "CREATE FUNCTION public.lower(x varchar) RETURNS text IMMUTABLE LANGUAGE sql "
        "AS $$ SELECT pg_catalog.lower(x) || (nextval('calls') * 0)::text $$"
    )
    await conn.execute("CREATE TABLE v (e varchar(20)); INSERT INTO v VALUES ('A'), ('B')")
    api.put("postgrestargets", target_doc(pg_database))
    api.put(
        "indexchanges",
        change_doc("overload", operation="create", index={"table": "v", "columns": [{"expression": "lower(e)"}]}),
    )
    status = await admit(api, "overload")
    status = await drive(context(api, events), api, "overload", "Applied", "Failed", "RolledBack")
    assert status["phase"] == "Applied", status
    await conn.execute("INSERT INTO v VALUES ('C')")
    assert await conn.fetchval("SELECT is_called FROM calls") is False  # the user's lower never ran
    users_functions = await conn.fetch(  # a built-in is pinned (no pg_depend row); a user's function is recorded
        "SELECT p.proname FROM pg_depend d JOIN pg_proc p ON p.oid = d.refobjid "
        "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_proc'::regclass "
        "AND d.objid = (SELECT indexrelid FROM pg_index WHERE indrelid = 'v'::regclass)"
    )
    assert users_functions == []
    indexdef = await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE tablename = 'v'")
    assert "lower((e)::text)" in indexdef  # the built-in lower(text), its varchar argument cast


async def test_a_predicate_read_as_a_string_by_sqlglot_is_read_the_same_by_postgresql(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder
) -> None:
    """With ``standard_conforming_strings = off`` (``ALTER DATABASE … SET``, the database owner's to choose), a
    backslash escapes a quote in an ordinary string: ``'\\' || ' || ifnull(1, 0)::text IS NOT NULL -- '`` is two
    strings to sqlglot, but a call of ``ifnull`` to PostgreSQL. The operator's sessions lex as sqlglot does."""
    await conn.execute(  # runs even in a read-only session, and says so in whatever error reaches the status
        "CREATE FUNCTION public.ifnull(a int, b int) RETURNS int IMMUTABLE LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION 'ifnull ran as %', current_user; END $$"
    )
    await conn.execute("CREATE TABLE t (a int); INSERT INTO t SELECT generate_series(1, 10)")
    await conn.execute(f"ALTER DATABASE {urlsplit(pg_database).path.lstrip('/')} SET standard_conforming_strings = off")
    where = "'\\' || ' || ifnull(1, 0)::text IS NOT NULL -- '"
    api.put("postgrestargets", target_doc(pg_database))
    api.put(
        "indexchanges",
        change_doc("strings", operation="create", index={"table": "t", "columns": [{"name": "a"}], "where": where}),
    )
    status = await admit(api, "strings")
    if status.get("phase") not in ("Failed",):
        status = await drive(context(api, events), api, "strings", "Applied", "Failed", "RolledBack")
    assert "ifnull ran" not in str(status), status  # neither the size estimate, the probe nor the build called it
    assert "ifnull ran" not in str(events.events)
    predicate = await conn.fetchval(
        "SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indrelid = 't'::regclass"
    )
    assert predicate is None or "ifnull" not in predicate, predicate


async def test_a_users_overload_never_runs_while_admission_estimates_or_probes(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder
) -> None:
    """A constant call (``lower('X'::varchar)``) is folded while PostgreSQL (or HypoPG, for the size estimate)
    reads the definition: with public on the path, a user's ``public.lower(varchar)`` would run then, as the
    operator's role, its error (anything it read) written to the change's status."""
    await conn.execute(
        "CREATE FUNCTION public.lower(x varchar) RETURNS text IMMUTABLE LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION 'public.lower ran as %', current_user; END $$"
    )
    await conn.execute("CREATE TABLE v (e varchar(20)); INSERT INTO v VALUES ('A'), ('B')")
    index = {"table": "v", "columns": [{"name": "e"}], "where": "e <> lower('X'::varchar)"}
    api.put("postgrestargets", target_doc(pg_database))
    api.put("indexchanges", change_doc("folded", operation="create", index=index))
    status = await admit(api, "folded")
    status = await drive(context(api, events), api, "folded", "Applied", "Failed", "RolledBack")
    assert "public.lower ran" not in str(status), status
    assert status["phase"] == "Applied", status


async def test_a_settings_rollback_restores_what_the_server_had_not_what_the_change_claims(
    conn: asyncpg.Connection, pg_database: str, api: Api, events: Recorder
) -> None:
    """A Git change's author writes ``currentValue``: claiming ``1TB`` from ``ALTER SYSTEM`` would make a forced
    regression's rollback pin ``work_mem = 1TB`` past every cap. The rollback restores what the server had right
    before our ``ALTER SYSTEM`` (captured in the status), here the default: ``ALTER SYSTEM RESET``."""
    before = await conn.fetchval("SELECT current_setting('work_mem')")
    claim = {"name": "work_mem", "value": "64MB", "currentValue": "1TB", "currentSource": "ALTER SYSTEM"}
    api.put("postgrestargets", target_doc(pg_database))
    api.put("indexchanges", change_doc("mem", operation="setting", setting=claim, schedule="immediate"))
    ctx = context(api, events)
    try:
        assert (await admit(api, "mem"))["phase"] == "WaitingForWindow"
        status = await drive(ctx, api, "mem", "Verifying", "Failed")
        assert status["phase"] == "Verifying", status
        assert status["replacedSetting"]["value"] == before
        await force_regression(api, conn, "mem")
        status = await drive(ctx, api, "mem", "RolledBack", "Applied", "Failed")
        assert status["phase"] == "RolledBack", status
        assert "1TB" not in status["rollbackSql"]
        assert await ran(conn, r"1TB") == []
        auto = await conn.fetch("SELECT setting FROM pg_file_settings WHERE name = 'work_mem' AND sourcefile ~ 'auto'")
        assert auto == [], "postgresql.auto.conf keeps no work_mem"
    finally:
        await conn.execute("ALTER SYSTEM RESET work_mem")
        await conn.execute("SELECT pg_reload_conf()")
