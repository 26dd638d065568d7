"""The kubectl plugin's pure parts: kubectl's connection precedence, bulk selection, rollback's inverse, the retry
move out of Failed, shell completion, and a ``top`` frame rendered from fixture history."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.cli import complete, plugin_changes, top
from optischema.cli.plugin_connect import ConnectError, Options, connect
from optischema.lifecycle import indexchange as lifecycle
from optischema.lifecycle import retry
from optischema.reports import history

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)

# -- connection: kubectl's precedence ---------------------------------------------------------------------------


def kubeconfig(path: Path, current: str, contexts: dict[str, str | None]) -> Path:
    """A kubeconfig with one cluster and user, and ``contexts`` (name → namespace)."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": current,
                "clusters": [{"name": "c", "cluster": {"server": f"https://{path.stem}.example:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": name, "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})}}
                    for name, ns in contexts.items()
                ],
            }
        )
    )
    return path


@pytest.fixture
def configs(tmp_path: Path) -> dict[str, Path]:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    return {
        "home": home,
        "default": kubeconfig(home / ".kube" / "config", "dev", {"dev": "dev-ns"}),
        "prod": kubeconfig(tmp_path / "prod", "prod", {"prod": "shop", "plain": None}),
    }


CONNECTIONS = [
    # (title, options, environment (paths by key), namespace, host)
    ("~/.kube/config and its context's namespace", Options(), {}, "dev-ns", "https://config.example:6443"),
    ("-n wins over the context", Options(namespace="x"), {}, "x", "https://config.example:6443"),
    ("KUBECONFIG before ~/.kube/config", Options(), {"KUBECONFIG": "prod"}, "shop", "https://prod.example:6443"),
    ("--kubeconfig before KUBECONFIG", Options(kubeconfig="prod"), {"KUBECONFIG": "default"}, "shop",
     "https://prod.example:6443"),
    ("--context picks another; no namespace there: default", Options(kubeconfig="prod", context="plain"), {},
     "default", "https://prod.example:6443"),
    ("a kubeconfig wins over in-cluster credentials", Options(), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "dev-ns",
     "https://config.example:6443"),
    ("KUBECONFIG entries that do not exist are skipped", Options(), {"KUBECONFIG": "missing:prod"}, "shop",
     "https://prod.example:6443"),
]  # fmt: skip


@pytest.mark.parametrize(("title", "options", "env", "namespace", "host"), CONNECTIONS, ids=[c[0] for c in CONNECTIONS])
def test_kubectl_precedence(
    configs: dict[str, Path], title: str, options: Options, env: dict[str, str], namespace: str, host: str
) -> None:
    def path(key: str) -> str:
        return ":".join(str(configs[k]) if k in configs else f"/nonexistent/{k}" for k in key.split(":"))

    environ = {"HOME": str(configs["home"])} | {k: (path(v) if k == "KUBECONFIG" else v) for k, v in env.items()}
    if options.kubeconfig:
        options = Options(**{**options.__dict__, "kubeconfig": path(options.kubeconfig)})
    connection = connect(options, environ)
    assert (connection.namespace, connection.host) == (namespace, host), title


REFUSED = [
    (Options(kubeconfig="/nonexistent/k"), {}, "--kubeconfig /nonexistent/k: no such file"),
    (Options(context="nope"), {}, "--context nope: no such context in "),
    (Options(as_groups=("dba",)), {}, "--as-group: impersonating groups needs --as USER too (as with kubectl)"),
    (Options(), {"HOME": "/nonexistent"}, "no kubeconfig: no ~/.kube/config and KUBECONFIG is not set, and not "
     "running in a Pod (give --kubeconfig FILE)"),
    (Options(), {"HOME": "/nonexistent", "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
     "in-cluster credentials: "),
]  # fmt: skip


@pytest.mark.parametrize(("options", "env", "message"), REFUSED)
def test_what_cannot_connect_says_why(
    configs: dict[str, Path], options: Options, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConnectError) as refused:
        connect(options, {"HOME": str(configs["home"]), **env})
    assert str(refused.value).startswith(message)


def test_impersonation_is_sent_as_kubectl_sends_it(configs: dict[str, Path]) -> None:
    connection = connect(Options(as_user="bob", as_groups=("dba",)), {"HOME": str(configs["home"])})
    headers = connection.api_client.default_headers
    assert (headers["Impersonate-User"], headers["Impersonate-Group"]) == ("bob", "dba")


# -- bulk decisions ---------------------------------------------------------------------------------------------


def rec(name: str, estimated: float | None, measured: float | None = None, state: str = "Pending",
        phase: str | None = "Proposed") -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"name": name},
        "spec": {"approval": {"state": state}, "evidence": {"estimatedImprovementPercent": estimated}},
        "status": {"phase": phase, **({"benchmark": {"improvementPercent": measured}} if measured is not None else {})},
    }


