"""The probe behind platform detection: provider roles, provider settings and provider functions, as the server
shows them to the connected role (``analysis.platform`` decides from them).

Read-only catalog queries any role may run. Provider settings are looked for twice: by prefix in ``pg_settings``
(where the provider's modules define them) and by name with ``current_setting(name, true)``, which also sees a
placeholder set in ``postgresql.conf`` or with ``ALTER DATABASE … SET`` — ``pg_settings`` hides placeholders.
"""

from __future__ import annotations

import asyncpg

from optischema.analysis.platform import FUNCTIONS, ROLES, SETTING_PREFIXES, PlatformSignals

#: Provider settings looked up by name (documented by each provider; any one present is evidence).
KNOWN_SETTINGS = (
    "rds.extensions",
    "rds.force_ssl",
    "rds.logical_replication",
    "rds.allowed_extensions",
    "cloudsql.iam_authentication",
    "cloudsql.enable_pgaudit",
    "cloudsql.logical_decoding",
    "azure.extensions",
    "azure.accepted_password_auth_method",
)


async def read_signals(conn: asyncpg.Connection) -> PlatformSignals:
    """Which provider roles exist, which provider settings are defined, which provider functions exist."""
    roles = [r for names in ROLES.values() for r in names]
    prefixes = [p for names in SETTING_PREFIXES.values() for p in names]
    functions = [f for names in FUNCTIONS.values() for f in names]
    found_roles = await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])", roles)
    listed = await conn.fetch(
        "SELECT name FROM pg_settings WHERE name LIKE ANY (SELECT replace(p, '_', '\\_') || '%' "
        "FROM unnest($1::text[]) AS p)",
        prefixes,
    )
    named = await conn.fetch(
        "SELECT n FROM unnest($1::text[]) AS n WHERE current_setting(n, true) IS NOT NULL", list(KNOWN_SETTINGS)
    )
    found_functions = await conn.fetch(
        "SELECT DISTINCT proname FROM pg_proc WHERE proname = ANY($1::text[])", functions
    )
    return PlatformSignals(
        roles=frozenset(r["rolname"] for r in found_roles),
        settings=frozenset([*(r["name"] for r in listed), *(r["n"] for r in named)]),
        functions=frozenset(r["proname"] for r in found_functions),
    )
