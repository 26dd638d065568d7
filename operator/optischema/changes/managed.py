"""A server setting on a managed service: the provider's own change, as its CLI command and as Terraform.

RDS, Aurora, Cloud SQL and Azure flexible server refuse ``ALTER SYSTEM`` (no user is a superuser there); settings
live in a DB (cluster) parameter group, in database flags or in server parameters. So a settings recommendation
for such a server is advice: its ``sql`` is comments only — the exact CLI command and Terraform for the provider —
and nothing runs it (:func:`advice_only` says why on approval; ``changes.ddl`` refuses to render it as SQL).

Every name and value that reaches a command is checked twice: against the setting's grammar (``changes.settings``:
an allow-listed name, a value the provider can take) and against a plain character set, then quoted for the shell
(``shlex.quote``), for the AWS CLI's JSON (``json.dumps``) or for HCL (:func:`hcl_string`). A hostile value cannot
add a shell word, a second ``--parameters`` entry, a ``--database-flags`` pair or a Terraform interpolation.

Providers' units: a memory setting is given as a bare number in the setting's base unit (``work_mem`` in kB,
``effective_cache_size`` in 8kB pages), as their parameter pages list them; a boolean is ``1``/``0`` in an RDS or
Aurora parameter group and ``on``/``off`` elsewhere. Every setting the operator proposes is dynamic
(``changes.ddl.SETTINGS_ALLOWED``: reloadable), so ``ApplyMethod`` is ``immediate``. Pure.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from typing import Any

from optischema.api.operations import SettingChange
from optischema.api.platform import PLATFORM_NAMES

from .ddl import SETTINGS_ALLOWED, UnsafeDefinition
from .settings import BOOLS, MEMORY_UNITS, SPECS, InvalidSettingValue, check_value

#: Where each provider keeps server settings, for people.
WHERE: dict[str, str] = {
    "rds": "the instance's DB parameter group",
    "aurora": "the cluster's DB cluster parameter group",
    "cloudSql": "the instance's database flags",
    "azure": "the server's parameters",
}
#: Placeholders the user fills in (shell variables, so the command runs as printed once they are exported).
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "rds": ("DB_PARAMETER_GROUP",),
    "aurora": ("DB_CLUSTER_PARAMETER_GROUP",),
    "cloudSql": ("INSTANCE",),
    "azure": ("RESOURCE_GROUP", "SERVER_NAME"),
}
#: Characters a name or value may have once rendered for a provider: nothing a shell, the AWS CLI's shorthand, a
#: gcloud ``key=value,…`` list or HCL treats specially.
_PLAIN = re.compile(r"[A-Za-z0-9._+-]{1,64}")
_NAME = re.compile(r"[a-z_][a-z0-9_.]{0,62}")
_NUMBER_UNIT = re.compile(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]{1,2})?")
_TRUE = {"on", "true", "yes", "1"}


def provider_value(name: str, value: str, platform: str) -> str:
    """``value`` as the provider takes it: memory in the setting's base unit, booleans as the provider writes them,
    numbers as they are. :class:`UnsafeDefinition` (naming ``setting.value``) for anything else."""
    spec = SPECS.get(name)
    if spec is None or name not in SETTINGS_ALLOWED or not _NAME.fullmatch(name):
        raise UnsafeDefinition(f"setting.name: {name!r} is not among the settings the operator may propose")
    if not _PLAIN.fullmatch(value):
        raise UnsafeDefinition(f"setting.value: {value!r} for {name} holds characters no setting value has")
    if spec.kind == "bool":
        if value.lower() not in BOOLS:
            raise UnsafeDefinition(f"setting.value: {name} is on or off, not {value!r}")
        on = value.lower() in _TRUE
        rendered = ("1" if on else "0") if platform in ("rds", "aurora") else ("on" if on else "off")
    elif spec.kind == "memory":
        match = _NUMBER_UNIT.fullmatch(value)
        if match is None or (match.group(2) is not None and match.group(2) not in MEMORY_UNITS):
            raise UnsafeDefinition(f"setting.value: {name} takes a number with a memory unit, not {value!r}")
        number = float(match.group(1)) * (MEMORY_UNITS[match.group(2)] if match.group(2) else spec.base)
        if number % spec.base:
            raise UnsafeDefinition(f"setting.value: {name} = {value!r} is not a whole number of {spec.base} bytes")
        rendered = str(int(number // spec.base))
    else:
        rendered = value
    if not _PLAIN.fullmatch(rendered):  # never reached with the checks above; kept as the last word
        raise UnsafeDefinition(f"setting.value: {value!r} for {name} cannot be rendered for {platform}")
    return rendered


def cli_command(name: str, value: str, platform: str) -> str:
    """The provider CLI's command setting ``name`` to ``value`` (already :func:`provider_value`'d), quoted for a
    POSIX shell; placeholders are shell variables (:data:`PLACEHOLDERS`)."""
    if platform in ("rds", "aurora"):
        entry = [{"ParameterName": name, "ParameterValue": value, "ApplyMethod": "immediate"}]
        group = "db-cluster-parameter-group" if platform == "aurora" else "db-parameter-group"
        variable = PLACEHOLDERS[platform][0]
        return (
            f'aws rds modify-{group} --{group}-name "${variable}" '
            f"--parameters {shlex.quote(json.dumps(entry, separators=(',', ':')))}"
        )
    if platform == "cloudSql":
        return f'gcloud sql instances patch "$INSTANCE" --database-flags={shlex.quote(name + "=" + value)}'
    if platform == "azure":
        return (
            'az postgres flexible-server parameter set --resource-group "$RESOURCE_GROUP" --server-name '
            f'"$SERVER_NAME" --name {shlex.quote(name)} --value {shlex.quote(value)}'
        )
    raise UnsafeDefinition(f"setting.platform: {platform!r} is not a managed service the operator knows")


def hcl_string(text: str) -> str:
    """A Terraform (HCL) quoted string: backslash and quote escaped, ``${`` and ``%{`` doubled so that no
    interpolation or directive starts, control characters escaped."""
    out = []
    for char in text:
        if char in '\\"':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out).replace("${", "$${").replace("%{", "%%{") + '"'


def terraform(name: str, value: str, platform: str) -> str:
    """The Terraform making the change: a ``parameter`` block of ``aws_db_parameter_group`` (RDS) or
    ``aws_rds_cluster_parameter_group`` (Aurora), a ``database_flags`` block of ``google_sql_database_instance``, or an
    ``azurerm_postgresql_flexible_server_configuration`` resource."""
    if platform in ("rds", "aurora"):
        resource = "aws_rds_cluster_parameter_group" if platform == "aurora" else "aws_db_parameter_group"
        return "\n".join(
            [
                f"# in your {resource}:",
                "parameter {",
                f"  name         = {hcl_string(name)}",
                f"  value        = {hcl_string(value)}",
                '  apply_method = "immediate"',
                "}",
            ]
        )
    if platform == "cloudSql":
        return "\n".join(
            [
                "# in your google_sql_database_instance (keep the flags it already sets):",
                "settings {",
                "  database_flags {",
                f"    name  = {hcl_string(name)}",
                f"    value = {hcl_string(value)}",
                "  }",
                "}",
            ]
        )
    if platform == "azure":
        label = re.sub(r"[^A-Za-z0-9_]", "_", name)
        return "\n".join(
            [
                f'resource "azurerm_postgresql_flexible_server_configuration" "{label}" {{',
                f"  name      = {hcl_string(name)}",
                "  server_id = azurerm_postgresql_flexible_server.this.id",
                f"  value     = {hcl_string(value)}",
                "}",
            ]
        )
    raise UnsafeDefinition(f"setting.platform: {platform!r} is not a managed service the operator knows")


def render_advice(setting: SettingChange) -> str:
    """The recommendation's ``sql`` on a managed service: comments only (nothing to execute, should anything try),
    saying why and giving the CLI command and the Terraform. The value is checked against the setting's safe range
    as ``ALTER SYSTEM`` would be."""
    platform = _platform(setting)
    try:
        check_value(setting.name, setting.value)
    except InvalidSettingValue as error:
        raise UnsafeDefinition(str(error)) from error
    value = provider_value(setting.name, setting.value, platform)
    return _comments(
        [
            f"Advice only: {PLATFORM_NAMES[platform]} refuses ALTER SYSTEM; the operator never runs this.",
            f"Set {setting.name} = {value} in {WHERE[platform]} ({_exports(platform)}):",
            cli_command(setting.name, value, platform),
            *_cloudsql_note(platform),
            "Or with Terraform:",
            *terraform(setting.name, value, platform).splitlines(),
        ]
    )


def render_advice_rollback(setting: SettingChange) -> str:
    """What undoes the advice: the value seen at analysis time set back (no safety range: it was the server's),
    or, when it is unknown or cannot be written for the provider, the override removed."""
    platform = _platform(setting)
    try:
        value = provider_value(setting.name, setting.current_value, platform) if setting.current_value else None
    except UnsafeDefinition:
        value = None
    if value is None:
        return _comments(
            [f"To undo: remove the override of {setting.name} from {WHERE[platform]}; the provider's default applies."]
        )
    return _comments(
        [
            f"To undo: set {setting.name} back to {value} in {WHERE[platform]}:",
            cli_command(setting.name, value, platform),
            "Or with Terraform:",
            *terraform(setting.name, value, platform).splitlines(),
        ]
    )


def advice_only(spec: Mapping[str, Any]) -> str | None:
    """Why approving this recommendation (a ``TuningRecommendation`` spec as stored) runs nothing, or ``None`` for
    one that is applied. A setting for a managed service is advice: no IndexChange is made for it."""
    if spec.get("kind") != "setting":
        return None
    setting = (spec.get("change") or {}).get("setting") or {}
    platform = setting.get("platform")
    if not platform:
        return None
    name = PLATFORM_NAMES.get(str(platform), str(platform))
    return (
        f"advice only, nothing was run: {name} refuses ALTER SYSTEM, so {setting.get('name', 'the setting')} is "
        f"changed in {WHERE.get(str(platform), 'the provider')} with the command in spec.sql"
    )


def _platform(setting: SettingChange) -> str:
    if setting.platform is None or setting.platform not in WHERE:
        raise UnsafeDefinition("setting.platform: advice is rendered for a managed service only")
    return setting.platform


def _exports(platform: str) -> str:
    return "export " + " and ".join(PLACEHOLDERS[platform]) + " first"


def _cloudsql_note(platform: str) -> list[str]:
    if platform != "cloudSql":
        return []
    return [
        "--database-flags replaces every flag the instance sets: add the others, as",
        'gcloud sql instances describe "$INSTANCE" --format="value(settings.databaseFlags)" lists them.',
    ]


def _comments(lines: list[str]) -> str:
    """Each line as an SQL line comment. A line holding a line break would end its comment early: refused."""
    if any("\n" in line or "\r" in line for line in lines):
        raise UnsafeDefinition("setting: advice text cannot hold a line break")
    return "\n".join(f"-- {line}" for line in lines)
