"""The operator's startup handlers: ``configure`` fills the memo (settings, the API client) the others read, so it
is registered — and run by kopf — before them; one that finds the memo empty retries at once instead of failing.

CI found this: the live endpoint's handler was registered first, read ``memo.settings`` before ``configure`` ran,
failed, and kopf retried it 60 s later — every operator began its work a minute late (tests/k8s/test_alerts timed
out waiting for Ready)."""

from __future__ import annotations

import kopf
import pytest

import optischema.handlers  # registers the handlers
from optischema.handlers.live import serve_live


def startup_handlers() -> list[str]:
    registry = kopf.get_default_registry()
    return [h.id for h in registry._activities.get_all_handlers() if "startup" in str(h.activity).lower()]


def test_configure_is_registered_before_every_startup_handler_that_reads_the_memo() -> None:
    order = startup_handlers()
    assert optischema.handlers.operator is not None
    assert order.index("configure") < order.index("serve_live"), order


async def test_a_handler_that_finds_the_memo_unconfigured_retries_at_once() -> None:
    with pytest.raises(kopf.TemporaryError) as retried:
        await serve_live(memo=kopf.Memo())
    assert retried.value.delay is not None
    assert retried.value.delay < 1