BULK = [
    # (title, min gain, the names chosen)
    ("every undecided one without --min-gain", None, ["a", "b", "c", "e"]),
    ("measured wins over estimated", 50, ["a", "c"]),
    ("an unknown gain is not at least anything", 10, ["a", "c"]),
    ("nothing that high", 1000, []),
]
ITEMS = [
    rec("c", 60.0),
    rec("a", 10.0, measured=80.0),
    rec("b", 90.0, measured=5.0),
    rec("d", 99.0, state="Approved"),
    rec("e", None),
    rec("f", 99.0, phase="Superseded"),
]


@pytest.mark.parametrize(("title", "min_gain", "chosen"), BULK, ids=[b[0] for b in BULK])
def test_bulk_decisions_take_undecided_recommendations_by_gain(
    title: str, min_gain: float | None, chosen: list[str]
) -> None:
    assert [i["metadata"]["name"] for i in plugin_changes.undecided(ITEMS, min_gain)] == chosen


# -- rollback: the inverse change -------------------------------------------------------------------------------

INDEX = {"table": "invoices", "columns": [{"name": "customer_id"}]}


def applied(operation: str, **status: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"targetRef": {"name": "shop"}, "operation": operation}
    if operation in ("create", "drop", "reindex"):
        spec["index"] = {**INDEX, **({"name": "ix"} if operation != "create" else {})}
    if operation == "setting":
        spec["setting"] = {"name": "work_mem", "value": "64MB"}
    spec["verification"] = {"observeSeconds": 4}
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "metadata": {"name": "c1", "namespace": "shop"},
        "spec": spec,
        "status": {"phase": "Applied", "systemIdentifier": "7", **status},
    }


INVERSES = [
    ("a create is undone by dropping what it built", applied("create", execution={"indexName": "built"}),
     {"operation": "drop", "index": {**INDEX, "name": "built"}}),
    ("a drop is undone by creating what it described", applied("drop"),
     {"operation": "create", "index": {**INDEX, "name": "ix"}}),
    ("a setting is set back to the server's earlier value", applied("setting", replacedSetting={"value": "4MB"}),
     {"operation": "setting", "setting": {"name": "work_mem", "value": "4MB", "currentValue": "64MB"}}),
]  # fmt: skip


@pytest.mark.parametrize(("title", "change", "expected"), INVERSES, ids=[i[0] for i in INVERSES])
def test_a_rollback_is_the_inverse_change(title: str, change: dict[str, Any], expected: dict[str, Any]) -> None:
    undo = plugin_changes.inverse(change)
    assert undo["metadata"] == {
        "name": "c1-rollback",
        "namespace": "shop",
        "labels": {"optischema.io/rollback-of": "c1"},
    }
    assert undo["spec"] == {
        "targetRef": {"name": "shop"},
        **expected,
        "schedule": "nextWindow",
        "systemIdentifier": "7",
        "verification": {"observeSeconds": 4},
    }


NO_INVERSE = [
    (applied("reindex"), "indexchange c1 is a reindex: it changed no definition, there is nothing to undo"),
    ({**applied("create"), "status": {"phase": "Failed"}}, "indexchange c1 is Failed: only Applied is undone"),
    (applied("create"), "indexchange c1: the created index's name is not recorded (status.execution)"),
    (applied("setting"), "indexchange c1: the setting's earlier value is not recorded (replacedSetting)"),
]


