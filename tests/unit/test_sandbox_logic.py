"""The sandbox's pure parts: where parameters get values, synthetic rows, timing summaries, the queue's rules and
the pod it asks for. Table-driven where the cases are data."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from optischema.analysis.latency import Timing, percentile, summarise
from optischema.analysis.parameters import Parameter, ParameterError, Source, plan_parameters, runnable
from optischema.analysis.redact import redact_error
from optischema.analysis.statements import Catalog, prepare_text
from optischema.analysis.synthetic import CannotGenerate, ColumnStats, rows
from optischema.api.recommendation import Benchmark, TuningRecommendationSpec
from optischema.api.target import Sandbox as SandboxSpec
from optischema.changes.ddl import render_create
from optischema.flows.benchmark import Outcome, plan_for
from optischema.flows.benchmarking import needs_benchmark, recorded
from optischema.flows.sandbox import PodDefaults
from optischema.kube.jobs import analysis_job
from optischema.kube.podsecurity import with_default_resources
from optischema.kube.sandboxes import (
    DEFAULT_RESOURCES,
    image_for,
    network_policy_manifest,
    pod_manifest,
    pod_name,
    secret_manifest,
)
from optischema.settings import Settings

CATALOG = Catalog(
    {
        ("public", "orders"): {"id", "customer_id", "email", "created_at", "status"},
        ("public", "customers"): {"id", "name"},
    }
)
ORDERS = ("public", "orders")
CUSTOMERS = ("public", "customers")

PARAMETERS: list[tuple[str, list[Parameter]]] = [
    ("SELECT * FROM orders WHERE customer_id = $1", [Parameter(1, "value", Source(ORDERS, "orders", "customer_id"))]),
    ("SELECT * FROM orders o WHERE $1 < o.created_at", [Parameter(1, "above", Source(ORDERS, "o", "o.created_at"))]),
    ("SELECT * FROM orders WHERE created_at <= $1", [Parameter(1, "below", Source(ORDERS, "orders", "created_at"))]),
    (
        "SELECT * FROM orders WHERE lower(email) LIKE $1",
        [Parameter(1, "prefix", Source(ORDERS, "orders", "LOWER(email)"))],
    ),
    (
        "SELECT * FROM orders WHERE status IN ($1,$2)",
        [
            Parameter(1, "value", Source(ORDERS, "orders", "status")),
            Parameter(2, "value", Source(ORDERS, "orders", "status"), 1),
        ],
    ),
    ("SELECT * FROM orders WHERE id = ANY($1)", [Parameter(1, "array", Source(ORDERS, "orders", "id"))]),
    (
        "SELECT * FROM orders WHERE created_at BETWEEN $1 AND $2",
        [
            Parameter(1, "lower", Source(ORDERS, "orders", "created_at")),
            Parameter(2, "upper", Source(ORDERS, "orders", "created_at")),
        ],
    ),
    ("SELECT * FROM orders ORDER BY id LIMIT $1 OFFSET $2", [Parameter(1, "limit"), Parameter(2, "offset")]),
    (
        "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.name = $1",
        [Parameter(1, "value", Source(CUSTOMERS, "c", "c.name"))],
    ),
    ("SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id WHERE id = $1", [Parameter(1, "unknown")]),
    (
        "INSERT INTO orders (customer_id, status) VALUES ($1, $2)",
        [
            Parameter(1, "value", Source(ORDERS, "orders", "customer_id")),
            Parameter(2, "value", Source(ORDERS, "orders", "status")),
        ],
    ),
    (
        "UPDATE orders SET status = $1 WHERE id = $2",
        [
            Parameter(1, "value", Source(ORDERS, "orders", "status")),
            Parameter(2, "value", Source(ORDERS, "orders", "id")),
        ],
    ),
    ("SELECT $1::int + 1", [Parameter(1, "unknown")]),
    ("SELECT * FROM orders WHERE created_at > now() - interval $1", [Parameter(1, "unknown")]),
]


@pytest.mark.parametrize(("query", "expected"), PARAMETERS, ids=[q for q, _ in PARAMETERS])
def test_each_parameter_knows_where_its_values_come_from(query: str, expected: list[Parameter]) -> None:
    assert plan_parameters(query, CATALOG) == expected


RUNNABLE = [
    (
        "SELECT * FROM products WHERE sku LIKE $1 || lpad(($2 / $3)::text, $4, $5) || $6 AND price > $7",
        "SELECT * FROM products WHERE sku LIKE $1 AND price > $2",
    ),
    ("SELECT * FROM products WHERE name ILIKE $1 || $2", "SELECT * FROM products WHERE name ILIKE $1"),
    (
        "SELECT * FROM t WHERE id = $1 AND name LIKE $2 || $3 OR id = $1",
        "SELECT * FROM t WHERE id = $1 AND name LIKE $2 OR id = $1",
    ),
    ("SELECT * FROM t WHERE name LIKE $1", "SELECT * FROM t WHERE name LIKE $1"),
    ("SELECT * FROM t WHERE a LIKE b || $1", "SELECT * FROM t WHERE a LIKE b || $1"),  # a column: left alone
    ("SELECT * FROM t WHERE at > now() - interval $1", "SELECT * FROM t WHERE at > now() - $1::interval"),
]


@pytest.mark.parametrize(("query", "expected"), RUNNABLE, ids=[q for q, _ in RUNNABLE])
def test_patterns_built_by_the_application_become_one_parameter(query: str, expected: str) -> None:
    assert runnable(query) == expected


def test_an_unreadable_statement_is_refused_with_the_parser_s_reason() -> None:
    with pytest.raises(ParameterError, match="cannot parse"):
        plan_parameters("SELECT * FROM orders WHERE (((", CATALOG)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("$2||g||$3", "$2||g|| $3"), ("g%$4=$5", "g% $4= $5"), ("a>=$1", "a>= $1"), ("f($1,$2)", "f( $1, $2)")],
)
def test_parameters_after_operators_are_spaced_for_the_parser(text: str, expected: str) -> None:
    assert prepare_text(text) == expected


# -- synthetic rows ---------------------------------------------------------------------------------------------

STATUS = ColumnStats("status", "text", True, False, 0.0, 3, 5, ("done", "new", "fail"), (0.9, 0.08, 0.02))
SECRET = ColumnStats("secret", "text", True, True, 0.0, -1, 33, (), (), ("0a1b", "7f00", "ffee"))
AMOUNT = ColumnStats("amount", "numeric(10,2)", False, False, 0.25, 100, 8, (), (), ("0", "50", "99.5"))
WHEN = ColumnStats(
    "at",
    "timestamp with time zone",
    True,
    False,
    0.0,
    -0.5,
    8,
    (),
    (),
    ("2024-01-01 00:00:00+00", "2024-02-01 00:00:00+00"),
)
ID = ColumnStats("id", "bigint", True, True, 0.0, -1, 8, (), (), ("1", "5000", "10000"))


def test_synthetic_rows_match_the_statistics_and_pii_safe_rows_hold_no_real_value() -> None:
    made = list(rows([STATUS, SECRET, AMOUNT, WHEN, ID], 5000, pii_safe=True, seed="s"))
    statuses = Counter(r[0] for r in made)
    assert not set(statuses) & set(STATUS.most_common_vals)
    assert sorted(round(n / 5000, 2) for n in statuses.values()) == pytest.approx([0.02, 0.08, 0.9], abs=0.02)
    assert len({r[1] for r in made}) == 5000
    assert not {r[1] for r in made} & set(SECRET.histogram_bounds)
    nulls = sum(r[2] is None for r in made) / 5000
    assert nulls == pytest.approx(0.25, abs=0.03)
    assert all(0 <= float(r[2]) <= 99.5 for r in made if r[2] is not None)
    assert all("2024-01-01" <= r[3][:10] <= "2024-02-01" for r in made)
    assert len({r[4] for r in made}) == 5000  # a unique column stays unique
    assert list(rows([STATUS, ID], 10, seed="s")) == list(rows([STATUS, ID], 10, seed="s"))  # repeatable


def test_without_pii_safe_the_common_values_are_used_as_they_are() -> None:
    made = Counter(r[0] for r in rows([STATUS], 2000, pii_safe=False))
    assert set(made) == {"done", "new", "fail"}


def test_a_not_null_column_of_an_unknown_type_cannot_be_invented() -> None:
    shape = ColumnStats("shape", "geometry", True, False, 0.0, 10, 32, ("POINT(1 1)",), (1.0,))
    with pytest.raises(CannotGenerate, match="column shape \\(geometry\\) is NOT NULL"):
        rows([shape], 10, pii_safe=True)
    assert next(iter(rows([shape], 1, pii_safe=False))) == ("POINT(1 1)",)


# -- timing summaries ----------------------------------------------------------------------------------------------


def test_percentiles_are_observed_values() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 0)) == (3.0, 5.0, 1.0)


def test_the_summary_weights_statements_by_calls_and_leaves_failures_out() -> None:
    busy = Timing("1", calls=90, before=[10.0] * 5, after=[1.0] * 5)
    rare = Timing("2", calls=10, before=[10.0] * 5, after=[10.0] * 5)
    failed = Timing("3", calls=1000, error="boom")
    write = Timing("4", calls=50, write=True, before=[1.0] * 5, after=[1.2] * 5)
    summary = summarise([busy, rare, failed, write])
    assert summary.p50_before_ms == 10.0
    assert summary.p50_after_ms == pytest.approx(1.9)  # 0.9 * 1 + 0.1 * 10
    assert summary.speedup == pytest.approx(10 / 1.9, abs=0.001)
    assert summary.improvement_percent == pytest.approx(81.0)
    assert summary.write_overhead_percent == pytest.approx(20.0)
    assert (summary.measured, summary.failed) == (3, 1)


# -- the queue's rules ---------------------------------------------------------------------------------------------


def item(
    kind: str = "createIndex", state: str = "Pending", phase: str | None = "AwaitingApproval", **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "r", "namespace": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"kind": kind, "approval": {"state": state}},
        "status": {"phase": phase, **status},
    }


@pytest.mark.parametrize(
    ("recommendation", "expected"),
    [
        (item(), True),
        (item(phase="Benchmarking"), True),  # an operator died mid-benchmark
        (item(phase=None), True),
        (item(kind="dropIndex"), True),
        (item(kind="queryRewrite"), True),  # a rewrite is proved in the sandbox: same rows, faster
        (item(kind="analyze"), False),
        (item(kind="setting"), False),
        (item(state="Approved", phase="Approved"), False),
        (item(benchmark={"dataMode": "sample"}), False),
        (item(phase="Superseded"), False),
    ],
)
def test_which_recommendations_are_benchmarked(recommendation: dict[str, Any], expected: bool) -> None:
    assert needs_benchmark(recommendation) is expected


def test_a_recorded_benchmark_returns_the_phase_only_if_nobody_decided_meanwhile() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ok = Outcome(Benchmark(data_mode="sample", speedup=4.0, p50_before_ms=4.0, p50_after_ms=1.0), "Measured")
    patch = recorded(ok, {"phase": "Benchmarking"}, 1, now)
    assert patch["phase"] == "AwaitingApproval"
    assert patch["conditions"][0]["type"] == "Benchmarked"
    assert patch["conditions"][0]["status"] == "True"
    assert "phase" not in recorded(ok, {"phase": "Approved"}, 1, now)
    bad = Outcome(Benchmark(data_mode="sample", error="pod not ready"), "SandboxNotReady")
    condition = recorded(bad, {"phase": "Benchmarking"}, 1, now)["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "SandboxNotReady")
    assert "pod not ready" in condition["message"]


# -- the pod it asks for ------------------------------------------------------------------------------------------

REC = {
    "apiVersion": "optischema.io/v1alpha1",
    "kind": "TuningRecommendation",
    "metadata": {"name": "shop-createindex-" + "a" * 60, "namespace": "team", "uid": "u-1"},
    "spec": {"targetRef": {"name": "shop"}},
}


def test_the_sandbox_pod_is_owned_bounded_and_reachable_by_the_operator_only() -> None:
    pod = pod_manifest(REC, image="postgres:15", resources={"limits": {"memory": "1Gi"}}, deadline_seconds=600)
    name = pod["metadata"]["name"]
    assert name == pod_name(REC["metadata"]["name"])
    assert len(name) <= 63
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert pod["spec"]["activeDeadlineSeconds"] == 600
    assert pod["spec"]["automountServiceAccountToken"] is False
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": name, "key": "password"}
    pod["metadata"]["uid"] = "pod-uid"
    secret = secret_manifest(pod, "pw")
    assert secret["metadata"]["ownerReferences"][0] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": name,
        "uid": "pod-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    policy = network_policy_manifest(pod, "optischema-system", {"app": "op"})
    peer = policy["spec"]["ingress"][0]["from"][0]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "optischema-system"}
    assert peer["podSelector"]["matchLabels"] == {"app": "op"}
    assert policy["spec"]["egress"] == []


def test_random_is_not_used_for_repeatability() -> None:
    # Synthetic rows depend on the seed only, never on the global random state.
    random.seed(1)
    first = list(rows([STATUS], 20, seed="x"))
    random.seed(2)
    assert list(rows([STATUS], 20, seed="x")) == first


@pytest.mark.parametrize(
    ("message", "redacted"),
    [
        ('invalid input syntax for type integer: "4111 1111 1111"', 'invalid input syntax for type integer: "…"'),
        (
            'duplicate key value violates unique constraint "orders_secret_key" Key (secret)=(alice@example.com)',
            'duplicate key value violates unique constraint "orders_secret_key" Key (secret)=(…)',
        ),
        ("for parameters ['alice', 42] the original returned", "for parameters ['…', …] the original returned"),
        ('column "missing_column" does not exist', 'column "missing_column" does not exist'),
        ("permission denied for function pg_read_file", "permission denied for function pg_read_file"),
    ],
)
def test_sandbox_errors_keep_names_and_lose_values(message: str, redacted: str) -> None:
    assert redact_error(message) == redacted


def test_the_sandbox_runs_the_change_rendered_from_the_structure_never_the_sql_text() -> None:
    spec = TuningRecommendationSpec.model_validate(
        {
            "targetRef": {"name": "shop"},
            "kind": "createIndex",
            "change": {"index": {"table": "orders", "columns": [{"name": "customer_id"}]}},
            # What a person (or a tool) wrote as the SQL shown: the sandbox must not run it.
            "sql": "DROP TABLE orders; COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'",
            "rollbackSql": "SELECT 1",
            "evidence": {
                "statements": [
                    {"queryId": "1", "fingerprint": "f1", "query": "SELECT * FROM orders WHERE customer_id = $1"}
                ]
            },
        }
    )
    plan = plan_for(spec, Catalog({("public", "orders"): {"id", "customer_id"}}), [])
    assert spec.change.index is not None
    assert plan.change_sql == render_create(spec.change.index)
    assert "DROP TABLE" not in plan.change_sql
    assert "PROGRAM" not in plan.change_sql


# -- Pod Security "restricted" (the API server's check is tried in tests/k8s/test_restricted.py) -------------------

TARGET = {
    "apiVersion": "optischema.io/v1alpha1",
    "kind": "PostgresTarget",
    "metadata": {"name": "shop", "namespace": "team", "uid": "t-1"},
    "spec": {"analysis": {"runner": "job"}},
}


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What Pod Security "restricted" (and our own bar: read-only root, limits, bounded emptyDirs) finds wrong."""
    found = []
    pod = spec.get("securityContext") or {}
    if (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        found.append("pod seccompProfile")
    for container in spec["containers"]:
        ctx = {**pod, **(container.get("securityContext") or {})}
        name = container["name"]
        if ctx.get("runAsNonRoot") is not True or not isinstance(ctx.get("runAsUser"), int) or ctx["runAsUser"] == 0:
            found.append(f"{name}: runAsNonRoot with a numeric non-zero runAsUser")
        if container["securityContext"].get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation")
        if container["securityContext"].get("capabilities") != {"drop": ["ALL"]}:
            found.append(f"{name}: capabilities")
        if container["securityContext"].get("readOnlyRootFilesystem") is not True:
            found.append(f"{name}: readOnlyRootFilesystem")
        resources = container.get("resources") or {}
        if not {"cpu", "memory"} <= set(resources.get("requests") or {}) or "memory" not in (
            resources.get("limits") or {}
        ):
            found.append(f"{name}: requests and limits")
    for volume in spec.get("volumes") or []:
        if set(volume) - {"name"} != {"emptyDir"} or "sizeLimit" not in volume["emptyDir"]:
            found.append(f"volume {volume['name']}: only bounded emptyDirs")
    return found


@pytest.mark.parametrize(
    ("what", "spec"),
    [
        ("sandbox, defaults", pod_manifest(REC, image="postgres:15", resources=None, deadline_seconds=600)["spec"]),
        (
            "sandbox, the spec's resources and a service account",
            pod_manifest(
                REC,
                image="registry.example/postgres@sha256:" + "a" * 64,
                resources={"requests": {"memory": "4Gi"}},
                deadline_seconds=600,
                storage_limit="20Gi",
                run_as_user=70,
                service_account="optischema-sandbox",
            )["spec"],
        ),
        (
            "analysis job",
            analysis_job(TARGET, image="optischema:dev", service_account="sa", sample_seconds=0, token="t")["spec"][
                "template"
            ]["spec"],
        ),
    ],
)
def test_our_pods_carry_every_restricted_field(what: str, spec: dict[str, Any]) -> None:
    assert restricted_violations(spec) == [], what


def test_the_check_itself_sees_the_former_sandbox_pod() -> None:
    """The control: the pod as it was (root-capable defaults, no seccomp, an unbounded emptyDir) fails the check."""
    former = {
        "containers": [{"name": "postgres", "securityContext": {"allowPrivilegeEscalation": False, "runAsUser": 999}}],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    assert restricted_violations(former) == [
        "pod seccompProfile",
        "postgres: runAsNonRoot with a numeric non-zero runAsUser",
        "postgres: capabilities",
        "postgres: readOnlyRootFilesystem",
        "postgres: requests and limits",
        "volume data: only bounded emptyDirs",
    ]


def test_the_sandbox_writes_only_to_bounded_emptydirs_and_has_no_token() -> None:
    pod = pod_manifest(
        REC, image="postgres:15", resources=None, deadline_seconds=600, storage_limit="7Gi", service_account="sbx"
    )
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "sbx"
    assert {v["name"]: v["emptyDir"]["sizeLimit"] for v in spec["volumes"]} == {
        "data": "7Gi",
        "run": "16Mi",
        "tmp": "1Gi",
    }
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts == {"/var/lib/postgresql/data", "/var/run/postgresql", "/tmp"}
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["PGDATA"].startswith("/var/lib/postgresql/data/")  # inside the writable volume
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"] == 999
    assert "serviceAccountName" not in pod_manifest(REC, image="p", resources=None, deadline_seconds=60)["spec"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, DEFAULT_RESOURCES),
        (
            {"limits": {"memory": "8Gi"}},
            {"requests": DEFAULT_RESOURCES["requests"], "limits": {**DEFAULT_RESOURCES["limits"], "memory": "8Gi"}},
        ),
        # A request above the default limit raises that limit; a limit under the default request lowers it.
        (
            {"requests": {"memory": "4Gi"}},
            {"requests": {"cpu": "250m", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        ),
        (
            {"limits": {"cpu": "100m"}},
            {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "100m", "memory": "2Gi"}},
        ),
    ],
    ids=["none", "a limit", "a large request", "a small limit"],
)
def test_default_resources_fill_what_the_spec_leaves_out(given: Any, expected: dict[str, Any]) -> None:
    assert with_default_resources(given, DEFAULT_RESOURCES) == expected


@pytest.mark.parametrize(
    ("spec_image", "template", "per_major", "expected"),
    [
        (None, "postgres:{major}", {}, "postgres:16"),
        (None, "registry.example/mirror/postgres:{major}-bookworm", {}, "registry.example/mirror/postgres:16-bookworm"),
        (
            None,
            "postgres:{major}",
            {"16": "registry.example/pg@sha256:" + "b" * 64},
            "registry.example/pg@sha256:" + "b" * 64,
        ),
        (None, "postgres:{major}", {"15": "pinned@sha256:" + "c" * 64}, "postgres:16"),  # another major's pin
        ("mine/postgres:16", "registry.example/postgres:{major}", {"16": "x"}, "mine/postgres:16"),  # the target's own
    ],
)
def test_the_sandbox_image_is_overridable_cluster_wide(
    spec_image: str | None, template: str, per_major: dict[str, str], expected: str
) -> None:
    assert image_for(16, spec_image=spec_image, template=template, per_major=per_major) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OPTISCHEMA_SANDBOX_IMAGE": "postgres:{version}"}, "only {major} is replaced"),
        ({"OPTISCHEMA_SANDBOX_IMAGE": "postgres:{0}"}, "only {major} is replaced"),
        ({"OPTISCHEMA_SANDBOX_IMAGES": '{"latest": "postgres"}'}, "sandbox_images"),
        ({"OPTISCHEMA_SANDBOX_STORAGE_LIMIT": "lots"}, "is not a quantity"),
    ],
)
def test_sandbox_settings_are_checked_at_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings()


