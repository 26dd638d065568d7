"""Where the database runs: PostgreSQL the user operates, or a managed service that refuses ``ALTER SYSTEM``.

Amazon RDS, Aurora, Cloud SQL and Azure Database for PostgreSQL flexible server take server settings from a
parameter group, database flags or server parameters, never from ``ALTER SYSTEM`` (the statement fails there: no
user is a superuser). On them a settings recommendation is advice with the provider's own command, and index work
goes on as usual. ``optischema.analysis.platform`` decides the platform from what the server shows of itself.
"""

from __future__ import annotations

from typing import Literal

#: ``selfManaged``: a server whose settings ``ALTER SYSTEM`` may change (CloudNativePG included: its operator takes
#: settings from the ``Cluster``, which its own path handles).
Platform = Literal["selfManaged", "rds", "aurora", "cloudSql", "azure"]
#: The managed services: settings are advice there, never executed.
ManagedPlatform = Literal["rds", "aurora", "cloudSql", "azure"]

#: A platform as people call it, for messages and documentation.
PLATFORM_NAMES: dict[str, str] = {
    "selfManaged": "self-managed PostgreSQL",
    "rds": "Amazon RDS for PostgreSQL",
    "aurora": "Amazon Aurora PostgreSQL",
    "cloudSql": "Cloud SQL for PostgreSQL",
    "azure": "Azure Database for PostgreSQL flexible server",
}
