"""PII that stays put, beyond SQL text: a PII-safe target's sandbox defaults to synthetic rows (no real row copied
unless asked for), secrets do not show in the repr of the objects that carry them, and JSON logs keep tracebacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from optischema.api.target import PostgresTargetSpec, Sandbox

CRD = Path(__file__).resolve().parents[2] / "crds" / "optischema.io_postgrestargets.yaml"
CONNECTION = {"host": "db", "database": "shop", "credentialsSecret": {"name": "db"}}


@pytest.mark.parametrize(
    ("sandbox", "mode"),
    [
        ({}, "synthetic"),  # piiSafe is on by default: no real row reaches a sandbox unless asked for
        ({"piiSafe": True}, "synthetic"),
        ({"piiSafe": False}, "sample"),  # the former default, for a target whose values may leave it
        ({"dataMode": "sample"}, "sample"),  # an explicit mode is honoured as written
        ({"dataMode": "sample", "piiSafe": True}, "sample"),
        ({"dataMode": "full", "piiSafe": True}, "full"),
        ({"dataMode": "synthetic", "piiSafe": False}, "synthetic"),
    ],
)
def test_a_pii_safe_sandbox_defaults_to_synthetic_data(sandbox: dict[str, Any], mode: str) -> None:
    spec = PostgresTargetSpec.model_validate({"connection": CONNECTION, "sandbox": sandbox})
    assert spec.sandbox.data_mode == mode
    assert PostgresTargetSpec.model_validate({"connection": CONNECTION}).sandbox.data_mode == "synthetic"
    assert Sandbox().data_mode == "synthetic"


def test_the_crd_writes_no_data_mode_default_into_stored_targets() -> None:
    # The attack: with `default: sample` in the CRD the API server writes dataMode: sample into every target it
    # stores, and the operator can no longer tell "unset" (follow piiSafe) from an explicit sample.
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    data_mode = spec["sandbox"]["properties"]["dataMode"]
    assert "default" not in data_mode
    assert data_mode["enum"] == ["sample", "full", "synthetic"]
    assert "piiSafe" in data_mode["description"]


def _secret_bearers() -> list[Any]:
    from optischema.flows.sandbox import _Local
    from optischema.kube.sandboxes import PodSandbox
    from optischema.kube.webhookbundle import Bundle
    from optischema.llm.providers import Provider
    from optischema.notify.deliver import Sink

    dsn = f"postgresql://sandbox:{SECRET}@10.0.0.9:5432/sandbox"
    return [
        PodSandbox("shop", "orders-sbx-1a2b3c", dsn),
        _Local(dsn, object()),  # type: ignore[arg-type]
        Bundle(ca_crt="CA-CERT", ca_key=SECRET, tls_crt="TLS-CERT", tls_key=SECRET, ca_bundle="CA-BUNDLE"),
        Provider("openai", "gpt-test", "https://api.example.com/v1", SECRET),
        Sink("slack", f"https://hooks.slack.com/services/T0/B0/{SECRET}", hmac_secret=SECRET),
    ]


SECRET = "s3cr3t-PASSWORD-value"


@pytest.mark.parametrize("bearer", _secret_bearers(), ids=lambda b: type(b).__name__)
def test_objects_that_carry_a_secret_do_not_show_it(bearer: Any) -> None:
    # The attack: a log line or a traceback (kopf logs a handler's exception with its locals' reprs in messages)
    # prints the object, and the sandbox's password, a private key, an API key or a Slack token goes with it.
    for shown in (repr(bearer), str(bearer), f"{bearer}", f"{bearer!r}"):
        assert SECRET not in shown
    assert type(bearer).__name__ in repr(bearer), "the rest of the object is still shown"


def _fails_with_a_secret_in_a_local() -> None:
    password = SECRET  # a local of the failing frame: a traceback with locals would print it
    raise ValueError(f"could not connect as {password[:2]}…")


@pytest.mark.parametrize("how", ["exc_info", "exception"])
def test_a_json_log_line_keeps_a_logged_exception_s_traceback(how: str, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import structlog

    from optischema.telemetry import configure, log_for

    configure("json")
    try:
        try:
            _fails_with_a_secret_in_a_local()
        except ValueError:
            log = log_for("shop", "orders-db")
            if how == "exception":
                log.exception("analysis failed")
            else:
                log.error("analysis failed", exc_info=True)
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        structlog.reset_defaults()
    record = json.loads(line)
    assert (record["event"], record["level"], record["namespace"], record["name"]) == (
        "analysis failed",
        "error",
        "shop",
        "orders-db",
    )
    (error,) = record["exception"]
    assert (error["exc_type"], error["exc_value"]) == ("ValueError", "could not connect as s3…")
    assert [f["name"] for f in error["frames"]][-1] == "_fails_with_a_secret_in_a_local"
    assert all(f["filename"] and f["lineno"] for f in error["frames"])
    assert SECRET not in line, "the frames' local variables are not logged"
    assert "exc_info" not in record


@pytest.mark.parametrize(
    ("argv", "mode"),
    [([], "synthetic"), (["--copy-real-values"], "sample"), (["--data-mode", "sample"], "sample")],
)
def test_the_benchmark_cli_defaults_to_synthetic_data_as_a_target_does(argv: list[str], mode: str) -> None:
    from optischema.cli.main import build_parser

    args = build_parser().parse_args(["benchmark", "--dsn", "postgresql:///shop", *argv])
    assert Sandbox(data_mode=args.data_mode, pii_safe=not args.copy_real_values).data_mode == mode
