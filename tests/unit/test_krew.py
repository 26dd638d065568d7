"""The krew manifest matches a fresh build of its archive, and the archive's launcher runs the plugin."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from devcluster.controlplane import ControlPlaneError, find_binaries

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
        assert sorted(tar.getnames()) == ["LICENSE", "kubectl-optischema", "kubectl_complete-optischema"]
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


def _extracted(tmp_path: Path) -> Path:
    sys.path.insert(0, str(REPO / "hack" / "krew"))
    try:
        import build
    finally:
        sys.path.pop(0)
    with tarfile.open(fileobj=io.BytesIO(build.archive()), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path


def test_the_manifest_installs_the_completion_plugin_and_says_how_to_link_it() -> None:
    manifest = yaml.safe_load((REPO / "plugins" / "krew" / "optischema.yaml").read_text())
    (platform,) = manifest["spec"]["platforms"]
    assert {"from": "kubectl_complete-optischema", "to": "."} in platform["files"]
    assert "kubectl_complete-optischema" in manifest["spec"]["caveats"]  # krew links only bin onto PATH


def test_the_archive_completion_plugin_completes_through_kubectl(tmp_path: Path) -> None:
    """kubectl (>= 1.26) finds kubectl_complete-optischema on PATH and runs it with the words typed; offline (no
    cluster) the subcommands still complete. Without the package it offers nothing rather than fail the TAB."""
    root = _extracted(tmp_path / "krew")
    completer = root / "kubectl_complete-optischema"
    assert os.access(completer, os.X_OK)
    env = {
        "PATH": f"{root}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KUBECONFIG": str(tmp_path / "missing"),
        "OPTISCHEMA_PYTHON": sys.executable,
    }
    done = subprocess.run([str(completer), "ap"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["approve", ":4"]
    flags = subprocess.run([str(completer), "top", "--on"], env=env, capture_output=True, text=True, timeout=60)
    assert "--once" in flags.stdout.splitlines()
    bare = {**env, "OPTISCHEMA_PYTHON": "/nonexistent", "PATH": f"{root}:/nonexistent"}
    missing = subprocess.run([str(completer), "ap"], env=bare, capture_output=True, text=True, timeout=60)
    assert (missing.returncode, missing.stdout) == (0, ":4\n")
    try:
        kubectl = find_binaries(build=False) / "kubectl"
    except ControlPlaneError as error:  # the pinned kubectl is built by the k8s tier (make controlplane)
        pytest.skip(f"no pinned kubectl here: {error}")
    through = subprocess.run(
        [str(kubectl), "__complete", "optischema", "ap"], env=env, capture_output=True, text=True, timeout=60
    )
    assert through.returncode == 0, through.stderr
    assert through.stdout.splitlines()[0] == "approve"
    assert "About to call: " + str(completer) in through.stderr
