"""The chart owns the admission webhook configurations (so ``helm uninstall`` removes them): they are what kopf's
managed mode would write for the operator's admission handlers, named ``<release>.optischema.io``, pointing at the
chart's webhook Service, and the operator is told their name and its CA Secret."""

from __future__ import annotations

import subprocess
from typing import Any

import kopf
import pytest
from kopf._core.engines.admission import build_webhooks

import optischema.handlers.admission  # noqa: F401 - registers the admission handlers with kopf
from optischema.api.resources import GROUP, VERSION

from .test_chart import ROOT, by_kind, render


@pytest.fixture(scope="module")
def helm() -> str:
    found = subprocess.run([str(ROOT / "hack/helm/build.sh"), "--print"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip("SKIPPED LOUDLY: Helm is not built (make helm)")
    return found.stdout.strip()


KINDS = {
    "tuningrecommendations": "TuningRecommendation",
    "indexchanges": "IndexChange",
    "postgrestargets": "PostgresTarget",
}


def kopf_webhooks(reason: str, name: str, client_config: dict[str, Any]) -> list[dict[str, Any]]:
    """What kopf's managed mode writes for our handlers (its own builder, over every kind the operator serves)."""
    handlers = [h for h in kopf.get_default_registry()._webhooks.get_all_handlers() if h.reason.value == reason]
    resources = [kopf.Resource(GROUP, VERSION, plural, kind=kind, namespaced=True) for plural, kind in KINDS.items()]
    built = build_webhooks(handlers, resources=resources, name_suffix=name, client_config=client_config)  # type: ignore[arg-type]
    return [{k: v for k, v in webhook.items() if v is not None} for webhook in built]


def configurations(helm: str, *sets: str) -> dict[str, dict[str, Any]]:
    kinds = by_kind(render(helm, *sets))
    return {
        kind: kinds[kind][0]
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        if kind in kinds
    }


def env(helm: str, *sets: str) -> dict[str, str]:
    pod = by_kind(render(helm, *sets))["Deployment"][0]["spec"]["template"]["spec"]
    return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}


def test_the_chart_renders_the_webhooks_kopf_would_with_our_name_calling_the_service(helm: str) -> None:
    rendered = configurations(helm)
    assert {c["metadata"]["name"] for c in rendered.values()} == {"rel.optischema.io"}
    assert [w["name"] for w in rendered["MutatingWebhookConfiguration"]["webhooks"]] == [
        "decision.rel.optischema.io",
        "creator.rel.optischema.io",
    ]
    for reason, kind in (
        ("mutating", "MutatingWebhookConfiguration"),
        ("validating", "ValidatingWebhookConfiguration"),
    ):
        expected = kopf_webhooks(reason, "rel.optischema.io", {"url": "https://placeholder"})
        webhooks = rendered[kind]["webhooks"]
        assert [{k: v for k, v in w.items() if k != "clientConfig"} for w in webhooks] == [
            {k: v for k, v in w.items() if k != "clientConfig"} for w in expected
        ]
        for webhook, ours in zip(webhooks, expected, strict=True):
            handler = ours["clientConfig"]["url"].rsplit("/", 1)[1]
            # the Service's DNS name is what the operator's certificate names (and what the API server checks)
            assert webhook["clientConfig"] == {
                "service": {
                    "name": "rel-webhook",
                    "namespace": "optischema-system",
                    "port": 9443,
                    "path": f"/{handler}",
                }
            }
    assert "caBundle" not in str(rendered)  # the operator's to keep (or cert-manager's injector's)
    assert env(helm)["OPTISCHEMA_WEBHOOK_CONFIGURATION"] == "rel.optischema.io"
    assert env(helm)["OPTISCHEMA_WEBHOOK_SECRET"] == "rel-webhook-ca"


def test_in_url_mode_the_webhooks_call_the_address_as_kopf_would(helm: str) -> None:
    rendered = configurations(helm, "webhook.host=127.0.0.1", "webhook.port=18443")
    mutating = rendered["MutatingWebhookConfiguration"]["webhooks"]
    assert [w["clientConfig"] for w in mutating] == [
        w["clientConfig"] for w in kopf_webhooks("mutating", "rel.optischema.io", {"url": "https://127.0.0.1:18443"})
    ]


def test_with_cert_manager_the_ca_injector_keeps_the_ca_bundle(helm: str) -> None:
    rendered = configurations(helm, "webhook.certManager.enabled=true")
    for configuration in rendered.values():
        assert configuration["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": "optischema-system/rel-webhook"  # the serving Certificate
        }
    certificates = {
        c["metadata"]["name"] for c in by_kind(render(helm, "webhook.certManager.enabled=true"))["Certificate"]
    }
    assert "rel-webhook" in certificates
    variables = env(helm, "webhook.certManager.enabled=true")
    assert variables["OPTISCHEMA_WEBHOOK_CONFIGURATION"] == "rel.optischema.io"
    assert "OPTISCHEMA_WEBHOOK_SECRET" not in variables  # the mounted certificate is served instead
    assert "annotations" not in configurations(helm)["MutatingWebhookConfiguration"]["metadata"]


@pytest.mark.parametrize(
    "sets", [("webhook.enabled=false",), ("webhook.enabled=false", "webhook.insecureRunWithout=true")]
)
def test_without_the_webhook_there_is_no_configuration_to_refuse_edits(helm: str, sets: tuple[str, ...]) -> None:
    assert configurations(helm, *sets) == {}
