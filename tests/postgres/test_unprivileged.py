"""The launcher also works for an ordinary user (developers who are not root), not only via runuser as root; and the
test does so from wherever the checkout is, even a directory only its owner can enter (``mktemp -d``, a root user's
home: mode 0700), by running the code from a copy that user can read (``devcluster.readable``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.readable import readable

OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"
#: What the unprivileged process imports: the launcher and the package it lives in.
PACKAGES = ("devcluster", "optischema")
USER = "nobody"
SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from devcluster import LocalPostgres
with LocalPostgres() as pg:
    print(pg.psql("SELECT current_setting('shared_preload_libraries')").strip())
"""


@pytest.fixture(scope="module")
def system_python() -> str:
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: every other test in this tier proves it")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 that an unprivileged user can run")
    return python


def as_user(python: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", USER, "--", "env", "HOME=/tmp", python, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def start_postgres_as_nobody(python: str, operator_dir: Path) -> subprocess.CompletedProcess[str]:
    """The launcher run as ``nobody``, importing the code of ``operator_dir`` from a copy it can read."""
    with readable(*(operator_dir / name for name in PACKAGES)) as copy:
        return as_user(python, "-c", SCRIPT, str(copy), cwd=copy)


def test_starts_as_an_unprivileged_user(system_python: str) -> None:
    result = start_postgres_as_nobody(system_python, OPERATOR_DIR)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pg_stat_statements"


@pytest.fixture
def private_checkout() -> Iterator[Path]:
    """The packages copied into ``<mktemp -d>/repo/operator``: a checkout only its owner (root) can enter."""
    private = Path(tempfile.mkdtemp(prefix="optischema-private-"))
    try:
        assert private.stat().st_mode & 0o777 == 0o700
        operator_dir = private / "repo" / "operator"
        for name in PACKAGES:
            shutil.copytree(OPERATOR_DIR / name, operator_dir / name, ignore=shutil.ignore_patterns("__pycache__"))
        yield operator_dir
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_starts_as_an_unprivileged_user_from_a_checkout_only_its_owner_can_enter(
    system_python: str, private_checkout: Path
) -> None:
    # What the issue saw: straight from such a checkout, the other user cannot import the code.
    direct = as_user(system_python, "-c", SCRIPT, str(private_checkout), cwd=Path("/"))
    assert direct.returncode != 0
    assert "No module named 'devcluster'" in direct.stderr
    # From the readable copy it runs.
    result = start_postgres_as_nobody(system_python, private_checkout)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pg_stat_statements"
