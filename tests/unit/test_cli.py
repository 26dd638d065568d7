"""The command line entry point, in process."""

from __future__ import annotations

from pathlib import Path

import pytest

from optischema import __version__
from optischema.api.crdgen import KINDS, file_name, render
from optischema.cli.main import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"optischema {__version__}"


def test_crds_writes_what_the_models_generate(tmp_path: Path) -> None:
    assert main(["crds", str(tmp_path)]) == 0
    for info in KINDS:
        assert (tmp_path / file_name(info)).read_text() == render(info)


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: optischema" in capsys.readouterr().err


# -- kubectl optischema: parsed as kubectl's users type it ------------------------------------------------------

PLUGIN_FORMS = [
    # (argv, the attributes expected)
    (["approve", "r1", "-n", "shop"], {"command": "approve", "name": "r1", "namespace": "shop"}),
    (["-n", "shop", "approve", "r1"], {"command": "approve", "name": "r1", "namespace": "shop"}),
    (["--namespace=a", "approve", "r1", "-n", "b"], {"namespace": "b"}),  # the last one given wins, as in kubectl
    (["approve", "r1", "--context", "prod", "--kubeconfig", "k"], {"context": "prod", "kubeconfig": "k"}),
    (["--as", "bob", "--as-group", "dba", "reject", "r1", "--reason", "no"], {"as_user": "bob", "as_groups": ["dba"]}),
    (["list"], {"namespace": None, "all_namespaces": False, "output": None, "selector": None, "as_groups": []}),
    (["list", "-A", "-o", "wide", "-l", "tier=db"], {"all_namespaces": True, "output": "wide", "selector": "tier=db"}),
    (["-A", "status"], {"all_namespaces": True, "target": None}),
    (["status", "shop", "-o", "yaml"], {"target": "shop", "output": "yaml"}),
    (["show", "r1", "-o", "json"], {"name": "r1", "output": "json"}),
    (["approve", "r1", "--dry-run=server"], {"dry_run": "server"}),
    (["reject", "r1", "--reason", "x", "--dry-run", "client"], {"dry_run": "client"}),
    (["approve", "r1"], {"dry_run": "none", "reason": "approved with kubectl optischema", "immediate": False}),
    (["approve", "--target", "shop", "--min-gain", "50"], {"name": None, "target": "shop", "min_gain": 50.0}),
    (["approve", "-l", "team=a"], {"name": None, "selector": "team=a", "min_gain": None}),
    (["report", "shop", "-o", "html"], {"format": "html", "output": None}),  # kubectl's -o: a format
    (["report", "shop", "-o", "r.html"], {"format": "md", "output": "r.html"}),  # earlier versions': the file
    (["report", "shop", "--output-file", "r", "--format", "json"], {"format": "json", "output": "r"}),
    (["retry", "c1", "-n", "shop"], {"command": "retry", "change": "c1", "namespace": "shop"}),
    (["rollback", "c1", "--dry-run=client"], {"command": "rollback", "change": "c1", "dry_run": "client"}),
    (["top", "shop", "--once"], {"target": "shop", "once": True, "interval": 5.0, "limit": 15}),
    (["top", "shop", "--interval", "30s", "--limit", "5"], {"interval": 30.0, "limit": 5}),
    (["top", "shop", "--interval", "2"], {"interval": 2.0}),
]


@pytest.mark.parametrize(("argv", "expected"), PLUGIN_FORMS, ids=[" ".join(a) for a, _ in PLUGIN_FORMS])
def test_the_plugin_takes_kubectl_flags_anywhere(argv: list[str], expected: dict[str, object]) -> None:
    from optischema.cli.plugin_args import parse

    args = vars(parse(argv))
    assert {key: args[key] for key in expected} == expected


PLUGIN_REFUSALS = [
    # (argv, exit code, what standard error says)
    (["approve", "r1", "-A"], 2, "-A/--all-namespaces: only list and status read every namespace"),
    (["status", "shop", "-A"], 2, "status: give TARGET or -A, not both"),
    (["approve"], 2, "approve: give the recommendation's NAME, or --target TARGET for several"),
    (["approve", "r1", "--target", "shop"], 2, "approve: give NAME, or --target/-l for several, not both"),
    (["approve", "r1", "--min-gain", "5"], 2, "--min-gain selects among several: use it with --target or -l"),
    (["reject", "r1"], 2, "the following arguments are required: --reason"),
    (["list", "-o", "table"], 2, "argument -o/--output: invalid choice: 'table'"),
    (["approve", "r1", "--dry-run=maybe"], 2, "argument --dry-run: invalid choice: 'maybe'"),
    (["top", "shop", "--interval", "0"], 2, "--interval: '0' is less than a second"),
    (["retry"], 2, "the following arguments are required: change"),
]


@pytest.mark.parametrize(("argv", "code", "message"), PLUGIN_REFUSALS, ids=[" ".join(a) for a, _, _ in PLUGIN_REFUSALS])
def test_the_plugin_refuses_what_cannot_work_in_one_line(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from optischema.cli.plugin_args import parse

    with pytest.raises(SystemExit) as done:
        parse(argv)
    assert done.value.code == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_the_plugin_prints_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    from optischema.cli.plugin import main as plugin

    with pytest.raises(SystemExit) as done:
        plugin(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"kubectl optischema {__version__}"


def test_a_missing_kubeconfig_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from optischema.cli.plugin import main as plugin

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert plugin(["approve", "r1", "-n", "shop"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "kubectl optischema approve: no kubeconfig: no ~/.kube/config and KUBECONFIG is not set, and not running "
        "in a Pod (give --kubeconfig FILE)\n"
    )
