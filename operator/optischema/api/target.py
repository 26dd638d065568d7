"""``PostgresTarget``: a database the operator analyses, and the rules it must keep while tuning it."""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import re2  # type: ignore[import-untyped]
from croniter import croniter
from pydantic import AfterValidator, AwareDatetime, Field, field_validator, model_validator

from .base import (
    ApiModel,
    K8sName,
    LocalObjectReference,
    Quantity,
    ResourceRequirements,
    SecretKey,
    SecretKeySelector,
    cel_rules,
)
from .conditions import CONDITIONS_LIST, Condition
from .durations import Duration, duration_between
from .indexchange import Verification
from .network import ENDPOINT_URL_PATTERN, HOST_PATTERN, check_endpoint_url, check_host
from .platform import Platform

ChangeKind = Literal["createIndex", "dropIndex", "analyze", "setting"]
"""Kinds of change a policy can allow. ``queryRewrite`` is advice for developers and never applied."""
Risk = Literal["low", "medium", "high"]
Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


def _hhmm(value: str) -> str:
    if not re.fullmatch(HHMM_PATTERN, value):
        raise ValueError(f"must be HH:MM on a 24-hour clock (00:00 to 23:59), got {value!r}")
    return value


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def _time_zone(value: str) -> str:
    # ZoneInfo() alone also accepts file paths below the zone directory; the known-names set does not.
    if value not in _known_zones():
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{value!r} is not a usable time zone: {exc}") from exc
    return value


def _regex(value: str) -> str:
    # Matched with RE2 (linear time: no pattern can stall an analysis), so only what RE2 compiles is accepted.
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(value, options)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(
            f"is not a valid regular expression for RE2 (no backreferences or lookaround): {detail}"
        ) from exc
    return value


class CredentialsSecret(ApiModel):
    """Where the database credentials live. Passwords never appear in a custom resource."""

    name: K8sName
    """Name of the Secret in the target's namespace. The operator reads it only if it carries the label
    ``optischema.io/allow: "true"`` or is listed in the operator's ``allowedSecrets`` setting (so that whoever may
    write a target cannot make the operator read any Secret of the namespace)."""
    username_key: SecretKey = "username"
    """Key holding the user name."""
    password_key: SecretKey = "password"
    """Key holding the password."""


class Replica(ApiModel):
    """A read replica (a hot standby streaming from the primary) whose index usage counts too: queries it serves
    never reach the primary's ``idx_scan``. Reached with the connection's database, credentials, ``sslmode`` and CA."""

    host: Annotated[str, AfterValidator(check_host)] = Field(
        min_length=1, max_length=253, json_schema_extra={"pattern": HOST_PATTERN}
    )
    """Host name (RFC 1123) or IP address of the replica, nothing else (like ``spec.connection.host``)."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """TCP port; unset, the connection's ``port``."""


class ClusterReference(ApiModel):
    """A CloudNativePG ``Cluster`` (``postgresql.cnpg.io/v1``) in the target's namespace, reached instead of a host."""

    name: K8sName
    """Name of the Cluster. The host is its read-write Service (``status.writeService``, in the target's namespace);
    the credentials default to its ``<name>-app`` Secret and the CA to its ``<name>-ca`` Secret (key ``ca.crt``),
    each read only when it opts in like any Secret the operator reads. Settings recommendations are applied by a
    merge patch of the Cluster's ``spec.postgresql.parameters`` (CloudNativePG turns ``ALTER SYSTEM`` off), and
    index usage is read on every instance of ``status.instanceNames``."""


