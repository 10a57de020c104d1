"""Coursework: student versions remove solutions, fail at their self-checks and nowhere else,
and give the instructor's code back when the solutions are put back."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from minilg.cli import main
from minilg.coursework import (
    STUB,
    annotate,
    check_markers,
    failing_cells,
    is_exercise,
    is_self_check,
    numbered_notebooks,
    restore_solutions,
    student_notebook,
)
from minilg.grading import HIDDEN_BEGIN, strip_hidden_tests

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = numbered_notebooks(ROOT / "notebooks")
WITH_EXERCISES = [p for p in NOTEBOOKS
                  if any(is_exercise(c) for c in nbformat.read(p, as_version=4).cells)]


def _toy() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("import math"),
        nbformat.v4.new_code_cell(
            "def area(r):\n    ### BEGIN SOLUTION\n    return math.pi * r**2\n"
            "    ### END SOLUTION"),
        nbformat.v4.new_code_cell(
            "# Self-check\nassert area(2.0) == pytest_approx, 'area(r) must be pi r^2'"
            .replace("pytest_approx", "math.pi * 4")),
        nbformat.v4.new_code_cell("print('later cells do not use the answer')"),
    ]
    annotate(nb, "toy")
    return nb


def test_student_version_replaces_solutions_and_keeps_checks() -> None:
    nb = _toy()
    assert check_markers(nb, "toy") == []
    student = student_notebook(nb)
    assert "math.pi * r**2" not in student.cells[1].source
    assert "    # YOUR CODE HERE\n    ..." in student.cells[1].source
    assert student.cells[2].source == nb.cells[2].source
    assert restore_solutions(student, nb).cells[1].source == nb.cells[1].source


def test_student_version_removes_hidden_tests() -> None:
    nb = _toy()
    nb.cells[2].source += ("\n### BEGIN HIDDEN TESTS\nassert area(3.0) == math.pi * 9\n"
                           "### END HIDDEN TESTS\nprint('checked')")
    student = student_notebook(nb)
    visible = nb.cells[2].source.split("\n### BEGIN")[0]
    assert student.cells[2].source == visible + "\nprint('checked')"


def test_student_version_fails_at_its_self_check_only(tmp_path: Path) -> None:
    nb = _toy()
    assert failing_cells(nb, tmp_path, timeout=120) == []
    assert failing_cells(student_notebook(nb), tmp_path, timeout=120) == [2]


def test_markers_problems_are_named() -> None:
    nb = _toy()
    nb.cells[2].source = "print('no check')"
    nb.cells[1].metadata.pop("nbgrader")
    problems = check_markers(nb, "toy")
    assert any("not followed by a self-check" in p for p in problems)
    assert any("without nbgrader solution metadata" in p for p in problems)


def test_cli_writes_student_versions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "01_toy.ipynb"
    nbformat.write(_toy(), source)
    assert main(["coursework", str(source), "--out", str(tmp_path / "student")]) == 0
    written = nbformat.read(tmp_path / "student" / "01_toy.ipynb", as_version=4)
    assert STUB.split("\n")[0] in written.cells[1].source
    assert all(not c.get("outputs") for c in written.cells)
    capsys.readouterr()
    assert main(["coursework", str(tmp_path / "missing.ipynb")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no such notebook: ") and err.count("\n") == 1, err


def test_every_numbered_notebook_holds_an_exercise() -> None:
    assert len(NOTEBOOKS) >= 8, [p.name for p in NOTEBOOKS]
    assert [p.name for p in NOTEBOOKS if p not in WITH_EXERCISES] == []
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        assert any(is_self_check(c) for c in cells), f"{path.name}: no self-check cell"


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.name)
def test_repository_notebook_exercises_round_trip(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert check_markers(nb, path.name) == []
    student = student_notebook(nb)
    assert not any(HIDDEN_BEGIN in c.source for c in student.cells), path.name
    restored = restore_solutions(student, nb)
    # the solutions come back character for character; the hidden tests stay out
    assert [c.source for c in restored.cells] == [strip_hidden_tests(c.source) for c in nb.cells]


@pytest.mark.slow
@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.name)
def test_repository_student_versions_fail_at_self_checks_only(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    checks = [i for i, c in enumerate(nb.cells) if is_self_check(c)]
    assert checks, f"{path.name} has exercises but no self-check"
    assert failing_cells(student_notebook(nb), path.parent) == checks
