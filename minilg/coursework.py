"""Coursework: student versions of the notebooks, and the checks that keep exercises honest.

The notebooks are the instructor versions. Their exercises follow nbgrader's conventions, so
nbgrader and otter-grader users can take them as they are:

* an **exercise cell** holds the solution between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` and carries nbgrader's solution metadata
  (``{"nbgrader": {"solution": true, "grade": false, "grade_id": ...}}``);
* the cell after it is a **self-check**: its first line is ``# Self-check``, it carries nbgrader's
  autograded-test metadata (``"grade": true, "locked": true, "points": 1``) and raises an
  ``AssertionError`` with a helpful message until the exercise is right.

:func:`student_notebook` removes the solutions with nbgrader's ``ClearSolutions`` and clears the
outputs. Its stub is ``# YOUR CODE HERE`` followed by ``...``: valid Python at any indentation,
so the exercise cell itself runs and the *self-check* is the cell that fails (nbgrader's default
stub raises in the exercise cell). Exercise cells are self-contained: later cells never use the
student's answer, so a student version fails at its self-checks and nowhere else. The tests check
exactly that (:func:`failing_cells`), and that putting the solutions back into a student version
gives the instructor's code back character for character (:func:`restore_solutions`).

Writing never loses work: every target is checked before anything is written, and only a
student version this command wrote (marked in its notebook metadata, :data:`MARKER`) is ever
replaced; silently when it is unchanged, only with ``--force`` once a student edited it. The
instructor notebooks' own folder is refused as ``--out``; files are written atomically.

    python -m minilg coursework --out student/        # or: make coursework
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from minilg.errors import MinilgError
from minilg.io import atomic_write_text

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SELF_CHECK = "# Self-check"
STUB = "# YOUR CODE HERE\n..."


class CourseworkError(MinilgError, ValueError):
    """A notebook that is missing or breaks the exercise conventions (the message names it)."""


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def is_exercise(cell: Any) -> bool:
    return cell.get("cell_type") == "code" and BEGIN in _source(cell)


def is_self_check(cell: Any) -> bool:
    return cell.get("cell_type") == "code" and _source(cell).startswith(SELF_CHECK)


def annotate(nb: Any, prefix: str) -> int:
    """Give exercise and self-check cells nbgrader's metadata (in place); returns how many."""
    count = 0
    for index, cell in enumerate(nb.cells):
        if is_exercise(cell):
            cell.metadata["nbgrader"] = {
                "solution": True, "grade": False, "locked": False, "task": False,
                "grade_id": f"{prefix}-exercise-{index}", "schema_version": 3,
            }
            count += 1
        elif is_self_check(cell):
            cell.metadata["nbgrader"] = {
                "solution": False, "grade": True, "locked": True, "task": False, "points": 1,
                "grade_id": f"{prefix}-check-{index}", "schema_version": 3,
            }
    return count


def marker_problem(source: str) -> str | None:
    """What is wrong with the solution markers of one cell's source (None when nothing):
    each ``BEGIN`` must be closed by an ``END`` before the next ``BEGIN``."""
    open_at = None
    for number, line in enumerate(source.splitlines(), 1):
        text = line.strip()
        if text.startswith(BEGIN):
            if open_at is not None:
                return f"nested solution markers ({BEGIN} on line {number} inside the one " \
                       f"on line {open_at})"
            open_at = number
        elif text.startswith(END):
            if open_at is None:
                return f"{END} on line {number} without a {BEGIN} before it"
            open_at = None
    if open_at is not None:
        return f"{BEGIN} on line {open_at} without an {END} after it"
    return None


def check_markers(nb: Any, name: str) -> list[str]:
    """Problems with the exercise conventions (an empty list when there are none)."""
    problems = []
    for index, cell in enumerate(nb.cells):
        source = _source(cell)
        meta = cell.get("metadata", {}).get("nbgrader", {})
        bad = marker_problem(source) if cell.get("cell_type") == "code" else None
        if bad:
            problems.append(f"{name} cell {index}: {bad}")
        if is_exercise(cell):
            if not meta.get("solution"):
                problems.append(f"{name} cell {index}: exercise without nbgrader solution metadata")
            following = nb.cells[index + 1] if index + 1 < len(nb.cells) else {}
            if not is_self_check(following):
                problems.append(f"{name} cell {index}: exercise not followed by a self-check")
        elif is_self_check(cell) and not meta.get("grade"):
            problems.append(f"{name} cell {index}: self-check without nbgrader grade metadata")
    return problems


def student_notebook(nb: Any) -> Any:
    """A copy of ``nb`` with every solution replaced by the stub, the hidden tests of its
    self-checks removed (``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS``, as nbgrader's
    ``generate_assignment`` removes them) and every output cleared."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions

    student = copy.deepcopy(nb)
    student, _ = ClearSolutions(code_stub={"python": STUB}).preprocess(student, {})
    student, _ = ClearHiddenTests().preprocess(student, {})
    student, _ = ClearOutput().preprocess(student, {})
    return student


_REGION = re.compile(rf"^([ \t]*){re.escape(BEGIN)}\n.*?^[ \t]*{re.escape(END)}[ \t]*$",
                     re.MULTILINE | re.DOTALL)


def restore_solutions(student: Any, instructor: Any) -> Any:
    """Put the instructor's solution regions back in place of the stubs (a copy of ``student``)."""
    restored = copy.deepcopy(student)
    for cell, source_cell in zip(restored.cells, instructor.cells, strict=True):
        regions = [m.group(0) for m in _REGION.finditer(_source(source_cell))]
        if not regions or cell.cell_type != "code":
            continue
        text = _source(cell)
        for region in regions:
            indent = region[: len(region) - len(region.lstrip(" \t"))]
            stub = "\n".join(indent + line for line in STUB.split("\n"))
            if stub not in text:
                raise CourseworkError(f"stub for a solution region not found in cell:\n{text}")
            text = text.replace(stub, region, 1)
        cell.source = text
    return restored


