"""nbgrader end to end, as an instructor runs it: a course folder with the repository's
``nbgrader_config.py``, ``generate_assignment`` on instructor notebooks, then ``autograde`` of
three submissions. The instructor solutions score full marks; the untouched student version scores
zero on every exercise and fails nowhere but at its checks; a submission that calls the library
function the exercise asks for scores zero on those exercises. nbgrader is run from the virtual
environment's ``bin`` put on ``PATH`` (no activation). A toy notebook checks the skip marker and
hidden tests quickly; the repository test uses a subset of the notebooks (``scripts/grade.sh``
grades all of them)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from minilg.grading import HIDDEN_BEGIN, SKIP_MARKER

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ASSIGNMENT = "minilg"
# The CI subset (about 50 s of notebook per submission on 2 cores) and, per notebook, a body for
# its exercise that calls the library function the exercise asks the student to write.
SUBSET = {
    "01_full_self_attention.ipynb":
        "return msa_macs(n, c) + 2 * mlp_ratio * n * c * c",
    "03_pooling_focal.ipynb":
        "level = FocalAttention(4, 1, window, ((1, window + 2 * expand),))"
        ".key_regions(height, width)[0][n]\n"
        "return [r * width + c if s > 0 else -1 for r, c, s in level.tolist()]",
}
STUB = "raise NotImplementedError()"  # nbgrader's default stub, after "# YOUR CODE HERE"


def nbgrader(course: Path, *args: str) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MINILG_QUIET": "1", "PYTHONHASHSEED": "0"}
    done = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"nbgrader {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def make_course(folder: Path, notebooks: dict[str, Any]) -> Path:
    shutil.copy(ROOT / "nbgrader_config.py", folder / "nbgrader_config.py")
    (folder / "source" / ASSIGNMENT).mkdir(parents=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, folder / "source" / ASSIGNMENT / name)
    nbgrader(folder, "generate_assignment", ASSIGNMENT, "--force")
    return folder


def released(course: Path, name: str) -> Any:
    return nbformat.read(course / "release" / ASSIGNMENT / name, as_version=4)


def submit(course: Path, student: str, notebooks: dict[str, Any]) -> None:
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, folder / name)


def scores(course: Path, student: str) -> dict[str, dict[str, tuple[float, float]]]:
    """notebook -> grade cell id -> (score, max score), read from nbgrader's gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        submission = gb.find_submission(ASSIGNMENT, student)
        return {nb.name + ".ipynb": {g.name: (g.score, g.max_score) for g in nb.grades}
                for nb in submission.notebooks}


def errors(course: Path, student: str, name: str) -> dict[int, str]:
    """Cells of the autograded notebook that raised: index -> exception name and message."""
    nb = nbformat.read(course / "autograded" / student / ASSIGNMENT / name, as_version=4)
    return {i: f"{o['ename']}: {o['evalue']}" for i, c in enumerate(nb.cells)
            if c.cell_type == "code" for o in c.get("outputs", []) if o["output_type"] == "error"}


def check_cells(nb: Any) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade")]


def cheat(nb: Any, body: str) -> Any:
    """The student version with the exercise's stub replaced by ``body`` (same indentation)."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            match = re.search(rf"^([ \t]*)# YOUR CODE HERE\n[ \t]*{re.escape(STUB)}",
                              cell.source, re.MULTILINE)
            assert match, cell.source
            indented = "\n".join(match.group(1) + line for line in body.split("\n"))
            cell.source = cell.source.replace(match.group(0), indented)
    return nb


def _toy() -> Any:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    solution = {"solution": True, "grade": False, "locked": False, "task": False,
                "grade_id": "toy-exercise", "schema_version": 3}
    check = {"solution": False, "grade": True, "locked": True, "task": False, "points": 1,
             "grade_id": "toy-check", "schema_version": 3}
    nb.cells = [
        nbformat.v4.new_code_cell("import math\nfrom minilg.grading import attempt, unavailable"),
        nbformat.v4.new_code_cell(f"{SKIP_MARKER}\nraise RuntimeError('training, skipped')"),
        nbformat.v4.new_code_cell("def hyp(a, b):\n    ### BEGIN SOLUTION\n"
                                  "    return (a * a + b * b) ** 0.5\n    ### END SOLUTION",
                                  metadata={"nbgrader": solution}),
        nbformat.v4.new_code_cell(
            "# Self-check\nwith unavailable('math.hypot', namespace=globals()):\n"
            "    assert attempt(hyp, 1.0, 0.0) > 0, 'a length is positive'\n"
            f"    {HIDDEN_BEGIN}\n    assert attempt(hyp, 5.0, 12.0) == 13.0, 'not the length'\n"
            "    ### END HIDDEN TESTS\nprint('correct')", metadata={"nbgrader": check}),
    ]
    return nb


def test_toy_course_hides_tests_skips_training_and_blocks_the_library(tmp_path: Path) -> None:
    course = make_course(tmp_path, {"toy.ipynb": _toy()})
    student = released(course, "toy.ipynb")
    assert HIDDEN_BEGIN not in student.cells[3].source and "13.0" not in student.cells[3].source
    wrong, library = cheat(student, "return a + b"), cheat(student, "return math.hypot(a, b)")
    for name, nb in [("instructor", _toy()), ("student", student), ("wrong", wrong),
                     ("library", library)]:
        submit(course, name, {"toy.ipynb": nb})
    nbgrader(course, "autograde", ASSIGNMENT, "--force")
    got = {name: scores(course, name)["toy.ipynb"]["toy-check"][0]
           for name in ("instructor", "student", "wrong", "library")}
    assert got == {"instructor": 1, "student": 0, "wrong": 0, "library": 0}
    assert errors(course, "instructor", "toy.ipynb") == {}  # the training cell did not run
    assert "not written yet" in errors(course, "student", "toy.ipynb")[3]
    assert "AssertionError" in errors(course, "wrong", "toy.ipynb")[3]  # the hidden test
    assert "math.hypot is unavailable" in errors(course, "library", "toy.ipynb")[3]


@pytest.mark.slow
def test_course_notebooks_grade_three_submissions(tmp_path: Path) -> None:
    instructor = {name: nbformat.read(ROOT / "notebooks" / name, as_version=4) for name in SUBSET}
    course = make_course(tmp_path, instructor)
    student = {name: released(course, name) for name in SUBSET}
    for name, nb in student.items():
        assert not any(HIDDEN_BEGIN in c.source or "### BEGIN SOLUTION" in c.source
                       for c in nb.cells), name
    submit(course, "instructor", instructor)
    submit(course, "student", student)
    submit(course, "library", {name: cheat(nb, SUBSET[name]) for name, nb in student.items()})
    nbgrader(course, "autograde", ASSIGNMENT, "--force")
    for name, nb in instructor.items():
        checks = check_cells(nb)
        full = scores(course, "instructor")[name]
        assert full and all(score == top > 0 for score, top in full.values()), (name, full)
        assert errors(course, "instructor", name) == {}, name
        for who in ("student", "library"):
            assert all(score == 0 for score, _ in scores(course, who)[name].values()), (who, name)
            raised = errors(course, who, name)
            assert sorted(raised) == checks, (who, name, raised)  # nowhere but at the checks
        assert all("not written yet" in e for e in errors(course, "student", name).values())
        assert all("unavailable in this exercise" in e
                   for e in errors(course, "library", name).values()), name
