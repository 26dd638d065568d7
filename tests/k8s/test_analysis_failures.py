"""Analysis never fails silently, on the real control plane with the real operator process.

Attacks: a statement with 60 nested parentheses among the workload (before, it raised RecursionError out of every
analysis while Ready stayed True); an analysis round that meets an unexpected error (here a ResourceQuota that
refuses every TuningRecommendation: the API server answers 403 — no mock) — before, the daemon logged it and tried
again at every check, with ``lastAnalysis`` untouched, so ``analysisFailing`` could never fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from typing import Any

import asyncpg

from devcluster.cluster import Cluster
from tests.llmserver import answer, llm_server
from tests.receiver import receiver

from .conftest import allow_secrets, apply, get, secret, target, wait_for

#: Another shape than the workload's ``sum(amount)`` lookup: parentheses leave no trace in PostgreSQL's parse tree, so
#: the same shape would share that statement's query id (and its text).
DEEP = "SELECT count(*) FROM invoices WHERE customer_id = " + "(" * 60 + "7" + ")" * 60


def _last(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return (get(cluster, "pgt", "shop", "-n", namespace).get("status") or {}).get("lastAnalysis") or {}


def _run(ip: str, *statements: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres:pw@{ip}:5432/shop")
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(go())


def _indexes(ip: str) -> list[str]:
    async def go() -> list[str]:
        conn = await asyncpg.connect(f"postgresql://postgres:pw@{ip}:5432/shop")
        try:
            return [r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes ORDER BY 1")]
        finally:
            await conn.close()

    return asyncio.run(go())


def test_a_60_deep_statement_is_listed_as_unreadable_and_the_analysis_succeeds(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    _run(database, DEEP, DEEP)
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, target(namespace, database))
    last = wait_for(lambda: (a := _last(cluster, namespace)).get("completionTime") and a, timeout=120, what="analysis")
    assert last["outcome"] == "Succeeded", last
    assert last["consecutiveFailures"] == 0
    assert last["unreadableCount"] == 1, json.dumps(last)
    (unreadable,) = last["unreadable"]
    assert unreadable["reason"] == "nested too deeply to parse (60 levels of parentheses, more than 32)"
    assert "could not be read" in last["message"]
    # The rest of the workload was analysed: the lookup by customer still gets its recommendation.
    kinds = [i["spec"]["kind"] for i in get(cluster, "trec", "-n", namespace)["items"]]
    assert "createIndex" in kinds


def test_an_unexpected_error_in_a_round_is_recorded_as_a_failure_and_counted(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    with contextlib.ExitStack() as stack:
        _unexpected_error(cluster, namespace, database, stack)


def _unexpected_error(cluster: Cluster, namespace: str, database: str, stack: contextlib.ExitStack) -> None:
    before = _indexes(database)
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-recommendations", "namespace": namespace},
        "spec": {"hard": {"count/tuningrecommendations.optischema.io": "0"}},
    }
    apply(cluster, quota)
    apply(cluster, secret(namespace, "pw"))
    sink = stack.enter_context(receiver())
    hook = f"--from-literal=url={sink.url('/hook')}"
    cluster.plane.kubectl("create", "secret", "generic", "hook", "-n", namespace, hook)
    allow_secrets(cluster, namespace, "hook")
    doc = target(namespace, database)
    doc["spec"]["notifications"] = {
        "analysisFailures": 2,
        "sinks": [{"type": "webhook", "urlSecret": {"name": "hook", "key": "url"}, "events": ["analysisFailing"]}],
    }
    apply(cluster, doc)
    last = wait_for(lambda: (a := _last(cluster, namespace)).get("completionTime") and a, timeout=120, what="analysis")
    assert last["outcome"] == "Failed", last
    assert last["consecutiveFailures"] == 1
    assert last["failingSince"]
    assert last["message"].startswith("unexpected error: "), last["message"]
    assert "403" in last["message"]
    assert "quota" in last["message"]  # the API server's own message, on one line
    first_since = last["failingSince"]

    # The next round (asked for on demand) fails again: the run of failures is counted, dated from its first.
    cluster.plane.kubectl("annotate", "pgt", "shop", "-n", namespace, "optischema.io/analyze-requested=again")
    again = wait_for(
        lambda: (a := _last(cluster, namespace)).get("requested") == "again" and a.get("completionTime") and a,
        timeout=120,
        what="the second analysis",
    )
    assert (again["outcome"], again["consecutiveFailures"], again["failingSince"]) == ("Failed", 2, first_since)
    events = get(cluster, "events", "-n", namespace, "--field-selector", "reason=AnalysisFailed")["items"]
    assert events, "the failure is posted as an Event"
    # Two in a row is what this target's analysisFailing waits for: it is sent, naming the error.
    wait_for(lambda: sink.received, timeout=60, what="analysisFailing")
    (sent,) = [json.loads(r["body"]) for r in sink.received]
    assert sent["event"] == "analysisFailing"
    assert sent["details"] == {"consecutiveFailures": 2}
    assert "unexpected error" in sent["summary"]
    # What did not happen: no recommendation slipped through, nothing changed in the database.
    assert get(cluster, "trec", "-n", namespace)["items"] == []
    assert _indexes(database) == before


def test_an_llm_answer_with_an_unterminated_quote_is_rejected_and_never_cached(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    garbled = json.dumps(
        {
            "indexes": [{"table": "invoices", "columns": ["customer_id"], "why": "lookups by customer"}],
            "rewrites": [{"query_id": "1", "sql": "SELECT sum(amount) FROM invoices WHERE note = 'unterminated"}],
        }
    )
    with llm_server() as server:
        server.script("openai", answer(garbled, prompt_tokens=700, completion_tokens=100))
        apply(cluster, secret(namespace, "pw"))
        doc = target(namespace, database)
        doc["spec"]["llm"] = {
            "enabled": True,
            "providers": [{"provider": "openaiCompatible", "model": "qwen-test", "baseURL": server.openai_url}],
        }
        apply(cluster, doc)

        def llm() -> dict[str, Any]:
            return (get(cluster, "pgt", "shop", "-n", namespace).get("status") or {}).get("llm") or {}

        status = wait_for(lambda: llm().get("rejected") and llm(), timeout=120, what="the LLM's part")
        (rejected,) = status["rejected"]
        assert (rejected["kind"], rejected["what"]) == ("reply", "the whole answer")
        assert rejected["reason"].startswith("rewrite of 1: cannot tokenize"), rejected
        assert status["accepted"] == 0
        assert "rejected (and not cached)" in status["message"]

        def cached() -> dict[str, Any]:
            found = get(cluster, "configmap", "shop-llm", "-n", namespace)
            return json.loads(found["data"]["state.json"]).get("replies") or {}

        assert cached() == {}  # what did not happen: the answer was never written to the cache
        assert get(cluster, "trec", "-n", namespace)["items"]  # the engine went on alone
        assert not [i for i in get(cluster, "trec", "-n", namespace)["items"] if i["spec"]["source"] == "llm"]

        # The next analysis asks again (nothing cached to serve), and is rejected again.
        cluster.plane.kubectl("annotate", "pgt", "shop", "-n", namespace, "optischema.io/analyze-requested=again")
        wait_for(lambda: _last(cluster, namespace).get("requested") == "again" and _last(cluster, namespace).get(
            "completionTime"), timeout=120, what="the second analysis")  # fmt: skip
        assert server.calls("openai") == 2
        assert cached() == {}


def test_a_catastrophic_ignore_pattern_neither_stalls_the_analysis_nor_the_webhook(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes]
) -> None:
    # `(a+)+$` backtracks exponentially in Python's `re` on a run of a's that ends otherwise; a comment survives
    # normalisation, so pg_stat_statements keeps the run in the statement's text.
    hostile = "/* " + "a" * 5000 + "b */ SELECT count(*) FROM invoices WHERE amount = 3"
    _run(database, hostile, hostile)
    apply(cluster, secret(namespace, "pw"))
    doc = target(namespace, database)
    doc["spec"]["analysis"]["ignoreStatements"] = [r"(a+)+$", r"(a+)+b \*/"]
    apply(cluster, doc)
    last = wait_for(lambda: (a := _last(cluster, namespace)).get("completionTime") and a, timeout=120, what="analysis")
    assert (last["outcome"], last["consecutiveFailures"]) == ("Succeeded", 0), last
    assert last["statementsSkipped"] >= 1  # the hostile statement, matched by the second pattern
    # The webhook answers (it is the same process): bob, an approver, may not lower the risk the analysis wrote;
    # the refusal comes from the operator's admission webhook (a server-side dry run: nothing is stored).
    cluster.plane.kubectl("create", "rolebinding", "bob-approver", "-n", namespace,
                          "--clusterrole=optischema-approver", "--user=bob")  # fmt: skip
    items = wait_for(lambda: get(cluster, "trec", "-n", namespace)["items"], what="a recommendation")
    name = items[0]["metadata"]["name"]
    refused = cluster.plane.kubectl(
        "patch", "trec", name, "-n", namespace, "--type=merge", "--dry-run=server", "-p", '{"spec": {"risk": "high"}}',
        user="bob", check=False,
    )  # fmt: skip
    assert "admission webhook" in refused, refused