class Connection(ApiModel):
    """How to reach the database. The operator connects read-only for analysis."""

    model_config = cel_rules(
        ("has(self.host) != has(self.cluster)", "exactly one of host and cluster must be set"),
        ("has(self.cluster) || has(self.credentialsSecret)", "credentialsSecret is required unless cluster is set"),
    )

    host: Annotated[str, AfterValidator(check_host)] | None = Field(
        default=None, min_length=1, max_length=253, json_schema_extra={"pattern": HOST_PATTERN}
    )
    """Host name (RFC 1123) or IP address of the PostgreSQL server (a Service name in-cluster), nothing else: no
    port, user, path or options (the port is ``port``, TLS is ``sslmode``). Exactly one of ``host`` and ``cluster``."""
    cluster: ClusterReference | None = None
    """A CloudNativePG ``Cluster`` to reach instead of ``host``."""
    port: int = Field(default=5432, ge=1, le=65535)
    """TCP port."""
    database: str = Field(min_length=1, max_length=63)
    """Database to analyse and tune. One target is one database."""
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "verify-full"
    """libpq ``sslmode``, by default ``verify-full``: TLS, the server's certificate signed by the CA of
    ``sslRootCertSecret`` (else the system's trusted CAs) and naming ``host``. ``verify-ca`` skips the name check;
    ``require``, ``prefer`` and ``allow`` do not authenticate the server and ``disable`` sends the password in clear
    text: the operator uses them only when written here explicitly."""
    ssl_root_cert_secret: SecretKeySelector | None = None
    """Secret key holding the PEM CA certificate(s) that sign the server's certificate (libpq's ``sslrootcert``).
    The Secret, like every Secret the operator reads, must carry the label ``optischema.io/allow: "true"`` or be
    listed in the operator's ``allowedSecrets``. With ``cluster``, by default the Cluster's ``<name>-ca``
    Secret, key ``ca.crt``."""
    credentials_secret: CredentialsSecret | None = None
    """Secret with the analysis credentials. The role needs ``pg_read_all_stats`` (to see every user's statements)
    and nothing that writes; the operator also sets ``default_transaction_read_only``. Required with ``host``; with
    ``cluster``, by default the Cluster's ``<name>-app`` Secret (keys ``username`` and ``password``)."""
    write_credentials_secret: CredentialsSecret | None = None
    """Secret with the credentials used to apply approved changes (index owner or superuser). Kept apart so that
    analysis can never write. Without it, approved changes wait with a ``Stalled`` condition."""
    connect_timeout_seconds: int = Field(default=10, ge=1, le=300)
    """How long to wait for a connection before reporting ``ConnectionFailed``."""
    replicas: list[Replica] = Field(default_factory=list, max_length=16)
    """Read replicas whose index usage is read too: an index is proposed for dropping as unused only when no scan
    used it on the primary nor on any replica (and ``spec.analysis.unusedIndexMinStatisticsAge`` has passed on each).
    A replica that cannot be reached keeps every index, with a note in ``status.lastAnalysis.message``. A
    CloudNativePG ``cluster``'s instances are read without being listed here."""

    @model_validator(mode="after")
    def _one_server(self) -> Connection:
        if (self.host is None) == (self.cluster is None):
            raise ValueError("exactly one of host and cluster must be set")
        if self.cluster is None and self.credentials_secret is None:
            raise ValueError("credentialsSecret is required unless cluster is set (a host has no Cluster Secret)")
        return self

    def credentials(self) -> CredentialsSecret:
        """The analysis credentials' Secret: ``credentialsSecret``, else the Cluster's ``<name>-app``."""
        if self.credentials_secret is not None:
            return self.credentials_secret
        assert self.cluster is not None  # the validator requires one of them
        return CredentialsSecret(name=f"{self.cluster.name}-app")

    def root_cert(self) -> SecretKeySelector | None:
        """The CA's Secret key: ``sslRootCertSecret``, else the Cluster's ``<name>-ca`` (``ca.crt``), else none."""
        if self.ssl_root_cert_secret is not None or self.cluster is None:
            return self.ssl_root_cert_secret
        return SecretKeySelector(name=f"{self.cluster.name}-ca", key="ca.crt")


