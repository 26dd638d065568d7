"""A PostgresTarget that names a CloudNativePG Cluster (pure parts): the spec's rules, where the Cluster is reached
(its status and Pods as CloudNativePG writes them), the setting as a Cluster patch (comments only as SQL), and who
may patch which Cluster. The end-to-end path is tests/k8s/test_cnpg.py."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from kubernetes.client import V1ObjectMeta, V1OwnerReference, V1Pod, V1PodStatus
from pydantic import ValidationError

from optischema.analysis import platform
from optischema.analysis.report import Recommendation
from optischema.api.indexchange import IndexChangeSpec
from optischema.api.operations import SettingChange
from optischema.api.recommendation import RecommendedChange
from optischema.api.target import Connection, PostgresTargetSpec
from optischema.changes.ddl import (
    UnsafeDefinition,
    render_cluster_setting,
    render_cluster_setting_rollback,
    render_setting,
    statements_for,
)
from optischema.flows.changes import cluster_problem
from optischema.flows.target import connect_params, replica_params, unreadable_instances
from optischema.kube.cnpg import ClusterProblem, endpoint
from optischema.postgres.connect import ConnectParams

UID = "6f1c2a9e-0000-4000-8000-000000000001"


def cluster(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "shop", "namespace": "team", "uid": UID}, "status": status}


def pod(name: str, ip: str | None, *, label: str = "shop", owner_uid: str | None = UID) -> V1Pod:
    owners = (
        [V1OwnerReference(api_version="postgresql.cnpg.io/v1", kind="Cluster", name="shop", uid=owner_uid)]
        if owner_uid
        else None
    )
    return V1Pod(
        metadata=V1ObjectMeta(name=name, labels={"cnpg.io/cluster": label}, owner_references=owners),
        status=V1PodStatus(pod_ip=ip),
    )


@pytest.mark.parametrize(
    ("connection", "error"),
    [
        ({"database": "shop", "credentialsSecret": {"name": "db"}}, "exactly one of host and cluster"),
        (
            {"host": "db", "cluster": {"name": "shop"}, "database": "shop", "credentialsSecret": {"name": "db"}},
            "exactly one of host and cluster",
        ),
        ({"host": "db", "database": "shop"}, "credentialsSecret is required unless cluster is set"),
        ({"cluster": {"name": "Shop_1"}, "database": "shop"}, "cluster.name"),
        ({"cluster": {"name": "shop/../x"}, "database": "shop"}, "cluster.name"),
    ],
    ids=["neither", "both", "host-without-credentials", "bad-name", "path-in-name"],
)
def test_a_connection_names_a_host_or_a_cluster(connection: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Connection.model_validate(connection)


def test_a_cluster_connection_defaults_to_its_app_and_ca_secrets_and_written_ones_win() -> None:
    defaulted = Connection.model_validate({"cluster": {"name": "shop"}, "database": "app"})
    assert defaulted.credentials().name == "shop-app"
    assert (defaulted.credentials().username_key, defaulted.credentials().password_key) == ("username", "password")
    root = defaulted.root_cert()
    assert root is not None
    assert (root.name, root.key) == ("shop-ca", "ca.crt")
    written = Connection.model_validate(
        {
            "cluster": {"name": "shop"},
            "database": "app",
            "credentialsSecret": {"name": "reader"},
            "sslRootCertSecret": {"name": "corp-ca", "key": "bundle.pem"},
        }
    )
    assert written.credentials().name == "reader"
    written_root = written.root_cert()
    assert written_root is not None
    assert written_root.name == "corp-ca"
    host = Connection.model_validate({"host": "db", "database": "app", "credentialsSecret": {"name": "db"}})
    assert host.root_cert() is None


def test_the_cluster_is_reached_at_its_read_write_service_and_its_instances_at_their_pods() -> None:
    found = endpoint(
        "team",
        cluster(writeService="shop-rw", currentPrimary="shop-1", instanceNames=["shop-1", "shop-2", "shop-3"]),
        [pod("shop-1", "10.0.0.1"), pod("shop-2", "10.0.0.2"), pod("shop-3", None)],
        {"shop-rw.team.svc": "127.0.0.9"},
    )
    assert (found.host, found.address, found.instances_host) == ("shop-rw.team.svc", "127.0.0.9", "shop-r.team.svc")
    assert [(i.name, i.address) for i in found.instances] == [("shop-2", "10.0.0.2"), ("shop-3", None)]
    primary = ConnectParams(host=found.host, port=5432, user="u", password="p", database="app", address="127.0.0.9")
    spec = PostgresTargetSpec.model_validate({"connection": {"cluster": {"name": "shop"}, "database": "app"}})
    (replica,) = replica_params(spec, primary, found)
    assert (replica.host, replica.address, replica.sslmode) == ("shop-r.team.svc", "10.0.0.2", "verify-full")
    assert unreadable_instances(found) == [("shop-3", "its Pod has no IP address (not running)")]


@pytest.mark.parametrize(
    "stray",
    [
        pod("shop-2", "10.9.9.9", label="other"),
        pod("shop-2", "10.9.9.9", owner_uid=None),
        pod("shop-2", "10.9.9.9", owner_uid="someone-elses-uid"),
    ],
    ids=["other-cluster-label", "no-owner", "other-owner"],
)
def test_a_pod_that_only_looks_like_an_instance_is_never_read(stray: V1Pod) -> None:
    """Whoever may create Pods can copy CloudNativePG's label and an instance's name: without the Cluster as its
    owner (by uid) the Pod is not an instance, and the instance counts as unreadable (every index kept)."""
    found = endpoint(
        "team",
        cluster(writeService="shop-rw", currentPrimary="shop-1", instanceNames=["shop-1", "shop-2"]),
        [stray],
        {},
    )
    assert [(i.name, i.address) for i in found.instances] == [("shop-2", None)]


def test_a_cluster_without_a_read_write_service_is_not_ready_yet() -> None:
    with pytest.raises(ClusterProblem, match=r"no status\.writeService yet"):
        endpoint("team", cluster(), [], {})


@pytest.mark.parametrize("service", ["attacker", "shop-ro", "shop-rw.evil.example.com", "shop-rw#"])
def test_a_status_naming_another_service_is_never_connected_to(service: str) -> None:
    """Whoever may write the Cluster's status would have the credentials sent to a Service of their own."""
    with pytest.raises(ClusterProblem, match="not the Cluster's read-write Service shop-rw; not connected"):
        endpoint("team", cluster(writeService=service), [], {})


