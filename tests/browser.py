"""Headless Chromium (Debian's ``chromium``) with the network shut: every host name resolves to nothing and any
connection would go to a closed port on 127.0.0.1, so a report that needed the network would show it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root; the page is our own file
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("SKIPPED LOUDLY: Debian's chromium is not installed (make install adds it)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="optischema-chromium-") as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )


def screenshot(page: Path, png: Path, width: int = 1000, height: int = 2600) -> Path:
    _run(f"--screenshot={png}", f"--window-size={width},{height}", page.resolve().as_uri())
    assert png.exists(), "no screenshot"
    assert png.stat().st_size > 10_000, "an empty screenshot"
    return png


def dom(page: Path) -> str:
    """The document as Chromium parsed it."""
    return _run("--dump-dom", page.resolve().as_uri()).stdout
