"""A write-heavy pgbench load on one table, with per-transaction latencies: what an index build must not hurt.

Used by the apply tests (zero failed transactions during ``CREATE INDEX CONCURRENTLY``) and ``make bench``
(client p99 during a build against the same load without one).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from optischema.postgres.local import LocalPostgres

TABLE = """
CREATE TABLE IF NOT EXISTS ledger (id bigint PRIMARY KEY, account int NOT NULL, amount int NOT NULL, note text);
INSERT INTO ledger SELECT g, g % 50000, g % 1000, md5(g::text) FROM generate_series(1, {rows}) g;
"""
SCRIPT = """
\\set id random(1, {rows})
\\set account random(1, 50000)
UPDATE ledger SET amount = amount + 1 WHERE id = :id;
\\set fresh {rows} + :client_id * 100000000 + random(1, 99999999)
INSERT INTO ledger (id, account, amount, note) VALUES (:fresh, :account, 1, 'x') ON CONFLICT (id) DO NOTHING;
SELECT amount FROM ledger WHERE id = :id;
"""


@dataclass(frozen=True, slots=True)
class LoadResult:
    transactions: int
    failed: int
    tps: float
    p50_ms: float
    p99_ms: float


def create_ledger(server: LocalPostgres, database: str, rows: int) -> None:
    server.psql(TABLE.format(rows=rows), database=database)
    server.psql("VACUUM ANALYZE ledger", database=database)


def write_load(
    server: LocalPostgres,
    database: str,
    seconds: float,
    *,
    rows: int,
    clients: int = 4,
    during: Callable[[], None] | None = None,
) -> LoadResult:
    """Run the load for ``seconds``; ``during`` runs (in a thread) one second in, while the load goes on."""
    work = Path(tempfile.mkdtemp(prefix="optischema-load-"))
    script = work / "ledger.sql"
    script.write_text(SCRIPT.format(rows=rows))
    command = [
        str(server.bindir / "pgbench"), "-n", "-c", str(clients), "-j", str(clients), "-T", str(int(seconds)),
        "-f", str(script), "-l", "--log-prefix", str(work / "tx"), "-h", server.host, "-p", str(server.port),
        "-U", server.superuser, database,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    error: list[BaseException] = []
    helper = None
    if during is not None:
        time.sleep(1)

        def run() -> None:
            try:
                during()
            except BaseException as exc:
                error.append(exc)

        helper = threading.Thread(target=run)
        helper.start()
    output, _ = process.communicate(timeout=seconds + 600)
    if helper is not None:
        helper.join()
    if error:
        raise error[0]
    if process.returncode not in (0, 2):  # 2: some clients failed, reported below
        raise RuntimeError(f"pgbench failed ({process.returncode}): {output[-2000:]}")
    latencies = [
        int(fields[2]) / 1000
        for log in work.glob("tx*")
        for fields in (line.split() for line in log.read_text().splitlines())
        if len(fields) >= 3 and fields[2].isdigit()
    ]
    failed = re.search(r"number of failed transactions: (\d+)", output)
    errors = len(re.findall(r"ERROR|aborted", output))
    latencies.sort()
    return LoadResult(
        transactions=len(latencies),
        failed=(int(failed.group(1)) if failed else 0) + errors,
        tps=len(latencies) / seconds,
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        p99_ms=latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
    )
