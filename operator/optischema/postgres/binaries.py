"""Server binaries of other majors, cached outside the repository, made runnable by the ``postgres`` user.

``make install`` (``python -m devcluster.pgbinaries``) unpacks a release per major under ``binaries_cache()``:
``<cache>/<major>/<release>/…`` and a link ``<cache>/<major>/bin`` to its bin directory. Two things stand between
that tree and a running server:

- The cache sits in the home directory, and root's is mode 0700: the ``postgres`` user, which the server must run
  as, cannot even reach it. ``runnable_bindir`` gives it a mirror of the release under the system's temporary
  directory made of hard links (same file system: no copy; a copy otherwise), once per process, removed at exit.
- Debian's bullseye packages (PostgreSQL 13 with HypoPG) need libraries bookworm no longer ships (ICU 67, OpenSSL
  1.1, OpenLDAP 2.4); they are unpacked into the release's own ``usr/lib/<triplet>``, which ``library_path``
  names for ``LD_LIBRARY_PATH``. The npm releases find their libraries through their RUNPATH (``$ORIGIN/../lib``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_MIRRORS: dict[Path, Path] = {}


def binaries_cache() -> Path:
    """``$OPTISCHEMA_PG_CACHE``, else ``$XDG_CACHE_HOME/optischema/postgresql``, else ``~/.cache/…``."""
    override = os.environ.get("OPTISCHEMA_PG_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "optischema" / "postgresql"


def release_root(bindir: Path) -> Path | None:
    """The cached release (``<cache>/<major>/<release>``) holding ``bindir``; None for a directory outside the cache
    (Debian's own ``/usr/lib/postgresql/<major>/bin``)."""
    cache = binaries_cache().resolve()
    real = bindir.resolve()
    try:
        parts = real.relative_to(cache).parts
    except ValueError:
        return None
    return cache / parts[0] / parts[1] if len(parts) > 2 else None


def everyone_can_enter(path: Path) -> bool:
    """Every directory from ``/`` down to ``path`` is searchable by others (mode o+x)."""
    return all(os.stat(parent).st_mode & 0o001 for parent in [path, *path.parents])


def runnable(bindir: Path) -> tuple[Path, str | None]:
    """The bin directory to run the server from and the ``LD_LIBRARY_PATH`` it needs (None: none).

    ``bindir`` itself when another user can reach it, else the same bin directory in a mirror of its release that
    every user can read (made once per process, removed at exit). The library path is a cached Debian release's own
    ``usr/lib/<triplet>``."""
    real = bindir.resolve()
    root = release_root(real)
    if root is None:
        return real, None
    if everyone_can_enter(real):
        runnable_root = root
    else:
        if root not in _MIRRORS:
            _MIRRORS[root] = _mirror(root)
        runnable_root = _MIRRORS[root]
    libraries = sorted(str(path) for path in runnable_root.glob("usr/lib/*-linux-gnu") if path.is_dir())
    return runnable_root / real.relative_to(root), ":".join(libraries) or None


def _mirror(root: Path) -> Path:
    """A copy of the release made of hard links, under a new directory every user can enter."""
    parent = Path(tempfile.mkdtemp(prefix="optischema-pgbin-"))
    parent.chmod(0o755)
    mirror = parent / root.name
    shutil.copytree(root, mirror, symlinks=True, copy_function=_link_or_copy)
    for directory in [mirror, *mirror.rglob("*")]:
        if directory.is_dir() and not directory.is_symlink():
            directory.chmod(0o755)
    atexit.register(shutil.rmtree, parent, ignore_errors=True)
    return mirror


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
