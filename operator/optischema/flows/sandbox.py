"""Sandboxes: where a recommendation is tried for real before anyone approves it.

Two providers share everything but the server's birth: the Kubernetes one starts a PostgreSQL pod per
recommendation (production), the local one a temporary PostgreSQL on loopback (the CLI, the demo, the tests).
Preparing the copy and timing the statements (:mod:`optischema.flows.benchmark`) know nothing of which it is.
A provider hands back its superuser's DSN; the benchmark uses it only to create the unprivileged role everything
else runs as (see :func:`optischema.postgres.clone.create_bench_role`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from optischema.api.target import Sandbox as SandboxSpec
from optischema.kube.sandboxes import Pods, SandboxError
from optischema.postgres.local import LocalPostgres, PostgresStartError

__all__ = ["LocalProvider", "PodProvider", "Provider", "SandboxError", "Started"]


class Started(Protocol):
    @property
    def dsn(self) -> str: ...


class Provider(Protocol):
    async def start(self, recommendation: dict[str, Any], spec: SandboxSpec, major: int) -> Started: ...

    async def stop(self, started: Started) -> None: ...


@dataclass(frozen=True, slots=True)
class _Local:
    dsn: str = field(repr=False)  # may hold a password: never in a log or a traceback
    server: LocalPostgres


class LocalProvider:
    """A temporary local PostgreSQL per sandbox (run as the ``postgres`` user when we are root)."""

    async def start(self, recommendation: dict[str, Any], spec: SandboxSpec, major: int) -> Started:
        server = LocalPostgres(major=major, superuser="sandbox", preload=())
        try:
            await asyncio.to_thread(server.start)
            await asyncio.to_thread(server.psql, "CREATE DATABASE sandbox")
        except (PostgresStartError, RuntimeError) as error:
            await asyncio.to_thread(server.stop)
            raise SandboxError("SandboxFailed", f"could not start a local PostgreSQL: {error}") from error
        return _Local(server.dsn("sandbox"), server)

    async def stop(self, started: Started) -> None:
        assert isinstance(started, _Local)
        await asyncio.to_thread(started.server.stop)


class PodProvider:
    """A PostgreSQL pod per sandbox, owned by its recommendation (see :mod:`optischema.kube.sandboxes`)."""

    def __init__(self, pods: Pods, ready_timeout: float) -> None:
        self.pods = pods
        self.ready_timeout = ready_timeout

    async def start(self, recommendation: dict[str, Any], spec: SandboxSpec, major: int) -> Started:
        return await self.pods.start(
            recommendation,
            image=spec.image or f"postgres:{major}",
            resources=spec.resources.model_dump(mode="json", by_alias=True, exclude_none=True)
            if spec.resources
            else None,
            deadline_seconds=spec.timeout_seconds,
            ready_timeout=self.ready_timeout,
        )

    async def stop(self, started: Started) -> None:
        namespace, name = getattr(started, "namespace"), getattr(started, "name")  # noqa: B009
        await self.pods.remove(namespace, name)
