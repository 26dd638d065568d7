"""A local HTTP receiver on 127.0.0.1 for notification sinks: records every request, answers as scripted (status
codes, or a delay in seconds), in its own thread so an operator in another process can post to it too."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devcluster.httpserve import serving
from optischema.postgres.local import free_port


@dataclass
class Receiver:
    port: int
    script: list[int | float] = field(default_factory=list)  # status codes, or a delay in seconds (float)
    received: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append({"path": request.path, "headers": dict(request.headers), "body": body})
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, float):
            await asyncio.sleep(step)
            step = 200
        return web.Response(status=int(step), text="ok")


@contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver(free_port())
    app = web.Application()
    app.router.add_post("/{tail:.*}", state.handle)
    with serving(app, state.port):
        yield state
