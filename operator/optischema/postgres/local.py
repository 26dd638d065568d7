"""A throwaway PostgreSQL cluster in a temporary directory, on loopback: the local sandbox provider, and the
server the tests and the demo start.

Why not pytest-postgresql: it runs ``initdb``/``pg_ctl`` as the current user, and our sessions and CI run as root,
which PostgreSQL refuses. Here every server command runs as the ``postgres`` system user (``runuser``) when we are
root, and as ourselves otherwise; the data directory is owned by whoever runs the server. The server listens on
127.0.0.x only and on a Unix socket inside its own directory.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .binaries import binaries_cache, runnable

DEFAULT_MAJOR = 15
SERVER_USER = "postgres"


class PostgresStartError(RuntimeError):
    """The cluster could not be initialised or started; the message carries the server's log tail."""


def find_bindir(major: int = DEFAULT_MAJOR, program: str = "initdb", *, exact: bool = False) -> Path:
    """Debian's ``/usr/lib/postgresql/<major>/bin`` (or ``$OPTISCHEMA_PG_BINDIR``, or the cached release of that
    major) holding ``program``: ``initdb`` for a server, ``pg_dump`` for the client tools a sandbox needs (the image
    ships only those). Without ``exact``, another major's directory is the last resort (the newest first);
    with it, only ``major``'s own."""
    override = os.environ.get("OPTISCHEMA_PG_BINDIR")
    candidates = [Path(override)] if override else [Path(f"/usr/lib/postgresql/{major}/bin")]
    candidates.append(binaries_cache() / str(major) / "bin")
    if not exact:
        candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for candidate in candidates:
        if (candidate / program).exists():
            return candidate
    package = f"postgresql-{major}" if program == "initdb" else f"postgresql-client-{major}"
    raise PostgresStartError(
        f"PostgreSQL {major} {program} not found (looked in {', '.join(map(str, candidates))}); "
        f"install {package} or run make install (it caches the server binaries of every major), "
        "or set OPTISCHEMA_PG_BINDIR"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the server may still lose a race for it; start() retries)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalPostgres:
    """One PostgreSQL cluster: ``start()``, use ``dsn()``, ``stop()`` (also on interpreter exit)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        major: int = DEFAULT_MAJOR,
        preload: Sequence[str] = ("pg_stat_statements",),
        settings: dict[str, str] | None = None,
        superuser: str = "postgres",
        base_dir: Path | None = None,
        hba: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        # a cached release is mirrored where the postgres user can run it, with the libraries it brings
        self.bindir, self._library_path = runnable(find_bindir(major))
        # the cached releases carry no client tools: Debian's psql of any major talks to every server
        self._psql = self.bindir / "psql" if (self.bindir / "psql").exists() else find_bindir(major, "psql") / "psql"
        self.superuser = superuser
        self.settings = {
            "shared_preload_libraries": ",".join(preload),
            "pg_stat_statements.track": "all",
            "pg_stat_statements.max": "20000",
            # Durability is not needed for throwaway clusters, but synchronous_commit stays on: with it off, a
            # VACUUM right after a load cannot mark pages all-visible, and index-only scans look useless.
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "shared_buffers": "128MB",
            **(settings or {}),
        }
        self.hba = tuple(hba)  # pg_hba.conf lines placed before initdb's trust rules (they match first)
        self._own_dir = base_dir is None
        self.dir = base_dir or Path(tempfile.mkdtemp(prefix="optischema-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._as_root = os.geteuid() == 0
        self._running = False

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self, attempts: int = 3) -> LocalPostgres:
        self._prepare_dir()
        self._initdb()
        for attempt in range(attempts):
            self._write_conf()
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
                break
            except PostgresStartError:
                if attempt == attempts - 1 or "could not bind" not in self.log_tail():
                    raise
                self.port = free_port(self.host)  # lost the race for the port: take another
        self._running = True
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL if it hangs) and remove its directory."""
        if self._running:
            self._running = False
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
            except PostgresStartError:
                self._kill_postmaster()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- use ---------------------------------------------------------------------------------------------------

    def dsn(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.superuser}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql as the superuser over the Unix socket (trusted even when TCP needs passwords); stops
        at the first error and returns the unaligned output."""
        result = subprocess.run(
            [
                str(self._psql),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                f"host={self.dir} port={self.port} dbname={database} user={self.superuser}",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def set_hba(self, lines: Sequence[str]) -> None:
        """Put ``lines`` before the trust rules of pg_hba.conf and reload (e.g. to require passwords once set up)."""
        self.hba = tuple(lines)
        self._write_conf()
        self.psql("SELECT pg_reload_conf()")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- internals ---------------------------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            shutil.chown(self.dir, SERVER_USER, SERVER_USER)

    def _initdb(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.superuser,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )

    def _write_conf(self) -> None:
        conf = {
            **self.settings,
            "port": str(self.port),
            "listen_addresses": f"'{self.host}'",
            "unix_socket_directories": f"'{self.dir}'",
        }
        lines = [f"{key} = {value if value.startswith(chr(39)) else repr(value)}" for key, value in conf.items()]
        auto = self.data / "postgresql.auto.conf"
        # postgresql.auto.conf is read last, so these win over initdb's defaults; owned by the server user.
        self._run("sh", "-c", f"cat > '{auto}'", stdin="\n".join(lines) + "\n")
        if self.hba:
            hba = self.data / "pg_hba.conf"
            original = hba.read_text()  # root reads it anyway; otherwise we are its owner
            marker = "# optischema test rules\n"
            body = original.split(marker)[-1]
            self._run("sh", "-c", f"cat > '{hba}'", stdin=marker.join(["\n".join(self.hba) + "\n", body]))

    def _run(self, program: str, *args: str, stdin: str | None = None) -> None:
        binary = str(self.bindir / program) if (self.bindir / program).exists() else program
        command = [binary, *args]
        if self._library_path:
            command = ["env", f"LD_LIBRARY_PATH={self._library_path}", *command]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(
            command, input=stdin, capture_output=True, text=True, check=False, cwd=self.dir, timeout=120
        )
        if result.returncode != 0:
            raise PostgresStartError(
                f"{program} {' '.join(args[:3])}… failed ({result.returncode}): {result.stderr.strip()}\n"
                f"server log:\n{self.log_tail()}"
            )

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
