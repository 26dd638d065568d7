"""A PostgresTarget's reconciliation: check what the schema cannot (spec rules, Secret, connection, extensions),
report it as conditions, and run the analysis when it is due, turning findings into TuningRecommendations.

Called by the target's daemon in ``handlers``; never imports kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from optischema.analysis import platform
from optischema.analysis.errors import AnalysisError
from optischema.analysis.statements import is_unreadable
from optischema.analysis.suggestions import Rejection
from optischema.api import describe
from optischema.api.conditions import Condition, ConditionType, Reason, remove_condition, set_condition
from optischema.api.durations import parse_duration
from optischema.api.platform import PLATFORM_NAMES
from optischema.api.quantity import quantity_bytes
from optischema.api.target import DatabaseInfo, Extension, LastAnalysis, LlmRejection, LlmStatus, PostgresTargetSpec
from optischema.changes.windows import current_or_next
from optischema.flows import advisor as advisors
from optischema.flows.advisor import DEFAULT_CLUSTER_BUDGET
from optischema.flows.analyze import Advisor, AnalysisResult, AnalyzeOptions, analyze_off_loop
from optischema.flows.measuring import SandboxOpener, on_loop, provider_sandbox
from optischema.flows.sandbox import Provider
from optischema.kube.client import secret_refused
from optischema.kube.cnpg import ClusterProblem, Clusters, Endpoint
from optischema.lifecycle import target as lifecycle
from optischema.postgres.collect import read_server
from optischema.postgres.connect import DATABASE_ERRORS, ConnectParams, connect
from optischema.postgres.platform import read_signals
from optischema.telemetry import LLM_SUGGESTIONS, RECOMMENDATIONS

SecretReader = Callable[[str, str], Awaitable[dict[str, str] | None]]


@dataclass(slots=True)
class Check:
    """What a target check found: the conditions to report and, when reachable, how to connect."""

    ready: bool
    reason: str
    message: str
    stalled: bool = False
    dsn: ConnectParams | None = None
    """How to connect (keyword arguments for asyncpg, never a formatted DSN)."""
    database: DatabaseInfo | None = None
    spec: PostgresTargetSpec | None = None
    notes: list[str] = field(default_factory=list)
    endpoint: Endpoint | None = None
    """Where the server was reached (a CloudNativePG Cluster's Service and instances, or ``host``)."""


def connect_params(
    spec: PostgresTargetSpec, user: str, password: str, ca_pem: str | None = None, endpoint: Endpoint | None = None
) -> ConnectParams:
    """How to reach the target as ``user``: each part apart, handed to asyncpg as keyword arguments (no DSN is
    ever formatted, so a crafted host cannot rewrite the database or TLS). ValueError for a host the model should
    have refused (checked again here: a spec may reach us without the API server's validation). ``endpoint``: where
    :func:`locate` found the server (required for a CloudNativePG Cluster)."""
    c = spec.connection
    host = endpoint.host if endpoint is not None else c.host
    if host is None:
        raise ValueError("spec.connection.cluster: the Cluster's Service has not been located")
    address = endpoint.address if endpoint is not None else None
    return ConnectParams(
        host=host, port=c.port, user=user, password=password, database=c.database, sslmode=c.sslmode, ca_pem=ca_pem,
        address=address,
    )  # fmt: skip


async def locate(namespace: str, spec: PostgresTargetSpec, clusters: Clusters | None) -> Endpoint | Check:
    """Where the server is: ``host`` (at the address the operator's ``hostAddresses`` map it to, if any), or the
    CloudNativePG Cluster's read-write Service and its instances as CloudNativePG publishes them."""
    c = spec.connection
    addresses = clusters.host_addresses if clusters is not None else {}
    if c.cluster is None:
        assert c.host is not None  # the model requires one of them
        return Endpoint(c.host, addresses.get(c.host), c.host)
    if clusters is None:
        message = "spec.connection.cluster: CloudNativePG Clusters are not resolved here (the operator resolves them)"
        return Check(False, Reason.INVALID_SPEC, message, stalled=True, spec=spec)
    try:
        return await clusters.endpoint(namespace, c.cluster.name)
    except ClusterProblem as problem:  # CloudNativePG may not have written its status yet: retried
        return Check(False, Reason.CLUSTER_NOT_READY, str(problem), spec=spec)


async def read_ca(namespace: str, spec: PostgresTargetSpec, read_secret: SecretReader) -> str | Check | None:
    """The PEM CA of ``spec.connection.sslRootCertSecret`` (a Cluster's ``-ca`` Secret by default; None when there
    is none), or the failed Check saying why."""
    ref = spec.connection.root_cert()
    if ref is None:
        return None
    secret = await read_secret(namespace, ref.name)
    if secret is None:
        return Check(False, Reason.SECRET_NOT_ALLOWED, secret_refused(namespace, ref.name), stalled=True, spec=spec)
    if ref.key not in secret or not _readable_ca(secret[ref.key]):
        return Check(
            False,
            Reason.SECRET_KEY_MISSING,
            f"spec.connection.sslRootCertSecret: Secret {namespace}/{ref.name} has no PEM certificate in key {ref.key}",
            stalled=True,
            spec=spec,
        )
    return secret[ref.key]


def _readable_ca(pem: str) -> bool:
    """Whether ``pem`` holds certificates TLS can load: garbage in the Secret is for a person to fix (Stalled), not a
    TLS failure retried every interval, nor a TypeError (non-ASCII) crashing the reconciliation."""
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, TypeError, ValueError):
        return False
    return "BEGIN CERTIFICATE" in pem