class Analysis(ApiModel):
    """When and how the workload is analysed."""

    interval: Annotated[Duration, duration_between(timedelta(minutes=5), timedelta(days=7))] = "6h"
    """Time between analyses, 5m to 168h. Analysis is also run on demand with ``kubectl optischema analyze``."""
    runner: Literal["inline", "job"] = "inline"
    """``inline`` runs inside the operator (bounded concurrency across targets); ``job`` runs each analysis as a
    Kubernetes Job with the operator's image, which spreads heavy analyses across nodes."""
    min_calls: int = Field(default=10, ge=1)
    """Statements called fewer times than this since the last ``pg_stat_statements`` reset are ignored."""
    top_statements: int = Field(default=500, ge=1, le=10000)
    """How many statements, by total execution time, are analysed."""
    ignore_schemas: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(default_factory=list)
    """Schemas never analysed or changed, in addition to ``pg_catalog`` and ``information_schema``."""
    ignore_statements: list[Annotated[str, AfterValidator(_regex), Field(min_length=1, max_length=1024)]] = Field(
        default_factory=list
    )
    """Regular expressions (RE2 syntax: no backreferences or lookaround) searched for in the normalised statement
    text; matches are skipped. RE2 matches in time linear in the text, so no pattern can stall an analysis."""
    job_resources: ResourceRequirements | None = None
    """Resources of the analysis Job's Pod when ``runner`` is ``job``."""
    unused_index_min_statistics_age: Annotated[Duration, duration_between(timedelta(0), timedelta(days=366))] = "14d"
    """How long index statistics must have been collected before an index no scan used is proposed for dropping,
    0s to 366d: measured on every instance (primary and replicas) from the later of ``pg_stat_database.stats_reset``
    and ``pg_postmaster_start_time()``, the youngest instance deciding. A monthly job's index looks unused for
    weeks: raise it where such jobs run."""


class AutoApprove(ApiModel):
    """Rules under which the operator approves a recommendation itself, recorded as decided by the policy."""

    enabled: bool = False
    """Auto-approval is off unless turned on."""
    kinds: list[ChangeKind] = Field(default_factory=lambda: list[ChangeKind](["analyze"]))
    """Kinds of change that may be auto-approved."""
    max_risk: Risk = "low"
    """Highest risk that may be auto-approved."""
    min_measured_improvement_percent: float = Field(default=20.0, ge=0, le=100)
    """Minimum speed-up measured in the sandbox (not estimated) for the statements a change helps."""


class Policy(ApiModel):
    """What the operator may change, and within which limits."""

    allowed_kinds: list[ChangeKind] = Field(default_factory=lambda: list[ChangeKind](["createIndex", "analyze"]))
    """Kinds of change that may be applied. Other findings are still reported, but cannot be approved. Dropping
    indexes is off by default: an index unused here may serve a monthly report."""
    index_storage_budget: Quantity = "1Gi"
    """Total estimated size of new indexes the operator may propose for this database."""
    max_indexes_per_table: int = Field(default=10, ge=1, le=100)
    """Upper bound on secondary indexes per table, existing ones included: each index slows writes."""
    allow_immediate: bool = False
    """Whether ``when: immediate`` approvals may run outside maintenance windows."""
    auto_approve: AutoApprove = Field(default_factory=AutoApprove)
    """Auto-approval rules; off by default."""
    verification: Verification = Field(default_factory=Verification)
    """How changes created from approvals are verified (copied into each ``IndexChange``; a change written in Git
    carries its own)."""

    @field_validator("allowed_kinds")
    @classmethod
    def _unique_kinds(cls, kinds: list[ChangeKind]) -> list[ChangeKind]:
        if len(set(kinds)) != len(kinds):
            raise ValueError("must not list a kind twice")
        return kinds


class MaintenanceWindow(ApiModel):
    """A weekly period in which approved changes may run. Windows may cross midnight."""

    days: list[Weekday] = Field(min_length=1, max_length=7)
    """Days the window starts on, e.g. ``[Sat, Sun]``."""
    start: Annotated[str, AfterValidator(_hhmm), Field(json_schema_extra={"pattern": HHMM_PATTERN})]
    """Local start time, ``HH:MM`` on a 24-hour clock. On a day when that time does not exist (clocks jump
    forward), the window starts at the first existing minute after it."""
    duration: Annotated[Duration, duration_between(timedelta(minutes=5), timedelta(hours=24))]
    """Length of the window, 5m to 24h, e.g. ``2h`` or ``1h30m``."""
    time_zone: Annotated[str, AfterValidator(_time_zone), Field(min_length=1, max_length=64)] = "UTC"
    """IANA time zone the start time is read in, e.g. ``Europe/Berlin``."""

    @field_validator("days")
    @classmethod
    def _unique_days(cls, days: list[Weekday]) -> list[Weekday]:
        if len(set(days)) != len(days):
            raise ValueError("must not list a day twice")
        return days