@pytest.mark.parametrize("sslmode", ["disable", "allow", "prefer", "require", "verify-ca"])
def test_instances_are_read_only_where_tls_authenticates_them(sslmode: str) -> None:
    """A Pod that looks like an instance (label, owner) is anyone's who may create Pods: without verification it
    would get the credentials. Such instances are unreadable instead (every index kept)."""
    found = endpoint(
        "team",
        cluster(writeService="shop-rw", currentPrimary="shop-1", instanceNames=["shop-1", "shop-2"]),
        [pod("shop-2", "10.0.0.2")],
        {},
    )
    primary = ConnectParams(host=found.host, port=5432, user="u", password="p", database="app", sslmode=sslmode)
    spec = PostgresTargetSpec.model_validate({"connection": {"cluster": {"name": "shop"}, "database": "app"}})
    assert replica_params(spec, primary, found) == []
    ((name, why),) = unreadable_instances(found, primary)
    assert name == "shop-2"
    assert f"only with sslmode verify-full (it is {sslmode})" in why


def test_the_connection_goes_to_the_address_and_tls_authenticates_the_name() -> None:
    params = ConnectParams(host="shop-rw.team.svc", port=5432, user="u", password="p", database="app",
                           address="127.0.0.9")  # fmt: skip
    assert params.asyncpg_kwargs()["host"] == "127.0.0.9"
    context = params.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.server_name == "shop-rw.team.svc"  # type: ignore[attr-defined]
    assert "127.0.0.9" in params.describe()
    env = params.libpq_env(__import__("pathlib").Path("/nonexistent"))
    assert (env["PGHOST"], env["PGHOSTADDR"]) == ("shop-rw.team.svc", "127.0.0.9")
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        ConnectParams(host="x", port=5432, user="u", password="p", database="d", address="evil.example.com")


def test_a_cluster_target_cannot_be_connected_before_it_is_located() -> None:
    spec = PostgresTargetSpec.model_validate({"connection": {"cluster": {"name": "shop"}, "database": "app"}})
    with pytest.raises(ValueError, match=r"spec\.connection\.cluster"):
        connect_params(spec, "u", "p")


def setting(**extra: Any) -> SettingChange:
    return SettingChange.model_validate(
        {"name": "work_mem", "value": "64MB", "currentValue": "4MB", "currentSource": "default", **extra}
    )


def test_a_cluster_setting_is_shown_as_its_patch_in_comments_and_never_as_alter_system() -> None:
    change = setting(cluster="shop")
    sql = render_cluster_setting(change)
    assert all(line.startswith("-- ") for line in sql.splitlines())
    assert (
        "kubectl patch clusters.postgresql.cnpg.io shop --type merge -p "
        '\'{"spec":{"postgresql":{"parameters":{"work_mem":"64MB"}}}}\'' in sql
    )
    undo = render_cluster_setting_rollback(change)
    assert '"work_mem":null' in undo  # the default came from nowhere in the Cluster: removed again
    kept = render_cluster_setting_rollback(setting(cluster="shop", currentSource="Cluster"))
    assert '"work_mem":"4MB"' in kept
    with pytest.raises(UnsafeDefinition, match=r"setting\.cluster"):
        render_setting(change)
    ixc = IndexChangeSpec.model_validate(
        {"targetRef": {"name": "shop"}, "operation": "setting", "setting": change.model_dump(by_alias=True)}
    )
    assert statements_for(ixc) == [sql]  # the status shows the patch; the apply path patches the Cluster


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"value": "64MB'; DROP TABLE x; --"}, "setting.value"),
        ({"value": "64MB\n-- x"}, "setting.value"),
        ({"name": "archive_command", "value": "rm -rf /"}, "setting.name"),
    ],
    ids=["quote", "newline", "not-allowed"],
)
def test_a_hostile_cluster_setting_is_refused_like_alter_system_would_be(extra: dict[str, Any], error: str) -> None:
    with pytest.raises((UnsafeDefinition, ValidationError), match=error):
        render_cluster_setting(setting(cluster="shop", **extra))