async def check_target(
    namespace: str,
    raw_spec: dict[str, Any],
    read_secret: SecretReader,
    *,
    clusters: Clusters | None = None,
    connect_timeout: float | None = None,
) -> Check:
    """The target's spec, Secret and database as they are now; ``connect_timeout`` caps the spec's own (the
    admission webhook must answer within seconds). ``clusters`` locates a CloudNativePG Cluster (and applies the
    operator's ``hostAddresses``)."""
    try:
        spec = PostgresTargetSpec.model_validate(raw_spec)
    except ValidationError as error:
        return Check(False, Reason.INVALID_SPEC, "; ".join(describe(error, "spec")), stalled=True)
    ref = spec.connection.credentials()
    secret = await read_secret(namespace, ref.name)
    if secret is None:
        return Check(False, Reason.SECRET_NOT_ALLOWED, secret_refused(namespace, ref.name), stalled=True, spec=spec)
    missing = [key for key in (ref.username_key, ref.password_key) if key not in secret]
    if missing:
        return Check(
            False,
            Reason.SECRET_KEY_MISSING,
            f"Secret {namespace}/{ref.name} has no key {', '.join(missing)}",
            stalled=True,
            spec=spec,
        )
    ca = await read_ca(namespace, spec, read_secret)
    if isinstance(ca, Check):
        return ca
    endpoint = await locate(namespace, spec, clusters)
    if isinstance(endpoint, Check):
        return endpoint
    try:
        dsn = connect_params(spec, secret[ref.username_key], secret[ref.password_key], ca, endpoint)
    except ValueError as error:
        return Check(False, Reason.INVALID_SPEC, str(error), stalled=True, spec=spec)
    try:
        conn = await connect(dsn, timeout=_capped(spec.connection.connect_timeout_seconds, connect_timeout))
    except AnalysisError as error:
        # A wrong password or a server that cannot be authenticated needs a person; one that is down may come back.
        needs_person = error.reason in ("AuthenticationFailed", "TLSVerificationFailed", "TLSUnavailable")
        return Check(False, error.reason, error.message, stalled=needs_person, spec=spec)
    try:
        server = await read_server(conn)
        detection = platform.classify(await read_signals(conn))
    except DATABASE_ERRORS as error:
        return Check(False, Reason.CONNECTION_FAILED, f"the connection failed: {error}", spec=spec)
    finally:
        await conn.close()
    database = DatabaseInfo(
        server_version=server.version,
        server_version_num=server.version_num,
        system_identifier=server.system_identifier,
        extensions=[Extension(name=n, version=v) for n, v in sorted(server.extensions.items())],
        platform=detection.platform,
        platform_evidence=list(detection.evidence),
    )
    if "pg_stat_statements" not in server.extensions:
        return Check(
            False,
            Reason.EXTENSION_MISSING,
            f"pg_stat_statements is not installed in database {spec.connection.database!r}: add it to "
            "shared_preload_libraries and run CREATE EXTENSION pg_stat_statements",
            stalled=True,
            dsn=dsn,
            database=database,
            spec=spec,
        )
    notes = (
        []
        if "hypopg" in server.extensions
        else ["HypoPG is not installed: index proposals are heuristic only (CREATE EXTENSION hypopg enables what-if)"]
    )
    where = f" on {PLATFORM_NAMES[detection.platform]} (settings are advice only)" if detection.managed else ""
    message = f"connected to PostgreSQL {server.version}{where}" + (f"; {notes[0]}" if notes else "")
    return Check(True, Reason.CONNECTED, message, dsn=dsn, database=database, spec=spec, notes=notes, endpoint=endpoint)


