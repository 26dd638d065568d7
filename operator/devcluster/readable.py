"""Code from the checkout, where another user can read it.

A checkout may sit where only its owner can enter (``mktemp -d`` and a root user's home are mode 0700): a process
run as another user (``nobody`` in the tests) cannot import from it. ``readable_copy`` copies the packages it needs
to a fresh directory under the system's temporary directory, readable by everyone and writable by its owner only,
so such a process imports the very code under test. PostgreSQL, run as ``postgres``, needs nothing from the checkout
(``LocalPostgres`` gives it a directory of its own and runs its commands there); the process kubelet runs pods as
the user who started it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def readable_copy(*packages: Path) -> Path:
    """A new directory holding a copy of each package (without byte code), readable and enterable by every user;
    put it on ``sys.path`` (or ``PYTHONPATH``) of the other user's process. The caller removes it."""
    root = Path(tempfile.mkdtemp(prefix="optischema-readable-"))
    for package in packages:
        shutil.copytree(package, root / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@contextmanager
def readable(*packages: Path) -> Iterator[Path]:
    """``readable_copy``, removed afterwards."""
    root = readable_copy(*packages)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
