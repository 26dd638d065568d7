"""``python -m devcluster up|down|status``: the embedded cluster for people and scripts (``make cluster-up``).

``up`` starts a supervisor in the background that runs the cluster until ``down`` (or SIGTERM) and prints one
line, ``export KUBECONFIG=…``. State lives in ``$OPTISCHEMA_CLUSTER_DIR`` (default /tmp/optischema-cluster); a
stale one (a supervisor that died) is cleaned up by the next ``up`` or ``down``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .cluster import Cluster
from .controlplane import ControlPlaneError

STATE = Path(os.environ.get("OPTISCHEMA_CLUSTER_DIR", "/tmp/optischema-cluster"))
PID = STATE / "supervisor.pid"
READY = STATE / "ready"
FAILED = STATE / "failed"


def _running() -> int | None:
    try:
        pid = int(PID.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def up() -> int:
    if _running():
        print(f"export KUBECONFIG={STATE / 'cluster' / 'admin.kubeconfig'}")
        print("(already running)", file=sys.stderr)
        return 0
    shutil.rmtree(STATE, ignore_errors=True)  # a stale directory from a supervisor that died
    STATE.mkdir(parents=True)
    log = (STATE / "supervisor.log").open("wb")
    subprocess.Popen(
        [sys.executable, "-m", "devcluster", "supervise"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 600  # the first run may build the binaries
    while time.monotonic() < deadline:
        if READY.exists():
            print(f"export KUBECONFIG={STATE / 'cluster' / 'admin.kubeconfig'}")
            return 0
        if FAILED.exists():
            print(f"cluster-up failed: {FAILED.read_text()}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print("cluster-up: not ready after 600s; see " + str(STATE / "supervisor.log"), file=sys.stderr)
    return 1


def supervise() -> int:
    PID.write_text(str(os.getpid()))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        cluster = Cluster(STATE / "cluster").start()
    except (ControlPlaneError, OSError) as error:
        FAILED.write_text(str(error))
        return 1
    READY.write_text(cluster.plane.server)
    stop.wait()
    cluster.stop()
    return 0


def down() -> int:
    pid = _running()
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _running():
            time.sleep(0.2)
        if _running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    shutil.rmtree(STATE, ignore_errors=True)
    print("cluster stopped")
    return 0


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    return {"up": up, "down": down, "supervise": supervise}.get(command, lambda: 2)()


if __name__ == "__main__":
    raise SystemExit(main())
