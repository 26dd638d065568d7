"""Non-index operations a recommendation proposes and an ``IndexChange`` carries: statistics and settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import ApiModel, K8sName
from .index import Identifier
from .platform import ManagedPlatform


class TableRef(ApiModel):
    """A table whose statistics (and, with ``vacuum``, dead rows) need maintenance."""

    schema_: Identifier = Field(default="public", alias="schema")
    """Schema of the table."""
    table: Identifier
    """Table name."""
    vacuum: bool = False
    """Run ``VACUUM (ANALYZE)`` instead of ``ANALYZE``: the table carries many dead rows as well."""


class SettingChange(ApiModel):
    """A server setting to change with ``ALTER SYSTEM`` and a reload."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z_][a-z0-9_.]*$")
    """Setting name, e.g. ``work_mem``; only an allow-list of settings can be applied."""
    value: str = Field(min_length=1, max_length=256)
    """Proposed value, as ``SHOW`` prints it, e.g. ``64MB``."""
    current_value: str | None = Field(default=None, max_length=256)
    """Value when the recommendation was made; the rollback restores it."""
    current_source: str | None = Field(default=None, max_length=64)
    """Where that value came from (``pg_settings.source`` at analysis time, e.g. ``default``, ``configuration
    file``). When it is ``default`` or ``configuration file`` the rollback runs ``ALTER SYSTEM RESET`` (the server
    goes back to its defaults and files, and later edits of ``postgresql.conf`` take effect again) instead of pinning
    the old value with ``ALTER SYSTEM SET``. Absent: the old value is set back."""
    cluster: K8sName | None = None
    """Set when the target is a CloudNativePG ``Cluster`` (its name), where ``ALTER SYSTEM`` is off: the change is
    made by a merge patch of the Cluster's ``spec.postgresql.parameters`` (CloudNativePG rolls it out), and its
    ``sql`` shows that patch as comments. The operator only ever patches the Cluster its target names: admission and
    the apply path refuse a change naming another."""
    platform: ManagedPlatform | None = None
    """Set when the server is a managed service (``rds``, ``aurora``, ``cloudSql``, ``azure``), which refuses
    ``ALTER SYSTEM``: the recommendation is advice only. Its ``sql`` holds, as comments, the provider's CLI command
    and a Terraform snippet making the change; approving it runs nothing, and the apply path refuses such a change."""

    @model_validator(mode="after")
    def _one_place(self) -> SettingChange:
        if self.cluster is not None and self.platform is not None:
            raise ValueError(
                "cluster and platform cannot both be set: a CloudNativePG Cluster is not a managed service"
            )
        return self


class StorageParameter(ApiModel):
    """A table's autovacuum storage parameter (``ALTER TABLE … SET (name = value)``)."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^autovacuum_[a-z_]+$")
    """Parameter name, e.g. ``autovacuum_vacuum_scale_factor``; only autovacuum parameters are proposed."""
    value: str = Field(min_length=1, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$")
    """Proposed value, a plain number."""
    current_value: str | None = Field(default=None, max_length=32, pattern=r"^-?[0-9]+(\.[0-9]+)?$")
    """The table's own value when the advice was made; absent when the server-wide setting applied (the undo
    statement then resets the parameter)."""


class MaintenanceAdvice(ApiModel):
    """Table maintenance a DBA schedules: reclaiming bloat, freezing old transaction IDs, per-table autovacuum.

    Advice only: the operator renders the statement but never runs it. ``VACUUM FULL`` holds an ACCESS EXCLUSIVE
    lock for the whole rewrite (pg_repack avoids that but is an extension and a client of its own), a manual
    ``VACUUM (FREEZE)`` of a large table reads all of it, and autovacuum's per-table thresholds trade I/O against
    dead rows in a way only the people who know the write pattern and the I/O budget can settle."""

    topic: Literal["tableBloat", "freeze", "autovacuum"]
    """``tableBloat`` (space a rewrite gives back), ``freeze`` (transaction-ID age near the forced-vacuum point or
    the wraparound horizon) or ``autovacuum`` (per-table thresholds for a large table that churns)."""
    schema_: Identifier | None = Field(default=None, alias="schema")
    """Schema of the table."""
    table: Identifier | None = None
    """The table; absent for a database-wide ``freeze`` finding."""
    parameters: list[StorageParameter] = Field(default_factory=list, max_length=10)
    """For ``autovacuum``: the storage parameters to set."""