class Period(ApiModel):
    """A fixed span of time, written with an offset (RFC 3339), e.g. ``2026-12-24T00:00:00+01:00``."""

    model_config = cel_rules(("self.end > self.start", "end must be after start"))

    start: AwareDatetime
    """First instant of the period."""
    end: AwareDatetime
    """First instant after the period."""
    reason: str = Field(default="", max_length=256)
    """Why it exists, shown in status and Events (e.g. ``year-end freeze``)."""

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        if self.end - self.start > timedelta(days=366):
            raise ValueError("a period may last at most 366 days")
        return self


def _no_default(schema: dict[str, Any]) -> None:
    """Keep a field's default out of the CRD: the API server would write it into every stored object."""
    schema.pop("default", None)


class Sandbox(ApiModel):
    """The throwaway PostgreSQL each recommendation is benchmarked on before anyone approves it."""

    enabled: bool = True
    """Benchmark recommendations in a sandbox pod. Without it, only estimates are shown."""
    image: str | None = Field(default=None, min_length=1, max_length=512)
    """PostgreSQL image; by default the operator's cluster-wide sandbox image for the target's server version
    (``postgres:<major>`` unless the chart's ``sandbox.image``/``sandbox.images`` say otherwise). Installed with the
    chart, a target may name its own image only when ``sandbox.allowTargetImages`` is true: otherwise the runner's
    admission policy refuses the pod (whoever writes a target would choose a program that runs with its data)."""
    resources: ResourceRequirements | None = None
    """Resources of the sandbox pod; what it leaves out comes from the operator's defaults (requests 250m CPU and
    256Mi memory, limits 2 CPUs and 2Gi)."""
    storage_limit: Quantity | None = None
    """``sizeLimit`` of the sandbox's data volume (an ``emptyDir``); by default the operator's
    ``sandbox_storage_limit`` (4Gi), or twice ``fullMaxSize`` in ``full`` mode. A pod that writes more is evicted."""
    data_mode: Literal["sample", "full", "synthetic"] = Field(default="synthetic", json_schema_extra=_no_default)
    """``sample`` copies a repeatable percentage of each table; ``full`` copies everything (only under
    ``fullMaxSize``); ``synthetic`` generates rows from the target's statistics, copying no real value. Unset, it
    follows ``piiSafe``: ``synthetic`` while ``piiSafe`` is true (the default), ``sample`` when it is false. A mode
    written here is honoured as written, ``sample`` and ``full`` included (they copy real rows into the sandbox)."""
    sample_percent: float = Field(default=10.0, gt=0, le=100)
    """Percentage of each table copied in ``sample`` mode."""
    max_rows_per_table: int = Field(default=1_000_000, ge=1)
    """Cap on rows copied or generated per table."""
    full_max_size: Quantity = "10Gi"
    """Largest database copied whole in ``full`` mode."""
    timeout_seconds: int = Field(default=1800, ge=60, le=86400)
    """Deadline of a sandbox pod (``activeDeadlineSeconds``); a sandbox past it is removed."""
    pii_safe: bool = True
    """In ``synthetic`` mode, copy no value of the target at all: most common values and histogram bounds shape
    the generated rows but are never written. It also makes ``synthetic`` the default ``dataMode``: no real row
    reaches a sandbox unless ``dataMode`` asks for it. Turn off only where the target's values may leave it."""
    max_concurrent: int = Field(default=2, ge=1, le=20)
    """Sandboxes of this target running at once (the operator also has a cluster-wide limit)."""

    @model_validator(mode="before")
    @classmethod
    def _data_mode_follows_pii_safe(cls, data: object) -> object:
        # No default in the CRD (the API server would write it into every object, and it could no longer tell
        # "unset" from "sample"): the default is decided here, from piiSafe.
        if isinstance(data, dict) and data.get("dataMode", data.get("data_mode")) is None:
            pii_safe = data.get("piiSafe", data.get("pii_safe", True))
            data = {k: v for k, v in data.items() if k not in ("dataMode", "data_mode")}
            data["dataMode"] = "sample" if pii_safe is False else "synthetic"
        return data