def test_cluster_and_platform_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="cluster and platform"):
        setting(cluster="shop", platform="rds")


def target(connection: dict[str, Any]) -> PostgresTargetSpec:
    return PostgresTargetSpec.model_validate({"connection": {"database": "app", **connection}})


CLUSTER = {"cluster": {"name": "shop"}}
HOST = {"host": "db", "credentialsSecret": {"name": "db"}}


@pytest.mark.parametrize(
    ("connection", "named", "problem"),
    [
        (CLUSTER, "shop", None),
        (CLUSTER, "billing", "is not the target's Cluster (shop)"),
        (CLUSTER, None, "write cluster: shop"),
        (HOST, "shop", "names a host, not a CloudNativePG Cluster"),
        (HOST, None, None),
    ],
    ids=["own-cluster", "another-cluster", "alter-system-on-a-cluster", "cluster-through-a-host", "host"],
)
def test_a_change_patches_only_its_targets_own_cluster(
    connection: dict[str, Any], named: str | None, problem: str | None
) -> None:
    change = IndexChangeSpec.model_validate(
        {"targetRef": {"name": "t"}, "operation": "setting",
         "setting": setting(**({"cluster": named} if named else {})).model_dump(by_alias=True)}
    )  # fmt: skip
    found = cluster_problem(change, target(connection))
    assert (found is None) == (problem is None)
    if problem is not None:
        assert found is not None
        assert found.startswith("spec.setting.cluster: ")
        assert problem in found


def test_settings_findings_on_a_cluster_become_its_patches() -> None:
    finding = Recommendation(
        id="x",
        kind="setting",
        change=RecommendedChange(setting=setting()),
        sql=render_setting(setting()),
        rollback_sql="",
        rationale="work_mem is small for the sorts seen.",
    )
    assert platform.on_cluster([finding], None) == [finding]
    (patched,) = platform.on_cluster([finding], "shop")
    assert patched.change.setting is not None
    assert patched.change.setting.cluster == "shop"
    assert patched.sql.startswith("-- CloudNativePG Cluster shop")
    assert "merge-patches Cluster shop's spec.postgresql.parameters" in patched.rationale
    assert patched.id != finding.id


def test_the_rollback_restores_the_clusters_own_value_even_above_the_caps_of_a_proposal() -> None:
    """A Cluster may run with more work_mem than the operator would propose; restoring it must not fail the change
    (it was refused before the marker, leaving the change stuck in Applying)."""
    undo = render_cluster_setting_rollback(setting(cluster="shop", currentValue="4GB", currentSource="Cluster"))
    assert '"work_mem":"4GB"' in undo
    with pytest.raises(UnsafeDefinition, match=r"setting\.value"):
        render_cluster_setting(setting(cluster="shop", value="4GB"))


class Recommendations:
    """The API as the plugin's export reads it: one recommendation, written by whoever may write them."""

    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        if plural != "tuningrecommendations":
            raise LookupError(name)
        return self.item


def recommendation(kind: str, change: dict[str, Any], sql: str) -> dict[str, Any]:
    return {
        "apiVersion": "optischema.io/v1alpha1",
        "kind": "TuningRecommendation",
        "metadata": {"name": "rec", "namespace": "team"},
        "spec": {"targetRef": {"name": "shop"}, "kind": kind, "change": change, "sql": sql},
    }


INJECTED = "64MB\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: x}\n---\n#"


async def test_an_exported_cluster_patch_is_one_document_whatever_the_recommendation_holds() -> None:
    import argparse

    import yaml

    from optischema.cli.plugin import PluginError, export

    args = argparse.Namespace(name="rec")
    good = {"setting": {"name": "work_mem", "value": "64MB", "cluster": "shop"}}
    text = await export(Recommendations(recommendation("setting", good, "-- x")), "team", args)  # type: ignore[arg-type]
    (document,) = list(yaml.safe_load_all(text))
    assert document["kind"] == "Cluster"
    assert document["spec"] == {"postgresql": {"parameters": {"work_mem": "64MB"}}}
    forged = {"setting": {"name": "work_mem", "value": INJECTED, "cluster": "shop"}}
    with pytest.raises(PluginError, match="cannot be exported"):
        await export(Recommendations(recommendation("setting", forged, "-- x")), "team", args)  # type: ignore[arg-type]
    index = {"index": {"schema": "public", "table": "orders", "columns": [{"name": "customer_id"}]}}
    text = await export(Recommendations(recommendation("createIndex", index, INJECTED)), "team", args)  # type: ignore[arg-type]
    kinds = [d["kind"] for d in yaml.safe_load_all(text) if d]
    assert kinds == ["IndexChange"]  # the SQL is comments, every line of it
