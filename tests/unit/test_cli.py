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
