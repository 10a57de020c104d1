"""Expected failures, each with a message meant for a user: the bottom layer of the package.

Every module may import this one; it imports nothing of minilg. The command line
(:mod:`minilg.cli`) prints any :class:`MinilgError` as one ``error: ...`` line on stderr and exits
with its :attr:`~MinilgError.exit_code`; anything else keeps its traceback.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetUnavailableError",
    "MinilgError",
    "NothingToResumeError",
    "RunExistsError",
    "RunLockedError",
    "TrainingDivergedError",
]


_NO_VALUE: Any = object()


class MinilgError(Exception):
    """Base class: an expected failure whose message says what went wrong and what to do."""

    exit_code: int = 2


class ConfigError(MinilgError, ValueError):
    """One option has a value outside its range (or of the wrong type).

    ``str(e)`` reads ``"epochs must be an integer >= 1, got 0"`` (or ``"model: <sentence>"`` when
    no value is given); the command line shows the same text with the option's flag
    (``--epochs``) in place of the field name, via :meth:`with_flag`.
    """

    def __init__(self, field: str, problem: str, value: Any = _NO_VALUE) -> None:
        self.field = field
        self.problem = problem
        self.value = value
        super().__init__(self._text(field))

    def _text(self, name: str) -> str:
        if self.value is _NO_VALUE:  # a whole sentence: "model: unknown model 'x' ..."
            return f"{name}: {self.problem}"
        return f"{name} {self.problem}, got {self.value!r}"

    def with_flag(self) -> str:
        """The message with ``--flag-name`` in place of the field name."""
        return self._text("--" + self.field.replace("_", "-"))


class RunLockedError(MinilgError):
    """Another process is writing to the same output folder."""


class RunExistsError(MinilgError, FileExistsError):
    """The output folder already holds a run's checkpoint and ``resume`` was not asked for."""


class CheckpointError(MinilgError):
    """A checkpoint is missing, corrupt, inconsistent, foreign, or could not be written."""


class NothingToResumeError(CheckpointError):
    """``resume=True`` but the output folder holds no checkpoint."""


class TrainingDivergedError(MinilgError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be loaded: offline, gated, missing, or unreadable.

    The message says what was tried, why each attempt failed (with the original exception
    text) and what to do about it.

    Attributes:
        name: the subset name passed to :func:`minilg.data.load_subset`.
        reason: one of ``"offline"``, ``"gated"``, ``"missing"``, ``"script"``, ``"error"``.
        attempts: ``(what was tried, why it failed)`` pairs, in order.
    """

    def __init__(
        self, message: str, *, name: str, reason: str, attempts: list[tuple[str, str]]
    ) -> None:
        super().__init__(message)
        self.name = name
        self.reason = reason
        self.attempts = attempts

    def one_line(self) -> str:
        """The message on one line: what failed, what was tried, the first thing to do."""
        lines = str(self).splitlines()
        tried = [ln.strip() for ln in lines if re.match(r"\s+\d+\. ", ln)]
        todo = [ln.strip()[2:] for ln in lines if ln.startswith("  - ")]
        text = lines[0] if lines else f"dataset {self.name!r} is not available"
        if tried:
            text += " Tried: " + "; ".join(t.split(". ", 1)[-1] for t in tried) + "."
        if todo:
            text += " What to do: " + " / ".join(todo[:2])
        return text


class DataError(ValueError):
    """The data contradicts itself (e.g. a class folder in ``val/`` that ``train/`` lacks) or
    its cache cannot be used; the message names the folder or file and what to do."""
