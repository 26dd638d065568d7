"""Non-index operations a recommendation proposes and an ``IndexChange`` carries: statistics and settings."""

from __future__ import annotations

from pydantic import Field

from .base import ApiModel
from .index import Identifier


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
