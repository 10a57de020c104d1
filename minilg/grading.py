"""Grading: the pieces every notebook exercise shares, for nbgrader and for a student's own run.

* **Data.** :func:`repository_path` finds a shipped file (``data/...``, ``tests/data/...``) from
  the installed package, so a notebook reads its data the same way from ``notebooks/``, from
  nbgrader's ``autograded/<student>/<assignment>/`` or from anywhere else.
* **Hidden tests.** A self-check cell holds visible checks (they say *what* is wrong, never the
  answer) and, between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``, the graded
  comparison with stored expected values. nbgrader's ``generate_assignment`` removes the hidden
  region from the student version (``ClearHiddenTests``) and ``autograde`` puts it back from its
  database before running the submission; :func:`strip_hidden_tests` does the same for
  ``minilg coursework``.
* **Skip marker.** A code cell whose first line is :data:`SKIP_MARKER` (training, long timing) is
  replaced by a comment when nbgrader autogrades (the preprocessor named in ``nbgrader_config.py``
  calls :func:`skip_cell`); :func:`autograding` tells a cell that it runs under the autograder.
* **Unavailable library functions.** :func:`unavailable` swaps the functions an exercise asks
  the student to write for one that fails the check while the student's code runs, so calling
  ``minilg.complexity.msa_macs`` (or ``np.polyfit``) scores nothing.
* :func:`attempt` calls the student's function and turns an unwritten one (nbgrader's
  ``raise NotImplementedError()`` stub, or ``...`` returning ``None``) into a one-line failure.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
SKIP_MARKER = "# MINILG_SKIP_UNDER_AUTOGRADE"
AUTOGRADE_ENV = "MINILG_AUTOGRADE"
_HIDDEN = re.compile(rf"^[ \t]*{re.escape(HIDDEN_BEGIN)}[^\n]*\n.*?^[ \t]*"
                     rf"{re.escape(HIDDEN_END)}[^\n]*(\n|\Z)", re.MULTILINE | re.DOTALL)


def repository_path(*parts: str) -> Path:
    """``<repository>/<parts>``, the repository found from the installed ``minilg`` package."""
    root = Path(__file__).resolve().parents[1]
    path = root.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{'/'.join(parts)} must be a file of the minilg repository, "
                                f"got no such path under {root}")
    return path


def strip_hidden_tests(source: str) -> str:
    """``source`` without its hidden-test regions (markers included), as nbgrader removes them."""
    return _HIDDEN.sub("", source)


def autograding() -> bool:
    """True while nbgrader autogrades (``nbgrader_config.py`` sets :data:`AUTOGRADE_ENV`)."""
    return os.environ.get(AUTOGRADE_ENV, "") not in ("", "0")


def skip_cell(source: str) -> str | None:
    """The replacement source of a cell marked :data:`SKIP_MARKER`, or None for other cells."""
    if not source.lstrip().startswith(SKIP_MARKER):
        return None
    return f"# skipped under autograde ({SKIP_MARKER}): its output is the committed one"


_INHERITED = object()  # marks a class attribute that was inherited, not set on the owner


class LibraryCallError(AssertionError):
    """Raised when a check's code calls a function the exercise asks the student to write."""


def _resolve(target: str) -> tuple[Any, str]:
    """The owner (module or class) of a dotted name and the attribute's name."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        if not hasattr(owner, parts[-1]):
            break
        return owner, parts[-1]
    raise ValueError(f"target must be an importable dotted name, got target={target!r}")


def _blocker(target: str) -> Callable[..., Any]:
    def blocked(*args: Any, **kwargs: Any) -> Any:
        raise LibraryCallError(f"{target} is unavailable in this exercise: write it yourself")
    return blocked


@contextmanager
def unavailable(*targets: str,
                namespace: MutableMapping[str, Any] | None = None) -> Iterator[None]:
    """Make each dotted ``target`` fail while the block runs, wherever it is bound.

    The attribute is replaced on its owner (module or class) and in every loaded module (and
    ``namespace``, e.g. a notebook's ``globals()``) that holds the same object under any name;
    everything is restored on exit.
    """
    saved: list[tuple[Any, str, bool, Any]] = []  # (owner, name, is_mapping, original)
    try:
        for target in targets:
            owner, name = _resolve(target)
            original, blocker = getattr(owner, name), _blocker(target)
            saved.append((owner, name, False, owner.__dict__.get(name, _INHERITED)))
            setattr(owner, name, blocker)
            holders = [vars(m) for m in list(sys.modules.values()) if hasattr(m, "__dict__")]
            for mapping in [*holders, *([namespace] if namespace is not None else [])]:
                for key, value in list(mapping.items()):
                    if value is original:
                        saved.append((mapping, key, True, value))
                        mapping[key] = blocker
        yield
    finally:
        for owner, name, is_mapping, original in reversed(saved):
            if is_mapping:
                owner[name] = original
            elif original is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, original)



def attempt(fn: Callable[..., Any], *args: Any, name: str | None = None) -> Any:
    """``fn(*args)``, failing with one line when ``fn`` is still the unwritten stub."""
    label = name or getattr(fn, "__name__", "your function")
    try:
        result = fn(*args)
    except NotImplementedError:
        raise AssertionError(f"{label} is not written yet: replace the stub in the exercise "
                             "cell") from None
    if result is None or result is Ellipsis:
        raise AssertionError(f"{label} returned {result!r}: write its body (the exercise cell)")
    return result


def fingerprint(value: Any) -> str:
    """A short stable hash of ints, strings, nested lists/tuples, or an integer tensor/array."""
    if hasattr(value, "tolist"):
        value = (tuple(getattr(value, "shape", ())), value.tolist())
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]
