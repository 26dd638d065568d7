"""Operator settings, from flags or ``OPTISCHEMA_*`` environment variables (pydantic-settings).

Read by flows, handlers and the CLI only; the pure layers get values as arguments.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from optischema.api.quantity import parse_quantity
from optischema.api.target import NotificationSink

#: A ServiceAccount's name (the runner of each namespace), or a full ``system:serviceaccount:<namespace>:<name>``.
_NAME = r"[a-z0-9]([-.a-z0-9]*[a-z0-9])?"
RUNNER = rf"^$|^{_NAME}$|^system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:{_NAME}$"
#: ``namespace/name`` of a Secret.
SECRET_REF = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"


def _image_template(template: str) -> str:
    """A sandbox image template may hold ``{major}`` and no other placeholder."""
    try:
        template.format(major=15)
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(
            f"sandbox_image {template!r} must be an image reference where only {{major}} is replaced ({error!r})"
        ) from None
    return template


def _ip_address(value: str) -> str:
    ipaddress.ip_address(value)  # ValueError: an IP address, nothing else
    return value


def _quantity(value: str) -> str:
    parse_quantity(value)
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPTISCHEMA_", use_attribute_docstrings=True, extra="ignore")

    namespaces: list[str] = Field(default_factory=list)
    """Namespaces to watch; empty means the whole cluster."""
    standalone: bool = True
    """Run without kopf peering (one replica). With several replicas, set false so that only one is active."""
    peering_name: str = "optischema"
    """kopf peering object shared by the replicas when not standalone."""
    priority: int = Field(default=0, ge=0)
    """This replica's peering priority (the highest works, the others wait). 0 picks a random one: replicas of
    equal priority would all pause."""
    peering_lifetime_seconds: int = Field(default=60, ge=5)
    """How long a replica's peering record lives without a keep-alive before the others take over."""
    analysis_concurrency: int = Field(default=2, ge=1, le=64)
    """Inline analyses running at once, across all targets."""
    check_seconds: float = Field(default=30.0, gt=0)
    """How often each target is re-checked (connection, extensions) and its analysis schedule looked at."""
    sample_seconds: float = Field(default=5.0, ge=0)
    """How long each analysis watches pg_stat_activity for statements with their constants."""
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    """Default connection timeout when a target does not set one."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of the Prometheus /metrics endpoint; 0 turns it off."""
    liveness_endpoint: str | None = None
    """kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz."""
    live_port: int = Field(default=0, ge=0, le=65535)
    """Port of the read-only live endpoint ``GET /targets/<namespace>/<name>/top`` (``kubectl optischema top``
    reaches it through the API server's service proxy); 0 turns it off. Each request carries the caller's bearer
    token, reviewed by the API server (``handlers/live.py``)."""
    live_host: str = "0.0.0.0"
    """Address the live endpoint listens on."""
    live_cache_seconds: float = Field(default=2.0, ge=0, le=300)
    """How long one target's live figures are served from memory: many terminals refreshing ``top`` cost the
    database one pg_stat_statements read per target per this many seconds."""
    webhook_port: int = Field(default=0, ge=0, le=65535)
    """Port of the admission webhook server. 0 (no webhook) is refused at start-up unless ``insecure_no_webhook``:
    without it approvals are not attributed, a user can create a recommendation already approved, edit its risk or
    evidence, and IndexChanges do not record their creator."""
    insecure_no_webhook: bool = False
    """Run without the admission webhook anyway (``OPTISCHEMA_INSECURE_NO_WEBHOOK=true``), e.g. in a test cluster
    with no way to reach the operator. Insecure: decisions can be forged (see ``webhook_port``); logged loudly at
    start-up."""
    index_change_creators: list[str] = Field(default_factory=list, max_length=100)
    """Who may create IndexChanges, checked by the webhook: user names (``alice``,
    ``system:serviceaccount:argocd:argocd-application-controller``) or groups (``group:dbas``), as JSON in
    ``OPTISCHEMA_INDEX_CHANGE_CREATORS``. Empty: anyone RBAC lets create them. The operator itself always may."""
    webhook_host: str = "127.0.0.1"
    """Address the API server calls the webhook at (URL mode). In a cluster, the chart uses the Service form."""
    webhook_cert_dir: str | None = None
    """A directory with ``tls.crt``, ``tls.key`` and ``ca.crt`` (e.g. a cert-manager Secret) for the webhook, instead
    of a certificate the operator makes itself. Re-read every ``webhook_check_seconds``: a renewed certificate
    (cert-manager renews the Secret, the kubelet updates the mount) is served without a restart."""
    webhook_secret: str | None = None
    """Secret in the operator's namespace holding the webhook's CA and certificate (``ca.crt``, ``ca.key``,
    ``tls.crt``, ``tls.key``, ``ca-bundle.crt``), shared by all replicas: the first creates it, every replica serves
    what it holds, and whoever finds it due renews it (optimistic concurrency). Unset: one CA kept in memory,
    enough for a single replica (development); the chart sets ``<release>-webhook-ca``."""
    webhook_configuration: str | None = None
    """Name of the Validating- and MutatingWebhookConfiguration the chart owns: the operator only keeps their
    ``caBundle`` equal to its CA bundle. Unset: kopf creates and rewrites ``optischema.io`` itself (development)."""
    webhook_ca_lifetime_seconds: int = Field(default=3 * 365 * 86400, ge=30)
    """Lifetime of the webhook's CA; replaced at 2/3 of it, the old one trusted until it expires."""
    webhook_cert_lifetime_seconds: int = Field(default=90 * 86400, ge=15)
    """Lifetime of the webhook's serving certificate (at most the CA's); renewed at 2/3 of it."""
    webhook_check_seconds: float = Field(default=60.0, gt=0, le=3600)
    """How often each replica re-reads its certificate (the Secret, or ``webhook_cert_dir``) and the caBundle."""
    webhook_ca_grace_seconds: float = Field(default=5.0, ge=0, le=300)
    """After a new CA is published in the caBundle, how long before a certificate it signed is served: the API
    server's view of the webhook configuration catches up meanwhile."""
    operator_identity: str = "system:serviceaccount:optischema-system:optischema"
    """The operator's own user name: the only one allowed to set approval.decidedBy itself (auto-approval)."""
    image: str = "ghcr.io/optischema/optischema-operator:0.1.0"
    """Image of analysis Jobs (the operator's own)."""
    job_service_account: str = "optischema-analysis"
    """Service account of analysis Jobs, in the target's namespace (role: manifests/rbac/analysis-job.yaml)."""
    runner_service_account: str = Field(default="", pattern=RUNNER)
    """ServiceAccount, in each watched namespace, the operator impersonates to create sandbox pods, their Secrets and
    NetworkPolicies, and analysis Jobs (the chart's ``<release>-runner``; the operator holds no create right on
    these itself; watching the whole cluster, the one runner ``system:serviceaccount:<namespace>:<name>``). Empty:
    they are created with the operator's own identity (development, tests running the operator as a local process
    with admin credentials)."""
    sandbox_service_account: str = ""
    """ServiceAccount sandbox pods run as (the chart's ``<release>-sandbox``: no rights, no token mounted). Empty:
    the namespace's default, with automountServiceAccountToken off."""
    log_format: Literal["json", "console"] = "json"
    """Structured logs as JSON lines (for log pipelines) or readable console lines."""
    worker_limit: int = Field(default=100, ge=1, le=1000)
    """Objects handled at once (kopf's queueing workers; also event posting). Bounds the operator's connections
    to the API server and its memory after a restart with thousands of objects (``make bench``)."""
    apply_lock_timeout_ms: int = Field(default=5000, ge=100, le=600_000)
    """``lock_timeout`` of every statement the operator executes: a DDL that waits longer gives up, lets the
    application's queries through, and is retried with backoff while the window lasts."""
    apply_retry_backoff_seconds: float = Field(default=2.0, gt=0, le=300)
    """First wait before retrying after a lock timeout (doubled each time, at most 60 s)."""
    max_sandboxes: int = Field(default=4, ge=1, le=200)
    """Sandbox pods running at once across all targets (each target also has ``spec.sandbox.maxConcurrent``)."""
    sandbox_image: Annotated[str, AfterValidator(_image_template)] = Field(
        default="postgres:{major}", min_length=1, max_length=512
    )
    """Sandbox image when a target's ``spec.sandbox.image`` is empty (``OPTISCHEMA_SANDBOX_IMAGE``): a template in
    which ``{major}`` is the target's major version, e.g. ``registry.example/mirror/postgres:{major}`` for a private
    registry. The image must start PostgreSQL as the official image's entrypoint does (``POSTGRES_*`` variables,
    ``PGDATA``) and run as ``sandbox_run_as_user``."""
    sandbox_images: dict[Annotated[str, Field(pattern=r"^[0-9]{1,2}$")], Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict, max_length=20
    )
    """Per major version, the image to use instead of ``sandbox_image`` (JSON in ``OPTISCHEMA_SANDBOX_IMAGES``), for
    digest pins: ``{"15": "registry.example/postgres@sha256:…"}``."""
    sandbox_run_as_user: int = Field(default=999, ge=1, le=2_147_483_647)
    """uid and gid sandbox pods run as: the image's ``postgres`` user (999 in the official Debian-based images, 70 in
    the Alpine ones). Pod Security "restricted" needs a non-root user the kubelet can check by number."""
    sandbox_storage_limit: Annotated[str, AfterValidator(_quantity)] = "4Gi"
    """``sizeLimit`` of a sandbox's data ``emptyDir`` when the target's ``spec.sandbox.storageLimit`` is empty (a
    ``full`` copy gets at least twice its ``fullMaxSize``). Sized for the default sample: 10 % of each table, at
    most a million rows each. A pod that writes more is evicted, and its benchmark fails."""
    sandbox_ready_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)
    """How long a sandbox pod may take to become ready before it is removed and the benchmark recorded as
    failed (``SandboxNotReady``)."""
    benchmark_runs: int = Field(default=20, ge=3, le=1000)
    """Timed executions of each statement before and after the change."""
    operator_namespace: str | None = None
    """Namespace of the operator's pods, which sandbox NetworkPolicies let in; by default the one we run in."""
    operator_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "optischema", "app.kubernetes.io/component": "operator"}
    )
    """Labels of the operator's pods, which sandbox NetworkPolicies let in (the chart sets them on its pods)."""
    llm_cluster_daily_token_budget: int = Field(default=2_000_000, ge=0)
    """LLM tokens per day (UTC) across all targets; each target also has ``spec.llm.dailyTokenBudget``."""
    allowed_secrets: list[Annotated[str, Field(pattern=SECRET_REF)]] = Field(default_factory=list, max_length=1000)
    """Secrets the operator (and its analysis Jobs) may read without the label ``optischema.io/allow: "true"``, as
    ``namespace/name`` (JSON in ``OPTISCHEMA_ALLOWED_SECRETS``). Any other Secret a spec names is never read: a
    target naming one is ``Stalled`` (``SecretNotAllowed``), so that whoever may write a target cannot have the
    operator read, and send to a host of their choosing, a Secret they may not read themselves."""
    host_addresses: dict[
        Annotated[str, Field(min_length=1, max_length=253)], Annotated[str, AfterValidator(_ip_address)]
    ] = Field(default_factory=dict, max_length=1000)
    """Host names the operator connects to at a given IP address instead of resolving them (JSON in
    ``OPTISCHEMA_HOST_ADDRESSES``, e.g. ``{"db-rw.shop.svc": "10.0.3.7"}``), as libpq's ``hostaddr``: TLS still
    authenticates the name. For an operator run outside the cluster (development) whose resolver does not know
    in-cluster Services, such as a CloudNativePG Cluster's read-write Service."""
    notification_sinks: list[NotificationSink] = Field(default_factory=list, max_length=10)
    """The cluster default for targets whose ``spec.notifications.sinks`` is empty: the same form as the spec's
    (JSON in ``OPTISCHEMA_NOTIFICATION_SINKS``), with the URL Secrets in the operator's namespace. The operator
    reads them by name (these settings are their opt-in) and never for a spec (see ``reserved_secrets``)."""
    reserved_secrets: list[Annotated[str, Field(pattern=SECRET_REF)]] = Field(default_factory=list, max_length=1000)
    """Secrets no spec may name, as ``namespace/name`` (JSON in ``OPTISCHEMA_RESERVED_SECRETS``), besides those
    the operator keeps for itself (:meth:`own_secrets`). Analysis Jobs get the operator's list this way."""

    def own_secrets(self, namespace: str) -> set[str]:
        """``namespace/name`` of the Secrets the operator's settings name for its own use — the default sinks' URL
        and HMAC Secrets and the webhook's CA — in the operator's ``namespace``, plus ``reserved_secrets``. A target
        author naming one of them (``credentialsSecret: {name: <the team's Slack URL Secret>}`` with their own
        ``host``) would have the operator send it to them, opted in or not: spec reads refuse them."""
        names = {sink.url_secret.name for sink in self.notification_sinks}
        names |= {sink.hmac_secret.name for sink in self.notification_sinks if sink.hmac_secret is not None}
        if self.webhook_secret:
            names.add(self.webhook_secret)
        return {f"{namespace}/{name}" for name in names} | set(self.reserved_secrets)

    notifications_per_target_per_hour: int = Field(default=30, ge=1, le=10_000)
    """Notifications sent per target and hour at most (a burst of findings does not flood a channel)."""
    immediate_budget_seconds: int = Field(default=3600, ge=60, le=86400)
    """Time allowed to an ``immediate`` change (it has no window to end it): its statement timeout."""
