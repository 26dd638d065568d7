"""A real Kubernetes control plane as local processes: etcd, kube-apiserver and kube-controller-manager of one
pinned release, the way controller-runtime's envtest runs them, plus the process kubelet (``kubelet.py``).

Everything listens on 127.0.0.1 only. Each process runs in its own process group and is asked to die with us
(``PR_SET_PDEATHSIG``), so nothing outlives a test session even when it is killed; ``stop()`` ends them in order
and removes the working directory.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from optischema.kube import certs
from optischema.postgres.local import free_port

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "controlplane" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
#: Users of the token file: an administrator and two ordinary users (RBAC and approval tests).
USERS = {"admin": ("admin", "system:masters"), "alice": ("alice", ""), "bob": ("bob", "")}


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message carries the cause and the log tail."""


def find_binaries(build: bool = True) -> Path:
    """The directory holding the pinned binaries: ``$OPTISCHEMA_CONTROLPLANE_BIN``, or the build cache (built
    first when ``build`` and Go are available)."""
    override = os.environ.get("OPTISCHEMA_CONTROLPLANE_BIN")
    if override:
        directory = Path(override)
        missing = [b for b in BINARIES if not (directory / b).exists()]
        if missing:
            raise ControlPlaneError(f"OPTISCHEMA_CONTROLPLANE_BIN={override} lacks {', '.join(missing)}")
        return directory
    if not BUILD_SCRIPT.exists():
        raise ControlPlaneError(f"{BUILD_SCRIPT} not found: set OPTISCHEMA_CONTROLPLANE_BIN to the binaries")
    printed = subprocess.run([str(BUILD_SCRIPT), "--print"], capture_output=True, text=True, check=False)
    if printed.returncode == 0:
        return Path(printed.stdout.strip())
    if not build:
        raise ControlPlaneError("the control-plane binaries are not built yet: run `make controlplane`")
    if shutil.which("go") is None:
        raise ControlPlaneError("the control-plane binaries are not built and Go is not installed to build them")
    built = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise ControlPlaneError(f"building the control plane failed:\n{built.stderr[-2000:]}")
    return Path(built.stdout.strip().splitlines()[-1])


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGTERM when the process that started us dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback; ``start()``, use ``kubeconfig()``, ``stop()``."""

    def __init__(self, directory: Path | None = None, bin_dir: Path | None = None, api_port: int = 0) -> None:
        self.bin = bin_dir or find_binaries()
        self._own_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="optischema-cp-"))
        self.tokens = {user: secrets.token_hex(16) for user in USERS}
        self.processes: list[_Process] = []
        self.api_port = api_port
        self.ca: Path = self.dir / "pki" / "ca.crt"
        self.audit_log: Path = self.dir / "audit.log"
        """The API server's audit log (JSON lines): every request on Secrets, at ``Metadata`` level (who, verb,
        object, request URI, response code; never the data), so that tests can show which Secrets were read."""

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        started = time.monotonic()
        atexit.register(self.stop)
        try:
            self._prepare()
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop in reverse order (SIGTERM to each process group, SIGKILL after 10 s) and remove the directory."""
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait(timeout=5)
        self.processes.clear()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- use ---------------------------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def kubeconfig(self, user: str = "admin") -> Path:
        return self.dir / f"{user}.kubeconfig"

    def kubectl(self, *args: str, user: str = "admin", input: str | None = None, check: bool = True) -> str:
        """Run the pinned kubectl as ``user``; raises with kubectl's message when ``check`` and it fails."""
        done = subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig(user)), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout if done.returncode == 0 else done.stdout + done.stderr

    def install(self, *manifests: Path) -> None:
        """Apply CRDs and manifests (files or directories) and wait until the CRDs are Established."""
        for manifest in manifests:
            self.kubectl("apply", "--server-side", "-f", str(manifest))
        crds = self.kubectl("get", "crd", "-o", "name").split()
        if crds:
            self.kubectl("wait", "--for", "condition=Established", "--timeout", "60s", *crds)
        # kubectl explain and schema-aware clients read the OpenAPI document, published a moment after that.
        deadline = time.monotonic() + 60
        for crd in crds:
            kind = crd.split("/", 1)[1].split(".", 1)[0]
            while "couldn't find resource" in self.kubectl("explain", kind, check=False):
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"{crd} never appeared in the OpenAPI document")
                time.sleep(0.2)

    # -- internals ---------------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        pki = self.dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        ca = certs.make_ca(pki)
        self.ca = ca[0]
        self.serving = certs.make_serving_cert(
            pki, "apiserver", ca, hosts=["localhost", "kubernetes", "kubernetes.default.svc"], ips=["127.0.0.1"]
        )
        self.sa_key, self.sa_pub = certs.make_rsa_pair(pki, "service-account")
        lines = [
            f"{self.tokens[user]},{name},{user}-uid" + (f',"{group}"' if group else "")
            for user, (name, group) in USERS.items()
        ]
        (pki / "tokens.csv").write_text("\n".join(lines) + "\n")
        self.api_port = self.api_port or free_port()
        for user in USERS:
            self._write_kubeconfig(user)

    def _write_kubeconfig(self, user: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "devcluster", "cluster": {"server": self.server, "certificate-authority": str(self.ca)}}
            ],
            "users": [{"name": user, "user": {"token": self.tokens[user]}}],
            "contexts": [{"name": user, "context": {"cluster": "devcluster", "user": user, "namespace": "default"}}],
            "current-context": user,
        }
        path = self.kubeconfig(user)
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _spawn(self, name: str, args: list[str]) -> _Process:
        log = self.dir / f"{name}.log"
        popen = subprocess.Popen(
            [str(self.bin / name), *args],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        process = _Process(name, popen, log)
        self.processes.append(process)
        return process

    def _wait(self, process: _Process, ready: object, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise ControlPlaneError(
                    f"{process.name} exited with code {process.popen.returncode} before {what}:\n{process.tail()}"
                )
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise ControlPlaneError(f"{process.name}: no {what} within {timeout:.0f}s:\n{process.tail()}")

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        etcd = self._spawn(
            "etcd",
            [
                "--data-dir",
                str(self.dir / "etcd"),
                "--name",
                "devcluster",
                "--listen-client-urls",
                self.etcd_url,
                "--advertise-client-urls",
                self.etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"devcluster=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        self._wait(etcd, lambda: _http_ok(f"{self.etcd_url}/health"), "health")

    def _start_apiserver(self) -> None:
        pki = self.dir / "pki"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                "--etcd-servers",
                self.etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(self.api_port),
                "--tls-cert-file",
                str(self.serving[0]),
                "--tls-private-key-file",
                str(self.serving[1]),
                "--client-ca-file",
                str(self.ca),
                "--token-auth-file",
                str(pki / "tokens.csv"),
                "--authorization-mode",
                "RBAC",
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-account-key-file",
                str(self.sa_pub),
                "--service-account-signing-key-file",
                str(self.sa_key),
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                "--endpoint-reconciler-type",
                "none",  # the `kubernetes` Service would need a non-loopback IP
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--audit-policy-file",
                str(self._write_audit_policy()),
                "--audit-log-path",
                str(self.audit_log),
                "--audit-log-maxsize",
                "0",  # never rotated: the tests read it whole
                "--v",
                "1",
            ],
        )
        self._wait(apiserver, self._apiserver_ready, "readiness (/readyz)")

    def _write_audit_policy(self) -> Path:
        """Secrets at ``Metadata`` level once the response is known; nothing else (a small log)."""
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(
            "apiVersion: audit.k8s.io/v1\n"
            "kind: Policy\n"
            "omitStages: [RequestReceived]\n"
            "rules:\n"
            "  - level: Metadata\n"
            '    resources: [{group: "", resources: [secrets]}]\n'
            "  - level: None\n"
        )
        return policy

    def audit_events(self) -> list[dict[str, object]]:
        """The audit log's events so far (Secrets only, see :attr:`audit_log`)."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    def _apiserver_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca))
        request = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.tokens['admin']}"}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _start_controller_manager(self) -> None:
        kubeconfig = str(self.kubeconfig("admin"))
        manager = self._spawn(
            "kube-controller-manager",
            [
                "--kubeconfig",
                kubeconfig,
                "--authentication-kubeconfig",
                kubeconfig,
                "--authorization-kubeconfig",
                kubeconfig,
                "--controllers",
                "*",
                "--service-account-private-key-file",
                str(self.sa_key),
                "--root-ca-file",
                str(self.ca),
                "--leader-elect=false",
                "--secure-port",
                "0",
                "--concurrent-gc-syncs",
                "5",
                "--v",
                "1",
            ],
        )
        # The service-account controller creating `default` in `default` says the controllers are running.
        self._wait(manager, self._default_service_account, "the default ServiceAccount", timeout=60)

    def _default_service_account(self) -> bool:
        done = subprocess.run(
            [
                str(self.bin / "kubectl"),
                "--kubeconfig",
                str(self.kubeconfig()),
                "get",
                "serviceaccount",
                "default",
                "-n",
                "default",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.returncode == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
