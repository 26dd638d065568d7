"""The live endpoint's work: who asks, may they, and the target's top statements now.

``kubectl optischema top`` shows what the history ConfigMaps hold (as fresh as the last analysis) and, beside
it, what this answers: the target's ``pg_stat_statements`` read now, over the target's own read-only connection,
so that no database credential is handed to a laptop.

Who may read it — the choice, and why:

- The plugin reaches the endpoint through the API server's service proxy (RBAC ``get`` on ``services/proxy`` of
  the operator's live Service). That decides who may reach the operator at all, but not which target: the proxy
  forwards no identity (it even drops the ``Authorization`` header after authenticating the caller), and anything
  in the cluster network may call the Pod without any proxy.
- So every request carries the caller's own bearer token (``X-OptiSchema-Token``, a header the proxy passes on),
  and the operator asks the API server whose it is (TokenReview) and whether that user may ``get`` this
  PostgresTarget (SubjectAccessReview with the user's name, uid, groups and extra). The rule is the one the user
  already lives by: who may read a target may read its statements — the same texts its recommendations' evidence
  carries. A SubjectAccessReview alone would have to trust a user name the request claims (any Pod could claim
  ``admin``); a TokenReview proves it.
- The review comes first, before the target is looked up, so a refused caller cannot learn whether a target
  exists. The token is used for the two reviews only: never logged, never kept, never used to act as the user.
- Users whose kubeconfig holds a client certificate (no token) cannot prove who they are to the operator: the
  plugin says so in one line and shows the history alone.

The figures are cached per target for ``live_cache_seconds``, so many terminals refreshing ``top`` cost the database
one read per target per period; the read has a short statement timeout and runs in a read-only session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from optischema.analysis.errors import AnalysisError
from optischema.flows.target import check_target
from optischema.kube.client import Kube
from optischema.kube.reviews import Caller, Reviews
from optischema.postgres.collect import read_server, read_statements
from optischema.postgres.connect import DATABASE_ERRORS, connect
from optischema.reports import live

#: The read's limits: the connection's and each statement's timeouts (seconds).
CONNECT_SECONDS = 5.0
STATEMENT_MS = 5_000
#: Rows read from pg_stat_statements before the workload filter keeps at most ``live.MAX_STATEMENTS``.
READ_ROWS = 500


@dataclass(frozen=True)
class Refused(Exception):
    """A request that gets no figures: the HTTP status and one line for the caller."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class LiveTop:
    kube: Kube
    reviews: Reviews
    cache_seconds: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = field(default_factory=dict)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    async def authorize(self, token: str | None, namespace: str, name: str) -> Caller:
        """The caller, when its token is valid and it may get the PostgresTarget; else :class:`Refused`."""
        if not token:
            raise Refused(401, "no bearer token: send the caller's token in X-OptiSchema-Token (or Authorization)")
        try:
            caller = await self.reviews.authenticate(token)
        except ApiException as error:
            raise Refused(503, f"the API server did not review the token: {error.status} {error.reason}") from error
        if caller is None:
            raise Refused(401, "the API server does not accept this token")
        try:
            allowed, reason = await self.reviews.may_get(caller, "postgrestargets", namespace, name)
        except ApiException as error:
            raise Refused(503, f"the API server did not review the access: {error.status} {error.reason}") from error
        if not allowed:
            raise Refused(
                403,
                f'user "{caller.name}" may not get postgrestargets/{name} in namespace {namespace}, so may not read '
                "its statements" + (f" ({reason})" if reason else ""),
            )
        return caller

    async def top(self, namespace: str, name: str) -> dict[str, Any]:
        """The live answer for the target (``reports/live.py``), from the cache when fresh."""
        key = (namespace, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent requests for one target share one read
            cached = self._cache.get(key)
            if cached is not None and cached[0] > self.clock():
                return cached[1]
            body = await self._read(namespace, name)
            self._cache[key] = (self.clock() + self.cache_seconds, body)
            return body

    async def serve(self, token: str | None, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for ``GET /targets/<namespace>/<name>/top``."""
        try:
            await self.authorize(token, namespace, name)
            return 200, await self.top(namespace, name)
        except Refused as refused:
            return refused.status, {"error": refused.message}

    async def _read(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            target = await self.kube.get("postgrestargets", namespace, name)
        except LookupError as error:
            raise Refused(404, f"postgrestargets/{name} not found in namespace {namespace}") from error
        except ApiException as error:
            raise Refused(
                503, f"the operator cannot read postgrestargets/{name} in {namespace}: {error.reason}"
            ) from error
        check = await check_target(namespace, dict(target.get("spec") or {}), self.kube.read_secret,
                                   clusters=self.kube.clusters, connect_timeout=CONNECT_SECONDS)  # fmt: skip
        if check.dsn is None:
            raise Refused(503, f"the target cannot be read now: {check.message}")
        try:
            conn = await connect(check.dsn, timeout=CONNECT_SECONDS, statement_timeout_ms=STATEMENT_MS)
        except AnalysisError as error:
            raise Refused(503, f"the target cannot be read now: {error.message}") from error
        try:
            server = await read_server(conn)
            statements, hidden = await read_statements(conn, server, limit=READ_ROWS)
        except AnalysisError as error:
            raise Refused(503, f"the target cannot be read now: {error.message}") from error
        except DATABASE_ERRORS as error:
            raise Refused(503, f"reading pg_stat_statements failed: {type(error).__name__}") from error
        finally:
            await conn.close()
        rows = [(str(s.query_id), s.query, s.calls, s.total_time_ms, s.rows) for s in statements]
        return live.answer(namespace, name, datetime.now(UTC), rows, hidden=hidden)
