"""A real HTTP server on 127.0.0.1 that speaks the LLM providers' wire formats with scripted replies.

OpenAI-compatible ``POST /v1/chat/completions`` and Gemini ``POST /v1beta/models/<model>:generateContent``. Each
request takes the next step of its route's script (the last step repeats): an answer text, an HTTP status with
headers, a delay, or a dropped connection. Every request body is kept, so tests can assert on what left the cluster.
It runs in its own thread, so an operator in another process can call it as well as the test itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devcluster.httpserve import serving
from optischema.postgres.local import free_port


@dataclass
class Step:
    text: str | None = None  # the model's answer
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    prompt_tokens: int = 120
    completion_tokens: int = 30


def answer(text: str, **usage: int) -> Step:
    return Step(text=text, **usage)


@dataclass
class Server:
    port: int
    scripts: dict[str, list[Step]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)  # {"route", "headers", "body"}

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def gemini_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1beta"

    def script(self, route: str, *steps: Step) -> None:
        """``route`` is ``openai`` or ``gemini``."""
        self.scripts[route] = list(steps)

    def calls(self, route: str | None = None) -> int:
        return sum(1 for r in self.received if route is None or r["route"] == route)

    def _next(self, route: str) -> Step:
        steps = self.scripts.get(route) or [Step(status=500)]
        return steps.pop(0) if len(steps) > 1 else steps[0]

    async def _handle(self, request: web.Request, route: str) -> web.StreamResponse:
        body = await request.json()
        self.received.append({"route": route, "headers": dict(request.headers), "body": body})
        step = self._next(route)
        if step.delay:
            await asyncio.sleep(step.delay)
        if step.drop:
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("dropped on purpose")
        if step.status != 200:
            return web.Response(status=step.status, headers=step.headers, text=json.dumps({"error": "scripted"}))
        if route == "gemini":
            payload = {
                "candidates": [{"content": {"role": "model", "parts": [{"text": step.text or ""}]}}],
                "usageMetadata": {
                    "promptTokenCount": step.prompt_tokens,
                    "candidatesTokenCount": step.completion_tokens,
                    "totalTokenCount": step.prompt_tokens + step.completion_tokens,
                },
            }
        else:
            payload = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": step.text}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": step.prompt_tokens,
                    "completion_tokens": step.completion_tokens,
                    "total_tokens": step.prompt_tokens + step.completion_tokens,
                },
            }
        return web.json_response(payload, headers=step.headers)


@contextmanager
def llm_server() -> Iterator[Server]:
    server = Server(free_port())
    app = web.Application()

    async def openai(request: web.Request) -> web.StreamResponse:
        return await server._handle(request, "openai")

    async def gemini(request: web.Request) -> web.StreamResponse:
        return await server._handle(request, "gemini")

    app.router.add_post("/v1/chat/completions", openai)
    app.router.add_post("/v1beta/models/{model}:generateContent", gemini)
    with serving(app, server.port):
        yield server