def failing_cells(nb: Any, path: Path, timeout: int = 600) -> list[int]:
    """Execute ``nb`` (errors allowed) with ``path`` as working folder; indices of failing cells."""
    from nbclient import NotebookClient

    executed = copy.deepcopy(nb)
    NotebookClient(executed, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path)}}).execute()
    return [
        index for index, cell in enumerate(executed.cells)
        if cell.cell_type == "code"
        and any(out.get("output_type") == "error" for out in cell.get("outputs", []))
    ]


def numbered_notebooks(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def _nbformat() -> Any:
    """nbformat, imported on use (it is only needed for coursework)."""
    return importlib.import_module("nbformat")


# A student version carries this key in its notebook metadata: what it was made from and a
# digest of its cells as written, so that a rerun knows the file is the tool's (and unedited).
MARKER = "minilg_student_version"


def _cells_digest(nb: Any) -> str:
    cells = [{"cell_type": c.get("cell_type"), "source": _source(c)} for c in nb.cells]
    return hashlib.sha256(json.dumps(cells, sort_keys=True).encode()).hexdigest()


def _marked(nb: Any, source: Path) -> Any:
    nb.metadata[MARKER] = {"source": source.name, "cells_sha256": _cells_digest(nb)}
    return nb


def _existing_target(target: Path, force: bool) -> str | None:
    """Why ``target`` must not be replaced (None: it may be): only a student version this tool
    wrote is ever replaced, silently when unedited, with ``force`` when a student edited it."""
    if not target.exists() and not target.is_symlink():
        return None
    if target.is_symlink() or not target.is_file():
        return f"{target} exists and is not a notebook this command wrote"
    try:
        current = _nbformat().read(target, as_version=4)
        marker = current.metadata.get(MARKER)
    except Exception:  # unreadable JSON, not a notebook: not ours in any case
        current, marker = None, None
    if not isinstance(marker, dict):
        return f"{target} exists and is not a student version this command wrote; move it away " \
               "or choose another --out"
    if force:
        return None
    if marker.get("cells_sha256") == _cells_digest(current):
        return None  # exactly as written: regenerating it loses nothing
    return f"{target} was edited since it was written; pass --force to replace it with a new " \
           "student version (the edits are lost) or choose another --out"


def check_targets(notebooks: Iterable[Path], out: Path, force: bool = False) -> list[Path]:
    """The target of each notebook under ``out``, after checking all of them (CourseworkError
    naming the first refusal): ``out`` a folder (or absent), not the notebooks' own folder, and
    no target a file this command did not write."""
    paths = list(notebooks)
    if out.exists() and not out.is_dir():
        raise CourseworkError(f"--out {out} is a file, not a folder: choose a folder path")
    sources = {p.resolve().parent for p in paths}
    if out.resolve() in sources:
        raise CourseworkError(
            f"--out {out} is the folder of the instructor notebooks: the student versions "
            "would replace them; choose another folder (e.g. student/)"
        )
    targets = [out / p.name for p in paths]
    for source, target in zip(paths, targets, strict=True):
        if target.exists() and target.samefile(source):
            raise CourseworkError(f"--out {out}: {target} is the instructor notebook itself")
        problem = _existing_target(target, force)
        if problem:
            raise CourseworkError(problem)
    return targets


def write_student_versions(notebooks: Iterable[Path], out: Path, force: bool = False
                           ) -> list[Path]:
    """Student versions of ``notebooks`` under ``out``; returns the paths written.

    Every notebook and every target is checked before anything is written
    (:func:`check_markers`, :func:`check_targets`); each file is written atomically.
    """
    nbformat = _nbformat()
    paths = list(notebooks)
    targets = check_targets(paths, out, force)
    students = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        problems = check_markers(nb, path.name)
        if problems:
            raise CourseworkError("; ".join(problems))
        students.append(_marked(student_notebook(nb), path))
    out.mkdir(parents=True, exist_ok=True)
    for student, target in zip(students, targets, strict=True):
        atomic_write_text(target, nbformat.writes(student) + "\n")
    return targets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m minilg coursework [--out DIR] [--annotate] [NOTEBOOK ...]``."""
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="instructor notebooks (default: notebooks/NN_*.ipynb)")
    parser.add_argument("--out", type=Path, default=Path("student"),
                        help="folder for the student versions (default: student/)")
    parser.add_argument("--force", action="store_true",
                        help="replace student versions edited since this command wrote them")
    parser.add_argument("--annotate", action="store_true",
                        help="add nbgrader metadata to exercise and self-check cells in place")


def run(args: argparse.Namespace) -> int:
    """Write the student versions of ``args.notebooks`` (or annotate them in place)."""
    nbformat = _nbformat()
    paths = args.notebooks or numbered_notebooks(Path("notebooks"))
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        raise CourseworkError(
            f"no such notebook: {', '.join(missing) or 'notebooks/NN_*.ipynb'}"
        )
    if args.annotate:
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            print(f"{path}: {annotate(nb, path.stem[:2])} exercise(s)")
            atomic_write_text(path, nbformat.writes(nb) + "\n")
        return 0
    for target in write_student_versions(paths, args.out, args.force):
        print(f"wrote {target}")
    return 0


__all__ = [
    "BEGIN", "END", "MARKER", "SELF_CHECK", "STUB", "CourseworkError", "add_arguments",
    "annotate", "check_markers", "check_targets", "failing_cells", "is_exercise", "is_self_check",
    "marker_problem", "numbered_notebooks", "restore_solutions", "run", "student_notebook",
    "write_student_versions",
]
