"""A process kubelet: runs the embedded cluster's Pods as local processes, so Jobs and sandbox pods really run.

It registers a Node (Ready, heartbeat and Lease kept current), binds every unscheduled Pod that matches its label
selector (there is no scheduler here), and runs it according to its image:

* a PostgreSQL image (``postgres``, ``postgres:15``, ``…/postgresql:…``): a local PostgreSQL 15 with
  pg_stat_statements and HypoPG on its own loopback address (``podIP`` 127.0.0.N, the container port or 5432),
  honouring ``POSTGRES_USER``, ``POSTGRES_PASSWORD`` and ``POSTGRES_DB`` as the official image does;
* our own image (name containing ``optischema``): the container's command, resolved among the project's installed
  entry points, with its environment (Secret and ConfigMap references resolved), Secret volumes written where they
  are mounted, and ``KUBECONFIG`` pointing at a per-Pod kubeconfig with the Pod's service-account token (the
  in-cluster address is a service IP, which is not routable here);
* anything else: ``Failed`` with the reason.

It reports phase, ``podIP``, readiness and exit code, and kills the process when the Pod is deleted or its
``activeDeadlineSeconds`` passes. Production code never knows: it sees Pods that run, as on any cluster.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.utils.quantity import parse_quantity

from optischema.postgres.local import LocalPostgres, PostgresStartError

from .controlplane import ControlPlane, _die_with_parent

log = logging.getLogger("devcluster.kubelet")
NODE_MEMORY = "8Gi"
POSTGRES_IMAGE = re.compile(r"(^|/)postgres(ql)?(:|@|$)")
HEARTBEAT_SECONDS = 10


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Run:
    namespace: str
    name: str
    uid: str
    ip: str
    directory: Path
    started: str
    deadline: float | None
    process: subprocess.Popen[bytes] | None = None
    postgres: LocalPostgres | None = None
    mounts: list[Path] = field(default_factory=list)
    finished: bool = False


class ProcessKubelet:
    def __init__(
        self,
        plane: ControlPlane,
        *,
        node: str = "devcluster-node",
        selector: str = "",
        our_image: str = "optischema",
    ) -> None:
        self.plane = plane
        self.node = node
        self.selector = selector
        self.our_image = our_image
        self.directory = plane.dir / "kubelet"
        self.bin_dir = Path(sys.executable).parent
        self._stop = threading.Event()
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._handling = threading.RLock()  # the watch and the config retries handle one Pod event at a time
        self._waiting: set[str] = set()  # Pods waiting for a Secret or ConfigMap, retried on a timer
        self._free_ips = [f"127.0.0.{n}" for n in range(10, 250)]
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> ProcessKubelet:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.api = config.new_client_from_config(config_file=str(self.plane.kubeconfig()))
        self.core = client.CoreV1Api(self.api)
        self._register_node()
        for target in (self._watch, self._heartbeat, self._supervise):
            thread = threading.Thread(target=target, name=f"kubelet-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            self._kill(run)
        for thread in self._threads:
            thread.join(timeout=10)

    # -- node --------------------------------------------------------------------------------------------------

    def _register_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux"},
            },
        }
        with contextlib.suppress(ApiException):
            self.core.create_node(body)
        self._node_status()

    def _node_status(self) -> None:
        now = _now()
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": NODE_MEMORY, "pods": "110"}
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "process kubelet",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    },
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.node},
                ],
                "capacity": capacity,
                "allocatable": capacity,
                "nodeInfo": {
                    "kubeletVersion": "v1.36.3",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "containerRuntimeVersion": "process://devcluster",
                    "kernelVersion": "",
                    "osImage": "",
                    "kubeProxyVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }
        self.core.patch_node_status(self.node, status)
        coordination = client.CoordinationV1Api(self.api)
        lease = {
            "metadata": {"name": self.node, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.node,
                "leaseDurationSeconds": 40,
                "renewTime": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        try:
            coordination.patch_namespaced_lease(self.node, "kube-node-lease", lease)
        except ApiException as error:
            if error.status == 404:
                coordination.create_namespaced_lease("kube-node-lease", lease)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):
                self._node_status()

    # -- pods --------------------------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces, label_selector=self.selector, timeout_seconds=5
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    with self._handling:
                        self._handle(event["type"], event["object"])
            except Exception as error:  # the watch ends with the API server or a network blip: start again
                if not self._stop.is_set():
                    log.warning("pod watch interrupted (%s); watching again", type(error).__name__)
                    time.sleep(1)

    def _handle(self, kind: str, pod: Any) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}/{pod.metadata.uid}"  # a re-created Pod is another run
        if kind == "DELETED":
            run = self._runs.get(key)
            if run:
                self._kill(run)
            return
        if pod.spec.node_name is None and pod.metadata.deletion_timestamp is None:
            unfit = self._unfit(pod)
            if unfit:
                self._unschedulable(pod, unfit)
            else:
                self._bind(pod)
            return
        if pod.spec.node_name != self.node:
            return
        if pod.metadata.deletion_timestamp is not None:
            run = self._runs.get(key)
            if run:
                self._kill(run)
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
            return
        if key not in self._runs and pod.status.phase in (None, "Pending"):
            self._run(key, pod)

    def _unfit(self, pod: Any) -> str:
        """Why the Pod's requests exceed this node's capacity (it then stays Pending, as a scheduler leaves it)."""
        wanted = {"cpu": 0.0, "memory": 0.0}
        for container in pod.spec.containers:
            requests = (container.resources.requests if container.resources else None) or {}
            for resource in wanted:
                if resource in requests:
                    wanted[resource] += float(parse_quantity(requests[resource]))
        have = {"cpu": float(os.cpu_count() or 1), "memory": float(parse_quantity(NODE_MEMORY))}
        short = [f"Insufficient {r}" for r in wanted if wanted[r] > have[r]]
        return ", ".join(short)

    def _unschedulable(self, pod: Any, why: str) -> None:
        status = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": f"0/1 nodes are available: {why}.",
                    "lastTransitionTime": _now(),
                }
            ],
        }
        with contextlib.suppress(ApiException):
            self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})

    def _bind(self, pod: Any) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.metadata.name, "namespace": pod.metadata.namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        }
        with contextlib.suppress(ApiException):  # someone else bound it, or it is gone
            self.core.create_namespaced_binding(pod.metadata.namespace, body, _preload_content=False)

    def _run(self, key: str, pod: Any) -> None:
        container = pod.spec.containers[0]
        ports = [p.container_port for p in container.ports or []] or [5432]
        with self._lock:
            ip = self._take_ip(ports)
        directory = self.directory / f"{pod.metadata.namespace}_{pod.metadata.name}"
        directory.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + pod.spec.active_deadline_seconds if pod.spec.active_deadline_seconds else None
        run = _Run(pod.metadata.namespace, pod.metadata.name, pod.metadata.uid, ip, directory, _now(), deadline)
        self._runs[key] = run
        try:
            env = self._environment(pod, container, ip)
        except ApiException as error:
            if error.status != 404:
                raise
            self._wait_for_config(key, run, pod, container)  # a Secret not created yet: retry, as a kubelet does
            return
        try:
            if POSTGRES_IMAGE.search(container.image or ""):
                self._start_postgres(run, container, env)
            elif self.our_image in (container.image or ""):
                self._start_command(run, pod, container, env)
            else:
                self._fail(
                    run,
                    container,
                    "ImageNotSupported",
                    f"the process kubelet runs PostgreSQL images and {self.our_image} images, not {container.image}",
                )
                return
        except Exception as error:
            self._fail(run, container, "StartFailed", str(error)[:1000])
            return
        self._status(run, container, running=True, ready=run.postgres is not None)

    def _take_ip(self, ports: list[int]) -> str:
        """The first free address on which nothing listens on the pod's ports yet: another embedded cluster on
        this machine (a second test session, `make demo`) hands out the same 127.0.0.N, and a pod that came up on
        an address already taken would be reached by the other cluster's clients, or reach theirs."""
        for ip in list(self._free_ips):
            if not any(_listening(ip, port) for port in ports):
                self._free_ips.remove(ip)
                return ip
        return self._free_ips.pop(0)

    def _wait_for_config(self, key: str, run: _Run, pod: Any, container: Any) -> None:
        with self._lock:
            self._runs.pop(key, None)
            self._free_ips.insert(0, run.ip)
        status = {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret not found"}},
                }
            ],
        }
        with contextlib.suppress(ApiException):
            self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})
        if key in self._waiting:
            return
        self._waiting.add(key)

        def retry() -> None:
            self._waiting.discard(key)
            if self._stop.is_set():
                return
            with contextlib.suppress(ApiException), self._handling:
                fresh = self.core.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
                if fresh.metadata.uid == pod.metadata.uid and key not in self._runs:
                    self._handle("MODIFIED", fresh)

        timer = threading.Timer(0.5, retry)
        timer.daemon = True
        timer.start()

    def _environment(self, pod: Any, container: Any, ip: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.env or []:
            if item.value is not None:
                env[item.name] = item.value
            elif item.value_from is not None:
                env[item.name] = self._value_from(pod, item.value_from, ip)
        return env

    def _value_from(self, pod: Any, source: Any, ip: str) -> str:
        namespace = pod.metadata.namespace
        if source.secret_key_ref is not None:
            secret = self.core.read_namespaced_secret(source.secret_key_ref.name, namespace)
            return base64.b64decode((secret.data or {})[source.secret_key_ref.key]).decode()
        if source.config_map_key_ref is not None:
            config_map = self.core.read_namespaced_config_map(source.config_map_key_ref.name, namespace)
            return str((config_map.data or {})[source.config_map_key_ref.key])
        if source.field_ref is not None:
            paths = {
                "metadata.name": pod.metadata.name,
                "metadata.namespace": namespace,
                "status.podIP": ip,
                "spec.nodeName": self.node,
                "spec.serviceAccountName": pod.spec.service_account_name or "",
            }
            return paths.get(source.field_ref.field_path, "")
        return ""

    def _start_postgres(self, run: _Run, container: Any, env: dict[str, str]) -> None:
        user = env.get("POSTGRES_USER", "postgres")
        password = env.get("POSTGRES_PASSWORD")
        database = env.get("POSTGRES_DB", user)
        port = next((p.container_port for p in container.ports or []), 5432)
        # Its own temporary directory: the server runs as the postgres user, who cannot enter ours.
        server = LocalPostgres(host=run.ip, port=port, superuser=user)
        try:
            server.start()
        except PostgresStartError:
            server.stop()
            raise
        run.postgres = server
        if database != "postgres":
            server.psql(f'CREATE DATABASE "{database}"')
        if password:
            server.psql(f"ALTER ROLE \"{user}\" PASSWORD '{password.replace(chr(39), chr(39) * 2)}'")
            server.set_hba(["host all all 127.0.0.0/8 scram-sha-256"])

    def _start_command(self, run: _Run, pod: Any, container: Any, env: dict[str, str]) -> None:
        command = [
            _expand(part, env) for part in list(container.command or ["optischema"]) + list(container.args or [])
        ]
        resolved = self.bin_dir / command[0]
        if resolved.exists():
            command[0] = str(resolved)
        elif shutil.which(command[0]) is None:
            raise RuntimeError(f"{command[0]}: not an entry point of the installed project")
        for mount in container.volume_mounts or []:
            self._mount(run, pod, mount)
        kubeconfig = self._pod_kubeconfig(run, pod)
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(run.directory),
            **env,
            "KUBECONFIG": str(kubeconfig),
        }
        log_file = (run.directory / "container.log").open("wb")
        run.process = subprocess.Popen(
            command,
            env=environment,
            cwd=run.directory,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def _mount(self, run: _Run, pod: Any, mount: Any) -> None:
        volume = next((v for v in pod.spec.volumes or [] if v.name == mount.name), None)
        if volume is None or volume.secret is None:
            return  # only Secret volumes are materialised; the service-account projection is replaced by KUBECONFIG
        target = Path(mount.mount_path)
        if target.exists():
            raise RuntimeError(f"cannot mount Secret {volume.secret.secret_name} at {target}: the path exists here")
        secret = self.core.read_namespaced_secret(volume.secret.secret_name, run.namespace)
        target.mkdir(parents=True)
        run.mounts.append(target)
        for key, value in (secret.data or {}).items():
            (target / key).write_bytes(base64.b64decode(value))

    def _pod_kubeconfig(self, run: _Run, pod: Any) -> Path:
        account = pod.spec.service_account_name or "default"
        request = {
            "spec": {
                "audiences": ["https://kubernetes.default.svc"],
                "expirationSeconds": 3600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": run.name, "uid": run.uid},
            }
        }
        token = self.core.create_namespaced_service_account_token(account, run.namespace, request).status.token
        path = run.directory / "kubeconfig"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: devcluster, cluster: {{server: '{self.plane.server}', "
            f"certificate-authority: '{self.plane.ca}'}}}}]\n"
            f"users: [{{name: pod, user: {{token: '{token}'}}}}]\n"
            f"contexts: [{{name: pod, context: {{cluster: devcluster, user: pod, namespace: '{run.namespace}'}}}}]\n"
            "current-context: pod\n"
        )
        return path

    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            for key, run in list(self._runs.items()):
                if run.finished:
                    continue
                with contextlib.suppress(Exception):
                    self._check(key, run)

    def _check(self, key: str, run: _Run) -> None:
        pod = self.core.read_namespaced_pod(run.name, run.namespace)
        container = pod.spec.containers[0]
        if run.deadline is not None and time.monotonic() > run.deadline:
            self._kill(run)
            self._status(
                run,
                container,
                running=False,
                exit_code=137,
                phase="Failed",
                reason="DeadlineExceeded",
                message="Pod was active longer than its activeDeadlineSeconds",
            )
            return
        if run.process is not None and run.process.poll() is not None:
            code = run.process.returncode
            run.finished = True
            self._release(run)
            self._status(run, container, running=False, exit_code=code, phase="Succeeded" if code == 0 else "Failed")
        elif run.postgres is not None and run.postgres.log_tail() and not _alive(run.postgres):
            self._kill(run)
            self._status(
                run,
                container,
                running=False,
                exit_code=1,
                phase="Failed",
                reason="Error",
                message=run.postgres.log_tail(5),
            )

    def _status(
        self,
        run: _Run,
        container: Any,
        *,
        running: bool,
        ready: bool = False,
        exit_code: int | None = None,
        phase: str = "Running",
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        now = _now()
        state: dict[str, Any] = (
            {"running": {"startedAt": run.started}}
            if running
            else {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                    "startedAt": run.started,
                    "finishedAt": now,
                }
            }
        )
        conditions = [
            {
                "type": t,
                "status": "True" if (ready or t in ("PodScheduled", "Initialized")) else "False",
                "lastTransitionTime": now,
            }
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": run.ip,
            "podIPs": [{"ip": run.ip}],
            "startTime": run.started,
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": f"process://{container.image}",
                    "ready": ready,
                    "started": running,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }
        if reason and phase == "Failed":
            status["reason"], status["message"] = reason, message or reason
        with contextlib.suppress(ApiException):
            self.core.patch_namespaced_pod_status(run.name, run.namespace, {"status": status})

    def _fail(self, run: _Run, container: Any, reason: str, message: str) -> None:
        run.finished = True
        self._release(run)
        self._status(run, container, running=False, exit_code=128, phase="Failed", reason=reason, message=message)

    def _kill(self, run: _Run) -> None:
        run.finished = True
        if run.process is not None and run.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGTERM)
            try:
                run.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, signal.SIGKILL)
        self._release(run)

    def _release(self, run: _Run) -> None:
        if run.postgres is not None:
            run.postgres.stop()
            run.postgres = None
        for mount in run.mounts:
            shutil.rmtree(mount, ignore_errors=True)
        run.mounts.clear()
        with self._lock:
            if run.ip not in self._free_ips:
                self._free_ips.append(run.ip)


def _listening(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((ip, port)) == 0


def _expand(text: str, env: dict[str, str]) -> str:
    """``$(VAR)`` from the container's environment, as the kubelet expands command and args (``$$`` escapes)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


def _alive(server: LocalPostgres) -> bool:
    pid_file = server.data / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True
