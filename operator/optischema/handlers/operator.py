"""kopf start-up: where kopf keeps its own state, and what the handlers share (settings, client, semaphore)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from optischema.kube.client import Kube, load_config
from optischema.settings import Settings


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our status subresources are structural schemas: kopf's own bookkeeping goes to annotations, not status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="optischema.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="optischema.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 120
    operator_settings = Settings()
    load_config()
    memo.settings = operator_settings
    memo.kube = Kube()
    memo.analyses = asyncio.Semaphore(operator_settings.analysis_concurrency)


def run_operator(
    *, namespaces: list[str], clusterwide: bool, standalone: bool, peering_name: str, liveness_endpoint: str | None
) -> None:
    """Run kopf with every handler of this package registered, until stopped."""
    from optischema import handlers  # noqa: F401 - registers the handlers

    # An explicit peering name makes kopf require the peering CRD, even standalone: pass it only when peering.
    kopf.run(
        standalone=standalone,
        peering_name=None if standalone else peering_name,
        clusterwide=clusterwide,
        namespaces=namespaces,
        liveness_endpoint=liveness_endpoint,
    )
