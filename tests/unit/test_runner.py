"""The runner's identity (kube/runner.py): which user the operator impersonates, and the one header that says so.
What the API server makes of it is tried on the embedded cluster (tests/k8s/test_rbac_matrix.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from optischema.handlers.operator import needs_scanning
from optischema.kube.runner import IMPERSONATE_USER, Runner, runner_user
from optischema.settings import Settings


@pytest.mark.parametrize(
    ("setting", "namespace", "user"),
    [
        ("", "shop", None),  # no runner: the operator's own identity (development)
        ("optischema-runner", "shop", "system:serviceaccount:shop:optischema-runner"),  # each namespace's own
        ("optischema-runner", "billing", "system:serviceaccount:billing:optischema-runner"),
        # watching the whole cluster: the one runner in the release's namespace, whatever the object's namespace
        ("system:serviceaccount:ops:optischema-runner", "shop", "system:serviceaccount:ops:optischema-runner"),
    ],
)
def test_the_user_impersonated_in_a_namespace(setting: str, namespace: str, user: str | None) -> None:
    assert runner_user(setting, namespace) == user


def test_clients_impersonate_the_runner_of_their_namespace_and_are_kept() -> None:
    runner = Runner("optischema-runner")
    shop = runner.api_client("shop")
    assert shop.default_headers[IMPERSONATE_USER] == "system:serviceaccount:shop:optischema-runner"
    assert runner.api_client("shop") is shop  # one connection pool per user
    assert runner.api_client("billing").default_headers[IMPERSONATE_USER].endswith(":billing:optischema-runner")
    assert IMPERSONATE_USER not in Runner().api_client("shop").default_headers  # no runner: no impersonation
    assert runner.core("shop").api_client is shop


@pytest.mark.parametrize(
    "setting",
    ["system:serviceaccount:shop", "system:serviceaccount:shop:runner:extra", "Runner", "system:masters", "a b"],
)
def test_a_setting_that_names_no_service_account_is_refused(setting: str) -> None:
    with pytest.raises(ValidationError, match="runner_service_account"):
        Settings(runner_service_account=setting)


@pytest.mark.parametrize(
    ("namespaces", "clusterwide", "needed"),
    [
        (["shop"], False, False),  # the chart's namespaced mode: no right on namespaces or CRDs, none needed
        (["shop", "billing"], False, False),
        (["shop-*"], False, True),  # a pattern: kopf lists namespaces to match it
        (["shop", "!shop-tmp"], False, True),
        ([], True, True),  # the whole cluster: kopf watches CRDs (the cluster-wide mode grants it)
    ],
)
def test_kopf_scans_the_cluster_only_when_the_namespaces_are_not_given_by_name(
    namespaces: list[str], clusterwide: bool, needed: bool
) -> None:
    assert needs_scanning(namespaces, clusterwide) is needed
