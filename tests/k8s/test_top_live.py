"""The operator's live endpoint (``GET /targets/<namespace>/<name>/top``) on the real API server and a real
PostgreSQL: the caller's token reviewed by the API server (TokenReview), its right to get the target asked of it
(SubjectAccessReview), the statements read over the target's read-only connection — and the attack, a user who may
not get that PostgresTarget reading its statements, refused. Then ``kubectl optischema top --once`` with the live
figures, with the endpoint unreachable (one line, the history shown), and through the API server's service proxy
with the viewer role's ``services/proxy`` right.

The endpoint is served in-process here, as the operator serves it (``handlers.live.start``), with the operator's
(admin) credentials. Through the service proxy it cannot answer on this machine: EndpointSlices refuse loopback
addresses (shared/design/verified-here.md), so the proxy path is tested up to the API server's RBAC decision and
its "no endpoints" answer, which the plugin reports in one line.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
from kubernetes import client, config

from devcluster.cluster import Cluster
from optischema.flows.live import LiveTop
from optischema.handlers.live import start
from optischema.kube.client import Kube
from optischema.kube.reviews import Reviews
from optischema.postgres.local import free_port

from .conftest import apply, operators, secret, target, wait_for


@contextmanager
def live_endpoint(cluster: Cluster) -> Iterator[str]:
    """The endpoint on a loopback port, with the operator's (admin) client; its base URL."""
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.plane.kubeconfig()), client_configuration=configuration, persist_config=False
    )
    api = client.ApiClient(configuration)
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        live = LiveTop(Kube(api_client=api), Reviews(api), cache_seconds=0)
        runner = loop.run_until_complete(start(live, "127.0.0.1", port))
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30), "the live endpoint did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def ask(url: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def workload(ip: str) -> None:
    """A statement with a comment carrying a person's data (pg_stat_statements keeps comments, normalises only
    constants), and a utility statement with a literal (kept as written)."""

    async def run() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres:pw@{ip}:5432/shop")
        try:
            for customer in range(5):
                await conn.execute(f"SELECT /* user=alice@example.com */ count(*) FROM invoices WHERE id = {customer}")
            await conn.execute("CREATE ROLE leaky PASSWORD 'hunter2-secret'")
        finally:
            await conn.close()

    asyncio.run(run())


def grant(cluster: Cluster, namespace: str) -> None:
    """alice: the viewer role in the namespace; bob: get on another target only (by name)."""
    kubectl = cluster.plane.kubectl
    kubectl("create", "rolebinding", "alice-viewer", "-n", namespace, "--clusterrole=optischema-viewer", "--user=alice")
    kubectl("create", "role", "other-target", "-n", namespace, "--verb=get", "--resource=postgrestargets.optischema.io",
            "--resource-name=other")  # fmt: skip
    kubectl("create", "rolebinding", "bob-other", "-n", namespace, "--role=other-target", "--user=bob")


def test_the_live_endpoint_answers_who_may_get_the_target_and_refuses_who_may_not(
    cluster: Cluster, namespace: str, database: str
) -> None:
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, target(namespace, database))
    workload(database)
    grant(cluster, namespace)
    tokens = cluster.plane.tokens
    path = f"/targets/{namespace}/shop/top"
    with live_endpoint(cluster) as url:
        status, body = ask(url, path, {"X-OptiSchema-Token": tokens["alice"]})
        assert status == 200, body
        texts = {s["text"]: s for s in body["statements"]}
        assert texts["SELECT sum(amount) FROM invoices WHERE customer_id = $1"]["calls"] == 30
        counted = next(s for t, s in texts.items() if "count(*) FROM invoices WHERE id = $1" in t)
        assert counted["calls"] == 5
        raw = json.dumps(body)
        assert "alice@example.com" not in raw  # the comment is redacted
        assert "hunter2" not in raw  # utility statements never leave the operator
        assert "CREATE" not in raw
        # Authorization: Bearer works as well (kubectl port-forward, no proxy)
        assert ask(url, path, {"Authorization": f"Bearer {tokens['alice']}"})[0] == 200

        # The attack: bob may get another target, not this one; he learns nothing of its statements.
        status, body = ask(url, path, {"X-OptiSchema-Token": tokens["bob"]})
        assert status == 403
        assert f'user "bob" may not get postgrestargets/shop in namespace {namespace}' in body["error"]
        assert "invoices" not in json.dumps(body)
        # ... nor whether a target exists: the review comes before the lookup
        assert ask(url, f"/targets/{namespace}/ghost/top", {"X-OptiSchema-Token": tokens["bob"]})[0] == 403
        # ... and claiming to be alice without her token gets nothing
        assert ask(url, path, {"X-OptiSchema-Token": "alice"})[0] == 401
        assert ask(url, path, {"Impersonate-User": "alice", "X-Remote-User": "alice"})[0] == 401
        assert ask(url, path, {"Authorization": "Basic YWxpY2U6YWxpY2U="})[0] == 401
        # alice asking for a target that does not exist is told so
        status, body = ask(url, f"/targets/{namespace}/ghost/top", {"X-OptiSchema-Token": tokens["alice"]})
        assert status == 404
        assert "ghost" in body["error"]


