"""Measuring one configuration (a case at one map size, every path), and what time implies.

Timing survives a shared machine by **pairing**: every path's forward and forward + backward
and one fp32 ``n x n`` matmul (the **matmul peak**, measured interleaved with the cases) are
timed once per *round*, in an order rotated from round to round (:func:`round_order`: ``A B``,
``B A``, ...), so that a load spike hits every path of a round alike. The speed-up of a path over
the baseline is the **median of the per-round ratios** ``baseline / path``, with their
interquartile range (:func:`paired_ratio`); times are medians over the rounds, the spread their
interquartile range relative to the median (:func:`spread`). CUDA events on a GPU,
``perf_counter`` on the CPU.

Also: **achieved GFLOP/s** of the forward (``2 x MACs x batch / time``) against the peak measured
in the same rounds; the output difference of each path from the core,
``max|path - core| / max(1, max|core|)``; the **scaling exponent** of time in the number of
tokens ``N = H W`` (:func:`scaling`: log-log slope between successive sizes, and from the
smallest to the largest).
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor

from minilg.attention.base import TokenMixer
from minilg.bench.baseline import core_attend_calls
from minilg.bench.cases import Case
from minilg.bench.memory import peak_bytes
from minilg.bench.settings import BASELINE, MIB, PATHS, Settings, path_context, synchronize

__all__ = ["Ratio", "Row", "elapsed", "exponent", "matmul_peak", "measure", "paired_ratio",
           "paired_rounds", "round_order", "runners", "scaling", "spread"]

T = TypeVar("T")
Timer = Callable[[Callable[[], object]], float]


@dataclass
class Row:
    """One (case, map size, path) measurement; times in ms, memory in MiB, MACs per image.

    ``speedup_*``: median over the rounds of ``baseline time / this path's time`` (the baseline
    is the plain path), ``speedup_*_iqr`` its ``[q1, q3]``; ``vs_straightforward_*`` the same
    against the straightforward path; ``peak_gflops`` the matmul peak timed in the same rounds,
    ``peak_fraction = gflops / peak_gflops``; ``diff`` this path's output against the core's.
    """

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
    speedup_fwd_iqr: list[float] = field(default_factory=list)
    speedup_fwdbwd_iqr: list[float] = field(default_factory=list)
    vs_straightforward_fwd: float = math.nan
    vs_straightforward_fwdbwd: float = math.nan
    peak_gflops: float = math.nan
    variant: str = ""


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


def round_order(names: Sequence[T], index: int) -> list[T]:
    """The order of round ``index``: ``names`` rotated by ``index // 2``, reversed on odd
    rounds. Two names give ``A B, B A, B A, A B, ...``; three give all six orders every six
    rounds, so every name runs before and after every other equally often."""
    shift = (index // 2) % len(names) if names else 0
    order = [*names[shift:], *names[:shift]]
    return order[::-1] if index % 2 else order


def paired_rounds(
    calls: Mapping[str, Callable[[], object]], rounds: int, timer: Timer
) -> dict[str, list[float]]:
    """Time every call once per round, in :func:`round_order`; ``timer(fn)`` returns one
    call's time. Returns each name's times, one per round, in round order."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for index in range(rounds):
        for name in round_order(list(calls), index):
            samples[name].append(timer(calls[name]))
    return samples


