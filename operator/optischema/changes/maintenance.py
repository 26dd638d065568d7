"""The statements behind table-maintenance advice: a rewrite for bloat, a freezing VACUUM, per-table autovacuum.

The operator never runs them (``MaintenanceAdvice`` says why); they are rendered here, every name through
``changes.quoting``, so that the statement a DBA copies is exact and the admission webhook can check a
recommendation's ``sql`` against its structured change like any other kind's.
"""

from __future__ import annotations

import re

from optischema.api.operations import MaintenanceAdvice, StorageParameter

from .ddl import UnsafeDefinition
from .quoting import qualified, quote_ident

#: The per-table parameters advice may set: autovacuum's thresholds and cost limits, nothing that changes data.
PARAMETERS_ALLOWED = frozenset(
    {
        "autovacuum_vacuum_scale_factor",
        "autovacuum_vacuum_threshold",
        "autovacuum_analyze_scale_factor",
        "autovacuum_analyze_threshold",
        "autovacuum_vacuum_insert_scale_factor",
        "autovacuum_vacuum_insert_threshold",
        "autovacuum_vacuum_cost_limit",
        "autovacuum_vacuum_cost_delay",
        "autovacuum_freeze_max_age",
    }
)
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def render_maintenance(advice: MaintenanceAdvice) -> str:
    """``VACUUM (FULL, ANALYZE)`` for table bloat, ``VACUUM (FREEZE, ANALYZE)`` for freeze risk (the whole database
    without a table), ``ALTER TABLE … SET (…)`` for autovacuum."""
    if advice.topic == "freeze" and advice.table is None:
        return "VACUUM (FREEZE, ANALYZE)"
    schema, table = _table(advice)
    if advice.topic == "tableBloat":
        return f"VACUUM (FULL, ANALYZE) {qualified(schema, table)}"
    if advice.topic == "freeze":
        return f"VACUUM (FREEZE, ANALYZE) {qualified(schema, table)}"
    if not advice.parameters:
        raise UnsafeDefinition("maintenance.parameters: autovacuum advice needs at least one parameter")
    assignments = ", ".join(_assignment(p, p.value) for p in advice.parameters)
    return f"ALTER TABLE {qualified(schema, table)} SET ({assignments})"


def render_maintenance_undo(advice: MaintenanceAdvice) -> str | None:
    """What undoes autovacuum advice: the table's own earlier values set back, the others reset to the server's.
    A VACUUM has nothing to undo."""
    if advice.topic != "autovacuum" or not advice.parameters:
        return None
    schema, table = _table(advice)
    statements = []
    kept = [p for p in advice.parameters if p.current_value is not None]
    if kept:
        assignments = ", ".join(_assignment(p, p.current_value or "") for p in kept)
        statements.append(f"ALTER TABLE {qualified(schema, table)} SET ({assignments})")
    reset = [p for p in advice.parameters if p.current_value is None]
    if reset:
        names = ", ".join(_name(p) for p in reset)
        statements.append(f"ALTER TABLE {qualified(schema, table)} RESET ({names})")
    return ";\n".join(statements)


def _table(advice: MaintenanceAdvice) -> tuple[str, str]:
    if advice.table is None or advice.schema_ is None:
        raise UnsafeDefinition(f"maintenance.table: is required for {advice.topic} advice")
    return advice.schema_, advice.table


def _name(parameter: StorageParameter) -> str:
    """The parameter's name, quoted, once it is known to be one advice may set."""
    if parameter.name not in PARAMETERS_ALLOWED:
        raise UnsafeDefinition(
            f"maintenance.parameters: {parameter.name} is not among the parameters advice may set "
            f"({', '.join(sorted(PARAMETERS_ALLOWED))})"
        )
    return quote_ident(parameter.name)


def _assignment(parameter: StorageParameter, value: str) -> str:
    """``"name" = number``: the value is written bare, so it must be a plain number."""
    if not _NUMBER.fullmatch(value):
        raise UnsafeDefinition(f"maintenance.parameters: {parameter.name} = {value!r} is not a number")
    return f"{_name(parameter)} = {value}"
