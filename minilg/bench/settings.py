"""What every part of the benchmark shares: its settings, its error, the three paths compared."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from minilg.attention.base import reference_math
from minilg.bench.baseline import plain_math
from minilg.errors import MinilgError

__all__ = ["BASELINE", "DTYPES", "MIB", "PATHS", "BenchError", "Settings", "path_context",
           "synchronize"]

#: The three versions of every mixer: the core; the plain baseline (explicit scores, the mask
#: broadcast, geometry cached: :mod:`~minilg.bench.baseline`); and the older straightforward
#: path (:func:`~minilg.attention.base.reference_math`: the mask materialised per sample,
#: geometry rebuilt on every call).
PATHS = ("core", "plain", "straightforward")
#: The path every speed-up is measured against.
BASELINE = "plain"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIB = 2.0**20


class BenchError(MinilgError, ValueError):
    """An expected failure of the benchmark (bad option, nothing to run): one line, exit 2."""


@dataclass(frozen=True)
class Settings:
    """How every configuration is run: device, dtype, batch, paired rounds (``repeats``: each
    round times every path once, in rotated order), untimed runs first, threads."""

    device: torch.device
    dtype: torch.dtype
    batch: int
    repeats: int
    warmup: int
    threads: int


def path_context(path: str) -> contextlib.AbstractContextManager[None]:
    """The context of one path: :func:`~minilg.bench.baseline.plain_math` for the plain
    baseline, :func:`~minilg.attention.base.reference_math` for the straightforward version,
    nothing for the core."""
    if path == "plain":
        return plain_math()
    return reference_math() if path == "straightforward" else contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
