"""The command line entry point."""

from __future__ import annotations

import pytest

from minilg.__main__ import main


def test_info_prints_ours_beside_published(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "swin_*"]) == 0
    out = capsys.readouterr().out
    assert "MACs = multiply-accumulates" in out
    assert "| swin_tiny | 224 | 28.29 | 4.491 | 28.3 | 4.5 | -0.0% | -0.2% |" in out


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_list_prints_registered_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "*mini*"]) == 0
    names = capsys.readouterr().out.split()
    assert "swin_mini" in names and "gg_mini" in names and "swin_tiny" not in names
