"""An analysis runs on a loop of its own in another thread (analyze_off_loop); the sandbox it measures in is
started and removed on the operator's loop, where the Kubernetes client lives (flows.measuring.on_loop)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from optischema.flows.measuring import on_loop


def test_the_sandbox_is_opened_and_closed_on_the_operators_loop() -> None:
    operator_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=operator_loop.run_forever, daemon=True)
    thread.start()
    seen: list[tuple[str, asyncio.AbstractEventLoop]] = []

    @asynccontextmanager
    async def opener(major: int) -> AsyncIterator[str]:
        seen.append(("open", asyncio.get_running_loop()))
        try:
            yield f"postgresql://sandbox/{major}"
        finally:
            seen.append(("close", asyncio.get_running_loop()))

    async def analysis() -> tuple[str, asyncio.AbstractEventLoop]:
        async with on_loop(opener, operator_loop)(15) as dsn:
            return dsn, asyncio.get_running_loop()

    try:
        dsn, analysis_loop = asyncio.run(analysis())
    finally:
        operator_loop.call_soon_threadsafe(operator_loop.stop)
        thread.join(timeout=5)
        operator_loop.close()
    assert dsn == "postgresql://sandbox/15"
    assert [step for step, _ in seen] == ["open", "close"]
    assert all(loop is operator_loop for _, loop in seen)
    assert analysis_loop is not operator_loop