@dataclass(frozen=True)
class Ratio:
    """The median of per-round ratios and its interquartile range ``[q1, q3]``."""

    median: float
    q1: float
    q3: float


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Ratio:
    """Median and quartiles (inclusive method) of ``numerator[i] / denominator[i]`` over the
    rounds ``i`` (a round's two times were measured side by side)."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    if not ratios:
        return Ratio(math.nan, math.nan, math.nan)
    median = statistics.median(ratios)
    if len(ratios) < 2:
        return Ratio(median, median, median)
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return Ratio(median, q1, q3)


MODES = ("fwd", "fwd+bwd")


def _outputs(run: dict[str, tuple[Callable[[], Tensor], Callable[[], None]]]) -> dict[str, float]:
    """Each path's output difference from the core's (the core's: the largest of the others);
    the plain path must not reach the core's ``attend`` (else it would not be a baseline)."""
    outputs: dict[str, Tensor] = {}
    for path, (forward, _) in run.items():
        holder: list[Tensor] = []

        def first(forward: Callable[[], Tensor] = forward, holder: list[Tensor] = holder) -> None:
            holder.append(forward())

        calls = core_attend_calls(first)
        if path == BASELINE and calls:
            raise RuntimeError("the plain path reached the core's attend: some module calls "
                               "it by a name plain_math does not route")
        outputs[path] = holder[0].float()
    core = outputs["core"]
    scale = core.abs().max().clamp(min=1)
    diff = {p: float((o - core).abs().max() / scale) for p, o in outputs.items() if p != "core"}
    diff["core"] = max(diff.values(), default=0.0)
    return diff


def measure(
    case: Case, size: int, settings: Settings, peak_n: int, paths: Sequence[str] = PATHS,
    timer: Timer | None = None,
) -> list[Row]:
    """Every path of ``case`` at ``size``: paired, rotated rounds with the matmul peak,
    memory, output difference from the core. ``timer(fn)`` gives one call's milliseconds
    (default :func:`elapsed`); the calls of a round are ``<path> fwd``, ``<path> fwd+bwd`` for
    each path in order, then ``matmul``, rotated by :func:`round_order`."""
    torch.manual_seed(0)
    x = torch.randn(settings.batch, size, size, case.dim, device=settings.device)
    x = x.to(settings.dtype)
    run = {path: runners(case.mixer, x, path) for path in paths}
    diff = _outputs(run)  # also the first warm-up
    for _ in range(settings.warmup):
        for path in paths:
            run[path][0]()
            run[path][1]()
    a, b = (torch.randn(peak_n, peak_n, device=settings.device) for _ in range(2))
    calls: dict[str, Callable[[], object]] = {
        f"{p} {m}": run[p][i] for p in paths for i, m in enumerate(MODES)}
    calls["matmul"] = lambda: torch.mm(a, b)
    timed = paired_rounds(calls, settings.repeats,
                          timer or (lambda fn: elapsed(fn, settings.device) * 1e3))
    peak = 2 * peak_n**3 / (statistics.median(timed["matmul"]) / 1e3) / 1e9
    memory = {(p, m): peak_bytes(run[p][i], settings.device) / MIB
              for p in paths for i, m in enumerate(MODES)}
    macs = case.mixer.macs(size, size)
    return [_row(case, size, settings, path, macs, timed, memory, diff[path], peak)
            for path in paths]


def _row(case: Case, size: int, settings: Settings, path: str, macs: int,
         timed: dict[str, list[float]], memory: dict[tuple[str, str], float], diff: float,
         peak: float) -> Row:
    fwd, fwdbwd = timed[f"{path} fwd"], timed[f"{path} fwd+bwd"]
    fwd_ms, fwdbwd_ms = statistics.median(fwd), statistics.median(fwdbwd)
    gflops = 2 * macs * settings.batch / (fwd_ms / 1e3) / 1e9
    ratios = {(base, mode): paired_ratio(timed[f"{base} {mode}"], timed[f"{path} {mode}"])
              for base in (BASELINE, "straightforward") for mode in MODES
              if f"{base} {mode}" in timed}
    nan = Ratio(math.nan, math.nan, math.nan)
    speed = [ratios.get((BASELINE, mode), nan) for mode in MODES]
    versus = [ratios.get(("straightforward", mode), nan) for mode in MODES]
    return Row(
        case.name, case.family, case.model, case.stage, case.block, case.mixer_name, case.dim,
        size, size * size, settings.batch, str(settings.dtype).split(".")[-1],
        str(settings.device), settings.threads, path, macs, fwd_ms, spread(fwd), fwdbwd_ms,
        spread(fwdbwd), gflops, gflops / peak, memory[path, "fwd"], memory[path, "fwd+bwd"],
        speed[0].median, speed[1].median, diff, fwd, fwdbwd, [speed[0].q1, speed[0].q3],
        [speed[1].q1, speed[1].q3], versus[0].median, versus[1].median, peak, case.variant)


def exponent(t1: float, t2: float, n1: int, n2: int) -> float:
    """Log-log slope ``log(t2/t1) / log(n2/n1)``."""
    return math.log(t2 / t1) / math.log(n2 / n1)


def scaling(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Time exponents in the number of tokens, per case and path: successive sizes and overall."""
    out: list[dict[str, Any]] = []
    for case in dict.fromkeys(row.case for row in rows):
        for path in dict.fromkeys(row.path for row in rows if row.case == case):
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
