"""Writing files safely and showing progress: the I/O helpers every layer of the package shares.

- :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`write_json` and
  :func:`atomic_write_with` write into a temporary file in the target's folder, fsync it, then
  :func:`os.replace` it over the target: a reader sees the old file or the new one, never half of
  one, and a failure (a full disk, a kill) leaves no partial file behind.
- :func:`progress_enabled` is the one rule for progress bars (an interactive stderr, and neither
  ``MINILG_QUIET`` nor ``CI`` set); :func:`progress` wraps ``tqdm`` with it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_with",
    "progress",
    "progress_enabled",
    "write_json",
]

_T = TypeVar("_T")
_OFF = ("", "0", "false", "False")


def atomic_write_with(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, fsync it, then move it to ``path``.

    For writers that take a path (``np.save``, ``safetensors.torch.save_file``, ``Image.save``).
    The temporary file keeps ``path``'s suffix so that such writers do not append their own.
    It is removed if ``write`` (or the move) fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix,
                                dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes | Callable[[], bytes]) -> None:
    """Write ``data`` to ``path`` atomically.

    ``data`` may be a callable producing the bytes, so that a failure while *producing* them
    also leaves no partial file behind.
    """
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data() if callable(data) else data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically write a UTF-8 text file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (with a final newline)."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def progress_enabled() -> bool:
    """Progress bars show only on an interactive stderr, never with ``MINILG_QUIET`` or ``CI``
    set to anything but empty, ``0`` or ``false``."""
    if any(os.environ.get(var, "") not in _OFF for var in ("MINILG_QUIET", "CI")):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress(
    iterable: Iterable[_T], *, total: int | None = None, desc: str = "", unit: str = "it"
) -> Iterator[_T]:
    """``tqdm`` around ``iterable``, shown only where :func:`progress_enabled` says so."""
    yield from tqdm(
        iterable, total=total, desc=desc, unit=unit, disable=not progress_enabled(), leave=False
    )
