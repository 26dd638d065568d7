"""``kubectl optischema`` on the embedded control plane, run through the real kubectl as users type it.

Every ``kubectl optischema …`` command the README and the chart's NOTES print is run exactly as printed (by
bash, so quoting, comments and redirections mean what they mean to a reader), with only the placeholders replaced
by what exists here: NAME by a recommendation of the analysed target (a fresh copy for each command that decides),
CHANGE by an IndexChange in the state the command needs, TARGET/<target> by the target, and the namespace the docs
use (shop, APP) by the test's. Commands without ``-n`` take the namespace of the kubeconfig's context, as kubectl
does. On the way: a change refused at apply time is retried after its cause is fixed and applied, then rolled back
by its inverse; ``top --once`` on a target with history; shell completion through kubectl's own ``__complete``; and
the failures a new user meets (no kubeconfig, a wrong context, impersonation refused, a server that is down) as one
line and an exit code.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devcluster.cluster import Cluster
from optischema.cli.plugin_args import build_parser, parse

from .conftest import apply, get, wait_for
from .test_apply import change, indexes, sql, wait_phase, writer_target
from .test_operator import index_recommendations

REPO = Path(__file__).resolve().parents[2]
#: A command in a ``sh`` block, an inline code span (may wrap lines), or a NOTES line (up to ``;``).
SPAN = re.compile(r"`(kubectl optischema[^`]*)`")
NOTES_COMMAND = re.compile(r"kubectl optischema[^;\n]*")


def documented() -> list[tuple[str, str]]:
    """(where, command) for every ``kubectl optischema`` the README and the chart's NOTES print."""
    found: list[tuple[str, str]] = []
    readme = (REPO / "README.md").read_text()
    block = False
    for number, line in enumerate(readme.splitlines(), 1):
        if line.startswith("```"):
            block = not block and line.strip() in ("```sh", "```bash", "```console")
            continue
        if block and line.startswith("kubectl optischema"):
            found.append((f"README.md:{number}", line.strip()))
    prose = re.sub(r"```.*?```", "", readme, flags=re.DOTALL)
    found += [("README.md (inline)", " ".join(m.group(1).split())) for m in SPAN.finditer(prose)]
    notes = (REPO / "charts/optischema/templates/NOTES.txt").read_text()
    found += [("NOTES.txt", m.group(0).strip()) for m in NOTES_COMMAND.finditer(notes)]
    return found


def runnable(command: str) -> bool:
    """A whole command (as opposed to a syntax summary with ``[…]`` or a reference to a subcommand in prose)."""
    line = command.split(" #")[0].split(">")[0]
    if any(mark in line for mark in ("[", "…", "|")):
        return False
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            parse(shlex.split(line)[2:])
    except SystemExit as done:
        return done.code == 0  # --version
    return True


