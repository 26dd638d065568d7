"""Managed services (RDS, Aurora, Cloud SQL, Azure flexible server): the platform from the server's signals, and
settings as the provider's CLI command and Terraform, never SQL — with hostile names and values that must not get
into a shell, the AWS CLI's JSON, a gcloud flag list or HCL."""

from __future__ import annotations

import json
import shlex
from typing import Any, cast

import kopf
import pytest
from pydantic import ValidationError

from optischema.analysis.platform import Detection, PlatformSignals, as_advice, classify
from optischema.analysis.report import make
from optischema.api.conditions import Reason
from optischema.api.indexchange import IndexChangeSpec
from optischema.api.operations import SettingChange
from optischema.api.recommendation import RecommendedChange
from optischema.changes.ddl import UnsafeDefinition, render_setting, render_setting_rollback, statements_for, undo_for
from optischema.changes.managed import (
    advice_only,
    cli_command,
    hcl_string,
    provider_value,
    render_advice,
    render_advice_rollback,
    terraform,
)
from optischema.flows.changes import Facts, judge
from optischema.flows.decisions import check_sql

pytestmark = pytest.mark.unit

PLATFORMS = ("rds", "aurora", "cloudSql", "azure")


# -- the classifier --------------------------------------------------------------------------------------------

CLASSIFY = [
    # (title, roles, settings, functions, platform, evidence starts with)
    ("nothing of a provider", set(), {"work_mem"}, set(), "selfManaged", ()),
    ("RDS by its role", {"rds_superuser"}, set(), set(), "rds", ("role rds_superuser",)),
    ("RDS by a setting alone", set(), {"rds.extensions"}, set(), "rds", ("setting rds.extensions",)),
    (
        "Aurora shows RDS's signals and aurora_version()",
        {"rds_superuser"},
        {"rds.extensions"},
        {"aurora_version"},
        "aurora",
        ("function aurora_version()", "role rds_superuser", "setting rds.extensions"),
    ),
    ("Aurora by an apg_ setting", set(), {"apg_plan_mgmt.capture_plan_baselines"}, set(), "aurora", ()),
    ("Cloud SQL by its role", {"cloudsqlsuperuser"}, set(), set(), "cloudSql", ("role cloudsqlsuperuser",)),
    ("Cloud SQL by a flag", set(), {"cloudsql.iam_authentication"}, set(), "cloudSql", ()),
    ("Azure by its role", {"azure_pg_admin"}, set(), set(), "azure", ("role azure_pg_admin",)),
    ("Azure by azure.extensions", set(), {"azure.extensions"}, set(), "azure", ("setting azure.extensions",)),
    (
        "a migrated database keeping an old RDS role: most evidence wins",
        {"rds_superuser", "azure_pg_admin", "azuresu"},
        {"azure.extensions"},
        set(),
        "azure",
        ("role azure_pg_admin", "role azuresu", "setting azure.extensions", "role rds_superuser"),
    ),
    ("a setting merely named like one is not a prefix match", set(), {"rdsx.foo", "azurex"}, set(), "selfManaged", ()),
]


@pytest.mark.parametrize(
    ("roles", "settings", "functions", "platform", "evidence"),
    [c[1:] for c in CLASSIFY],
    ids=[c[0] for c in CLASSIFY],
)
def test_classify(
    roles: set[str], settings: set[str], functions: set[str], platform: str, evidence: tuple[str, ...]
) -> None:
    found = classify(PlatformSignals(frozenset(roles), frozenset(settings), frozenset(functions)))
    assert found.platform == platform
    assert found.evidence[: len(evidence)] == evidence
    assert found.managed == (platform != "selfManaged")
    if found.managed:
        assert found.evidence


# -- provider values -------------------------------------------------------------------------------------------

