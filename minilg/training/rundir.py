"""The output folder of a run: checked before anything else, and locked while a run writes.

One run per folder: :func:`run_lock` holds an OS file lock (``fcntl.flock`` / ``msvcrt``, via
the ``filelock`` package) on ``<out>/.minilg.lock`` for the whole run. The operating system drops
the lock when the process ends, however it ends, so a killed run never leaves it stuck; a second
run into the same folder is refused at once with :class:`RunLockedError`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from minilg.errors import ConfigError, RunLockedError

__all__ = ["LOCK_FILE", "check_writable_folder", "run_lock"]

LOCK_FILE = ".minilg.lock"


def check_writable_folder(path: str | Path, field: str = "out") -> Path:
    """Create ``path`` if needed and prove it is a writable folder (ConfigError otherwise)."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(field, f"{p} is a file, not a folder: choose a folder path")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".minilg-probe-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(
            field, f"cannot write to {p} ({e.strerror or e}): choose a writable folder"
        ) from None
    return p


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s run lock for the block; RunLockedError if another process holds it."""
    lock = FileLock(str(out_dir / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLockedError(
            f"{out_dir} is in use by another minilg run (it holds {out_dir / LOCK_FILE}); wait "
            "for it to finish or choose another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()
