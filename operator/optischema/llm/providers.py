"""LLM providers over httpx: OpenAI-compatible chat completions (OpenAI, DeepSeek, vLLM, Ollama, llama.cpp) and
Gemini ``generateContent``; bounded retries, a circuit breaker per provider, and a failover chain.

The retry loop is ours rather than tenacity's: it must honour ``Retry-After`` (seconds or an HTTP date), tell a
retryable answer (429, 5xx, a timeout, a dropped connection) from a final one (400, 401, 404), and feed the
breaker — three things a generic retry decorator would need as many callbacks for. API keys go into headers only;
they are never part of a message, a log line or an exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from optischema.api.network import endpoint_url_problem

DEFAULT_BASE = {
    "openai": "https://api.openai.com/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
#: Longest wait honoured from a Retry-After header; a provider asking for more is failed over instead.
MAX_RETRY_AFTER = 30.0


class ProviderError(RuntimeError):
    """A provider could not answer; ``retryable`` says whether another attempt (or provider) may do better."""

    def __init__(self, provider: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable


def _text(value: object) -> str:
    """An answer's text, which must be a string (an object or a number there is a wrong shape: TypeError)."""
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    provider: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Breaker:
    """Open after ``threshold`` failures in a row; closed again (half-open: one try) after ``cooldown`` seconds."""

    threshold: int = 3
    cooldown: float = 60.0
    failures: int = 0
    opened_at: float | None = None

    def allows(self, now: float) -> bool:
        return self.opened_at is None or now - self.opened_at >= self.cooldown

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.failures, self.opened_at = 0, None
        else:
            self.failures += 1
            if self.failures >= self.threshold:
                self.opened_at = now


@dataclass(slots=True)
class Provider:
    """One endpoint: its wire format, model, base URL and key."""

    kind: str  # openai | deepseek | gemini | openaiCompatible
    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    attempts: int = 3
    backoff: float = 1.0
    cost_per_million_tokens: float | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.model}"

    def request(self, system: str, prompt: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        """(url, headers, JSON body) in the provider's wire format, asking for a JSON answer."""
        body: dict[str, Any]
        base = (self.base_url or DEFAULT_BASE.get(self.kind, "")).rstrip("/")
        if self.kind == "gemini":
            headers = {"x-goog-api-key": self.api_key} if self.api_key else {}
            body = {
                "systemInstruction": {"parts": [{"text": system}]},
                "contents": [{"role": "user", "parts": [{"text": prompt}]}],
                "generationConfig": {"responseMimeType": "application/json", "temperature": 0},
            }
            return f"{base}/models/{self.model}:generateContent", headers, body
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }
        return f"{base}/chat/completions", headers, body

    def reply(self, payload: dict[str, Any]) -> Reply:
        """The text and token usage of an answer in the provider's wire format."""
        try:
            if self.kind == "gemini":
                parts = payload["candidates"][0]["content"]["parts"]
                usage = payload.get("usageMetadata") or {}
                return Reply(
                    "".join(_text(p.get("text", "")) for p in parts),
                    self.kind,
                    self.model,
                    int(usage.get("promptTokenCount", 0)),
                    int(usage.get("candidatesTokenCount", 0)),
                )
            usage = payload.get("usage") or {}
            return Reply(
                _text(payload["choices"][0]["message"].get("content") or ""),
                self.kind,
                self.model,
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as error:
            # the error's type only: its text may quote the answer, which is the provider's to write; a list or a
            # string where an object belongs (AttributeError), a number too large for an integer (OverflowError)
            raise ProviderError(
                self.name, f"unexpected answer shape ({type(error).__name__})", retryable=False
            ) from error


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322, a naive datetime to the email module
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify(status: int) -> str:
    """A short reading of an HTTP status for the status and Events. Never the response body: it is the provider's
    (or whoever answers at that URL) to write, and would be reflected into objects others read."""
    if status in (401, 403):
        return "the API key was refused"
    if status == 404:
        return "no such model or endpoint"
    if status == 413:
        return "the prompt is too large"
    if 400 <= status < 500:
        return "the request was refused"
    return "the provider failed"


def http_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The client a provider is called with. Plain http goes only to a loopback host (:func:`complete` refuses the
    rest), so it never takes the environment's proxy: ``HTTP_PROXY`` would carry the key and the prompt in clear
    text to the proxy, across the network. https keeps the environment's proxy settings."""
    return httpx.AsyncClient(transport=transport, mounts={"http://": transport or httpx.AsyncHTTPTransport()})


async def complete(client: httpx.AsyncClient, provider: Provider, system: str, prompt: str) -> Reply:
    """One provider, with bounded retries (exponential backoff with jitter, or what Retry-After asks)."""
    url, headers, body = provider.request(system, prompt)
    problem = endpoint_url_problem(url)
    if problem is not None:  # the model refuses it too; a prompt and a key never go out in clear text
        raise ProviderError(provider.name, f"baseURL {problem}", retryable=False)
    last = "no attempt"
    for attempt in range(provider.attempts):
        wait = provider.backoff * (2**attempt) * (0.5 + random.random())
        try:
            response = await client.post(url, headers=headers, json=body, timeout=provider.timeout)
        except httpx.TimeoutException:
            last = f"no answer within {provider.timeout:g}s"
        except httpx.TransportError as error:
            last = f"connection failed ({type(error).__name__})"
        else:
            if response.status_code == 200:
                try:
                    payload = response.json()
                except ValueError as error:
                    raise ProviderError(provider.name, "the answer is not JSON", retryable=True) from error
                return provider.reply(payload)
            last = f"HTTP {response.status_code}"
            if response.status_code not in RETRYABLE:
                raise ProviderError(provider.name, f"{last} ({classify(response.status_code)})", retryable=False)
            asked = retry_after(response.headers.get("retry-after"))
            if asked is not None:
                if asked > MAX_RETRY_AFTER:
                    raise ProviderError(provider.name, f"{last}, retry after {asked:.0f}s", retryable=True)
                wait = asked
        if attempt + 1 < provider.attempts:
            await asyncio.sleep(wait)
    raise ProviderError(provider.name, f"{last} after {provider.attempts} attempt(s)", retryable=True)


@dataclass(slots=True)
class Failover:
    """Providers in order; each has a breaker, so a dead one is skipped for a while instead of tried every call."""

    providers: Sequence[Provider]
    breakers: dict[str, Breaker] = field(default_factory=dict)
    failovers: int = 0

    async def complete(
        self, clients: httpx.AsyncClient | dict[str, httpx.AsyncClient], system: str, prompt: str
    ) -> Reply:
        """The first answer down the chain. ``clients`` is one client per provider (by name), or one for all."""
        errors = []
        for provider in self.providers:
            breaker = self.breakers.setdefault(provider.name, Breaker())
            if not breaker.allows(time.monotonic()):
                errors.append(f"{provider.name}: skipped (circuit open after {breaker.failures} failures)")
                continue
            client = clients[provider.name] if isinstance(clients, dict) else clients
            try:
                reply = await complete(client, provider, system, prompt)
            except ProviderError as error:
                breaker.record(False, time.monotonic())
                errors.append(str(error))
                self.failovers += 1
                continue
            breaker.record(True, time.monotonic())
            return reply
        raise ProviderError("all providers", "; ".join(errors) or "no provider configured", retryable=True)
