"""The container image, built daemonless as `make image` builds it (buildah, vfs, chroot) and run the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILDAH = ["buildah", "--storage-driver", "vfs"]


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"SKIPPED LOUDLY: {' and '.join(missing)} not installed (make install installs them as root)")
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: buildah with vfs storage and chroot isolation needs root here")
    built = subprocess.run([str(ROOT / "hack/image/build.sh")], capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stderr[-4000:]
    image = built.stdout.strip().splitlines()[-1]
    name = subprocess.run([*BUILDAH, "from", image], capture_output=True, text=True, check=True).stdout.strip()
    yield name
    subprocess.run([*BUILDAH, "rm", name], capture_output=True)


def run(container: str, *command: str) -> str:
    done = subprocess.run(
        [*BUILDAH, "run", "--isolation", "chroot", container, "--", *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_image_runs_the_cli_as_a_non_root_user(container: str) -> None:
    assert run(container, "optischema", "--version").strip() == "optischema 0.1.0"
    assert "Read pg_stat_statements and the catalogs" in run(container, "optischema", "analyze", "--help")
    assert "benchmark" in run(container, "optischema", "--help")
    assert run(container, "id", "-u").strip() == "10001"


def test_the_image_ships_the_postgresql_15_client_tools_for_sandboxes(container: str) -> None:
    assert run(container, "pg_dump", "--version").startswith("pg_dump (PostgreSQL) 15.")
    assert run(container, "pg_restore", "--version").startswith("pg_restore (PostgreSQL) 15.")