LlmProviderName = Literal["openai", "deepseek", "gemini", "openaiCompatible"]


class LlmProvider(ApiModel):
    """One LLM endpoint. Providers are tried in order; a failing one is skipped for a while."""

    provider: LlmProviderName
    """Wire format and default endpoint: ``openai``, ``deepseek``, ``gemini``, or ``openaiCompatible`` (any
    server speaking OpenAI chat completions at ``baseURL``: vLLM, Ollama, llama.cpp)."""
    model: str = Field(min_length=1, max_length=200)
    """Model name as the provider spells it."""
    base_url: Annotated[str, AfterValidator(check_endpoint_url)] | None = Field(
        default=None, alias="baseURL", max_length=2048, json_schema_extra={"pattern": ENDPOINT_URL_PATTERN}
    )
    """Endpoint; required for ``openaiCompatible``, optional for the others. Must be ``https://`` (prompts and the
    API key travel there); plain ``http://`` is accepted only for a loopback host (``localhost``, 127.0.0.0/8,
    ``[::1]``), for development with a model served on the same machine."""
    api_key_secret: SecretKeySelector | None = None
    """Secret key holding the API key; required except for ``openaiCompatible``. Keys never reach logs or status."""
    cost_per_million_tokens: float | None = Field(default=None, ge=0)
    """Price per million tokens (your currency), for the cost-estimate metric; unset means not counted."""

    @model_validator(mode="after")
    def _endpoint_and_key(self) -> LlmProvider:
        if self.provider == "openaiCompatible" and self.base_url is None:
            raise ValueError("baseURL is required for provider openaiCompatible")
        if self.provider != "openaiCompatible" and self.api_key_secret is None:
            raise ValueError(f"apiKeySecret is required for provider {self.provider}")
        return self


class Llm(ApiModel):
    """An optional second opinion. Every suggestion is re-checked by the what-if engine and the sandbox."""

    enabled: bool = False
    """Off by default; the engine works fully without it."""
    providers: list[LlmProvider] = Field(default_factory=list, max_length=5)
    """Providers in failover order."""
    daily_token_budget: int = Field(default=200_000, ge=0)
    """Tokens per day for this target, counted from the providers' usage reports; then the engine goes on alone."""
    pii_safe: bool = True
    """Send only normalised statements and schema: no sample rows, literal values or value statistics (most common
    values); the statements' comments, existing indexes' predicates and the findings' SQL are sent redacted."""

    @model_validator(mode="after")
    def _providers_when_enabled(self) -> Llm:
        if self.enabled and not self.providers:
            raise ValueError("providers must list at least one provider when enabled is true")
        return self


NotificationEvent = Literal[
    "recommendationAwaitingApproval",
    "changeApplied",
    "changeRolledBack",
    "changeFailed",
    "analysisFailing",
    "llmBudgetSpent",
    "reportReady",
]


class NotificationSink(ApiModel):
    """Where notifications go. The URL is read from a Secret (a Slack webhook URL is a credential)."""

    type: Literal["webhook", "slack", "alertmanager"]
    """``webhook`` (JSON, schema in the README), ``slack`` (incoming webhook, Block Kit) or ``alertmanager``
    (``POST /api/v2/alerts``)."""
    url_secret: SecretKeySelector
    """Secret key holding the URL. It must be ``https://`` (plain ``http://`` only for a loopback host, for
    development); any other is refused at delivery, with a log line naming the Secret and the failure counted in
    ``status.notifications``. The Secret must carry the label ``optischema.io/allow: "true"`` or be listed in the
    operator's ``allowedSecrets``."""
    hmac_secret: SecretKeySelector | None = None
    """For ``webhook``: a Secret key whose value signs each body (``X-OptiSchema-Signature: sha256=…``)."""
    events: list[NotificationEvent] = Field(default_factory=list, max_length=7)
    """Events sent to this sink; empty means all."""