def _capped(seconds: float, cap: float | None) -> float:
    return seconds if cap is None else min(seconds, cap)


def conditions_for(
    check: Check, previous: list[Condition], *, now: datetime, generation: int | None
) -> list[Condition]:
    """Ready, Stalled and Reconciling as kstatus reads them."""
    conditions = set_condition(
        previous,
        ConditionType.READY,
        "True" if check.ready else "False",
        check.reason,
        check.message,
        now=now,
        generation=generation,
    )
    if check.stalled:
        conditions = set_condition(
            conditions, ConditionType.STALLED, "True", check.reason, check.message, now=now, generation=generation
        )
        return remove_condition(conditions, ConditionType.RECONCILING)
    conditions = remove_condition(conditions, ConditionType.STALLED)
    if check.ready:
        return remove_condition(conditions, ConditionType.RECONCILING)
    return set_condition(
        conditions,
        ConditionType.RECONCILING,
        "True",
        check.reason,
        f"retrying: {check.message}",
        now=now,
        generation=generation,
    )


def window_status(spec: PostgresTargetSpec, now: datetime) -> dict[str, str | None]:
    """``nextWindowStart``/``End`` for the status: the open window, else the next one (``None`` when none)."""
    found = current_or_next(spec.maintenance_windows, spec.one_off_windows, spec.blackouts, now)
    return {
        "nextWindowStart": found.start.isoformat() if found else None,
        "nextWindowEnd": found.end.isoformat() if found else None,
    }


def analysis_due(
    spec: PostgresTargetSpec,
    last_completion: str | None,
    requested: str | None,
    last_requested: str | None,
    now: datetime,
) -> bool:
    """Due when never run, when the interval has passed, or when a new on-demand request came in."""
    if spec.suspend:
        return False
    if requested and requested != last_requested:
        return True
    if not last_completion:
        return True
    completed = datetime.fromisoformat(last_completion.replace("Z", "+00:00"))
    return now - completed >= parse_duration(spec.analysis.interval)


async def run_analysis(
    check: Check,
    sample_seconds: float,
    semaphore: asyncio.Semaphore,
    advisor: Advisor | None = None,
    measure: SandboxOpener | None = None,
) -> tuple[AnalysisResult | None, str | None, float]:
    """The analysis, bounded across targets by ``semaphore``; (result, error, seconds). ``measure`` opens the
    sandbox in which candidates HypoPG cannot simulate are measured (the target's sandbox is enabled)."""
    spec, dsn = check.spec, check.dsn
    if spec is None or dsn is None:
        return None, "the target is not ready", 0.0
    options = AnalyzeOptions(
        min_calls=spec.analysis.min_calls,
        top_statements=spec.analysis.top_statements,
        ignore_schemas=spec.analysis.ignore_schemas,
        ignore_statements=spec.analysis.ignore_statements,
        budget_bytes=quantity_bytes(spec.policy.index_storage_budget),
        max_indexes_per_table=spec.policy.max_indexes_per_table,
        sample_seconds=sample_seconds,
        connect_timeout=spec.connection.connect_timeout_seconds,
        advisor=advisor,
        pii_safe=spec.llm.pii_safe,
        measure=measure,
        measure_copy=spec.sandbox,
        replicas=replica_params(spec, dsn, check.endpoint),
        unreadable_instances=unreadable_instances(check.endpoint, dsn),
        cluster=spec.connection.cluster.name if spec.connection.cluster else None,
        unused_min_statistics_age=parse_duration(spec.analysis.unused_index_min_statistics_age),
    )
    started = time.monotonic()
    async with semaphore:
        try:
            return await analyze_off_loop(dsn, options), None, time.monotonic() - started
        except AnalysisError as error:
            return None, f"{error.reason}: {error.message}", time.monotonic() - started


def replica_params(
    spec: PostgresTargetSpec, primary: ConnectParams, endpoint: Endpoint | None = None
) -> list[ConnectParams]:
    """Each ``spec.connection.replicas`` entry reached like the primary (database, credentials, TLS), at its own
    host and port (the connection's port when it names none); and each CloudNativePG instance other than the
    primary at its Pod's address, the certificate checked against the Cluster's ``-r`` Service name."""
    listed = [
        dataclasses.replace(primary, host=replica.host, port=replica.port or spec.connection.port, address=None)
        for replica in spec.connection.replicas
    ]
    if endpoint is None or not _authenticated(primary):
        return listed
    return listed + [
        dataclasses.replace(primary, host=endpoint.instances_host, address=instance.address)
        for instance in endpoint.instances
        if instance.address is not None
    ]


