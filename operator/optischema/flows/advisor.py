"""The LLM advisor as the analysis sees it: a cache, a daily budget, a failover chain — and the engine alone when
any of them says no.

The cache key is provider + model + prompt version + the prompt's fingerprint (the normalised workload, the
schema, the engine's findings): the same workload and schema make no new call. The store behind cache and budget
is the caller's: a ConfigMap per target in the operator (:mod:`optischema.kube.llmstore`, seen by analysis Jobs
too), a dictionary for the CLI. Tokens are counted from the providers' usage fields, per target and cluster-wide.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from optischema.analysis.consult import check_reply
from optischema.analysis.prompt import Prompt
from optischema.api.target import Llm
from optischema.flows.analyze import Advisor, AdvisorReply
from optischema.kube.client import secret_refused
from optischema.kube.llmstore import ConfigMapStore
from optischema.llm.providers import Failover, Provider, ProviderError, http_client
from optischema.telemetry import (
    LLM_BUDGET_SPENT,
    LLM_CACHE_HITS,
    LLM_CALL_SECONDS,
    LLM_CALLS,
    LLM_COST,
    LLM_FAILOVERS,
    LLM_TOKENS,
)

#: Tokens per day across all targets unless the operator's settings say otherwise.
DEFAULT_CLUSTER_BUDGET = 2_000_000


class Store(Protocol):
    """Where replies are cached and tokens counted (per day, UTC)."""

    async def cached(self, key: str) -> str | None: ...

    async def remember(self, key: str, text: str) -> None: ...

    async def spent(self, day: str) -> tuple[int, int]:
        """(this target's tokens, all targets' tokens) spent on ``day``."""
        ...

    async def spend(self, day: str, tokens: int) -> None: ...


@dataclass(slots=True)
class MemoryStore:
    """For the CLI and tests: nothing outlives the process."""

    replies: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)

    async def cached(self, key: str) -> str | None:
        return self.replies.get(key)

    async def remember(self, key: str, text: str) -> None:
        self.replies[key] = text

    async def spent(self, day: str) -> tuple[int, int]:
        return self.tokens.get(day, 0), self.tokens.get(day, 0)

    async def spend(self, day: str, tokens: int) -> None:
        self.tokens[day] = self.tokens.get(day, 0) + tokens


def cache_key(provider: Provider, prompt: Prompt) -> str:
    return hashlib.sha256(
        f"{provider.kind}|{provider.model}|v{prompt.version}|{prompt.fingerprint}".encode()
    ).hexdigest()[:32]


def providers_from(spec: Llm, keys: dict[str, str]) -> list[Provider]:
    """Providers of a target's spec; ``keys`` maps ``secret/key`` to the API key read from the Secret."""
    found = []
    for item in spec.providers:
        key = None
        if item.api_key_secret is not None:
            key = keys.get(f"{item.api_key_secret.name}/{item.api_key_secret.key}")
        found.append(
            Provider(
                item.provider, item.model, item.base_url, key, cost_per_million_tokens=item.cost_per_million_tokens
            )
        )
    return found


