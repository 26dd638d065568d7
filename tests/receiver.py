"""A local HTTP receiver on 127.0.0.1 for notification sinks: records every request, answers as scripted (status
codes, or a delay in seconds), in its own thread so an operator in another process can post to it too."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", state.port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
