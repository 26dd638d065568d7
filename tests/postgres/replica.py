"""A real streaming replica of a test server: ``pg_basebackup -R`` from the primary, started as a hot standby on its
own loopback address and port (run as the ``postgres`` user when we are root, like :class:`LocalPostgres`)."""

from __future__ import annotations

import time

from devcluster import LocalPostgres


class StreamingReplica(LocalPostgres):
    """A hot standby of ``primary``: read-only, replaying its WAL, with index usage counters of its own."""

    def __init__(self, primary: LocalPostgres, host: str = "127.0.0.3") -> None:
        conninfo = f"host={primary.host} port={primary.port} user={primary.superuser} application_name=replica"
        super().__init__(host=host, superuser=primary.superuser, settings={"primary_conninfo": f"'{conninfo}'"})
        self.primary = primary

    def _initdb(self) -> None:
        # The primary's files instead of initdb's; -R writes standby.signal (primary_conninfo is set above, since
        # our postgresql.auto.conf replaces the one pg_basebackup writes).
        if (self.data / "PG_VERSION").exists():
            return
        self._run(
            "pg_basebackup",
            "-h",
            self.primary.host,
            "-p",
            str(self.primary.port),
            "-U",
            self.primary.superuser,
            "-D",
            str(self.data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )

    def catch_up(self, timeout: float = 30.0) -> None:
        """Wait until the standby replayed everything the primary wrote so far (a new database, a new index)."""
        target = self.primary.psql("SELECT pg_current_wal_lsn()").strip()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.psql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn").strip() == "t":
                return
            time.sleep(0.05)
        raise TimeoutError(f"the replica did not replay up to {target} in {timeout:g}s:\n{self.log_tail()}")
