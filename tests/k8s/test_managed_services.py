"""A target whose database shows itself as Amazon RDS, end to end on the real API server with the operator and its
admission webhook: the platform in the target's status, the settings finding as advice (admitted, its sql the
provider's command as comments), index work as usual; approving the advice creates no IndexChange, the Event says
why, and the database's setting is untouched."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import asyncpg

from devcluster.cluster import Cluster

from .conftest import apply, get, secret, target, wait_for


async def _sql(ip: str, *statements: str) -> str | None:
    conn = await asyncpg.connect(f"postgresql://postgres:pw@{ip}:5432/shop")
    try:
        result = None
        for statement in statements:
            result = await conn.fetchval(statement)
        return None if result is None else str(result)
    finally:
        await conn.close()


def test_settings_on_rds_are_advice_that_approval_never_runs(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    asyncio.run(
        _sql(
            database,
            "CREATE ROLE rds_superuser NOLOGIN",  # what RDS leaves on every instance
            "ALTER DATABASE shop SET rds.extensions = 'pg_stat_statements,hypopg'",
            "ALTER DATABASE shop SET effective_cache_size = '64MB'",  # below 2 × shared_buffers: a settings finding
        )
    )
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, target(namespace, database))
    items = wait_for(
        lambda: [i for i in get(cluster, "trec", "-n", namespace)["items"] if i["spec"]["kind"] == "setting"],
        timeout=90,
        what="a settings recommendation",
    )
    status = wait_for(
        lambda: (s := get(cluster, "pgt", "shop", "-n", namespace)["status"]).get("database") and s,
        what="the target's database status",
    )
    assert status["database"]["platform"] == "rds"
    assert "role rds_superuser" in status["database"]["platformEvidence"]
    assert [i["spec"]["kind"] for i in get(cluster, "trec", "-n", namespace)["items"]].count("createIndex") == 1

    (advice,) = [i for i in items if i["spec"]["change"]["setting"]["name"] == "effective_cache_size"]
    assert advice["spec"]["change"]["setting"]["platform"] == "rds"
    sql = advice["spec"]["sql"]
    assert all(line.startswith("-- ") for line in sql.splitlines())
    assert "aws rds modify-db-parameter-group" in sql
    assert '"ParameterName":"effective_cache_size","ParameterValue":"49152"' in sql  # 384MB in 8kB pages

    name = advice["metadata"]["name"]
    approve = {"spec": {"approval": {"state": "Approved", "reason": "reviewed", "when": "nextWindow"}}}
    cluster.plane.kubectl("patch", "trec", name, "-n", namespace, "--type", "merge", "-p", json.dumps(approve))
    wait_for(
        lambda: (get(cluster, "trec", name, "-n", namespace).get("status") or {}).get("phase") == "Approved",
        what="the approval recorded",
    )
    events = wait_for(
        lambda: [
            e
            for e in get(cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
            if e["reason"] == "AdviceOnly"
        ],
        what="the AdviceOnly event",
    )
    assert "advice only, nothing was run: Amazon RDS for PostgreSQL refuses ALTER SYSTEM" in events[0]["message"]
    time.sleep(3)  # an IndexChange, if one were made, would be there by now
    assert get(cluster, "ixc", "-n", namespace)["items"] == []
    assert "indexChangeRef" not in get(cluster, "trec", name, "-n", namespace)["status"]
    assert asyncio.run(_sql(database, "SHOW effective_cache_size")) == "64MB"
