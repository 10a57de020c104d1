"""minilg.grading: data from any folder, hidden tests, the skip marker, unavailable functions."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

import minilg.complexity
from minilg.attention import FocalAttention
from minilg.complexity import msa_macs
from minilg.grading import (
    AUTOGRADE_ENV,
    SKIP_MARKER,
    LibraryCallError,
    attempt,
    autograding,
    fingerprint,
    repository_path,
    skip_cell,
    strip_hidden_tests,
    unavailable,
)


def test_repository_path_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert repository_path("data", "results", "08_bench_cpu.json").is_file()
    with pytest.raises(FileNotFoundError, match="must be a file of the minilg repository"):
        repository_path("data", "no_such_file.json")


def test_strip_hidden_tests_removes_the_region_and_markers() -> None:
    source = ("# Self-check\nwith x:\n    assert visible\n    ### BEGIN HIDDEN TESTS\n"
              "    assert secret == 42\n    ### END HIDDEN TESTS\nprint('done')")
    assert strip_hidden_tests(source) == "# Self-check\nwith x:\n    assert visible\nprint('done')"
    assert strip_hidden_tests("no tests") == "no tests"


def test_skip_marker_and_autograding(monkeypatch: pytest.MonkeyPatch) -> None:
    assert skip_cell("x = 1") is None
    replaced = skip_cell(f"{SKIP_MARKER}\ntrain()")
    assert replaced is not None and "train" not in replaced
    monkeypatch.delenv(AUTOGRADE_ENV, raising=False)
    assert not autograding()
    monkeypatch.setenv(AUTOGRADE_ENV, "1")
    assert autograding()


def test_unavailable_blocks_every_binding_and_restores() -> None:
    namespace = {"macs": msa_macs, "fit": np.polyfit}
    with unavailable("minilg.complexity.msa_macs", "numpy.polyfit",
                     "minilg.attention.focal.FocalAttention.key_regions", namespace=namespace):
        for call in (lambda: minilg.complexity.msa_macs(4, 4), lambda: namespace["macs"](4, 4),
                     lambda: np.polyfit([1, 2], [1, 2], 1), lambda: namespace["fit"]([1], [1], 0),
                     lambda: FocalAttention(4, 1, 2, ((1, 4),)).key_regions(4, 4)):
            with pytest.raises(LibraryCallError, match="unavailable in this exercise"):
                call()
        assert math.pi > 3  # everything else works
    assert minilg.complexity.msa_macs(4, 4) == namespace["macs"](4, 4) == msa_macs(4, 4)
    assert np.polyfit([1.0, 2.0], [1.0, 2.0], 1)[0] == pytest.approx(1.0)
    assert "key_regions" in FocalAttention.__dict__
    with (pytest.raises(ValueError, match="target must be an importable dotted name"),
          unavailable("minilg.complexity.no_such_function")):
        pass


def test_attempt_names_an_unwritten_function() -> None:
    def stub(n: int) -> int:
        raise NotImplementedError()

    def ellipsis(n: int) -> None:
        ...

    with pytest.raises(AssertionError, match="stub is not written yet"):
        attempt(stub, 1)
    with pytest.raises(AssertionError, match="ellipsis returned None: write its body"):
        attempt(ellipsis, 1)
    assert attempt(abs, -3) == 3


def test_fingerprint_is_stable_and_shape_aware() -> None:
    import torch

    assert fingerprint([1, 2, 3]) == fingerprint([1, 2, 3]) != fingerprint([1, 2, 4])
    assert fingerprint(torch.arange(6)) != fingerprint(torch.arange(6).reshape(2, 3))
    assert fingerprint(np.arange(6)) == fingerprint(torch.arange(6))
    assert len(fingerprint(7)) == 16 and os.sep not in fingerprint(7)
