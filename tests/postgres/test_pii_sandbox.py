"""A PII-safe target's sandbox, with no ``dataMode`` written, holds no real value of the target.

The attack: a target whose owner turned nothing on or off (``piiSafe`` is on by default) has its real rows copied
into every sandbox because the data mode defaulted to ``sample``. The benchmark runs end to end on a real local
PostgreSQL sandbox; just before the sandbox is removed, its rows are read and compared with the target's.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from optischema.api.target import PostgresTargetSpec
from optischema.flows.benchmark import benchmark
from optischema.flows.sandbox import LocalProvider, Started

from .conftest import run_sql
from .test_sandbox import create_index, statement_id

SCHEMA = [
    "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, email text NOT NULL, "
    "amount numeric(10, 2))",
    "INSERT INTO orders (customer_id, email, amount) SELECT 1 + g % 2000, 'person' || g || '@example.com', "
    "(g % 1000) / 10.0 FROM generate_series(1, 50000) g",
    "VACUUM ANALYZE",
]


class ObservedProvider(LocalProvider):
    """The local provider, reading what the sandbox holds before it is removed (an observation, nothing faked)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def stop(self, started: Started) -> None:
        conn = await asyncpg.connect(started.dsn)
        try:
            self.seen = [r["email"] for r in await conn.fetch("SELECT email FROM orders")]
        finally:
            await conn.close()
        await super().stop(started)


async def test_a_pii_safe_target_s_sandbox_holds_no_real_row_unless_a_data_mode_asks_for_one(pg_database: str) -> None:
    await run_sql(pg_database, SCHEMA)
    await run_sql(pg_database, [f"SELECT * FROM orders WHERE customer_id = {c}" for c in range(1, 30)])
    helped = await statement_id(pg_database, "SELECT * FROM orders WHERE customer_id")
    conn = await asyncpg.connect(pg_database)
    try:
        real = {r["email"] for r in await conn.fetch("SELECT email FROM orders")}
    finally:
        await conn.close()

    def sandbox_of(sandbox: dict[str, Any]) -> Any:
        spec = {"connection": {"host": "db", "database": "shop", "credentialsSecret": {"name": "db"}}}
        return PostgresTargetSpec.model_validate({**spec, "sandbox": sandbox}).sandbox

    observed = ObservedProvider()
    outcome = await benchmark(observed, pg_database, create_index("customer_id", [helped]), sandbox_of({}), runs=3)
    assert outcome.benchmark.data_mode == "synthetic", outcome.benchmark
    assert outcome.reason == "Measured", outcome.benchmark.error
    assert observed.seen, "the sandbox was filled"
    assert not set(observed.seen) & real, "not one real e-mail reached the sandbox"

    # An explicit sample is honoured: the owner asked for real rows (and this shows the check above can fail).
    asked = ObservedProvider()
    sample = sandbox_of({"dataMode": "sample", "samplePercent": 5})
    outcome = await benchmark(asked, pg_database, create_index("customer_id", [helped]), sample, runs=3)
    assert outcome.benchmark.data_mode == "sample"
    assert set(asked.seen) <= real
    assert len(asked.seen) > 1000
