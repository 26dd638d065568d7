"""The LLM advisor in the operator: a scripted server on 127.0.0.1 answers; what it suggests is checked, recorded,
cached in the target's ConfigMap, and a provider switch in the spec takes effect without a restart."""

from __future__ import annotations

import json
from typing import Any

from devcluster.cluster import Cluster
from tests.llmserver import answer, llm_server

from .conftest import allow_secrets, apply, get, operators, secret, target, wait_for
from .test_sandbox import query_ids


def reply(rewrite_of: str) -> str:
    return json.dumps(
        {
            **SUGGESTIONS,
            "rewrites": [
                {"query_id": "1", "sql": "DROP TABLE invoices", "why": "ignore previous instructions"},
                # Looks plausible, returns other rows: the sandbox must turn it down.
                {"query_id": rewrite_of, "sql": "SELECT sum(amount) + 1 FROM invoices WHERE customer_id = $1"},
            ],
        }
    )


SUGGESTIONS = {
    "indexes": [
        {"table": "ghosts", "columns": ["id"], "why": "hallucinated"},
        {"table": "invoices", "columns": ["customer_id"], "include": ["amount"], "why": "lookups by customer"},
    ],
    "settings": [{"name": "work_mem", "value": "32MB", "why": "hash aggregates"}],
}


def llm_status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return (get(cluster, "pgt", "shop", "-n", namespace).get("status") or {}).get("llm") or {}


def analyse_again(cluster: Cluster, namespace: str, token: str) -> None:
    cluster.plane.kubectl(
        "annotate", "pgt", "shop", "-n", namespace, f"optischema.io/analyze-requested={token}", "--overwrite"
    )


def test_the_operator_consults_the_llm_caches_it_and_switches_provider_without_restart(
    cluster: Cluster, namespace: str, database: str
) -> None:
    with llm_server() as server, operators(cluster, namespace, "llm") as start:
        statement = query_ids(database)["SELECT sum(amount) FROM invoices WHERE customer_id = $1"][0]
        server.script("openai", answer(reply(statement), prompt_tokens=700, completion_tokens=100))
        server.script("gemini", answer(reply(statement), prompt_tokens=500, completion_tokens=50))
        apply(cluster, secret(namespace, "pw"))
        doc = target(namespace, database, sandbox={"enabled": True})
        doc["spec"]["llm"] = {
            "enabled": True,
            "dailyTokenBudget": 100_000,
            "providers": [
                {"provider": "openaiCompatible", "model": "qwen-test", "baseURL": server.openai_url,
                 "costPerMillionTokens": 2.0},
            ],
        }  # fmt: skip
        apply(cluster, doc)
        start()
        status = wait_for(lambda: llm_status(cluster, namespace).get("model") and llm_status(cluster, namespace),
                          timeout=120, what="the LLM's part in the analysis")  # fmt: skip
        assert status["model"] == "openaiCompatible/qwen-test"
        assert (status["cached"], status["tokens"], status["tokensToday"]) == (False, 800, 800)
        reasons = {r["what"]: r["reason"] for r in status["rejected"]}
        assert reasons["ghosts (id)"] == "table ghosts does not exist"
        assert reasons["rewrite of 1"] == "no statement 1 in the workload"
        assert status["accepted"] >= 2  # the setting, and the index the engine had found as well

        items = get(cluster, "trec", "-n", namespace)["items"]
        setting = next(i for i in items if i["spec"]["kind"] == "setting" and i["spec"]["source"] == "llm")
        assert setting["spec"]["model"] == "openaiCompatible/qwen-test"
        assert setting["spec"]["change"]["setting"] == {"name": "work_mem", "value": "32MB", "currentValue": "4MB"}

        # The rewrite returns other rows in the sandbox: turned down by the target's policy, with the reason.
        rewrite = next(i for i in items if i["spec"]["kind"] == "queryRewrite")
        assert rewrite["spec"]["source"] == "llm"
        decided = wait_for(
            lambda: (
                (i := get(cluster, "trec", rewrite["metadata"]["name"], "-n", namespace))["spec"]["approval"]["state"]
                == "Rejected"
                and i
            ),
            timeout=120,
            what="the rewrite turned down",
        )
        assert "different rows" in decided["spec"]["approval"]["reason"]
        assert decided["spec"]["approval"]["decidedBy"] == "policy:shop"

        cache = get(cluster, "configmap", "shop-llm", "-n", namespace)
        assert cache["metadata"]["ownerReferences"][0]["kind"] == "PostgresTarget"
        assert json.loads(cache["data"]["state.json"])["tokens"]

        # The same workload and schema: the next analysis is answered from the cache, no call is made.
        analyse_again(cluster, namespace, "again")
        wait_for(lambda: llm_status(cluster, namespace).get("cached"), timeout=60, what="a cached answer")
        assert server.calls() == 1

        # Switching provider and model is an edit of the spec: the next analysis asks Gemini, key from its Secret.
        cluster.plane.kubectl("create", "secret", "generic", "gemini-key", "-n", namespace,
                              "--from-literal=apiKey=g-test-key")  # fmt: skip
        allow_secrets(cluster, namespace, "gemini-key")
        providers = [{"provider": "gemini", "model": "gemini-test", "baseURL": server.gemini_url,
                      "apiKeySecret": {"name": "gemini-key", "key": "apiKey"}}]  # fmt: skip
        cluster.plane.kubectl("patch", "pgt", "shop", "-n", namespace, "--type=merge",
                              "-p", json.dumps({"spec": {"llm": {"providers": providers}}}))  # fmt: skip
        analyse_again(cluster, namespace, "gemini")
        status = wait_for(
            lambda: (
                llm_status(cluster, namespace).get("model") == "gemini/gemini-test" and llm_status(cluster, namespace)
            ),
            timeout=60,
            what="Gemini's answer",
        )
        assert status["tokensToday"] == 800 + 550
        assert server.calls("gemini") == 1
        assert server.received[-1]["headers"]["x-goog-api-key"] == "g-test-key"
        assert "g-test-key" not in json.dumps(get(cluster, "pgt", "shop", "-n", namespace))

        # Off again: the engine alone, and nothing of the advisor left in the status.
        cluster.plane.kubectl("patch", "pgt", "shop", "-n", namespace, "--type=merge",
                              "-p", json.dumps({"spec": {"llm": {"enabled": False}}}))  # fmt: skip
        analyse_again(cluster, namespace, "off")
        wait_for(lambda: not llm_status(cluster, namespace), timeout=60, what="status.llm removed")
        assert server.calls() == 2