@pytest.mark.parametrize(("change", "message"), NO_INVERSE)
def test_what_has_no_inverse_says_why(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        plugin_changes.inverse(change)


# -- retry: the one way out of Failed ---------------------------------------------------------------------------

FAILED = {
    "phase": "Failed",
    "sql": "CREATE INDEX …",
    "execution": {"startedAt": "2026-11-30T10:00:00Z", "sql": "CREATE INDEX …"},
    "completedAt": "2026-11-30T10:00:01Z",
    "conditions": [],
    "history": [{"time": "2026-11-30T10:00:00Z", "actor": "op", "action": "Precheck", "outcome": "Failed"}],
}


def test_a_retry_clears_the_failed_attempt_and_records_its_token() -> None:
    status = lifecycle.parse(FAILED)
    patch = retry.retried(status, "t1", actor="op", now=T0, generation=3)
    assert patch["phase"] == "Pending"
    assert {k: patch[k] for k in ("sql", "execution", "completedAt", "appliedAt")} == dict.fromkeys(
        ("sql", "execution", "completedAt", "appliedAt")
    )  # explicit nulls: the merge patch removes them
    assert [h["action"] for h in patch["history"]] == ["Precheck", "Retry"]  # the trail is kept, one entry added
    assert patch["history"][-1]["message"] == "retry requested with optischema.io/retry=t1"
    after = lifecycle.parse({**FAILED, **patch})
    assert retry.honoured(after, "t1")
    assert not retry.honoured(after, "t2")
    assert lifecycle.legal("Pending", "WaitingForWindow")  # admission takes it from here


RETRY_REFUSED = [
    ({"phase": "Applied"}, "status.phase: only a Failed change is retried (it is Applied)"),
    ({}, "status.phase: only a Failed change is retried (it is not admitted yet)"),
    ({"phase": "Failed", "appliedAt": "2026-11-30T10:00:00Z"},
     "status.appliedAt: the change was applied before it failed; its outcome stands"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "message"), RETRY_REFUSED)
def test_what_is_not_retried(status: dict[str, Any], message: str) -> None:
    parsed = lifecycle.parse(status)
    assert retry.refusal(parsed) == message
    with pytest.raises(lifecycle.IllegalTransition, match=r"^status"):
        retry.retried(parsed, "t", actor="op", now=T0, generation=1)
    change = {"metadata": {"name": "c1"}, "status": status}
    assert plugin_changes.retry_problem(change) is not None
    # answered once, in the audit trail, with the reason; the phase stays
    patch = retry.declined(parsed, "t", message, actor="op", now=T0)
    assert set(patch) == {"history"}
    assert patch["history"][-1]["outcome"] == "Skipped"
    assert patch["history"][-1]["message"] == f"retry requested with optischema.io/retry=t: not retried: {message}"
    assert retry.honoured(lifecycle.parse({**status, **patch}), "t")
    assert not retry.honoured(lifecycle.parse({**status, **patch}), "t2")


# -- completion -------------------------------------------------------------------------------------------------


def lister(plural: str, options: Any) -> list[str]:
    names = {
        "tuningrecommendations": ["shop-ix-1", "shop-ix-2"],
        "postgrestargets": ["shop"],
        "indexchanges": ["c1"],
        "namespaces": [f"ns-{options.namespace or 'none'}"],
    }
    return names[plural]


COMPLETIONS = [
    # (words typed after "kubectl optischema", the candidates, the directive)
    ([""], ["analyze", "approve", "export", "list", "reject", "report", "retry", "rollback", "show", "status", "top"],
     4),
    (["ap"], ["approve"], 4),
    (["approve", ""], ["shop-ix-1", "shop-ix-2"], 4),
    (["-n", "x", "approve", "shop-ix-2"], ["shop-ix-2"], 4),
    (["top", ""], ["shop"], 4),
    (["rollback", ""], ["c1"], 4),
    (["approve", "--tar"], ["--target"], 4),
    (["approve", "--target", ""], ["shop"], 4),
    (["list", "-o", "y"], ["yaml"], 4),
    (["list", "--output=j"], ["--output=json"], 4),
    (["list", "-n", ""], ["ns-none"], 4),
    (["report", "shop", "--output-file", ""], [], 0),  # files: the shell's own completion
    (["--kubeconfig", ""], [], 0),
    (["approve", "--dry-run", ""], ["none", "client", "server"], 4),
]  # fmt: skip


@pytest.mark.parametrize(("words", "candidates", "directive"), COMPLETIONS, ids=[" ".join(c[0]) for c in COMPLETIONS])
def test_completion(words: list[str], candidates: list[str], directive: int) -> None:
    assert complete.complete(words, lister) == (candidates, directive)


def test_the_completion_executable_is_a_console_script() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["kubectl_complete-optischema"] == "optischema.cli.complete:main"


# -- top: one frame from fixture history ------------------------------------------------------------------------

SLOW = "SELECT sum(amount) FROM invoices WHERE customer_id = $1"
FAST = "SELECT * FROM customers WHERE id = $1"


def days() -> list[history.Day]:
    day = history.Day(date(2026, 11, 30))
    # cumulative counters at four analyses, 10 minutes apart: the slow statement gets slower, then faster
    counters = (
        (0, (100, 1000.0), (50, 5.0)),
        (10, (700, 7000.0), (650, 65.0)),
        (20, (1300, 19000.0), (1250, 125.0)),
        (30, (1900, 22000.0), (1850, 185.0)),
    )
    for minutes, slow, fast in counters:
        point = history.Point(
            T0 + timedelta(minutes=minutes), (history.Counter("1", *slow), history.Counter("2", *fast))
        )
        history.add(day, point, {"1": SLOW, "2": FAST})
    return [day]


TARGET = {
    "metadata": {"name": "shop", "namespace": "apps"},
    "status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "Connected"}],
        "database": {"serverVersion": "15.18"},
        "lastAnalysis": {"completionTime": "2026-11-30T10:30:00Z", "outcome": "Succeeded"},
    },
}
RECOMMENDATIONS = [
    {
        "metadata": {"name": "shop-ix-1"},
        "spec": {
            "approval": {"state": "Pending"},
            "change": {"index": {"table": "invoices", "name": "invoices_customer_id_ab"}},
            "evidence": {
                "estimatedImprovementPercent": 97.2,
                "statements": [{"queryId": "1", "planBefore": "Bitmap Heap Scan on invoices\n  Bitmap Index Scan "
                                "using invoices_amount_idx"}],
            },
        },
        "status": {"phase": "Proposed"},
    },
    {
        "metadata": {"name": "shop-ix-0"},
        "spec": {
            "approval": {"state": "Approved"},
            "change": {"index": {"table": "customers", "name": "customers_id_cd"}},
            "evidence": {"statements": [{"queryId": "2", "planBefore": "Index Scan using customers_pkey on x"}]},
        },
        "status": {"phase": "Applied"},
    },
]  # fmt: skip
CHANGES = [
    {
        "spec": {"recommendationRef": {"name": "shop-ix-0"}},
        "status": {"phase": "Applied", "execution": {"indexName": "customers_id_cd"}},
    }
]