VALUES = [
    ("work_mem", "64MB", "rds", "65536"),
    ("work_mem", "1GB", "azure", "1048576"),
    ("work_mem", "4096", "cloudSql", "4096"),  # a bare number is already in kB
    ("maintenance_work_mem", "1GB", "aurora", "1048576"),
    ("effective_cache_size", "384MB", "rds", "49152"),  # 8kB pages
    ("effective_cache_size", "4GB", "cloudSql", "524288"),
    ("random_page_cost", "1.1", "azure", "1.1"),
    ("jit", "off", "rds", "0"),
    ("jit", "on", "aurora", "1"),
    ("jit", "true", "cloudSql", "on"),
    ("jit", "0", "azure", "off"),
    ("jit_above_cost", "-1", "rds", "-1"),
    ("default_statistics_target", "500", "cloudSql", "500"),
]


@pytest.mark.parametrize(("name", "value", "platform", "expected"), VALUES)
def test_provider_value(name: str, value: str, platform: str, expected: str) -> None:
    assert provider_value(name, value, platform) == expected


HOSTILE_VALUES = [
    "64MB; rm -rf /",
    "$(id)",
    "`id`",
    "1,ApplyMethod=pending-reboot",
    "64MB,log_statement=all",
    '${file("/etc/passwd")}',
    "%{ for x in y }",
    "1\nDROP TABLE accounts",
    "'",
    '"',
    "64 MB",
    "",
    "1.5kB",  # not a whole number of kB
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_hostile_values_are_refused_naming_the_field(value: str, platform: str) -> None:
    with pytest.raises(UnsafeDefinition, match=r"^setting\.value: "):
        provider_value("work_mem", value, platform)


@pytest.mark.parametrize("name", ["shared_preload_libraries", "log_statement", "rds.force_ssl", "work_mem;x"])
def test_a_setting_outside_the_allow_list_is_refused(name: str) -> None:
    with pytest.raises(UnsafeDefinition, match=r"^setting\.name: "):
        provider_value(name, "1", "rds")


@pytest.mark.parametrize("name", ["work_mem; rm -rf /", "Work_Mem", "work mem", "$(id)", 'x"y', "a" * 64, "work_mem\n"])
def test_the_model_refuses_hostile_setting_names(name: str) -> None:
    with pytest.raises(ValidationError):
        SettingChange(name=name, value="64MB", platform="rds")


# -- the renderers stay safe even when handed what provider_value would refuse ------------------------------------


@pytest.mark.parametrize("value", ["$(id)", "a'b", "1 --x", "1,ApplyMethod=pending-reboot", "x;y"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_cli_commands_keep_a_hostile_value_one_shell_word(value: str, platform: str) -> None:
    words = shlex.split(cli_command("work_mem", value, platform))
    if platform in ("rds", "aurora"):
        assert json.loads(words[words.index("--parameters") + 1]) == [
            {"ParameterName": "work_mem", "ParameterValue": value, "ApplyMethod": "immediate"}
        ]
        assert words[:3] == ["aws", "rds", f"modify-db{'-cluster' if platform == 'aurora' else ''}-parameter-group"]
    elif platform == "cloudSql":
        assert words[-1] == f"--database-flags=work_mem={value}"
        assert words[:4] == ["gcloud", "sql", "instances", "patch"]
    else:
        assert words[words.index("--value") + 1] == value
        assert words[words.index("--name") + 1] == "work_mem"


HCL = [
    ("64MB", '"64MB"'),
    ('a"b', '"a\\"b"'),
    ("a\\b", '"a\\\\b"'),
    ("${file(x)}", '"$${file(x)}"'),
    ("%{if x}", '"%%{if x}"'),
    ("a\nb", '"a\\nb"'),
    ("\x01", '"\\u0001"'),
]


@pytest.mark.parametrize(("text", "expected"), HCL)
def test_hcl_strings_escape_quotes_interpolation_and_line_breaks(text: str, expected: str) -> None:
    assert hcl_string(text) == expected


@pytest.mark.parametrize("platform", PLATFORMS)
def test_terraform_names_each_provider_s_resource(platform: str) -> None:
    text = terraform("work_mem", "65536", platform)
    expected = {
        "rds": "aws_db_parameter_group",
        "aurora": "aws_rds_cluster_parameter_group",
        "cloudSql": "database_flags {",
        "azure": 'resource "azurerm_postgresql_flexible_server_configuration" "work_mem"',
    }[platform]
    assert expected in text
    assert 'name         = "work_mem"' in text or 'name  = "work_mem"' in text or 'name      = "work_mem"' in text


# -- the recommendation's sql: comments only, and never SQL anywhere -----------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_advice_is_comments_only_with_the_command_and_terraform(platform: str) -> None:
    setting = SettingChange(name="work_mem", value="64MB", current_value="4MB", platform=platform)
    sql = render_advice(setting)
    assert all(line.startswith("-- ") for line in sql.splitlines())
    assert "refuses ALTER SYSTEM; the operator never runs this" in sql
    assert cli_command("work_mem", "65536", platform) in sql
    assert "Or with Terraform:" in sql
    undo = render_advice_rollback(setting)
    assert all(line.startswith("-- ") for line in undo.splitlines())
    assert cli_command("work_mem", "4096", platform) in undo


def test_undo_without_a_readable_old_value_says_to_remove_the_override() -> None:
    setting = SettingChange(name="work_mem", value="64MB", current_value="4 MB", platform="rds")
    assert render_advice_rollback(setting) == (
        "-- To undo: remove the override of work_mem from the instance's DB parameter group; the provider's default "
        "applies."
    )


def test_advice_keeps_the_safety_range() -> None:
    with pytest.raises(UnsafeDefinition, match=r"^setting\.value: work_mem = '100GB' is outside"):
        render_advice(SettingChange(name="work_mem", value="100GB", platform="azure"))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_managed_setting_never_renders_as_sql(platform: str) -> None:
    """The attack: an IndexChange carrying a managed service's setting, created by hand or by a forged approval."""
    setting = SettingChange(name="work_mem", value="64MB", current_value="4MB", platform=platform)
    for render in (render_setting, render_setting_rollback):
        with pytest.raises(UnsafeDefinition, match=r"^setting\.platform: .* refuses ALTER SYSTEM"):
            render(setting)
    spec = IndexChangeSpec.model_validate(
        {"targetRef": {"name": "shop"}, "operation": "setting", "setting": setting.to_wire()}
    )
    with pytest.raises(UnsafeDefinition, match=r"^setting\.platform: "):
        statements_for(spec)
    with pytest.raises(UnsafeDefinition, match=r"^setting\.platform: "):
        undo_for(spec, None)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_an_index_change_carrying_a_managed_setting_is_refused_at_admission(platform: str) -> None:
    """The attack: someone with rights on IndexChanges writes one from the advice; the webhook's judge refuses it
    before anything reaches the database, naming the field."""
    setting = SettingChange(name="work_mem", value="64MB", current_value="4MB", platform=platform)
    spec = {"targetRef": {"name": "shop"}, "operation": "setting", "setting": setting.to_wire()}
    reason, message = judge(spec, Facts({"spec": {}}))  # type: ignore[misc]
    assert reason == Reason.INVALID_SPEC
    assert message.startswith(f"setting.platform: {platform} refuses ALTER SYSTEM")


def _spec(setting: SettingChange, sql: str, rollback: str) -> dict[str, Any]:
    return {
        "targetRef": {"name": "shop"},
        "kind": "setting",
        "change": {"setting": setting.to_wire()},
        "sql": sql,
        "rollbackSql": rollback,
    }


def test_admission_holds_a_managed_setting_s_sql_to_the_advice() -> None:
    """The attack: a recommendation for RDS whose sql is ALTER SYSTEM after all — refused by the webhook's check."""
    setting = SettingChange(name="work_mem", value="64MB", current_value="4MB", platform="rds")
    good = _spec(setting, render_advice(setting), render_advice_rollback(setting))
    assert check_sql(None, good) is None
    forged = {**good, "sql": "ALTER SYSTEM SET \"work_mem\" = '64MB';\nSELECT pg_reload_conf()"}
    assert (check_sql(None, forged) or "").startswith("spec.sql: is not what spec.change renders")


def test_advice_only_says_why_for_managed_settings_only() -> None:
    setting = SettingChange(name="work_mem", value="64MB", platform="cloudSql")
    why = advice_only(_spec(setting, "-- x", "-- y"))
    assert why is not None
    assert "advice only, nothing was run" in why
    assert "Cloud SQL" in why
    assert "database flags" in why
    plain = SettingChange(name="work_mem", value="64MB")
    assert advice_only(_spec(plain, "x", "y")) is None
    assert advice_only({"kind": "createIndex", "change": {}}) is None


# -- analysis: settings turned into advice, everything else kept ---------------------------------------------------


def _setting_recommendation() -> Any:
    change = SettingChange(name="random_page_cost", value="1.1", current_value="4", current_source="default")
    return make(
        "setting",
        RecommendedChange(setting=change),
        sql=render_setting(change),
        rollback_sql=render_setting_rollback(change),
        table=None,
        rationale="Cached workload.",
        source="heuristic",
        risk="medium",
    )


def test_as_advice_on_a_managed_service() -> None:
    original = _setting_recommendation()
    (advice,) = as_advice([original], Detection("azure", ("role azure_pg_admin",)))
    assert advice.change.setting is not None
    assert advice.change.setting.platform == "azure"
    assert advice.change.setting.value == "1.1"
    assert advice.id != original.id  # another change, another recommendation
    assert advice.sql == render_advice(advice.change.setting)
    assert "advice only, never run by the operator" in advice.rationale
    assert advice.rationale.startswith("Cached workload.")
    assert advice.to_custom_resource("shop").spec.sql == advice.sql  # a valid TuningRecommendation


def test_as_advice_leaves_a_self_managed_server_alone() -> None:
    original = _setting_recommendation()
    assert as_advice([original], Detection()) == [original]


# -- approval: nothing is created, and the Event says why ----------------------------------------------------------


def _decided(module: Any) -> Any:
    """The approval handler, called as kopf would (its typed signature is kopf's, not ours)."""
    return module.decided


class RecordingKube:
    """The Kubernetes calls the approval handler makes, recorded (the handler's own logic is under test)."""

    def __init__(self) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.patched: list[dict[str, Any]] = []

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return {"spec": {}}

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append((plural, body))
        return body

    async def patch_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patched.append(patch)


async def test_approving_advice_creates_no_index_change_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from optischema.handlers import recommendation as handler

    events: list[str] = []
    monkeypatch.setattr(kopf, "info", lambda body, *, reason, message: events.append(f"{reason}: {message}"))
    monkeypatch.setattr(
        kopf, "event", lambda body, *, type, reason, message: events.append(f"{type} {reason}: {message}")
    )
    setting = SettingChange(name="work_mem", value="64MB", current_value="4MB", platform="rds")
    spec = _spec(setting, render_advice(setting), render_advice_rollback(setting))
    spec["approval"] = {"state": "Approved", "decidedBy": "alice"}
    body = {"metadata": {"namespace": "shop", "name": "shop-setting-1"}, "spec": spec, "status": {}}
    memo = kopf.Memo()
    memo.kube = RecordingKube()
    await _decided(handler)(body=kopf.Body(cast(Any, body)), memo=memo)
    assert memo.kube.created == []  # no IndexChange: nothing will ever run
    assert memo.kube.patched == [{"phase": "Approved"}]
    assert events == [
        "Approved: approved by alice",
        "Normal AdviceOnly: advice only, nothing was run: Amazon RDS for PostgreSQL refuses ALTER SYSTEM, so work_mem "
        "is changed in the instance's DB parameter group with the command in spec.sql",
    ]


async def test_approving_a_self_managed_setting_still_makes_its_index_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the same approval without a platform goes on to be applied."""
    from optischema.handlers import recommendation as handler

    monkeypatch.setattr(kopf, "info", lambda *_, **__: None)
    setting = SettingChange(name="work_mem", value="64MB", current_value="4MB")
    spec = _spec(setting, render_setting(setting), render_setting_rollback(setting))
    spec["approval"] = {"state": "Approved", "decidedBy": "alice"}
    body = {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "TuningRecommendation",
        "metadata": {"namespace": "shop", "name": "shop-setting-2", "uid": "u2"},
        "spec": spec,
        "status": {},
    }
    memo = kopf.Memo()
    memo.kube = RecordingKube()
    await _decided(handler)(body=kopf.Body(cast(Any, body)), memo=memo)
    assert [plural for plural, _ in memo.kube.created] == ["indexchanges"]
