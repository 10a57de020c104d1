"""Measuring one configuration (a case at one map size, both paths), and what time implies.

* **forward** and **forward + backward** time: median of ``repeats`` runs after ``warmup``, the
  core and the straightforward version *interleaved* (one of each in turn), so that a noisy
  machine slows both alike; CUDA events on a GPU, ``perf_counter`` on the CPU; the spread is the
  interquartile range relative to the median;
* **achieved GFLOP/s** of the forward (``2 x MACs x batch / time``) against the **matmul peak**
  (:func:`matmul_peak`, an fp32 square matmul);
* the **speed-up** of the core over the straightforward version, the output difference
  ``max|core - ref| / max(1, max|ref|)``, and the **scaling exponent** of time in the number of
  tokens ``N = H W`` (:func:`scaling`: log-log slope between successive sizes, and from the
  smallest to the largest).
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from minilg.attention.base import TokenMixer
from minilg.bench.cases import Case
from minilg.bench.memory import peak_bytes
from minilg.bench.settings import MIB, PATHS, Settings, path_context, synchronize

__all__ = ["Row", "elapsed", "exponent", "matmul_peak", "measure", "runners", "scaling",
           "spread"]


@dataclass
class Row:
    """One (case, map size, path) measurement; times in ms, memory in MiB, MACs per image."""

    case: str
    family: str
    model: str
    stage: int
    block: int
    mixer: str
    dim: int
    size: int
    tokens: int
    batch: int
    dtype: str
    device: str
    threads: int
    path: str
    macs: int
    fwd_ms: float
    fwd_spread: float
    fwdbwd_ms: float
    fwdbwd_spread: float
    gflops: float
    peak_fraction: float
    fwd_mib: float
    fwdbwd_mib: float
    speedup_fwd: float
    speedup_fwdbwd: float
    diff: float
    fwd_samples_ms: list[float] = field(default_factory=list)
    fwdbwd_samples_ms: list[float] = field(default_factory=list)


def elapsed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes (CUDA events on a GPU, ``perf_counter`` otherwise)."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / 1e3
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def matmul_peak(device: torch.device, n: int, repeats: int, warmup: int) -> float:
    """GFLOP/s of an fp32 ``n x n`` matmul (``2 n^3`` FLOPs), median of ``repeats``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(max(warmup, 1)):
        torch.mm(a, b)
    times = [elapsed(lambda: torch.mm(a, b), device) for _ in range(max(repeats, 1))]
    return 2 * n**3 / statistics.median(times) / 1e9


def spread(samples: Sequence[float]) -> float:
    """Interquartile range over the median (0 for fewer than 2 samples)."""
    if len(samples) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(samples)


def runners(
    mixer: TokenMixer, x: Tensor, path: str
) -> tuple[Callable[[], Tensor], Callable[[], None]]:
    """``forward()`` (no grad, returns the output) and ``forward_backward()`` for one path."""
    x_grad = x.detach().clone().requires_grad_(True)

    def forward() -> Tensor:
        with path_context(path), torch.no_grad():
            out: Tensor = mixer(x)
        return out

    def forward_backward() -> None:
        mixer.zero_grad(set_to_none=True)
        x_grad.grad = None
        with path_context(path):
            mixer(x_grad).float().sum().backward()

    return forward, forward_backward


Runs = dict[str, tuple[Callable[[], Tensor], Callable[[], None]]]


def _samples(run: Runs, settings: Settings) -> dict[tuple[str, int], list[float]]:
    """Milliseconds of ``repeats`` interleaved runs per (path, mode) after ``warmup`` runs;
    mode 0 is the forward, 1 forward + backward."""
    for _ in range(settings.warmup):
        for path in PATHS:
            run[path][0]()
            run[path][1]()
    samples: dict[tuple[str, int], list[float]] = {(p, m): [] for p in PATHS for m in (0, 1)}
    for _ in range(settings.repeats):
        for path in PATHS:
            for mode in (0, 1):
                samples[path, mode].append(elapsed(run[path][mode], settings.device) * 1e3)
    return samples


def measure(case: Case, size: int, settings: Settings, peak_gflops: float) -> list[Row]:
    """Both paths of ``case`` at ``size``: interleaved timing, memory, output difference."""
    torch.manual_seed(0)
    x = torch.randn(settings.batch, size, size, case.dim, device=settings.device)
    x = x.to(settings.dtype)
    run = {path: runners(case.mixer, x, path) for path in PATHS}
    outputs = {path: run[path][0]().float() for path in PATHS}  # also the first warm-up
    reference = outputs["straightforward"]
    diff = float((outputs["core"] - reference).abs().max() / reference.abs().max().clamp(min=1))
    del outputs, reference
    samples = _samples(run, settings)
    memory = {(p, m): peak_bytes(run[p][m], settings.device) / MIB for p in PATHS for m in (0, 1)}
    median = {key: statistics.median(value) for key, value in samples.items()}
    macs = case.mixer.macs(size, size)
    rows = []
    for path in PATHS:
        gflops = 2 * macs * settings.batch / (median[path, 0] / 1e3) / 1e9
        rows.append(Row(
            case.name, case.family, case.model, case.stage, case.block, case.mixer_name,
            case.dim, size, size * size, settings.batch, str(settings.dtype).split(".")[-1],
            str(settings.device), settings.threads, path, macs,
            median[path, 0], spread(samples[path, 0]), median[path, 1], spread(samples[path, 1]),
            gflops, gflops / peak_gflops, memory[path, 0], memory[path, 1],
            median["straightforward", 0] / median[path, 0],
            median["straightforward", 1] / median[path, 1], diff,
            samples[path, 0], samples[path, 1],
        ))
    return rows


def exponent(t1: float, t2: float, n1: int, n2: int) -> float:
    """Log-log slope ``log(t2/t1) / log(n2/n1)``."""
    return math.log(t2 / t1) / math.log(n2 / n1)


def scaling(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Time exponents in the number of tokens, per case and path: successive sizes and overall."""
    out: list[dict[str, Any]] = []
    for case in dict.fromkeys(row.case for row in rows):
        for path in PATHS:
            series = sorted((r for r in rows if r.case == case and r.path == path),
                            key=lambda r: r.tokens)
            pairs = list(itertools.pairwise(series))
            if len(series) > 2:
                pairs.append((series[0], series[-1]))
            for a, b in pairs:
                out.append({
                    "case": case, "path": path, "from": a.size, "to": b.size,
                    "macs": exponent(a.macs, b.macs, a.tokens, b.tokens),
                    "fwd": exponent(a.fwd_ms, b.fwd_ms, a.tokens, b.tokens),
                    "fwdbwd": exponent(a.fwdbwd_ms, b.fwdbwd_ms, a.tokens, b.tokens),
                })
    return out
