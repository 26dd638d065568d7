"""kopf start-up: where kopf keeps its own state, and what the handlers share (settings, client, semaphore)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
from pathlib import Path
from typing import Any

import kopf

from optischema.handlers import lifetime
from optischema.handlers.benchmark import make_queue
from optischema.handlers.webhookserver import (
    DirectorySource,
    RotatingWebhookServer,
    SharedSource,
    is_ip,
    make_server,
)
from optischema.kube.client import Kube, current_namespace, load_config
from optischema.kube.webhookbundle import Lifetimes
from optischema.kube.webhookcerts import Configurations, MemoryStore, SecretStore, Store
from optischema.notify.deliver import Notifier
from optischema.settings import Settings

#: The configuration kopf creates and rewrites itself when the operator is not told the chart's (development).
MANAGED_CONFIGURATION = "optischema.io"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our status subresources are structural schemas: kopf's own bookkeeping goes to annotations, not status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="optischema.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="optischema.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    operator_settings = Settings()
    # kopf's API session has no connection limit: unbounded workers open one TLS connection each when thousands of
    # objects arrive at once (a restart), and the handshakes' memory stays fragmented (1.3 GB for 5,000 objects).
    settings.queueing.worker_limit = operator_settings.worker_limit
    settings.queueing.idle_timeout = 0.5  # a worker slot is held this long after its object's last event
    settings.posting.worker_limit = operator_settings.worker_limit
    settings.peering.lifetime = operator_settings.peering_lifetime_seconds
    load_config()
    memo.settings = operator_settings
    memo.kube = Kube(
        allowed_secrets=operator_settings.allowed_secrets,
        reserved_secrets=operator_settings.own_secrets(operator_settings.operator_namespace or current_namespace()),
        host_addresses=operator_settings.host_addresses,
    )
    if operator_settings.webhook_port:
        settings.admission.server = _webhook_server(operator_settings)
        memo.webhook_serving = settings.admission.server.serving  # what creates recommendations waits for it
        # The chart owns its configurations (helm uninstall removes them); kopf manages one only in development.
        settings.admission.managed = None if operator_settings.webhook_configuration else MANAGED_CONFIGURATION
    else:
        logging.getLogger("optischema").warning(INSECURE)
    memo.analyses = asyncio.Semaphore(operator_settings.analysis_concurrency)
    memo.target_edits = {}  # (namespace, target) -> asyncio.Event, set when the target's spec is edited
    memo.changes_waiting = {}  # (namespace, target) -> names of IndexChanges asleep until their window
    memo.benchmark_wakeups = {}  # (namespace, target) -> asyncio.Event, set when a recommendation arrives
    memo.background = set()  # tasks that must outlive the handler that started them (notifications)
    memo.gone = {}  # uid -> when its DELETED event was seen: its daemons stop (handlers.lifetime)
    memo.daemon_tasks = {}  # uid -> {daemon task: cancellation timeout}, cancelled if their object is deleted
    memo.notifier = Notifier(
        per_target_per_hour=operator_settings.notifications_per_target_per_hour,
        default_sinks=operator_settings.notification_sinks,
        default_namespace=operator_settings.operator_namespace or current_namespace(),
    )
    memo.benchmarks = make_queue(memo)


def _webhook_server(operator_settings: Settings) -> RotatingWebhookServer:
    """kopf's server with a certificate renewed while it runs (``handlers.webhookserver``): the one in
    ``webhook_cert_dir`` (cert-manager renews it; its CA injector keeps the chart's caBundle), else the bundle in
    the shared Secret ``webhook_secret`` (in memory without one: a single replica). With ``webhook_configuration``
    the operator keeps only the caBundle of the chart's configurations; without it kopf manages its own."""
    host = operator_settings.webhook_host
    configurations = (
        Configurations(operator_settings.webhook_configuration) if operator_settings.webhook_configuration else None
    )
    common: dict[str, Any] = {
        "check_seconds": operator_settings.webhook_check_seconds,
        "grace_seconds": operator_settings.webhook_ca_grace_seconds,
        "host": host,
        "port": operator_settings.webhook_port,
    }
    if operator_settings.webhook_cert_dir:
        given = Path(operator_settings.webhook_cert_dir)
        files = (given / "tls.crt", given / "tls.key", given / "ca.crt")
        return make_server(source=DirectorySource(given), configurations=None, files=files, **common)
    store: Store = (
        SecretStore(operator_settings.operator_namespace or current_namespace(), operator_settings.webhook_secret)
        if operator_settings.webhook_secret
        else MemoryStore()
    )
    lifetimes = Lifetimes(
        ca=datetime.timedelta(seconds=operator_settings.webhook_ca_lifetime_seconds),
        cert=datetime.timedelta(seconds=operator_settings.webhook_cert_lifetime_seconds),
    )
    ip = is_ip(host)
    source = SharedSource(store, lifetimes=lifetimes, hosts=[] if ip else [host], ips=[host] if ip else [])
    return make_server(source=source, configurations=configurations, **common)


def webhook_required(operator_settings: Settings) -> str | None:
    """Why the operator must not start (no admission webhook, and running without it not explicitly asked for)."""
    if operator_settings.webhook_port or operator_settings.insecure_no_webhook:
        return None
    return (
        "optischema run: the admission webhook is off (OPTISCHEMA_WEBHOOK_PORT is 0); without it decisions can be "
        "forged and IndexChanges do not record their creator. Set OPTISCHEMA_WEBHOOK_PORT (the chart does), or "
        "OPTISCHEMA_INSECURE_NO_WEBHOOK=true to run without it anyway"
    )


INSECURE = (
    "INSECURE: running without the admission webhook (OPTISCHEMA_INSECURE_NO_WEBHOOK=true): approvals are not "
    "attributed, users can create recommendations already approved or edit their risk and evidence, and "
    "IndexChanges do not record their creator"
)


def _warn_insecure() -> None:
    """Said where it is seen: standard error at start, and the operator's log at every start-up."""
    print(f"WARNING: {INSECURE}", file=sys.stderr, flush=True)
    logging.getLogger("optischema").warning(INSECURE)


def needs_scanning(namespaces: list[str], clusterwide: bool) -> bool:
    """Whether kopf must list and watch namespaces and CRDs cluster-wide. Given exact namespaces it need not: it
    serves those, and finds our kinds in the API's discovery documents (kopf's "restricted mode"), so the chart's
    namespaced mode grants no right on namespaces or CRDs. Left on, kopf would try anyway: nine refused requests
    each, logged as errors, for over a minute before it falls back. Patterns (``shop-*``) need the namespaces
    listed; the whole cluster keeps watching CRDs (the chart's cluster-wide mode grants that)."""
    return clusterwide or any(set(n) & set("*?[]!,") for n in namespaces)


def run_operator(
    *,
    namespaces: list[str],
    clusterwide: bool,
    standalone: bool,
    peering_name: str,
    liveness_endpoint: str | None,
    priority: int = 0,
) -> None:
    """Run kopf with every handler of this package registered, until stopped."""
    from optischema import handlers  # noqa: F401 - registers the handlers

    operator_settings = Settings()
    refusal = webhook_required(operator_settings)
    if refusal:
        raise SystemExit(refusal)
    if operator_settings.webhook_port:
        from optischema.handlers import admission  # noqa: F401 - registers the webhook handler
    else:
        _warn_insecure()

    lifetime.watching(namespaces, clusterwide)  # its start-up release of old finalizers lists these
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.scanning.disabled = not needs_scanning(namespaces, clusterwide)
    # An explicit peering name makes kopf require the peering CRD, even standalone: pass it only when peering.
    kopf.run(
        settings=kopf_settings,
        standalone=standalone,
        peering_name=None if standalone else peering_name,
        clusterwide=clusterwide,
        namespaces=namespaces,
        liveness_endpoint=liveness_endpoint,
        priority=priority,
    )