def plugin(cluster: Cluster, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optischema.cli.plugin", "--kubeconfig", str(cluster.plane.kubeconfig(user)), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_top_once_shows_the_live_figures_and_falls_back_to_the_history_in_one_line(
    cluster: Cluster, namespace: str, database: str
) -> None:
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, target(namespace, database))
    grant(cluster, namespace)
    with live_endpoint(cluster) as url:
        done = plugin(cluster, "alice", "top", "shop", "-n", namespace, "--once", "--live-url", url)
    assert done.returncode == 0, done.stderr
    assert "live: from the operator at" in done.stdout
    line = next(row for row in done.stdout.splitlines() if "WHERE customer_id = $1" in row)
    assert "100.0%" in line or "%" in line  # its share of the time since the statistics were reset

    closed = plugin(
        cluster, "alice", "top", "shop", "-n", namespace, "--once", "--live-url", f"http://127.0.0.1:{free_port()}"
    )
    assert closed.returncode == 0, closed.stderr
    assert "Traceback" not in closed.stderr
    (why,) = [row for row in closed.stdout.splitlines() if row.startswith("live figures unavailable")]
    assert "showing the history up to the last analysis" in why

    # A plain-http URL off loopback would send the token in clear: refused before any request.
    far = plugin(cluster, "alice", "top", "shop", "-n", namespace, "--once", "--live-url", "http://10.0.0.1:8082")
    assert "http:// only to a loopback address" in far.stdout

    # Through the API server's service proxy: the viewer role's services/proxy right on <release>-live:live lets
    # alice through RBAC (the Service has no endpoints here, so the API server answers that), bob has no such right.
    service = {"name": "optischema-live", "namespace": namespace}
    apply(cluster, {"apiVersion": "v1", "kind": "Service", "metadata": service,
                    "spec": {"ports": [{"name": "live", "port": 8082}]}})  # fmt: skip
    proxied = plugin(cluster, "alice", "top", "shop", "-n", namespace, "--once",
                     "--live-service", f"{namespace}/optischema-live")  # fmt: skip
    assert proxied.returncode == 0, proxied.stderr
    (why,) = [row for row in proxied.stdout.splitlines() if row.startswith("live figures unavailable")]
    # past RBAC: the API server finds no endpoint for the Service (404 or 503 by version), never 403
    assert f"service {namespace}/optischema-live: " in why, why
    assert "403" not in why, why
    assert "forbidden" not in why.lower(), why
    may = cluster.plane.kubectl("auth", "can-i", "get", "services/optischema-live:live", "--subresource=proxy", "-n",
                                namespace, user="bob", check=False)  # fmt: skip
    assert may.strip().startswith("no")
    may = cluster.plane.kubectl("auth", "can-i", "get", "services/optischema-live:live", "--subresource=proxy", "-n",
                                namespace, user="alice", check=False)  # fmt: skip
    assert may.strip().startswith("yes")


def test_the_operator_serves_the_live_endpoint_when_given_its_port(
    cluster: Cluster, namespace: str, database: str
) -> None:
    """handlers.live: started with the operator (OPTISCHEMA_LIVE_PORT), with the operator's own client."""
    apply(cluster, secret(namespace, "pw"))
    apply(cluster, target(namespace, database))
    grant(cluster, namespace)
    port = free_port()
    url, path = f"http://127.0.0.1:{port}", f"/targets/{namespace}/shop/top"
    alice = {"X-OptiSchema-Token": cluster.plane.tokens["alice"]}

    def answered() -> int:
        try:
            return ask(url, path, alice)[0]
        except (urllib.error.URLError, OSError):
            return 0

    with operators(cluster, namespace, "live", OPTISCHEMA_LIVE_PORT=str(port)) as start:
        process = start()
        assert wait_for(answered, timeout=90, what="the operator's live endpoint") == 200
        assert process.poll() is None
        assert ask(url, path, {"X-OptiSchema-Token": cluster.plane.tokens["bob"]})[0] == 403
        assert cluster.plane.tokens["alice"] not in start.log.read_text()  # type: ignore[attr-defined]
