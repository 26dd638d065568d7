"""The operator's read-only live endpoint: ``GET /targets/<namespace>/<name>/top`` (``flows/live.py`` decides who
may read it and what it answers; this module only serves it over HTTP).

Started with the operator when ``OPTISCHEMA_LIVE_PORT`` is set (the chart sets it and exposes the port on the
``<release>-live`` Service for the API server's service proxy), stopped when the operator stops. The caller's token
comes in ``X-OptiSchema-Token`` — the API server's proxy drops ``Authorization`` once it has authenticated the
caller — or in ``Authorization: Bearer`` when the endpoint is reached directly (``kubectl port-forward``).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from aiohttp import web

from optischema.flows.live import LiveTop
from optischema.kube.reviews import Reviews
from optischema.settings import Settings

#: The header the plugin forwards its token in (the proxy keeps it).
TOKEN_HEADER = "X-OptiSchema-Token"


def token_of(request: web.Request) -> str | None:
    """The caller's bearer token: the plugin's header first, else ``Authorization: Bearer``."""
    given = request.headers.get(TOKEN_HEADER, "").strip()
    if given:
        return given
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def make_app(live: LiveTop) -> web.Application:
    async def top(request: web.Request) -> web.Response:
        status, body = await live.serve(token_of(request), request.match_info["namespace"], request.match_info["name"])
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/targets/{namespace}/{name}/top", top)
    return app


async def start(live: LiveTop, host: str, port: int) -> web.AppRunner:
    """Serve ``live`` on ``host:port``; the runner stops it."""
    runner = web.AppRunner(make_app(live), access_log=None)  # a token never reaches a log line
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


@kopf.on.startup()
async def serve_live(memo: kopf.Memo, **_: Any) -> None:
    if "settings" not in memo or "kube" not in memo:  # operator.configure fills them; registered first, it runs first
        raise kopf.TemporaryError("waiting for the operator's configuration", delay=0.2)
    settings: Settings = memo.settings
    if not settings.live_port:
        return
    live = LiveTop(memo.kube, Reviews(), cache_seconds=settings.live_cache_seconds)
    log = logging.getLogger("optischema")
    try:
        memo.live_runner = await start(live, settings.live_host, settings.live_port)
    except OSError as error:  # the operator's own work does not wait for a view of it: said, and left off
        log.error("live endpoint not started on %s:%d: %s", settings.live_host, settings.live_port, error)
        return
    log.info("live endpoint on %s:%d", settings.live_host, settings.live_port)


@kopf.on.cleanup()
async def stop_live(memo: kopf.Memo, **_: Any) -> None:
    runner = getattr(memo, "live_runner", None)
    if runner is not None:
        await runner.cleanup()
