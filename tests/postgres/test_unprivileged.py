"""The launcher also works for an ordinary user (developers who are not root), not only via runuser as root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"
SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from devcluster import LocalPostgres
with LocalPostgres() as pg:
    print(pg.psql("SELECT current_setting('shared_preload_libraries')").strip())
"""


def test_starts_as_an_unprivileged_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: every other test in this tier proves it")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 that an unprivileged user can run")
    result = subprocess.run(
        ["runuser", "-u", "nobody", "--", "env", "HOME=/tmp", python, "-c", SCRIPT, str(OPERATOR_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pg_stat_statements"