def _authenticated(primary: ConnectParams) -> bool:
    """A Pod's address is reached only when TLS authenticates the server there as the Cluster's: anyone who may
    create Pods can make one look like an instance (label, owner), and without verification it would be sent the
    credentials."""
    return primary.sslmode == "verify-full"  # verify-ca would take another Cluster's certificate of a shared CA


def unreadable_instances(endpoint: Endpoint | None, primary: ConnectParams | None = None) -> list[tuple[str, str]]:
    """The CloudNativePG instances that are not read (their Pod has no IP, or ``sslmode`` does not authenticate
    the server): unreadable, never skipped, so every index they may use stays."""
    instances = endpoint.instances if endpoint is not None else []
    if not instances:  # a host, or a Cluster of one instance: nothing to say (whatever the primary's parameters)
        return []
    if primary is not None and not _authenticated(primary):
        why = f"instances are read only with sslmode verify-full (it is {primary.sslmode})"
        return [(i.name, why) for i in instances]
    return [(i.name, "its Pod has no IP address (not running)") for i in instances if i.address is None]


def _unproved_rewrites(result: AnalysisResult) -> None:
    """Without a sandbox a rewrite cannot be proved (same rows, faster): it does not get through."""
    assert result.consultation is not None
    for recommendation in [r for r in result.recommendations if r.kind == "queryRewrite"]:
        result.recommendations.remove(recommendation)
        what = (
            f"rewrite of {recommendation.change.query_rewrite.query_id}"
            if recommendation.change.query_rewrite
            else "rewrite"
        )
        result.consultation.rejections.append(
            Rejection("rewrite", what, "no sandbox to prove it in (spec.sandbox.enabled is false)")
        )


def llm_status(result: AnalysisResult, note: str | None, tokens_today: int, labels: tuple[str, str]) -> dict[str, Any]:
    """``status.llm`` from the analysis's consultation (and the suggestions metric, by kind and fate)."""
    consultation = result.consultation
    if consultation is None:
        return LlmStatus(message=note or "the LLM was not consulted", tokens_today=tokens_today).to_wire()
    for rejection in consultation.rejections:
        LLM_SUGGESTIONS.labels(*labels, rejection.kind, "rejected").inc()
    LLM_SUGGESTIONS.labels(*labels, "all", "accepted").inc(consultation.accepted)
    messages = [m for m in (consultation.note, note) if m]
    return LlmStatus(
        model=consultation.model,
        cached=consultation.cached,
        tokens=consultation.tokens,
        tokens_today=tokens_today,
        accepted=consultation.accepted,
        rejected=[
            LlmRejection(kind=r.kind, what=r.what[:512], reason=r.reason[:1024]) for r in consultation.rejections[:50]
        ],
        message="; ".join(messages) or None,
        budget_spent=consultation.budget_spent,
    ).to_wire()


def utc_now() -> datetime:
    return datetime.now(UTC)


def unready(check: Check, previous: LastAnalysis, requested: str | None, now: datetime) -> dict[str, Any]:
    """The status patch of an analysis that was due but could not run, the target not being ready."""
    return lifecycle.status_patch(
        lifecycle.not_ready(previous, now, reason=str(check.reason), message=check.message, requested=requested)
    )


async def analyse_and_record(
    kube: Any,
    target: dict[str, Any],
    check: Check,
    *,
    run: LastAnalysis,
    sample_seconds: float,
    semaphore: asyncio.Semaphore,
    operator_namespace: str = "optischema-system",
    llm_cluster_budget: int = DEFAULT_CLUSTER_BUDGET,
    sandbox_provider: Provider | None = None,
) -> tuple[bool, str]:
    """Analyse, sync the recommendations and record ``status.lastAnalysis`` — inline or in an analysis Job.
    With ``sandbox_provider`` and the target's sandbox enabled, GIN/GiST candidates are measured in a sandbox of it.

    ``run`` is the analysis as :func:`optischema.lifecycle.target.started` began it. Whatever goes wrong is
    recorded as a failed analysis, an unexpected error included (with its type): a round that only raised would be
    retried at every check with ``lastAnalysis`` unchanged, and ``analysisFailing`` would never hear of it.
    """
    meta = target["metadata"]
    clock = time.monotonic()
    try:
        return await _analyse_and_record(
            kube, target, check, run, sample_seconds, semaphore, operator_namespace, llm_cluster_budget,
            sandbox_provider,
        )  # fmt: skip
    except Exception as error:  # see the docstring; the caller logs and posts it as well
        message = f"unexpected error: {type(error).__name__}: {_one_line(error)}"
        failure = lifecycle.failed(run, utc_now(), message, duration_seconds=time.monotonic() - clock)
        await kube.patch_status("postgrestargets", meta["namespace"], meta["name"], lifecycle.status_patch(failure))
        return False, message


