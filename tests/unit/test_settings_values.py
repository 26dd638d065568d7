"""Setting values: each allowed setting's grammar and safe range, and the rollback's RESET, table-driven."""

from __future__ import annotations

import pytest

from optischema.api.operations import SettingChange
from optischema.changes.ddl import SETTINGS_ALLOWED, UnsafeDefinition, render_setting, render_setting_rollback
from optischema.changes.settings import SPECS, InvalidSettingValue, check_value

ACCEPTED = [
    ("work_mem", "64MB"),
    ("work_mem", "4096"),  # a bare number is in the base unit (kB)
    ("work_mem", "1GB"),
    ("work_mem", " 256 MB "),
    ("work_mem", "2GB"),
    ("maintenance_work_mem", "1GB"),
    ("effective_cache_size", "12GB"),
    ("effective_cache_size", "131072"),  # 8kB pages: 1GB
    ("random_page_cost", "1.1"),
    ("random_page_cost", "4"),
    ("seq_page_cost", "1"),
    ("effective_io_concurrency", "200"),
    ("default_statistics_target", "500"),
    ("jit", "off"),
    ("jit", "ON"),
    ("jit_above_cost", "-1"),
    ("jit_above_cost", "1e5"),
]

REFUSED = [
    ("work_mem", "100TB", "work_mem = '100TB' is outside 64kB to 2GB; safety cap 2GB"),
    ("work_mem", "3GB", "is outside 64kB to 2GB"),
    ("work_mem", "32kB", "is outside 64kB to 2GB"),
    ("work_mem", "64mb", "'mb' is not a unit of work_mem (PostgreSQL's units are case-sensitive"),
    ("work_mem", "64 megabytes", "'megabytes' is not a unit of work_mem"),
    ("work_mem", "-1MB", "takes a number with a unit"),
    ("work_mem", "1.5", "without a unit takes a whole number"),
    ("work_mem", "64MB; SELECT 1", "takes a number with a unit"),
    ("maintenance_work_mem", "1TB", "safety cap 16GB"),
    ("effective_cache_size", "100TB", "effective_cache_size = '100TB' is outside 8kB to"),
    ("random_page_cost", "-1", "random_page_cost = '-1' is outside 0.01 to 100"),
    ("random_page_cost", "1e400", "is outside 0.01 to 100"),
    ("random_page_cost", "nan", "takes a number"),
    ("random_page_cost", "fast", "takes a number"),
    ("seq_page_cost", "0", "is outside 0.01 to 100"),
    ("effective_io_concurrency", "1001", "is outside 0 to 1000"),
    ("effective_io_concurrency", "1.5", "takes a whole number"),
    ("default_statistics_target", "0", "is outside 1 to 10000"),
    ("jit", "maybe", "jit is on or off"),
    ("jit_above_cost", "-2", "is outside -1 to 1e+12"),
]


@pytest.mark.parametrize(("name", "value"), ACCEPTED, ids=lambda v: str(v))
def test_accepted(name: str, value: str) -> None:
    check_value(name, value)
    assert render_setting(SettingChange(name=name, value=value)).startswith("ALTER SYSTEM SET")


@pytest.mark.parametrize(("name", "value", "message"), REFUSED, ids=lambda v: str(v)[:30])
def test_refused_with_the_field_named(name: str, value: str, message: str) -> None:
    with pytest.raises(InvalidSettingValue) as refused:
        check_value(name, value)
    assert str(refused.value).startswith("setting.value: ")
    assert message in str(refused.value)
    # Every path renders through render_setting, which refuses the same way.
    with pytest.raises(UnsafeDefinition, match=r"^setting\.value: "):
        render_setting(SettingChange(name=name, value=value))


def test_every_allowed_setting_has_a_range() -> None:
    assert set(SPECS) == set(SETTINGS_ALLOWED)


@pytest.mark.parametrize(
    ("current", "source", "expected"),
    [
        ("4MB", "default", 'ALTER SYSTEM RESET "work_mem"'),
        ("4MB", "configuration file", 'ALTER SYSTEM RESET "work_mem"'),
        (None, None, 'ALTER SYSTEM RESET "work_mem"'),
        ("8MB", "command line", "ALTER SYSTEM SET \"work_mem\" = '8MB'"),
        ("8MB", None, "ALTER SYSTEM SET \"work_mem\" = '8MB'"),  # recommendations made before the source was kept
        ("16MB", "ALTER SYSTEM", "ALTER SYSTEM SET \"work_mem\" = '16MB'"),  # a DBA's own: a reset would drop it
        ("16MB", "configuration file (not visible to this role)", "ALTER SYSTEM SET \"work_mem\" = '16MB'"),
    ],
)
def test_the_rollback_resets_what_came_from_the_defaults_or_files(
    current: str | None, source: str | None, expected: str
) -> None:
    setting = SettingChange(name="work_mem", value="64MB", current_value=current, current_source=source)
    assert render_setting_rollback(setting) == f"{expected};\nSELECT pg_reload_conf()"
