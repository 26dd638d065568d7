"""A stand-in for a local model server (as vLLM, Ollama or llama.cpp would serve one), for the demo only.

This machine has no network and no model weights, so ``make demo`` talks to this: a real HTTP server on
127.0.0.1 speaking OpenAI chat completions, whose "model" reads the prompt it is sent and answers the way a model
typically does — some advice that holds (an index on a column the workload filters on, a setting), and some that
does not (a column that does not exist). It is not an LLM and says so in its model name; the point of the demo is
what the operator does with such an answer: check every suggestion, keep what the engine can prove, and record
each rejection with its reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from devcluster.httpserve import serving

MODEL = "local-stand-in"


@dataclass
class LocalModel:
    port: int
    calls: int = 0
    prompts: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def advise(self, prompt: str) -> dict[str, object]:
        """Advice read off the prompt's table list: an index on each table's first ``*_id`` column, a setting, and
        one suggestion on a column that is not there (what models get wrong)."""
        tables = re.findall(r"^- (\w+)\.(\w+): ", prompt, re.MULTILINE)
        indexes = []
        for schema, table in tables[:3]:
            section = prompt.split(f"- {schema}.{table}: ", 1)[1].split("\n- ", 1)[0]
            column = next(iter(re.findall(r"^\s+(\w+_id) ", section, re.MULTILINE)), None)
            if column:
                indexes.append({"table": f"{schema}.{table}", "columns": [column], "why": f"lookups by {column}"})
        if tables:
            indexes.append(
                {"table": f"{tables[0][0]}.{tables[0][1]}", "columns": ["customer_email"], "why": "email lookups"}
            )
        return {
            "indexes": indexes,
            "settings": [{"name": "work_mem", "value": "16MB", "why": "sorts and hashes of the reporting queries"}],
            "rewrites": [],
        }

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        self.calls += 1
        self.prompts.append(prompt)
        text = json.dumps(self.advise(prompt))
        tokens = len(prompt) // 4
        return web.json_response(
            {
                "id": f"local-{self.calls}",
                "object": "chat.completion",
                "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": tokens, "completion_tokens": len(text) // 4,
                          "total_tokens": tokens + len(text) // 4},
            }
        )  # fmt: skip


@contextmanager
def local_model(port: int) -> Iterator[LocalModel]:
    model = LocalModel(port)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", model.handle)
    with serving(app, port):
        yield model
