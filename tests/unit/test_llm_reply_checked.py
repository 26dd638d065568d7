"""An LLM answer is checked before it is cached: one whose SQL does not parse is rejected with its reason, never
written to the cache, and asked again next time. Against the real HTTP server of tests/llmserver.py.

Attack: an answer with an unterminated quote in a rewrite (sqlglot's TokenError) or a 60-deep parenthesis
(RecursionError). Before, it was cached as it came, and the rewrite's check could raise out of the analysis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from optischema.analysis.consult import check_reply, digest
from optischema.analysis.prompt import PromptStatement, build
from optischema.analysis.selection import WorkloadStatement
from optischema.analysis.snapshot import Column, Server, Snapshot, Statement, Table
from optischema.analysis.statements import Catalog, parse_statement
from optischema.analysis.whatif import PlanRequest
from optischema.flows.advisor import MemoryStore, cache_key, make_advisor
from optischema.flows.analyze import AdvisorReply
from optischema.llm.providers import Provider
from tests.llmserver import Server as LlmServer
from tests.llmserver import answer, llm_server

QUERY = "SELECT id FROM orders WHERE customer_id = $1"
GOOD = json.dumps({"indexes": [{"table": "public.orders", "columns": ["customer_id"]}]})
UNTERMINATED = json.dumps(
    {
        "indexes": [{"table": "public.orders", "columns": ["customer_id"]}],
        "rewrites": [{"query_id": "7", "sql": "SELECT id FROM orders WHERE status = 'open"}],
    }
)
DEEP = json.dumps(
    {"rewrites": [{"query_id": "7", "sql": "SELECT id FROM orders WHERE id = " + "(" * 60 + "1" + ")" * 60}]}
)
DEEP_WHERE = json.dumps({"indexes": [{"table": "orders", "columns": ["id"], "where": "(" * 60 + "id > 1" + ")" * 60}]})
STATEMENTS = [PromptStatement("7", QUERY, 40, 1.5)]
TABLE = Table("public", "orders", 1e6, 80_000_000, (Column("id", "bigint"), Column("customer_id", "bigint"),
                                                     Column("status", "text")))  # fmt: skip


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


def provider(server: LlmServer) -> Provider:
    return Provider("openaiCompatible", "qwen-test", server.openai_url, "sk-secret-key", backoff=0.01, attempts=1)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (UNTERMINATED, "rewrite of 7: cannot tokenize"),
        (DEEP, "rewrite of 7: nested too deeply to parse (60 levels"),
        (DEEP_WHERE, "index on orders: '((((("),
        (json.dumps({"indexes": [{"table": "orders", "columns": ['lower("email)']}]}), "index on orders: "),
        ('{"indexes": [{"table": "orders"}]}', "the JSON does not match the schema"),
        ("no JSON at all", "no JSON object in the answer"),
    ],
    ids=["unterminated quote", "60-deep rewrite", "60-deep predicate", "unterminated identifier", "schema", "prose"],
)
def test_an_answer_that_does_not_read_as_valid_suggestions_is_refused_with_its_reason(text: str, reason: str) -> None:
    found = check_reply(text)
    assert found is not None
    assert found.startswith(reason)
    assert check_reply(GOOD) is None


def test_a_well_formed_but_bad_suggestion_leaves_the_answer_usable() -> None:
    # Judged one suggestion at a time against the database (digest): the answer itself is not garbled.
    injected = {"indexes": [{"table": "orders", "columns": ["id); DROP TABLE orders; --"]}],
                "rewrites": [{"query_id": "7", "sql": "DELETE FROM orders WHERE id = $1"}]}  # fmt: skip
    assert check_reply(json.dumps(injected)) is None


async def test_an_answer_with_an_unterminated_quote_is_rejected_and_not_cached(server: LlmServer) -> None:
    server.script("openai", answer(UNTERMINATED), answer(GOOD))
    store = MemoryStore()
    advisor = make_advisor([provider(server)], store, budget=100_000)
    prompt = build(STATEMENTS, [TABLE], [], [])

    first = await advisor(prompt)
    assert first.text is None
    assert (first.rejected or "").startswith("rewrite of 7: cannot tokenize")
    assert "rejected (and not cached)" in (first.note or "")
    assert first.tokens == 150  # the call was made and is counted against the budget
    assert store.replies == {}  # what did not happen: nothing was cached

    second = await advisor(prompt)  # asked again, not served from a cache
    assert (second.text, second.cached) == (GOOD, False)
    assert server.calls() == 2
    assert list(store.replies.values()) == [GOOD]


async def test_a_broken_answer_cached_before_is_not_served(server: LlmServer) -> None:
    server.script("openai", answer(GOOD))
    prompt = build(STATEMENTS, [TABLE], [], [])
    store = MemoryStore()
    chosen = provider(server)
    store.replies[cache_key(chosen, prompt)] = UNTERMINATED  # e.g. written by an older operator
    reply = await make_advisor([chosen], store, budget=100_000)(prompt)
    assert (reply.text, reply.cached) == (GOOD, False)
    assert server.calls() == 1


def test_a_suggestion_the_parser_cannot_handle_is_rejected_not_raised() -> None:
    catalog = Catalog({TABLE.key: {c.name for c in TABLE.columns}})
    parsed = parse_statement(QUERY, catalog)
    workload = [WorkloadStatement("7", 40, 40, parsed, PlanRequest("7", QUERY, (), frozenset(parsed.tables)))]
    snapshot = Snapshot(Server("15.18", 150018), [Statement(7, QUERY, 40, 60.0, 1.5)], {TABLE.key: TABLE}, [], {})
    result = digest(DEEP, "qwen", snapshot, workload, set(), set())
    (rejection,) = result.rejections
    assert (rejection.kind, rejection.reason) == (
        "rewrite",
        "nested too deeply to parse (60 levels of parentheses, more than 32)",
    )  # the reason, not a RecursionError out of the analysis
    assert not result.recommendations
    assert isinstance(AdvisorReply(None, rejected="x").rejected, str)