FRAME = """\
optischema top shop -n apps   2026-11-30 10:31:00 UTC   Ready: True (Connected)
PostgreSQL 15.18; last analysis 2026-11-30T10:30:00Z (Succeeded); interval 10:20:00 → 10:30:00 UTC

  CALLS/S    MEAN MS   SHARE  TREND         STATEMENT
     1.00       5.00   98.0%  ▃█▁           SELECT sum(amount) FROM invoices WHERE customer_id = $1
                                             uses: invoices_amount_idx
                                             pending: shop-ix-1 (+97%)
     1.00       0.10    2.0%  ▁▁▁           SELECT * FROM customers WHERE id = $1
                                             uses: customers_pkey, customers_id_cd

1 recommendation(s) waiting for a decision: kubectl optischema list --target shop"""


def test_a_top_frame_from_fixture_history() -> None:
    text = top.frame(TARGET, days(), RECOMMENDATIONS, CHANGES, now=T0 + timedelta(minutes=31), limit=10)
    assert text == FRAME


def test_a_top_frame_without_history_says_when_it_starts() -> None:
    text = top.frame(TARGET, [], [], [], now=T0)
    assert text.endswith("no statement history yet: it starts with the target's first analysis")


INDEX_NAMES = [
    ("Index Scan using invoices_pkey on invoices", ["invoices_pkey"]),
    ('Index Only Scan using "Odd ""Name""" on t', ['"Odd ""Name"""']),
    ("Seq Scan on invoices", []),
    ("Nested Loop\n  Index Scan using a on t\n  Index Scan using a on t\n  Bitmap Index Scan using b", ["a", "b"]),
]


@pytest.mark.parametrize(("plan", "names"), INDEX_NAMES)
def test_the_indexes_a_plan_uses(plan: str, names: list[str]) -> None:
    assert top.indexes_in(plan) == names