class Notifications(ApiModel):
    """Telling people what needs them: a recommendation to decide, a change applied, rolled back or failed."""

    sinks: list[NotificationSink] = Field(default_factory=list, max_length=10)
    """The sinks; none means no notification."""
    min_measured_gain_percent: float = Field(default=0.0, ge=0, le=100)
    """A recommendation is announced only when its sandbox benchmark measured at least this improvement."""
    pii_safe: bool = True
    """Show SQL with its literals replaced by ``…`` and its comments removed (a partial index's predicate may hold a
    real value, an ORM's comment a user's e-mail), and the summary and details without the values they quote."""
    analysis_failures: int = Field(default=3, ge=1, le=100)
    """``analysisFailing`` is sent when this many analyses in a row have failed (once per run of failures)."""


def _cron(value: str) -> str:
    if not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a cron expression (five fields, e.g. '0 8 * * 1' for Mondays at 08:00)")
    return value


class Reports(ApiModel):
    """What tuning bought, as a report: on demand (``kubectl optischema report``) or on a schedule."""

    schedule: Annotated[str, AfterValidator(_cron), Field(min_length=9, max_length=100)] | None = None
    """A cron expression (five fields, in ``timeZone``); at each time the operator writes the report to the
    ``TuningReport`` ``<target>-report`` and sends a summary (no attachment) to the sinks subscribed to
    ``reportReady``. Unset: no scheduled report."""
    time_zone: Annotated[str, AfterValidator(_time_zone), Field(min_length=1, max_length=64)] = "UTC"
    """IANA time zone of ``schedule``."""
    period: Annotated[Duration, duration_between(timedelta(hours=1), timedelta(days=400))] = "7d"
    """How far back a scheduled report looks."""
    history_retention: Annotated[Duration, duration_between(timedelta(days=1), timedelta(days=400))] = "35d"
    """How long statement snapshots are kept for reports (one ``StatementHistory`` per target and day, the older ones
    deleted); a report cannot look back further than this."""
    history_statements: int = Field(default=100, ge=10, le=500)
    """Statements kept per snapshot: the top ones by total time (plus every one a change or recommendation names)."""
    pii_safe: bool = True
    """Store and show statements with their literals replaced by ``…`` and their comments removed."""


class PostgresTargetSpec(ApiModel):
    """Desired state of a ``PostgresTarget``."""

    connection: Connection
    """How to reach the database."""
    analysis: Analysis = Field(default_factory=Analysis)
    """When and how to analyse the workload."""
    policy: Policy = Field(default_factory=Policy)
    """What may be changed, and within which limits."""
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list, max_length=50)
    """When approved changes may run. With none, changes wait until a window is added (or run immediately when
    the policy allows ``immediate`` and the approval asks for it)."""
    one_off_windows: list[Period] = Field(default_factory=list, max_length=50)
    """Extra windows on given dates, e.g. an agreed Sunday-morning slot; ``reason`` is optional."""
    blackouts: list[Period] = Field(default_factory=list, max_length=50)
    """Periods when nothing runs, even inside a window (a freeze). A window overlapping a blackout is cut short or
    starts after it; a change already running when a blackout begins is finished, never left half-done."""
    sandbox: Sandbox = Field(default_factory=Sandbox)
    """Benchmarking of recommendations on a throwaway copy."""
    llm: Llm = Field(default_factory=Llm)
    """An LLM's second opinion, proved by the engine and the sandbox."""
    notifications: Notifications = Field(default_factory=Notifications)
    """Who hears about what needs them."""
    reports: Reports = Field(default_factory=Reports)
    """Statement history and what-tuning-bought reports."""
    suspend: bool = False
    """Stops all work for this target (analysis, benchmarks, applies) until set back to false."""


