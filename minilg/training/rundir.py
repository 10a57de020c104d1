"""The output folder of a run: checked before anything else, and locked while a run writes.

One run per folder: :func:`run_lock` holds an OS file lock (``fcntl.flock`` / ``msvcrt``, via
the ``filelock`` package) on ``<out>/.minilg.lock`` for the whole run. The operating system drops
the lock when the process ends, however it ends, so a killed run never leaves it stuck; a second
run into the same folder is refused at once with :class:`RunLockedError`.

:func:`claim_out_folder` is what a run does first with its folder: check it, lock it, refuse a
fresh run over a checkpoint and a resume without one (or with another config), and remove what an
interrupted save left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from minilg.errors import (
    CheckpointError,
    ConfigError,
    NothingToResumeError,
    RunExistsError,
    RunLockedError,
)
from minilg.training import checkpoint as ckpt
from minilg.training.config import TrainConfig

__all__ = [
    "LOCK_FILE", "RUN_OUTPUTS", "check_not_inside_data", "check_writable_folder",
    "claim_out_folder", "foreign_outputs", "run_lock", "saved_config",
]

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


def claim_out_folder(cfg: TrainConfig, out_dir: Path | None, held: contextlib.ExitStack) -> bool:
    """Check and lock the out folder (the lock is held in ``held``); returns whether the run
    resumes."""
    if out_dir is None:
        if cfg.resume:
            raise ConfigError("resume", "needs an out folder to resume from (--out)")
        return False
    check_not_inside_data(out_dir, cfg.root)
    check_writable_folder(out_dir)
    foreign = [] if cfg.resume else foreign_outputs(out_dir)
    if foreign:  # refused before the lock file would mark the folder as a run's
        raise RunExistsError(
            f"{out_dir} already holds {', '.join(foreign)}, which no minilg run wrote there: "
            "move them away or choose another out folder"
        )
    held.enter_context(run_lock(out_dir))
    recovered = ckpt.recover_latest(out_dir)
    if recovered is not None:
        print(f"note: {out_dir / ckpt.CHECKPOINTS_DIR / ckpt.LATEST_FILE} was missing; it names "
              f"{recovered.name} again, the newest complete checkpoint", file=sys.stderr)
    if cfg.resume and not ckpt.has_checkpoint(out_dir):
        raise NothingToResumeError(
            f"nothing to resume in {out_dir}: it holds no checkpoint (one is written after each "
            "epoch); start the run without --resume, or check --out"
        )
    if not cfg.resume and ckpt.has_checkpoint(out_dir):
        raise RunExistsError(
            f"{out_dir} already holds a checkpoint: pass resume=True (--resume) to continue "
            "it, or choose another out folder"
        )
    removed = ckpt.clean_orphans(out_dir)
    if removed and cfg.verbose:
        print(f"note: removed what an interrupted save left in {out_dir}: {', '.join(removed)}")
    if cfg.resume:
        _check_resume_config(saved_config(out_dir), cfg)
    return cfg.resume


# What a run writes in its folder; a fresh run replaces them only in a folder minilg has run in.
RUN_OUTPUTS = (ckpt.CONFIG_FILE, "metrics.csv", "metrics.json", "curves.png", ckpt.CHECKPOINTS_DIR)


def foreign_outputs(out_dir: Path) -> list[str]:
    """The files a run writes (``config.json``, ``metrics.csv``, ...) that ``out_dir`` holds
    although no run was ever started there. The marker of a run folder is its lock file, which
    the first run creates before writing anything."""
    if (out_dir / LOCK_FILE).is_file():
        return []
    return [n for n in RUN_OUTPUTS if os.path.lexists(out_dir / n)]


def check_not_inside_data(out_dir: Path, root: str | None) -> None:
    """ConfigError when the out folder is the data folder ``root`` or inside it: a run never
    writes into the source of its own input."""
    if not root:
        return
    data, out = Path(root).expanduser().resolve(), out_dir.expanduser().resolve()
    if out == data or data in out.parents:
        raise ConfigError(
            "out", f"{out_dir} is inside the data folder --root {root}: a run never writes into "
            "its data; choose a folder outside it"
        )


def saved_config(out_dir: Path) -> dict[str, Any]:
    """The ``config.json`` of the run in ``out_dir``."""
    try:
        saved: dict[str, Any] = json.loads((out_dir / ckpt.CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{out_dir / ckpt.CONFIG_FILE} cannot be read ({e})") from None
    return saved


def _check_resume_config(saved: dict[str, Any], cfg: TrainConfig) -> None:
    def plain(c: TrainConfig) -> dict[str, Any]:  # tuples -> lists, as in config.json
        d: dict[str, Any] = json.loads(json.dumps(c.to_dict()))
        return d

    current, before = plain(cfg), plain(TrainConfig.from_dict(saved))
    diff = [
        f"{k}: {before[k]!r} -> {current[k]!r}"
        for k in current
        if k not in ckpt.RESUME_MAY_CHANGE and current[k] != before[k]
    ]
    if diff:
        raise ConfigError(
            "resume", f"cannot resume {cfg.out}: the config differs from the checkpoint's ("
            + "; ".join(diff) + "); resume with the same options or choose another out folder"
        )
