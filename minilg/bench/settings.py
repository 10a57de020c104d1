"""What every part of the benchmark shares: its settings, its error, the two paths compared."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from minilg.attention.base import reference_math
from minilg.errors import MinilgError

__all__ = ["DTYPES", "MIB", "PATHS", "BenchError", "Settings", "path_context", "synchronize"]

#: The two versions of every mixer: the core, and the same math done straightforwardly.
PATHS = ("core", "straightforward")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIB = 2.0**20


class BenchError(MinilgError, ValueError):
    """An expected failure of the benchmark (bad option, nothing to run): one line, exit 2."""


@dataclass(frozen=True)
class Settings:
    """How every configuration is run: device, dtype, batch, timed and untimed runs, threads."""

    device: torch.device
    dtype: torch.dtype
    batch: int
    repeats: int
    warmup: int
    threads: int


def path_context(path: str) -> contextlib.AbstractContextManager[None]:
    """The context of one path: :func:`~minilg.attention.base.reference_math` for the
    straightforward version, nothing for the core."""
    return reference_math() if path == "straightforward" else contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