class Shell:
    """Runs command lines with bash, the real kubectl and the plugin (and its completion) on PATH."""

    def __init__(self, cluster: Cluster, home: Path, kubeconfig: Path) -> None:
        self.home = home
        bin_dir = home / "bin"
        bin_dir.mkdir()
        (bin_dir / "kubectl").symlink_to(cluster.plane.bin / "kubectl")
        for name, module in (
            ("kubectl-optischema", "optischema.cli.plugin"),
            ("kubectl_complete-optischema", "optischema.cli.complete"),
        ):
            script = bin_dir / name
            script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m {module} "$@"\n')
            script.chmod(0o755)
        self.env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(home),
            "KUBECONFIG": str(kubeconfig),
            "PYTHONPATH": os.pathsep.join(sys.path),
        }

    def run(self, line: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", line],
            cwd=self.home,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def ok(self, line: str) -> str:
        done = self.run(line)
        assert done.returncode == 0, f"{line}: exit {done.returncode}: {done.stderr}"
        assert "Traceback" not in done.stderr
        return done.stdout


def context_kubeconfig(cluster: Cluster, namespace: str, path: Path) -> Path:
    """The admin kubeconfig with its context's namespace set to the test's (kubectl's default namespace)."""
    path.write_text(cluster.plane.kubeconfig().read_text())
    subprocess.run(
        [str(cluster.plane.bin / "kubectl"), "--kubeconfig", str(path), "config", "set-context", "--current",
         f"--namespace={namespace}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return path


def copy_of(cluster: Cluster, namespace: str, original: dict[str, Any], name: str) -> str:
    """A fresh, undecided recommendation like ``original`` (the operator's identity, admin, may write them)."""
    meta = original["metadata"]
    spec = {k: v for k, v in original["spec"].items() if k != "approval"}
    apply(
        cluster,
        {
            "apiVersion": original["apiVersion"],
            "kind": original["kind"],
            "metadata": {"name": name, "namespace": namespace, "labels": meta.get("labels", {})},
            "spec": spec,
        },
    )
    return name


def test_every_documented_command_runs_as_printed(
    cluster: Cluster, namespace: str, database: str, operator: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    sql(database, "CREATE TABLE extra (id bigint PRIMARY KEY, v int NOT NULL)")
    sql(database, "INSERT INTO extra SELECT g, g % 100 FROM generate_series(1, 1000) g")
    doc = writer_target(namespace, database, allowedKinds=["createIndex", "dropIndex", "analyze"])  # a rollback drops
    doc["spec"]["analysis"]["minCalls"] = 2
    doc["spec"]["reports"] = {"schedule": "* * * * *", "period": "1d"}
    doc["spec"]["maintenanceWindows"] = []
    recommendation = index_recommendations(cluster, namespace, database, doc)[0]
    shell = Shell(cluster, tmp_path, context_kubeconfig(cluster, namespace, tmp_path / "config"))

    # -- retry: a change that failed at apply time (its table dropped while it waited), retried once fixed --------
    by_v = {"table": "extra", "columns": [{"name": "v"}]}
    apply(cluster, change(namespace, "extra-v", by_v))
    wait_phase(cluster, namespace, "extra-v", "WaitingForWindow")
    early = shell.run(f"kubectl optischema retry extra-v -n {namespace}")
    assert early.returncode == 1
    assert early.stderr.strip() == (
        "kubectl optischema retry: indexchange extra-v is WaitingForWindow: only a Failed change is retried"
    )
    sql(database, "DROP TABLE extra")
    now = datetime.now(UTC)
    doc["spec"]["oneOffWindows"] = [
        {"start": (now - timedelta(minutes=1)).isoformat(), "end": (now + timedelta(minutes=30)).isoformat()}
    ]
    apply(cluster, doc)
    failed = wait_phase(cluster, namespace, "extra-v", "Failed", "Applied")
    assert failed["phase"] == "Failed"
    assert next(c for c in failed["conditions"] if c["type"] == "Ready")["reason"] == "TableNotFound"
    sql(database, "CREATE TABLE extra (id bigint PRIMARY KEY, v int NOT NULL)")

    changes = {"retry": "extra-v", "rollback": "extra-v"}
    substituted: list[str] = []

    def substitute(command: str, index: int) -> str:
        command = re.sub(r"-n (shop|APP)\b", f"-n {namespace}", command)
        command = command.replace("<target>", "shop").replace("TARGET", "shop")
        if "CHANGE" not in command and "NAME" not in command:
            substituted.append(command)
            return command
        verb = build_parser().parse_args(shlex.split(command.split(" #")[0].split(">")[0])[2:]).command
        if "CHANGE" in command:
            command = command.replace("CHANGE", changes[verb])
        if "NAME" in command:
            name = recommendation["metadata"]["name"]
            if verb in ("approve", "reject"):  # each decision gets an undecided recommendation of its own
                name = copy_of(cluster, namespace, recommendation, f"{name[:40]}-doc{index}")
            command = command.replace("NAME", name)
        substituted.append(command)
        return command

    commands = documented()
    assert len(commands) >= 20, commands
    whole = [(where, c) for where, c in commands if runnable(c)]
    verbs = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for where, command in commands:
        if (where, command) not in whole and command != "kubectl optischema":  # the plugin's name in prose
            # a syntax summary or a reference in prose: the subcommand it names exists
            assert command.split()[2] in verbs, (where, command)

    def run(where: str, command: str, index: int) -> None:
        line = substitute(command, index)
        done = shell.run(line)
        assert done.returncode == 0, f"{where}: {line}: exit {done.returncode}: {done.stderr}"
        assert "Traceback" not in done.stderr, f"{where}: {line}"

    # the documented retry, then rollback, with the window open: each waits for the operator to finish
    lifecycle = [(w, c) for w, c in whole if c.split()[2] in ("retry", "rollback")]
    assert sorted(c.split()[2] for _, c in lifecycle) == ["retry", "rollback"], lifecycle
    for index, (where, command) in enumerate(sorted(lifecycle, key=lambda wc: wc[1].split()[2] != "retry")):
        run(where, command, index)
        if command.split()[2] == "retry":
            applied = wait_phase(cluster, namespace, "extra-v", "Applied", "Failed", "RolledBack", timeout=120)
            assert applied["phase"] == "Applied", applied["conditions"]
            assert [h["action"] for h in applied["history"]].count("Retry") == 1
    undone = wait_phase(cluster, namespace, "extra-v-rollback", "Applied", "Failed", "RolledBack", timeout=120)
    assert undone["phase"] == "Applied", undone["conditions"]
    built = get(cluster, "ixc", "extra-v", "-n", namespace)["status"]["execution"]["indexName"]
    assert indexes(database, built) == []  # the rollback dropped it
    # the window closes: the decisions below wait for the next one
    doc["spec"]["oneOffWindows"] = []
    apply(cluster, doc)
    wait_for(lambda: get(cluster, "tuningreports", "-n", namespace).get("items"), timeout=120,
             what="the scheduled report")  # fmt: skip
    for index, (where, command) in enumerate(whole):
        if (where, command) not in lifecycle:
            run(where, command, 100 + index)
    assert (tmp_path / "change.yaml").read_text().count("kind: IndexChange") == 1
    assert "<html" in (tmp_path / "shop.html").read_text()[:200].lower()
    assert any("--dry-run=server" in c for c in substituted)
    assert any(c.split()[2] in ("-n",) for c in substituted), "a global flag before the subcommand"
    assert any(re.search(r"approve \S+ -n ", c) for c in substituted), "-n after the subcommand"

    # -- the same forms, their output checked --------------------------------------------------------------------
    name = copy_of(cluster, namespace, recommendation, f"{recommendation['metadata']['name'][:40]}-x")
    dry = shell.ok(f"kubectl optischema approve {name} -n {namespace} --dry-run=server")
    assert dry.strip() == f"tuningrecommendation/{name} approved by admin (server dry run)"  # stamped by the webhook
    assert (get(cluster, "trec", name, "-n", namespace)["spec"].get("approval") or {}).get(
        "state", "Pending"
    ) == "Pending"
    assert shell.ok(f"kubectl optischema approve {name} --dry-run=client").strip() == (
        f"tuningrecommendation/{name} approved (dry run)"
    )
    refused = shell.run(f"kubectl optischema --as bob approve {name} -n {namespace}")  # admin may impersonate bob,
    assert refused.returncode == 1  # who may not read recommendations here yet: the request is bob's
    assert refused.stderr.strip() == (
        f"kubectl optischema approve: forbidden: you may not read tuningrecommendations in namespace {namespace} "
        "(see the RBAC in the README)"
    )
    cluster.plane.kubectl(
        "create", "rolebinding", "bob-approver", "-n", namespace, "--clusterrole=optischema-approver", "--user=bob"
    )
    as_bob = shell.ok(f"kubectl optischema --as bob approve {name} -n {namespace}")
    assert as_bob.strip() == f"tuningrecommendation/{name} approved by bob"
    listed = json.loads(shell.ok(f"kubectl optischema list -o json -l optischema.io/target=shop -n {namespace}"))
    assert listed["kind"] == "List"
    assert name in [i["metadata"]["name"] for i in listed["items"]]
    assert f"tuningrecommendation/{name}" in shell.ok("kubectl optischema list -o name").split()
    everywhere = shell.ok("kubectl optischema list -A -o wide")
    assert everywhere.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert "DECIDED BY" in everywhere.splitlines()[0]
    assert re.search(rf"^{namespace}\s+{name}\s", everywhere, re.MULTILINE), everywhere
    shown = json.loads(shell.ok(f"kubectl optischema show {name} -o json"))
    assert shown["metadata"]["name"] == name
    assert shell.ok("kubectl optischema status -o name").strip() == "postgrestarget/shop"
    assert "kind: PostgresTarget" in shell.ok("kubectl optischema status shop -o yaml")
    assert f"postgrestarget/shop -n {namespace}" in shell.ok("kubectl optischema status -A")
    bulk = copy_of(cluster, namespace, recommendation, f"{recommendation['metadata']['name'][:40]}-bulk")
    lines = shell.ok(f"kubectl optischema reject --target shop --reason bulk -n {namespace}").splitlines()
    assert f"tuningrecommendation/{bulk} rejected by admin" in lines
    assert all(line.endswith("rejected by admin") for line in lines)
    none = shell.ok("kubectl optischema approve --target shop --min-gain 1000")
    assert (
        none.strip()
        == f"no recommendation waiting for a decision with a gain of at least 1000% in namespace {namespace}"
    )

    # -- top --once: the history's statements, their index and the pending recommendation beside them ------------
    for customer in range(40):  # the workload's statement runs again, and an analysis records a history point
        sql(database, f"SELECT sum(amount) FROM invoices WHERE customer_id = {customer}")
    stamp = re.search(r"\((\S+)\)$", shell.ok("kubectl optischema analyze shop").strip()).group(1)  # type: ignore[union-attr]
    wait_for(
        lambda: (
            (get(cluster, "pgt", "shop", "-n", namespace)["status"].get("lastAnalysis") or {}).get("requested") == stamp
        ),
        timeout=120,
        what="the requested analysis",
    )
    # undecided, made after the analysis (which supersedes what it did not find itself)
    pending = copy_of(cluster, namespace, recommendation, f"{recommendation['metadata']['name'][:40]}-top")
    frame = shell.ok("kubectl optischema top shop --once").splitlines()
    assert frame[0].startswith(f"optischema top shop -n {namespace}")
    assert frame[3].split() == ["CALLS/S", "MEAN", "MS", "SHARE", "TREND", "STATEMENT"]
    row = next(i for i, line in enumerate(frame) if "FROM invoices WHERE customer_id" in line)
    calls_per_second, mean_ms, share = frame[row].split()[:3]
    assert float(calls_per_second) > 0
    assert float(mean_ms) > 0
    assert 0 < float(share.rstrip("%")) <= 100
    beside = [line.strip() for line in frame[row + 1 : row + 3]]
    assert any(line.startswith("pending: ") and pending in line for line in beside), frame  # what would help it

    # -- completion through kubectl's own __complete (kubectl >= 1.26 runs kubectl_complete-optischema) ---------
    verbs = shell.ok("kubectl __complete optischema ap")
    assert verbs.splitlines()[:2] == ["approve", ":4"]
    names = shell.ok("kubectl __complete optischema show ''").splitlines()
    assert name in names
    assert names[-1] == ":4"
    assert "shop" in shell.ok("kubectl __complete optischema top ''").splitlines()
    assert "extra-v" in shell.ok("kubectl __complete optischema retry ''").splitlines()
    assert namespace in shell.ok("kubectl __complete optischema list -n ''").splitlines()


def test_failures_are_one_line_with_an_exit_code(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    shell = Shell(cluster, tmp_path, context_kubeconfig(cluster, namespace, tmp_path / "config"))
    cases = [
        # (command line, environment changes, exit code, the line on standard error)
        ("kubectl optischema list", {"KUBECONFIG": ""}, 1,
         "kubectl optischema list: no kubeconfig: no ~/.kube/config and KUBECONFIG is not set, and not running in "
         "a Pod (give --kubeconfig FILE)"),
        ("kubectl optischema list --kubeconfig /nonexistent", {}, 1,
         "kubectl optischema list: --kubeconfig /nonexistent: no such file"),
        ("kubectl optischema show nope -n " + namespace, {}, 1,
         f"kubectl optischema show: tuningrecommendation nope not found in namespace {namespace}"),
        ("kubectl optischema approve nope -A", {}, 2,
         "kubectl optischema: -A/--all-namespaces: only list and status read every namespace"),
        ("kubectl optischema --as alice list", {}, 1,
         f"kubectl optischema list: forbidden: you may not list tuningrecommendations in namespace {namespace} "
         "(see the RBAC in the README)"),
    ]  # fmt: skip
    for line, env, code, message in cases:
        done = shell.run(line, **env)
        assert (done.returncode, done.stderr.strip()) == (code, message), line
    # a context that does not exist: the ones that do are named
    wrong = shell.run("kubectl optischema list --context nope")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("kubectl optischema list: --context nope: no such context in ")
    assert "(contexts: " in wrong.stderr
    # alice may not impersonate: the API server's words, one line
    refused = shell.run("kubectl optischema list --as bob", KUBECONFIG=str(cluster.plane.kubeconfig("alice")))
    assert refused.returncode == 1
    assert "cannot impersonate" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # a server that is not there
    down = tmp_path / "down"
    down.write_text(re.sub(r"server: \S+", "server: https://127.0.0.1:9", (tmp_path / "config").read_text()))
    gone = shell.run(f"kubectl optischema list --kubeconfig {down}")
    assert gone.returncode == 1
    assert gone.stderr.startswith("kubectl optischema list: cannot reach https://127.0.0.1:9: ")
    assert len(gone.stderr.strip().splitlines()) == 1
    # the version, and the context's namespace used when -n is not given
    assert shell.ok("kubectl optischema --version").startswith("kubectl optischema ")
    assert shell.ok("kubectl optischema list").strip() == f"No recommendations found in namespace {namespace}."
    assert shell.ok("kubectl optischema list -n default").strip() == "No recommendations found in namespace default."
