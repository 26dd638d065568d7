"""The krew manifest matches a fresh build of its archive, and the archive's launcher runs the plugin."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_manifest_is_in_sync_with_a_fresh_build() -> None:
    done = subprocess.run([sys.executable, "hack/krew/build.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_archive_launcher_runs_the_plugin(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "hack" / "krew"))
    try:
        import build  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    with tarfile.open(fileobj=io.BytesIO(build.archive()), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["LICENSE", "kubectl-optischema"]
        tar.extractall(tmp_path, filter="data")
    launcher = tmp_path / "kubectl-optischema"
    assert os.access(launcher, os.X_OK)
    env = {**os.environ, "OPTISCHEMA_PYTHON": sys.executable}
    done = subprocess.run([str(launcher), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "approve" in done.stdout
    missing = subprocess.run(
        [str(launcher), "list"],
        env={"PATH": "/usr/bin:/bin", "OPTISCHEMA_PYTHON": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 127
    assert "pip install optischema-operator" in missing.stderr