class Extension(ApiModel):
    """An installed extension."""

    name: str
    """Extension name, e.g. ``hypopg``."""
    version: str
    """Installed version."""


class DatabaseInfo(ApiModel):
    """What the operator learned about the database on its last successful connection."""

    server_version: str | None = None
    """``server_version``, e.g. ``15.18``."""
    server_version_num: int | None = None
    """``server_version_num``, e.g. ``150018``."""
    system_identifier: str | None = None
    """The cluster's ``system_identifier``: changes are refused when it no longer matches (another database
    behind the same address)."""
    extensions: list[Extension] = Field(default_factory=list)
    """Installed extensions; ``pg_stat_statements`` is required and ``hypopg`` enables what-if planning."""
    platform: Platform | None = None
    """Where the server runs, read from the server itself (its roles and settings): ``selfManaged``, or a managed
    service (``rds``, ``aurora``, ``cloudSql``, ``azure``) on which settings recommendations are advice only."""
    platform_evidence: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=10)
    """What the platform was recognised by, e.g. ``role rds_superuser``, ``setting rds.extensions``."""


class SkippedStatement(ApiModel):
    """A statement the analysis could not read, and why (it was left out; the others were analysed)."""

    query_id: str = Field(max_length=32)
    """Its ``queryid`` in ``pg_stat_statements``."""
    reason: str = Field(max_length=300)
    """Why it was skipped, e.g. ``nested too deeply to parse (RecursionError)``."""


class LastAnalysis(ApiModel):
    """Summary of the most recent analysis."""

    start_time: datetime | None = None
    """When it started."""
    completion_time: datetime | None = None
    """When it finished, successfully or not."""
    duration_seconds: float | None = Field(default=None, ge=0)
    """How long it took."""
    statements_seen: int | None = Field(default=None, ge=0)
    """Statements read from ``pg_stat_statements``."""
    statements_analysed: int | None = Field(default=None, ge=0)
    """Statements planned and considered."""
    statements_skipped: int | None = Field(default=None, ge=0)
    """Statements left out (too few calls, ignored, utility, outside the top, or unreadable)."""
    unreadable: list[SkippedStatement] = Field(default_factory=list, max_length=10)
    """The first statements the parser could not read (too deeply nested, unterminated, too long), with the
    reason; each was skipped and the analysis went on without it."""
    unreadable_count: int | None = Field(default=None, ge=0)
    """How many statements could not be read in all."""
    outcome: Literal["Succeeded", "Failed"] | None = None
    """Whether it produced recommendations."""
    job: str | None = Field(default=None, max_length=253)
    """The Job that ran (or runs) it, when ``spec.analysis.runner`` is ``job``."""
    requested: str | None = Field(default=None, max_length=256)
    """The value of the ``optischema.io/analyze-requested`` annotation this analysis answered (on-demand runs)."""
    message: str | None = None
    """Why it failed, or notes such as statements that could not be planned."""
    consecutive_failures: int = Field(default=0, ge=0)
    """Analyses that failed in a row (0 after a success)."""
    failing_since: datetime | None = None
    """When the current run of failures began."""


class RecommendationCounts(ApiModel):
    """Recommendations of this target by phase."""

    pending: int = Field(default=0, ge=0)
    """Awaiting a decision."""
    approved: int = Field(default=0, ge=0)
    """Approved and not yet applied."""
    rejected: int = Field(default=0, ge=0)
    """Rejected by a person."""
    applied: int = Field(default=0, ge=0)
    """Applied and verified."""
    rolled_back: int = Field(default=0, ge=0)
    """Applied, then undone after a regression."""
    superseded: int = Field(default=0, ge=0)
    """No longer found by analysis."""


