"""A PII-safe prompt, built from a real catalog on PostgreSQL, carries none of the database's values.

The attack: values reach the LLM through the catalog rather than through a statement's constants — a most common
value in pg_stats, the literal of an existing partial index's predicate, and the sqlcommenter comment an ORM appends
(pg_stat_statements normalises constants but keeps comments). The test reads what left the operator over HTTP to a
local model server, with PII-safe on (none of them) and off (all of them: the attack is real, not a test artefact).
"""

from __future__ import annotations

import json

import asyncpg
import pytest

from optischema.flows.advisor import MemoryStore, make_advisor
from optischema.flows.analyze import AnalyzeOptions, analyze
from optischema.llm.providers import Provider
from tests.llmserver import answer, llm_server

from .conftest import run_sql

MCV = "mcv-customer@example.com"
PREDICATE = "partial-index@example.com"
COMMENTER = "commenter%40example.com"
SCHEMA = [
    "CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL, region int NOT NULL)",
    # a third of the rows share one e-mail: ANALYZE records it among the column's most common values
    f"INSERT INTO customers (email, region) SELECT CASE WHEN g % 3 = 0 THEN '{MCV}' ELSE md5(g::text) END, g % 50 "
    "FROM generate_series(1, 30000) g",
    f"CREATE INDEX customers_vip_idx ON customers (region) WHERE email = '{PREDICATE}'",
    "ANALYZE customers",
]
WORKLOAD = [
    f"SELECT id FROM customers WHERE region = {n} AND email <> 'x' /*user='{COMMENTER}',route='/vip'*/"
    for n in range(3)
]


@pytest.mark.parametrize("pii_safe", [True, False], ids=["pii-safe", "not-pii-safe"])
async def test_a_pii_safe_prompt_carries_no_most_common_value_predicate_literal_or_comment(
    pg_database: str, pii_safe: bool
) -> None:
    await run_sql(pg_database, SCHEMA)
    await run_sql(pg_database, WORKLOAD, times=4)
    conn = await asyncpg.connect(pg_database)
    try:
        common = await conn.fetchval(
            "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'customers' AND attname = 'email'"
        )
        kept = await conn.fetchval("SELECT query FROM pg_stat_statements WHERE query LIKE '%customers WHERE region%'")
    finally:
        await conn.close()
    assert MCV in common, "the catalog holds the value the prompt must not carry"
    assert COMMENTER in kept, "pg_stat_statements keeps the comment while it normalises the constants"

    with llm_server() as server:
        server.script("openai", answer('{"indexes": [], "settings": [], "rewrites": []}'))
        provider = Provider("openaiCompatible", "qwen-test", server.openai_url, None)
        options = AnalyzeOptions(
            advisor=make_advisor([provider], MemoryStore(), budget=100_000), sample_seconds=0, pii_safe=pii_safe
        )
        result = await analyze(pg_database, options)
        assert result.consultation is not None
        assert server.calls("openai") == 1
        sent = json.dumps(server.received[0]["body"], ensure_ascii=False)

    assert "customers" in sent, "the prompt is about the table that holds the values"
    assert "customers_vip_idx" in sent, "the partial index is described"
    leaked = [value for value in (MCV, PREDICATE, COMMENTER, "/vip") if value in sent]
    if pii_safe:
        assert leaked == []
        assert "region = $1" in sent, "the normalised statement is still there, its parameters kept"
    else:
        assert leaked == [MCV, PREDICATE, COMMENTER, "/vip"], "without PII-safe the values go (the attack is real)"
