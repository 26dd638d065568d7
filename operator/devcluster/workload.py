"""A benchmark workload on a local PostgreSQL: a folder with ``schema.sql`` (``:scale``), ``legacy.sql`` (the
indexes it "already has"), ``q/*.sql`` pgbench scripts and ``weights.txt``, the layout of ``../shared/workloads``.

Used by ``make demo`` and the benchmarks: load it, drive its mix with pgbench (as a burst for throughput, or at a
modest rate in the background as live traffic), apply index sets and go back to the start state.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from optischema.postgres.local import LocalPostgres


class Workload:
    def __init__(self, folder: Path, server: LocalPostgres, *, database: str | None = None, scale: float = 1.0):
        self.folder = folder
        self.server = server
        self.database = database or folder.name
        self.scale = scale

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.database)

    def load(self) -> None:
        """Create the database with its data, legacy indexes and the extensions the engine reads."""
        self.server.psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        self.server.psql(f'CREATE DATABASE "{self.database}"')
        self.psql_file(self.folder / "schema.sql")
        self._legacy()
        self.server.psql("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;", database=self.database)
        self.server.psql("ANALYZE", database=self.database)

    def _legacy(self) -> None:
        legacy = self.folder / "legacy.sql"
        if legacy.exists():
            self.psql_file(legacy)

    def psql_file(self, path: Path) -> None:
        result = subprocess.run(
            [
                str(self.server.bindir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"scale={self.scale:g}",
                "-d",
                self.dsn,
                "-f",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{path.name} failed: {result.stderr.strip()}")

    def apply(self, sql: str) -> None:
        """Run statements one by one (CREATE INDEX CONCURRENTLY refuses a transaction block), then ANALYZE."""
        for statement in _statements(sql):
            self.server.psql(statement, database=self.database)
        self.server.psql("ANALYZE", database=self.database)

    def reset(self) -> None:
        """Back to the start state: primary keys and legacy indexes only, statistics of statements cleared."""
        drops = self.server.psql(
            "SELECT format('DROP INDEX %I.%I', n.nspname, c.relname) FROM pg_index x "
            "JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND NOT x.indisprimary",
            database=self.database,
        )
        for statement in drops.splitlines():
            if statement.strip():
                self.server.psql(statement, database=self.database)
        self._legacy()
        self.server.psql("ANALYZE", database=self.database)
        self.server.psql("SELECT pg_stat_statements_reset(); SELECT pg_stat_reset()", database=self.database)

    def _mix(self) -> list[str]:
        args = []
        for line in (self.folder / "weights.txt").read_text().splitlines():
            if line.strip():
                name, weight = line.split()
                args += ["-f", f"{self.folder / 'q' / name}.sql@{weight}"]
        return args

    def _pgbench(self, seconds: float, clients: int, rate: float | None) -> list[str]:
        command = [
            str(self.server.bindir / "pgbench"),
            "-n",
            "-c",
            str(clients),
            "-j",
            str(clients),
            "-T",
            str(int(seconds)),
            "-D",
            f"scale={self.scale:g}",
            *self._mix(),
        ]
        if rate:
            command += ["-R", str(rate)]
        return [
            *command,
            "-h",
            self.server.host,
            "-p",
            str(self.server.port),
            "-U",
            self.server.superuser,
            self.database,
        ]

    def run(self, seconds: float, clients: int = 2) -> float:
        """Transactions per second of the mix at full speed."""
        result = subprocess.run(self._pgbench(seconds, clients, None), capture_output=True, text=True, check=False)
        match = re.search(r"^tps = ([0-9.]+)", result.stdout, re.MULTILINE)
        if result.returncode != 0 or not match:
            raise RuntimeError(f"pgbench failed: {result.stderr.strip()[-500:]}")
        return float(match.group(1))

    def live(self, seconds: float, rate: float = 100) -> subprocess.Popen[bytes]:
        """The mix at a modest rate in the background, as production traffic during an analysis."""
        return subprocess.Popen(self._pgbench(seconds, 1, rate), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _statements(sql: str) -> list[str]:
    """Statements of a script of simple statements (one per ``;`` at a line end; comments dropped)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";")]