class LlmRejection(ApiModel):
    """One LLM suggestion that did not get through, and why."""

    kind: Literal["index", "rewrite", "setting", "reply"]
    """What was suggested (``reply``: the whole answer could not be read)."""
    what: str = Field(max_length=512)
    """The suggestion, briefly."""
    reason: str = Field(max_length=1024)
    """Why it was turned down."""


class NotificationStatus(ApiModel):
    """How notifications of this target fared."""

    delivered: int = Field(default=0, ge=0)
    """Deliveries that a sink accepted."""
    failed: int = Field(default=0, ge=0)
    """Deliveries given up after retries (or refused by the rate limit)."""
    last_delivered_at: datetime | None = None
    """When a sink last accepted one."""
    last_error: str | None = Field(default=None, max_length=1024)
    """The last failure, with the sink and the event."""
    notified: list[Annotated[str, Field(max_length=300)]] = Field(
        default_factory=list, max_length=500, json_schema_extra={"x-kubernetes-list-type": "atomic"}
    )
    """Events already sent (object uid and event), newest last: what keeps a re-analysis or a restarted operator
    from notifying twice."""


class LastReport(ApiModel):
    """The most recent scheduled report."""

    time: datetime
    """When it was written."""
    config_map: str = Field(max_length=253)
    """The name of the ``TuningReport`` holding it (``report.html``, ``report.md``, ``report.json``); the field keeps
    the name it had when earlier versions wrote the report to a ConfigMap."""
    size_bytes: int = Field(ge=0)
    """Size of the HTML report."""
    time_saved_per_day_seconds: float | None = None
    """The estimated time saved per day it reported."""


class LlmStatus(ApiModel):
    """The LLM advisor's part in the last analysis."""

    model: str | None = None
    """The provider and model that answered (or whose cached answer was used)."""
    cached: bool = False
    """Whether the answer came from the cache (no call made)."""
    tokens: int = Field(default=0, ge=0)
    """Tokens the call used (0 when cached)."""
    tokens_today: int = Field(default=0, ge=0)
    """Tokens this target used today (UTC), against ``spec.llm.dailyTokenBudget``."""
    accepted: int = Field(default=0, ge=0)
    """Suggestions that passed every check (an index still has to be chosen by the what-if selection)."""
    rejected: list[LlmRejection] = Field(default_factory=list, max_length=50)
    """Suggestions turned down, with the reason."""
    message: str | None = Field(default=None, max_length=4096)
    """Why the engine went on alone, when it did: LLM off, budget spent, no provider answered."""
    budget_spent: Literal["target", "cluster"] | None = None
    """Which daily token budget was spent when the last analysis wanted to ask (``llmBudgetSpent`` is sent)."""


class PostgresTargetStatus(ApiModel):
    """Observed state of a ``PostgresTarget``, written by the operator only."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` last reconciled."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    """``Ready``, ``Reconciling`` and ``Stalled``, per the Kubernetes API conventions."""
    database: DatabaseInfo | None = None
    """Server version, identity and extensions."""
    last_analysis: LastAnalysis | None = None
    """The most recent analysis."""
    recommendations: RecommendationCounts | None = None
    """Recommendations by phase."""
    next_window_start: datetime | None = None
    """Start of the next maintenance window (UTC)."""
    next_window_end: datetime | None = None
    """End of the next maintenance window (UTC)."""
    llm: LlmStatus | None = None
    """The LLM advisor's part in the last analysis, when it is enabled."""
    notifications: NotificationStatus | None = None
    """Deliveries to the notification sinks."""
    last_report: LastReport | None = None
    """The most recent scheduled report."""
    index_build_bytes_per_second: float | None = Field(default=None, ge=0)
    """Index build speed measured on this database by the last applied change; used to refuse builds that could
    not finish before their window closes."""


__all__ = [
    "Analysis",
    "AutoApprove",
    "ChangeKind",
    "Connection",
    "CredentialsSecret",
    "LlmProvider",
    "LocalObjectReference",
    "MaintenanceWindow",
    "Period",
    "Policy",
    "PostgresTargetSpec",
    "PostgresTargetStatus",
    "Replica",
    "Reports",
    "Risk",
]