def make_advisor(
    providers: Sequence[Provider],
    store: Store,
    *,
    budget: int,
    cluster_budget: int = DEFAULT_CLUSTER_BUDGET,
    labels: tuple[str, str] = ("", ""),
    breakers: dict[str, Any] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Advisor:
    """An :data:`Advisor` for one analysis. ``breakers`` may be shared across analyses (the operator keeps one
    per provider), so that a dead provider stays skipped between them."""
    chain = Failover(providers, breakers if breakers is not None else {})

    async def advise(prompt: Prompt) -> AdvisorReply:
        for provider in providers:
            text = await store.cached(cache_key(provider, prompt))
            if text is not None and check_reply(text) is None:  # one cached before answers were checked: asked again
                LLM_CACHE_HITS.labels(*labels).inc()
                return AdvisorReply(text, provider.name, cached=True)
        day = datetime.now(UTC).date().isoformat()
        mine, everyone = await store.spent(day)
        if mine >= budget:
            LLM_BUDGET_SPENT.labels(*labels, "target").inc()
            return AdvisorReply(
                None,
                budget_spent="target",
                note=f"the daily LLM token budget of this target ({budget}) is spent: "
                "the engine's findings only until tomorrow (UTC)",
            )
        if everyone >= cluster_budget:
            LLM_BUDGET_SPENT.labels(*labels, "cluster").inc()
            return AdvisorReply(
                None,
                budget_spent="cluster",
                note=f"the cluster-wide daily LLM token budget ({cluster_budget}) is spent: "
                "the engine's findings only until tomorrow (UTC)",
            )
        started = time.monotonic()
        before = chain.failovers
        try:
            async with contextlib.AsyncExitStack() as stack:  # one client (connection pool) per provider
                clients = {p.name: await stack.enter_async_context(http_client(transport)) for p in providers}
                reply = await chain.complete(clients, prompt.system, prompt.text)
        except ProviderError as error:
            LLM_CALLS.labels(*labels, "failed").inc()
            return AdvisorReply(None, note=f"no LLM answered, the engine's findings only: {error}")
        finally:
            LLM_CALL_SECONDS.labels(*labels).observe(time.monotonic() - started)
            LLM_FAILOVERS.labels(*labels).inc(chain.failovers - before)
        LLM_TOKENS.labels(*labels).inc(reply.tokens)
        await store.spend(day, reply.tokens)
        answered = next(p for p in providers if p.kind == reply.provider and p.model == reply.model)
        if answered.cost_per_million_tokens:
            LLM_COST.labels(*labels).inc(reply.tokens * answered.cost_per_million_tokens / 1e6)
        model = f"{reply.provider}/{reply.model}"
        problem = check_reply(reply.text)
        if problem is not None:  # never cached: the next analysis asks again rather than reading it back
            LLM_CALLS.labels(*labels, "rejected").inc()
            return AdvisorReply(
                None,
                model,
                tokens=reply.tokens,
                rejected=problem,
                note=f"the answer of {model} was rejected (and not cached), the engine's findings only: {problem}",
            )
        LLM_CALLS.labels(*labels, "answered").inc()
        await store.remember(cache_key(answered, prompt), reply.text)
        return AdvisorReply(reply.text, model, tokens=reply.tokens)

    return advise


#: Breakers per provider, shared by the analyses of this process: a provider that keeps failing is skipped by
#: every target's next analysis too, until its cooldown has passed.
BREAKERS: dict[str, Any] = {}


async def for_target(
    kube: Any, target: dict[str, Any], spec: Llm, *, operator_namespace: str, cluster_budget: int
) -> tuple[Advisor | None, Any, str | None]:
    """(advisor, store, note) for a target whose ``spec.llm`` is enabled. API keys are read from their Secrets
    now (an edited spec or Secret takes effect at the next analysis, no restart); a provider whose key is missing
    is left out of the chain and the note says so."""
    namespace = target["metadata"]["namespace"]
    keys: dict[str, str] = {}
    missing = []
    for item in spec.providers:
        ref = item.api_key_secret
        if ref is None:
            continue
        secret = await kube.read_secret(namespace, ref.name)
        if secret is None or ref.key not in secret:
            why = secret_refused(namespace, ref.name) if secret is None else f"Secret {ref.name} has no key {ref.key}"
            missing.append(f"{item.provider}/{item.model} ({why})")
        else:
            keys[f"{ref.name}/{ref.key}"] = secret[ref.key]
    usable = [p for p in providers_from(spec, keys) if p.api_key or p.kind == "openaiCompatible"]
    note = f"left out for want of an API key: {', '.join(missing)}" if missing else None
    store = ConfigMapStore(target, operator_namespace)
    if not usable:
        return None, store, note or "no LLM provider is usable"
    labels = (namespace, target["metadata"]["name"])
    advisor = make_advisor(
        usable, store, budget=spec.daily_token_budget, cluster_budget=cluster_budget, labels=labels, breakers=BREAKERS
    )
    return advisor, store, note
