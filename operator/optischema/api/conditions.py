"""Status conditions, as the Kubernetes API conventions define them.

``Ready``, ``Reconciling`` and ``Stalled`` are the types kstatus (Flux, Argo CD, ``kubectl wait``) reads to tell a
healthy object from one in progress or stuck; the reasons are the vocabulary our handlers speak. Builders live
here so that every writer sets ``lastTransitionTime`` the same way: it moves only when ``status`` changes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field
from pydantic.config import JsonDict

from .base import ApiModel

CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


class ConditionType(StrEnum):
    """Condition types shared by the three kinds."""

    READY = "Ready"
    """The object is reconciled and doing its job (a target is reachable; a change is applied)."""
    RECONCILING = "Reconciling"
    """Work is in progress: present and ``True`` while the operator acts; removed when it settles."""
    STALLED = "Stalled"
    """The operator cannot make progress without a person acting; the reason and message say why."""
    BENCHMARKED = "Benchmarked"
    """A recommendation was measured in a sandbox (``True``), or the sandbox could not measure it (``False``, with
    the reason); absent until a benchmark has run."""


class Reason(StrEnum):
    """Machine-readable reasons for conditions and Events (CamelCase, as the conventions ask)."""

    # PostgresTarget
    CONNECTED = "Connected"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_NOT_ALLOWED = "SecretNotAllowed"
    """The Secret does not exist or has not opted in (label ``optischema.io/allow: "true"`` or ``allowedSecrets``)."""
    SECRET_KEY_MISSING = "SecretKeyMissing"
    CONNECTION_FAILED = "ConnectionFailed"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    EXTENSION_MISSING = "ExtensionMissing"
    INVALID_SPEC = "InvalidSpec"
    CLUSTER_NOT_READY = "ClusterNotReady"
    """The CloudNativePG Cluster a target names is missing or has not published its read-write Service yet."""
    SUSPENDED = "Suspended"
    ANALYSING = "Analysing"
    ANALYSIS_FAILED = "AnalysisFailed"
    # TuningRecommendation
    AWAITING_APPROVAL = "AwaitingApproval"
    BENCHMARKING = "Benchmarking"
    MEASURED = "Measured"
    SANDBOX_NOT_READY = "SandboxNotReady"
    SANDBOX_FAILED = "SandboxFailed"
    BENCHMARK_FAILED = "BenchmarkFailed"
    ROWS_DIFFER = "RowsDiffer"
    NOT_FASTER = "NotFaster"
    SUPERSEDED = "Superseded"
    # IndexChange
    WAITING_FOR_WINDOW = "WaitingForWindow"
    APPLYING = "Applying"
    VERIFYING = "Verifying"
    APPLIED = "Applied"
    ROLLED_BACK = "RolledBack"
    POLICY_VIOLATION = "PolicyViolation"
    OVER_BUDGET = "OverBudget"
    DATABASE_MISMATCH = "DatabaseMismatch"
    TABLE_NOT_FOUND = "TableNotFound"
    NO_WRITE_CREDENTIALS = "NoWriteCredentials"
    BLACKOUT = "Blackout"
    WINDOW_TOO_SHORT = "WindowTooShort"
    LOCK_TIMEOUT = "LockTimeout"
    APPLY_FAILED = "ApplyFailed"
    REGRESSION = "Regression"
    TARGET_MISMATCH = "TargetMismatch"
    INDEX_NAME_TAKEN = "IndexNameTaken"
    """The index name a create change uses exists already, and is not this change's own build."""
    INDEX_NOT_FOUND = "IndexNotFound"
    INDEX_MISMATCH = "IndexMismatch"
    """The index a drop names is on another table, or is not the definition the change describes."""
    PROTECTED_INDEX = "ProtectedIndex"
    """The index backs a constraint, is the replica identity, or alone enforces a uniqueness: never dropped."""
    WINDOW_CLOSED = "WindowClosed"
    """The window closed (or a blackout began) before a statement could start: back to waiting."""
    CONNECTION_LOST = "ConnectionLost"
    """The session died mid-statement (terminated backend, failover, dropped connection): back to waiting."""
    ROLLOUT_PENDING = "RolloutPending"
    """A CloudNativePG Cluster's setting was patched and its instances do not show the value yet."""
    CLOCK_SKEW = "ClockSkew"
    """The operator's clock and the database's differ by more than the tolerance."""


class Condition(ApiModel):
    """One aspect of an object's state, following the Kubernetes API conventions for conditions."""

    type: str = Field(max_length=316, json_schema_extra={"pattern": CONDITION_TYPE})
    """Type of condition in CamelCase: ``Ready``, ``Reconciling`` or ``Stalled``."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds: ``True``, ``False`` or ``Unknown``."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` the condition was computed from; older than the object's means stale."""
    last_transition_time: datetime
    """When ``status`` last changed (not when the condition was last written)."""
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON)
    """A CamelCase word for the cause, for machines: e.g. ``SecretNotFound``."""
    message: str = Field(default="", max_length=32768)
    """A sentence for people, saying what happened and what to do."""


def set_condition(
    conditions: list[Condition],
    type_: ConditionType | str,
    status: Literal["True", "False", "Unknown"],
    reason: Reason | str,
    message: str,
    *,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """A new list with the condition of ``type_`` set; ``lastTransitionTime`` kept unless ``status`` changed."""
    previous = next((c for c in conditions if c.type == str(type_)), None)
    since = previous.last_transition_time if previous is not None and previous.status == status else now
    updated = Condition(
        type=str(type_),
        status=status,
        reason=str(reason),
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != str(type_)] + [updated]


def remove_condition(conditions: list[Condition], type_: ConditionType | str) -> list[Condition]:
    """A new list without the condition of ``type_`` (``Reconciling`` is removed once work settles)."""
    return [c for c in conditions if c.type != str(type_)]


def find_condition(conditions: list[Condition], type_: ConditionType | str) -> Condition | None:
    """The condition of ``type_``, if present."""
    return next((c for c in conditions if c.type == str(type_)), None)


#: Conditions as a list keyed by type, the way the API server merges them on server-side apply.
CONDITIONS_LIST: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