@pytest.mark.parametrize(
    ("sandbox", "expected"),
    [
        ({}, "4Gi"),
        ({"storageLimit": "12Gi"}, "12Gi"),
        ({"dataMode": "full", "fullMaxSize": "10Gi"}, str(20 * 2**30)),  # twice the copy
        ({"dataMode": "full", "fullMaxSize": "1Gi"}, "4Gi"),  # the setting is larger
    ],
)
def test_the_data_volume_is_sized_for_the_copy(sandbox: dict[str, Any], expected: str) -> None:
    assert PodDefaults().storage_for(SandboxSpec.model_validate(sandbox)) == expected


def test_an_analysis_job_learns_only_its_own_namespaces_allowed_secrets() -> None:
    """The Job reads Secrets by the operator's opt-in rule: the allow-listed names of its target's namespace reach it,
    and no other namespace's entry does (the Job would have no use for them, and they say what else is trusted)."""
    job = analysis_job(
        TARGET,
        image="optischema:dev",
        service_account="sa",
        sample_seconds=0,
        token="t",
        allowed_secrets=["team/shop-db", "other/payroll-db", "team/llm-key"],
    )
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["OPTISCHEMA_ALLOWED_SECRETS"]) == ["team/shop-db", "team/llm-key"]
    bare = analysis_job(TARGET, image="optischema:dev", service_account="sa", sample_seconds=0, token="t")
    assert "OPTISCHEMA_ALLOWED_SECRETS" not in {
        e["name"] for e in bare["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_the_operators_own_secrets_stay_refused_to_a_spec_in_an_analysis_job() -> None:
    """The default sinks' Secrets and the webhook's CA are the operator's own: no spec may name them, in the operator
    (``Kube.reserved_secrets``) nor in an analysis Job of the same namespace, which gets the list by its env."""
    from optischema.api.target import NotificationSink
    from optischema.settings import Settings

    settings = Settings(
        notification_sinks=[
            NotificationSink.model_validate(
                {
                    "type": "slack",
                    "urlSecret": {"name": "slack-url", "key": "url"},
                    "hmacSecret": {"name": "hmac", "key": "k"},
                }
            )
        ],
        webhook_secret="optischema-webhook-ca",
        reserved_secrets=["other/kept"],
    )
    own = settings.own_secrets("team")
    assert own == {"team/slack-url", "team/hmac", "team/optischema-webhook-ca", "other/kept"}
    job = analysis_job(
        TARGET, image="optischema:dev", service_account="sa", sample_seconds=0, token="t", reserved_secrets=own
    )
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["OPTISCHEMA_RESERVED_SECRETS"]) == [
        "team/hmac",
        "team/optischema-webhook-ca",
        "team/slack-url",
    ]


def test_a_secret_value_that_is_not_text_is_left_out_not_raised() -> None:
    """An opted-in Secret with a binary value (a DER key stored by mistake) failed every reconcile with
    UnicodeDecodeError; now that key reads as missing and the target says which key it lacks."""
    import base64

    from optischema.kube.client import decoded_text

    data = {"password": base64.b64encode(b"pw").decode(), "ca.der": base64.b64encode(b"\x30\x82\xff\xfe").decode()}
    assert decoded_text(data) == {"password": "pw"}
    assert decoded_text(None) == {}


def test_the_measuring_sandbox_pod_is_owned_by_the_target_itself_not_by_a_name_that_does_not_exist() -> None:
    """The analysis's measuring sandbox is named ``<target>-measure-sbx-…``. Its owner reference once named
    ``<target>-measure`` with the target's uid: no such object exists, so the garbage collector deleted the pod as
    an orphan before it was ready (CI: "sandbox pod shop-measure-sbx-… was deleted before it was ready")."""
    import asyncio
    from types import SimpleNamespace

    from optischema.flows.measuring import provider_sandbox

    target = {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "PostgresTarget",
        "metadata": {"name": "shop", "namespace": "team", "uid": "target-uid"},
        "spec": {},
    }
    pods: list[dict[str, Any]] = []

    class Recording:
        async def start(
            self, recommendation: dict[str, Any], spec: SandboxSpec, major: int, *, owner: Any = None
        ) -> Any:
            pods.append(pod_manifest(recommendation, image="p", resources=None, deadline_seconds=60, owner=owner))
            return SimpleNamespace(dsn="postgresql://sandbox@127.0.0.1/sandbox")

        async def stop(self, started: Any) -> None:
            pass

    async def open_and_close() -> None:
        async with provider_sandbox(Recording(), target, SandboxSpec())(15):
            pass

    asyncio.run(open_and_close())
    (pod,) = pods
    assert pod["metadata"]["name"].startswith("shop-measure-sbx-")
    (reference,) = pod["metadata"]["ownerReferences"]
    assert (reference["kind"], reference["name"], reference["uid"]) == ("PostgresTarget", "shop", "target-uid")
