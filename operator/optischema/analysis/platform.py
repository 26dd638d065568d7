"""Which platform a server runs on, from what it shows of itself; and its settings findings turned into advice.

What each managed service exposes to a connected user (``postgres.platform`` reads it):

- **Amazon RDS for PostgreSQL**: the role ``rds_superuser`` (the master user is a member), and ``rds.*``
  parameters in ``pg_settings`` (``rds.extensions``, ``rds.force_ssl``, ``rds.logical_replication``, …).
- **Amazon Aurora PostgreSQL**: everything RDS shows, plus the function ``aurora_version()`` (and ``aurora.*`` /
  ``apg_*`` parameters on some versions). Aurora is tested first, since it would pass for RDS too.
- **Cloud SQL for PostgreSQL**: the role ``cloudsqlsuperuser`` (the default ``postgres`` user is a member), and
  ``cloudsql.*`` flags (``cloudsql.iam_authentication``, ``cloudsql.enable_pgaudit``, …).
- **Azure Database for PostgreSQL flexible server**: the role ``azure_pg_admin`` (the administrator is a member;
  the superuser is ``azuresu``), and ``azure.*`` parameters (``azure.extensions``, the extension allow-list).

A role alone is evidence enough: these roles exist only where the provider created them. Someone who can create
roles on a self-managed server could fake one, and the only effect is that settings become advice instead of being
applied — the safe direction. Signals of two providers at once (a migrated database keeping an old role, say) are
reported as evidence and the platform with most of it wins, Aurora before RDS. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from optischema.api.operations import SettingChange
from optischema.api.platform import PLATFORM_NAMES, ManagedPlatform, Platform
from optischema.api.recommendation import RecommendedChange
from optischema.changes.ddl import render_cluster_setting, render_cluster_setting_rollback
from optischema.changes.managed import WHERE, render_advice, render_advice_rollback

from .report import Recommendation, recommendation_id

#: Roles only the provider creates.
ROLES: dict[ManagedPlatform, tuple[str, ...]] = {
    "rds": ("rds_superuser",),
    "aurora": (),
    "cloudSql": ("cloudsqlsuperuser",),
    "azure": ("azure_pg_admin", "azuresu"),
}
#: Setting-name prefixes each provider's own modules define.
SETTING_PREFIXES: dict[ManagedPlatform, tuple[str, ...]] = {
    "rds": ("rds.",),
    "aurora": ("aurora.", "apg_"),
    "cloudSql": ("cloudsql.",),
    "azure": ("azure.",),
}
#: Functions only the provider ships.
FUNCTIONS: dict[ManagedPlatform, tuple[str, ...]] = {
    "rds": (),
    "aurora": ("aurora_version",),
    "cloudSql": (),
    "azure": (),
}
#: Order of preference when several match equally: Aurora shows RDS's signals too.
ORDER: tuple[ManagedPlatform, ...] = ("aurora", "rds", "cloudSql", "azure")
#: Evidence kept in the target's status at most.
MAX_EVIDENCE = 10


@dataclass(frozen=True, slots=True)
class PlatformSignals:
    """What the probe found: provider roles that exist, provider settings that are defined, provider functions."""

    roles: frozenset[str] = frozenset()
    settings: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Detection:
    """The platform and what it was recognised by (empty for a self-managed server)."""

    platform: Platform = "selfManaged"
    evidence: tuple[str, ...] = field(default_factory=tuple)

    @property
    def managed(self) -> bool:
        return self.platform != "selfManaged"


def classify(signals: PlatformSignals) -> Detection:
    """The platform whose signals the server shows most (Aurora first on a tie, since it shows RDS's as well)."""
    found: dict[ManagedPlatform, list[str]] = {}
    for platform in ORDER:
        evidence = [f"role {r}" for r in ROLES[platform] if r in signals.roles]
        evidence += [
            f"setting {s}" for s in sorted(signals.settings) if s.lower().startswith(SETTING_PREFIXES[platform])
        ]
        evidence += [f"function {f}()" for f in FUNCTIONS[platform] if f in signals.functions]
        if evidence:
            found[platform] = evidence
    if not found:
        return Detection()
    if "aurora" in found and "rds" in found:  # Aurora is RDS's engine family: its RDS signals are Aurora's too
        found["aurora"] += found.pop("rds")
    best = max(found, key=lambda p: (len(found[p]), -ORDER.index(p)))
    others = [e for p in ORDER if p != best and p in found for e in found[p]]
    return Detection(best, tuple([*found[best], *others][:MAX_EVIDENCE]))


def describe(detection: Detection) -> str:
    """One line for notes and status messages."""
    if not detection.managed:
        return "self-managed PostgreSQL: settings recommendations are applied with ALTER SYSTEM"
    return (
        f"{PLATFORM_NAMES[detection.platform]} ({', '.join(detection.evidence[:3])}): settings recommendations are "
        f"advice only, made in {WHERE[detection.platform]} with the provider's command; index work goes on as usual"
    )


def as_advice(recommendations: Sequence[Recommendation], detection: Detection) -> list[Recommendation]:
    """On a managed service, every ``setting`` recommendation becomes advice: the same setting and value with the
    platform recorded, its ``sql`` the provider's CLI command and Terraform (comments only), its rationale saying
    so. Other kinds, and every recommendation on a self-managed server, are returned as they are. A setting the
    provider's renderer refuses is left out (it would be refused as SQL too)."""
    if not detection.managed:
        return list(recommendations)
    platform = detection.platform
    assert platform != "selfManaged"
    return _settings_as(
        recommendations,
        lambda setting: SettingChange.model_validate({**setting.model_dump(by_alias=True), "platform": platform}),
        lambda advice: (render_advice(advice), render_advice_rollback(advice)),
        lambda text: _rationale(text, platform),
    )


def _rationale(text: str, platform: ManagedPlatform) -> str:
    return (
        f"{text} {PLATFORM_NAMES[platform]} refuses ALTER SYSTEM: this is advice only, never run by the operator; "
        f"make the change in {WHERE[platform]} with the command or Terraform shown as the SQL."
    ).strip()


def on_cluster(recommendations: Sequence[Recommendation], cluster: str | None) -> list[Recommendation]:
    """On a CloudNativePG Cluster (the target's ``spec.connection.cluster.name``), every ``setting`` recommendation
    becomes a patch of that Cluster: the same setting and value with the Cluster recorded, its ``sql`` and
    ``rollbackSql`` the patches as comments, its rationale saying so. CloudNativePG turns ``ALTER SYSTEM`` off (and
    would overwrite what it wrote). A setting the renderer refuses is left out, as it would be refused as SQL."""
    if cluster is None:
        return list(recommendations)
    return _settings_as(
        recommendations,
        lambda setting: SettingChange.model_validate({**setting.model_dump(by_alias=True), "cluster": cluster}),
        lambda patched: (render_cluster_setting(patched), render_cluster_setting_rollback(patched)),
        lambda text: (
            f"{text} CloudNativePG turns ALTER SYSTEM off: approving this merge-patches Cluster {cluster}'s "
            "spec.postgresql.parameters, and CloudNativePG rolls the change out to every instance."
        ).strip(),
    )


def _settings_as(
    recommendations: Sequence[Recommendation],
    convert: Callable[[SettingChange], SettingChange],
    render: Callable[[SettingChange], tuple[str, str]],
    rationale: Callable[[str], str],
) -> list[Recommendation]:
    """Every ``setting`` recommendation converted (its setting, its ``sql`` and ``rollbackSql`` rendered, its
    rationale extended, its id recomputed); a setting the renderer refuses is left out; other kinds kept as they are."""
    converted: list[Recommendation] = []
    for recommendation in recommendations:
        setting = recommendation.change.setting
        if recommendation.kind != "setting" or setting is None:
            converted.append(recommendation)
            continue
        new = convert(setting)
        try:
            sql, rollback = render(new)
        except ValueError:
            continue
        change = RecommendedChange(setting=new)
        converted.append(
            recommendation.model_copy(
                update={
                    "id": recommendation_id("setting", change),
                    "change": change,
                    "sql": sql,
                    "rollback_sql": rollback,
                    "rationale": rationale(recommendation.rationale),
                }
            )
        )
    return converted