def _one_line(error: Exception) -> str:
    """An error as one line for the status: an API error's own message (its ``str`` carries the HTTP headers)."""
    body = getattr(error, "body", None)
    if isinstance(body, str | bytes):
        with contextlib.suppress(ValueError, AttributeError):
            found = json.loads(body).get("message")
            if found:
                return f"{getattr(error, 'status', '')} {found}".strip()[:2000]
    return " ".join(str(error).split())[:2000]


async def _analyse_and_record(
    kube: Any,
    target: dict[str, Any],
    check: Check,
    run: LastAnalysis,
    sample_seconds: float,
    semaphore: asyncio.Semaphore,
    operator_namespace: str,
    llm_cluster_budget: int,
    sandbox_provider: Provider | None = None,
) -> tuple[bool, str]:
    from optischema.flows import recommendations, reports

    meta = target["metadata"]
    started = run.start_time or utc_now()
    advisor, store, llm_note = None, None, None
    if check.spec is not None and check.spec.llm.enabled:
        advisor, store, llm_note = await advisors.for_target(
            kube, target, check.spec.llm, operator_namespace=operator_namespace, cluster_budget=llm_cluster_budget
        )
    measure = None
    if sandbox_provider is not None and check.spec is not None and check.spec.sandbox.enabled:
        # The analysis runs on a loop of its own (analyze_off_loop); the pods are made on this one.
        measure = on_loop(provider_sandbox(sandbox_provider, target, check.spec.sandbox), asyncio.get_running_loop())
    result, error, seconds = await run_analysis(check, sample_seconds, semaphore, advisor, measure)
    if result is None:
        failure = lifecycle.failed(run, utc_now(), error or "analysis failed", duration_seconds=seconds)
        await kube.patch_status("postgrestargets", meta["namespace"], meta["name"], lifecycle.status_patch(failure))
        return False, error or "analysis failed"
    if check.spec is not None and not check.spec.sandbox.enabled and result.consultation is not None:
        _unproved_rewrites(result)
    counts = await recommendations.apply(kube, target, result)
    try:
        await reports.record(
            kube, target, result.statements, result.recommendations, index_bytes=result.index_bytes,
            index_count=result.index_count, now=started,
        )  # fmt: skip
    except Exception as error:  # the history is for reports: never worth failing an analysis over
        result.notes.append(f"the statement history could not be recorded: {error}")
    unreadable = [(str(s.query_id), s.reason) for s in result.skipped if is_unreadable(s.reason)]
    if unreadable:
        result.notes.append(
            f"{len(unreadable)} statement(s) could not be read and were skipped (see unreadable), e.g. query "
            f"{unreadable[0][0]}: {unreadable[0][1]}"
        )
    done = lifecycle.succeeded(
        run,
        utc_now(),
        duration_seconds=seconds,
        statements_seen=result.statements_seen,
        statements_analysed=result.statements_analysed,
        statements_skipped=len(result.skipped),
        unreadable=unreadable,
        notes=result.notes,
    )
    for phase, count in counts.items():
        RECOMMENDATIONS.labels(meta["namespace"], meta["name"], phase).set(count)
    patch: dict[str, Any] = {**lifecycle.status_patch(done), "recommendations": counts}
    if check.spec is not None and check.spec.llm.enabled:
        tokens_today = await store.today() if store is not None else 0
        patch["llm"] = llm_status(result, llm_note, tokens_today, (meta["namespace"], meta["name"]))
    elif (target.get("status") or {}).get("llm"):
        patch["llm"] = None  # switched off: nothing of a former advisor stays in the status
    await kube.patch_status("postgrestargets", meta["namespace"], meta["name"], patch)
    return True, f"{len(result.recommendations)} finding(s) from {result.statements_analysed} statements"
