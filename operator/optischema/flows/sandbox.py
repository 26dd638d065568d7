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

from optischema.api.quantity import quantity_bytes
from optischema.api.target import Sandbox as SandboxSpec
from optischema.kube.sandboxes import POSTGRES_UID, Pods, SandboxError, image_for
from optischema.postgres.local import LocalPostgres, PostgresStartError
from optischema.settings import Settings

__all__ = ["LocalProvider", "PodDefaults", "PodProvider", "Provider", "SandboxError", "Started"]


class Started(Protocol):
    @property
    def dsn(self) -> str: ...


class Provider(Protocol):
    async def start(
        self, recommendation: dict[str, Any], spec: SandboxSpec, major: int, *, owner: dict[str, Any] | None = None
    ) -> Started: ...

    async def stop(self, started: Started) -> None: ...


@dataclass(frozen=True, slots=True)
class _Local:
    dsn: str = field(repr=False)  # may hold a password: never in a log or a traceback
    server: LocalPostgres


class LocalProvider:
    """A temporary local PostgreSQL per sandbox (run as the ``postgres`` user when we are root)."""

    async def start(
        self, recommendation: dict[str, Any], spec: SandboxSpec, major: int, *, owner: dict[str, Any] | None = None
    ) -> Started:
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


@dataclass(frozen=True, slots=True)
class PodDefaults:
    """What the cluster's settings say of every sandbox pod (the target's spec may override image and storage)."""

    image_template: str = "postgres:{major}"
    images: dict[str, str] = field(default_factory=dict)
    run_as_user: int = POSTGRES_UID
    storage_limit: str = "4Gi"
    service_account: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PodDefaults:
        return cls(
            image_template=settings.sandbox_image,
            images=dict(settings.sandbox_images),
            run_as_user=settings.sandbox_run_as_user,
            storage_limit=settings.sandbox_storage_limit,
            service_account=settings.sandbox_service_account or None,
        )

    def storage_for(self, spec: SandboxSpec) -> str:
        """The spec's ``storageLimit``; else the setting, raised to twice ``fullMaxSize`` for a ``full`` copy."""
        if spec.storage_limit is not None:
            return str(spec.storage_limit)
        if spec.data_mode == "full":
            full = 2 * quantity_bytes(spec.full_max_size)
            if full > quantity_bytes(self.storage_limit):
                return str(full)
        return self.storage_limit


class PodProvider:
    """A PostgreSQL pod per sandbox, owned by its recommendation (see :mod:`optischema.kube.sandboxes`)."""

    def __init__(self, pods: Pods, ready_timeout: float, defaults: PodDefaults | None = None) -> None:
        self.pods = pods
        self.ready_timeout = ready_timeout
        self.defaults = defaults or PodDefaults()

    async def start(
        self, recommendation: dict[str, Any], spec: SandboxSpec, major: int, *, owner: dict[str, Any] | None = None
    ) -> Started:
        """A pod named after ``recommendation``, owned by it or by ``owner`` (see :func:`pod_manifest`)."""
        defaults = self.defaults
        return await self.pods.start(
            recommendation,
            image=image_for(major, spec_image=spec.image, template=defaults.image_template, per_major=defaults.images),
            resources=spec.resources.model_dump(mode="json", by_alias=True, exclude_none=True)
            if spec.resources
            else None,
            deadline_seconds=spec.timeout_seconds,
            ready_timeout=self.ready_timeout,
            storage_limit=defaults.storage_for(spec),
            run_as_user=defaults.run_as_user,
            service_account=defaults.service_account,
            owner=owner,
        )

    async def stop(self, started: Started) -> None:
        namespace, name = getattr(started, "namespace"), getattr(started, "name")  # noqa: B009
        await self.pods.remove(namespace, name)
