"""``python -m minilg bench``: cost and speed of every mixer, beside a straightforward version.

What it measures, for each *case* (one mixer of one model's stage) at each map size:

* **exact MACs** of one image, the mixer's closed form ``macs(H, W)``;
* **forward** and **forward + backward** time: median of ``--repeats`` runs after ``--warmup``,
  the core and the straightforward version *interleaved* (one of each in turn), so that a noisy
  machine slows both alike; CUDA events on a GPU, ``perf_counter`` on the CPU; the spread is the
  interquartile range relative to the median;
* **achieved GFLOP/s** of the forward (``2 x MACs x batch / time``) against the **matmul peak**
  measured in the same run (an fp32 square matmul of ``n = 2048``, median of ``--repeats``,
  measured before and after the cases; the better of the two);
* **peak memory** of the forward and of forward + backward above what was allocated before
  (``torch.profiler`` with ``profile_memory=True`` on the CPU, ``max_memory_allocated`` on CUDA);
* the **speed-up** of the core over the straightforward version, and the **scaling exponent**
  of time in the number of tokens ``N = H W`` (log-log slope between successive sizes, and from
  the smallest to the largest).

The straightforward version is the same mixer inside :func:`minilg.attention.reference_math`:
explicit batched ``q @ k.transpose``, softmax and ``@ v``, masks materialised for every sample,
geometry rebuilt on every call, no Python loops over windows. Its output is compared with the
core's on every configuration (column ``diff``: ``max|core - ref| / max(1, max|ref|)``).

Cases come from the model registry, so a new mechanism appears without touching this file: for
each family, its canonical model (the first full-size model registered; a family with only mini
models is rebuilt in Swin-T's frame, C = 96, 3 heads, 224 px, when its config allows it), and
the distinct mixers of each chosen stage (Swin's W-MSA *and* SW-MSA, block 0 and block 1),
run at every requested map size with that stage's channels.

With ``--breakdown``, each configuration measured also profiles the case's whole **block**
(norms, mixer, MLP, residual adds; forward without grad, same batch): where its time goes and its
exact MACs, in the categories of :data:`CATEGORIES` (projections, attention, bias & masks,
gather/pool, convolution, MLP, norms, residual/other, and the overhead between operators). Scopes
come from hooks on the block's modules and wrappers around ``attend`` and the attention kernels
(:func:`tracking`); time from ``torch.profiler`` operator events (:func:`attribute`), MACs from
``FlopCounterMode`` (:func:`macs_breakdown`), whose categories sum to the block's closed form.

The JSON records how the figures were made: the command line, date, torch version, CPU model,
threads, load average and a free ``--note`` (e.g. what else ran on the machine).

Configurations whose straightforward forward would hold score tensors (``B x groups x heads x
Tq x Tk`` elements, measured on the meta device, so free) larger than ``--memory-limit`` are
skipped with a note, never attempted. Targets are printed as measured against target; they are
never asserted (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import itertools
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

import minilg.models  # noqa: F401  (registers every family)
from minilg import registry
from minilg.attention.base import TokenMixer, reference_math
from minilg.attention.window import WindowAttention
from minilg.io import progress_enabled

PATHS = ("core", "straightforward")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_SIZES = (28, 56, 112, 224)
OLD_BLOCK_MIB = 1555.0  # stage-1 SW block, batch 128, forward without grad, before the core
FRAME_OVERRIDES: dict[str, Any] = {  # Swin-T's frame, for families without a full-size model
    "dims": (96, 192, 384, 768), "depths": (2, 2, 6, 2), "heads": (3, 6, 12, 24),
    "img_size": 224, "patch_size": 4, "num_classes": 1000,
}
MIB = 2.0**20


class BenchError(ValueError):
    """An expected failure of the command (bad option, nothing to run): one line, exit 2."""


# --------------------------------------------------------------------------------------------
# Cases: one mixer of one model's stage, found through the registry
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One mixer to benchmark: ``mixer`` is the module itself, with the model's weights."""

    name: str  # "swin_tiny s1.b1 SW-MSA"
    family: str
    model: str
    stage: int  # 1-based, as in the papers
    block: int  # 0-based index inside the stage
    mixer_name: str
    dim: int
    mixer: TokenMixer = field(repr=False, compare=False)
    block_module: nn.Module | None = field(default=None, repr=False, compare=False)


def mixer_label(mixer: nn.Module) -> str:
    """A short name: the papers' for the known mixers, the class name otherwise."""
    names = {"FullAttention": "MSA", "SpatialReductionAttention": "SRA",
             "GlanceGazeAttention": "GG-MSA"}
    if isinstance(mixer, WindowAttention):
        return "SW-MSA" if any(mixer.shift) else "W-MSA"
    return names.get(type(mixer).__name__, type(mixer).__name__)


def canonical_models() -> dict[str, tuple[str, dict[str, Any]]]:
    """``family -> (model name, overrides)``: the first full-size model registered per family.

    A family with only mini models gets its first mini model with :data:`FRAME_OVERRIDES`
    (Swin-T's dims, heads and resolution) so its mixer runs at the same channels as the others.
    """
    entries = list(registry._REGISTRY.values())  # registration order
    chosen: dict[str, tuple[str, dict[str, Any]]] = {}
    for entry in entries:
        if not entry.mini and (entry.family not in chosen or chosen[entry.family][1]):
            chosen[entry.family] = (entry.name, {})
        elif entry.mini and entry.family not in chosen:
            chosen[entry.family] = (entry.name, dict(FRAME_OVERRIDES))
    families = list(dict.fromkeys(entry.family for entry in entries))
    return {family: chosen[family] for family in families}


def build_model(name: str, overrides: dict[str, Any]) -> tuple[nn.Module, str]:
    """The registered model (seeded) and its display name: ``name*`` when rebuilt in Swin-T's
    frame (the frame is dropped if the model's config refuses it)."""
    torch.manual_seed(0)
    if overrides:
        try:
            return registry.create_model(name, **overrides), f"{name}*"
        except (TypeError, ValueError):
            pass
    return registry.create_model(name), name


def stage_blocks(model: nn.Module) -> list[list[nn.Module]]:
    """Blocks per stage: ``model.stages[i]`` (hierarchical) or ``[model.blocks]`` (isotropic)."""
    if hasattr(model, "stages"):
        return [list(stage.blocks) for stage in model.stages]  # type: ignore[union-attr]
    if hasattr(model, "blocks"):
        return [list(model.blocks)]  # type: ignore[arg-type]
    return []


def discover_cases(
    families: Sequence[str] | None = None,
    mixers: Sequence[str] | None = None,
    stages: Sequence[int] = (1,),
) -> list[Case]:
    """Cases for the chosen families (all by default), stages (1-based) and mixer names.

    ``mixers`` matches the short name (``W-MSA``, ``SW-MSA``, ``GG-MSA``, ...) or the class name,
    case-insensitively. Unknown families are a :class:`BenchError` naming the known ones.
    """
    canonical = canonical_models()
    wanted = list(families) if families else list(canonical)
    unknown = [f for f in wanted if f not in canonical]
    if unknown:
        raise BenchError(f"unknown --families {unknown}; registered: {sorted(canonical)}")
    keys = {m.lower() for m in mixers} if mixers else None
    cases: list[Case] = []
    for family in wanted:
        model, name = build_model(*canonical[family])
        model.eval()
        for stage, blocks in enumerate(stage_blocks(model), start=1):
            if stage not in stages:
                continue
            seen: set[str] = set()
            for index, block in enumerate(blocks):
                mixer = getattr(block, "mixer", None)
                if not isinstance(mixer, TokenMixer) or repr(mixer) in seen:
                    continue
                seen.add(repr(mixer))
                label = mixer_label(mixer)
                if keys is not None and not {label.lower(), type(mixer).__name__.lower()} & keys:
                    continue
                cases.append(Case(f"{name} s{stage}.b{index} {label}", family, name, stage,
                                  index, label, mixer.dim, mixer, block))
    return cases


# --------------------------------------------------------------------------------------------
# Measuring: time, memory, the score-tensor estimate, the matmul peak
# --------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's C++ start/stop lines (file descriptor 2) while it runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_peak_bytes(fn: Callable[[], object]) -> float:
    """Peak of the CPU memory allocated while ``fn`` runs, above the level before it.

    Replays the allocation and free events that ``torch.profiler`` records with
    ``profile_memory=True`` in time order; NaN if this torch build does not expose them.
    """
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        from torch._C._profiler import _EventType

        stack = list(prof.profiler.kineto_results.experimental_event_tree())
    except (AttributeError, ImportError):
        return math.nan
    sizes: list[tuple[int, int]] = []
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and "cpu" in str(event.extra_fields.device):
            sizes.append((event.start_time_ns, event.extra_fields.alloc_size))
    level = peak = 0
    for _, size in sorted(sizes):
        level += size
        peak = max(peak, level)
    return float(peak)


def peak_bytes(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of ``fn`` above what was allocated before (CPU profiler, or CUDA stats)."""
    if device.type != "cuda":
        return cpu_peak_bytes(fn)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) - before)


class _SoftmaxBytes(TorchFunctionMode):
    """Sums the bytes of every softmax output (the score tensors) computed under it."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in {"softmax", "_softmax", "log_softmax"} and isinstance(out, Tensor):
            self.bytes += out.numel() * out.element_size()
        return out


def score_bytes(mixer: TokenMixer, batch: int, size: int, dtype: torch.dtype) -> int:
    """Bytes of the score tensors of the straightforward forward, run on the meta device."""
    meta = copy.deepcopy(mixer).to(device="meta", dtype=dtype)
    x = torch.empty(batch, size, size, mixer.dim, device="meta", dtype=dtype)
    with _SoftmaxBytes() as counter, reference_math(), torch.no_grad():
        meta(x)
    return int(counter.bytes)


def estimated_bytes(
    mixer: TokenMixer, batch: int, size: int, dtype: torch.dtype
) -> tuple[int, str]:
    """:func:`score_bytes`, or, when a mixer cannot run on the meta device (data-dependent
    shapes), the upper bound of full attention ``B x heads x N^2`` and a note saying so."""
    try:
        return score_bytes(mixer, batch, size, dtype), ""
    except (RuntimeError, NotImplementedError) as e:
        heads = int(getattr(mixer, "heads", 1))
        bound = batch * heads * (size * size) ** 2 * torch.finfo(dtype).bits // 8
        return bound, f"full-attention bound (meta trace failed: {str(e).splitlines()[0]})"


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


# --------------------------------------------------------------------------------------------
# One configuration: a case at one map size, both paths
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Settings:
    device: torch.device
    dtype: torch.dtype
    batch: int
    repeats: int
    warmup: int
    threads: int


def path_context(path: str) -> contextlib.AbstractContextManager[None]:
    return reference_math() if path == "straightforward" else contextlib.nullcontext()


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
    for _ in range(settings.warmup):
        for path in PATHS:
            run[path][0]()
            run[path][1]()
    samples: dict[tuple[str, int], list[float]] = {(p, m): [] for p in PATHS for m in (0, 1)}
    for _ in range(settings.repeats):
        for path in PATHS:
            for mode in (0, 1):
                samples[path, mode].append(elapsed(run[path][mode], settings.device) * 1e3)
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


# --------------------------------------------------------------------------------------------
# Derived figures: scaling exponents, the stage-1 SW block's memory, the targets
# --------------------------------------------------------------------------------------------


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


def sw_block() -> tuple[str, nn.Module] | None:
    """The canonical Swin model's stage-1 SW-MSA block (its block 1), or ``None``."""
    canonical = canonical_models()
    if "swin" not in canonical:
        return None
    model, name = build_model(*canonical["swin"])
    blocks = stage_blocks(model.eval())
    if not blocks or len(blocks[0]) < 2:
        return None
    return f"{name} s1.b1", blocks[0][1]


def block_memory(settings: Settings, batch: int, size: int = 56) -> list[dict[str, Any]]:
    """Forward without grad of the stage-1 SW block and of its mixer alone at ``batch``:
    peak memory above the input, core vs straightforward."""
    found = sw_block()
    if found is None:
        return []
    name, block = found
    block = block.to(device=settings.device, dtype=settings.dtype)
    mixer: nn.Module = block.mixer  # type: ignore[assignment]
    dim = int(mixer.dim)  # type: ignore[arg-type]
    x = torch.randn(batch, size, size, dim, device=settings.device).to(settings.dtype)
    results = []
    for part, module in (("block", block), ("mixer", mixer)):
        for path in PATHS:

            def forward(module: nn.Module = module, path: str = path) -> None:
                with path_context(path), torch.no_grad():
                    module(x)

            mib = peak_bytes(forward, settings.device) / MIB
            results.append({"what": f"{name} {part}", "path": path, "batch": batch,
                            "size": size, "input_mib": x.numel() * x.element_size() / MIB,
                            "peak_mib": mib})
    return results


@dataclass(frozen=True)
class Target:
    """One of the issue's targets, as measured in this run (never asserted)."""

    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run
    note: str = ""


def _worst(values: Sequence[tuple[float, str]], low: bool = True) -> tuple[float, str] | None:
    finite = [v for v in values if math.isfinite(v[0])]
    if not finite:
        return None
    return min(finite) if low else max(finite)


def _conditions(settings: Settings, batch: int = 8, threads: int | None = 2) -> str:
    wanted = [f"batch {batch}"] + ([f"{threads} threads"] if threads else [])
    actual = [f"batch {settings.batch}"] + ([f"{settings.threads} threads"] if threads else [])
    if settings.device.type == "cuda":
        return "" if settings.batch == batch else f"target set at {', '.join(wanted)}"
    if wanted == actual:
        return ""
    return f"target set at {', '.join(wanted)}; run: {', '.join(actual)}"


def speedup_targets(rows: Sequence[Row], settings: Settings) -> list[Target]:
    """Core vs straightforward at map 56 (all mixers >= 1.0x, W-/SW-MSA >= 1.2x), and the
    W-/SW-MSA share of the matmul peak at map 56, C = 96 (>= 50 %)."""
    at56 = [r for r in rows if r.size == 56 and r.path == "core"]
    window = [r for r in at56 if r.mixer in {"W-MSA", "SW-MSA"}]
    note = _conditions(settings)
    targets = []
    for name, chosen, goal in (("every mixer: core / straightforward at map 56", at56, 1.0),
                               ("W-/SW-MSA: core / straightforward at map 56", window, 1.2)):
        worst = _worst([(r.speedup_fwd, f"{r.case} fwd") for r in chosen]
                       + [(r.speedup_fwdbwd, f"{r.case} fwd+bwd") for r in chosen])
        measured = "not measured" if worst is None else f"lowest {worst[0]:.2f}x ({worst[1]})"
        targets.append(Target(name, f">= {goal:.1f}x", measured,
                              None if worst is None else worst[0] >= goal, note))
    c96 = _worst([(r.peak_fraction, r.case) for r in window if r.dim == 96])
    targets.append(Target(
        "W-/SW-MSA at map 56, C 96: forward GFLOP/s / matmul peak", ">= 50%",
        "not measured" if c96 is None else f"lowest {100 * c96[0]:.0f}% ({c96[1]})",
        None if c96 is None else c96[0] >= 0.5, _conditions(settings, threads=None)))
    return targets


def exponent_target(rows: Sequence[Row]) -> Target:
    """Local mixers (MACs linear in N) scale their time with exponent <= 1.15 from 56 to 224."""
    values: list[tuple[float, str]] = []
    top = 0
    for case in dict.fromkeys(r.case for r in rows):
        series = {r.size: r for r in rows if r.case == case and r.path == "core"}
        larger = [s for s in series if s > 56]
        if 56 not in series or not larger:
            continue
        a, b = series[56], series[max(larger)]
        if exponent(a.macs, b.macs, a.tokens, b.tokens) <= 1.05:  # local: MACs ~ N
            values.append((exponent(a.fwd_ms, b.fwd_ms, a.tokens, b.tokens), case))
            top = max(top, b.size)
    worst = _worst(values, low=False)
    note = "" if top in (0, 224) else f"measured 56 -> {top} only"
    measured = "not measured" if worst is None else f"highest {worst[0]:.2f} ({worst[1]}, fwd)"
    return Target("local mixers: time exponent in N from map 56 to 224", "<= 1.15", measured,
                  None if worst is None else worst[0] <= 1.15, note)


def memory_target(blocks: Sequence[dict[str, Any]]) -> Target:
    """Stage-1 SW block at batch 128, forward without grad: at least 2x below 1,555 MiB."""
    core = [b for b in blocks if b["path"] == "core" and b["what"].endswith("block")]
    goal = f"<= {OLD_BLOCK_MIB / 2:.0f} MiB (2x below {OLD_BLOCK_MIB:,.0f})"
    if not core:
        return Target("stage-1 SW block memory (--block-memory)", goal, "not measured", None)
    mib, batch = core[0]["peak_mib"], core[0]["batch"]
    return Target(f"stage-1 SW block memory, batch {batch}", goal, f"{mib:,.0f} MiB",
                  mib <= OLD_BLOCK_MIB / 2, "" if batch == 128 else "target set at batch 128")


# --------------------------------------------------------------------------------------------
# Where a block spends its time and its MACs (--breakdown)
# --------------------------------------------------------------------------------------------

#: The categories of the breakdown, in plotting order. ``overhead`` is time only: the block's
#: wall time less the time of its operators (Python, dispatch, the hooks that mark the scopes).
CATEGORIES = ("projections", "attention", "bias & masks", "gather/pool", "convolution", "MLP",
              "norms", "residual/other", "overhead")
_PREFIX = "minilg::"
_GATHER_OPS = {"aten::cat", "aten::index", "aten::index_select", "aten::gather", "aten::expand"}


def module_labels(block: nn.Module) -> dict[nn.Module, str]:
    """The scope label of every module of a transformer block.

    Norms (LayerNorm, GroupNorm) anywhere are ``norms``; the rest of ``mlp`` is ``MLP``; a
    Linear directly under the mixer (``qkv``, ``q``, ``kv``, ``proj``) is ``projections``; a
    convolution in the mixer (GG's Gaze, PVT's reduction) ``convolution``; a position or region
    bias ``bias & masks``; any other mixer part (Focal's pooling) ``gather/pool``. The mixer
    itself is ``mixer`` and the block ``block``: the operators they run themselves are the
    mixer's gather/pool/partition/assignment work and the block's residual adds.
    """
    labels: dict[nn.Module, str] = {block: "block"}
    for name, module in block.named_modules():
        if module is block:
            continue
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            labels[module] = "norms"
        elif name == "mlp" or name.startswith("mlp."):
            labels[module] = "MLP"
        elif name == "mixer":
            labels[module] = "mixer"
        elif name.startswith("mixer."):
            if isinstance(module, nn.Linear) and name.count(".") == 1:
                labels[module] = "projections"
            elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
                labels[module] = "convolution"
            elif "Bias" in type(module).__name__:
                labels[module] = "bias & masks"
            else:
                labels[module] = "gather/pool"
        else:
            labels[module] = "residual/other"
    return labels


def category(label: str | None, op: str = "") -> str:
    """The breakdown category of operator ``op`` run directly inside scope ``label``.

    ``attend`` (the glue around the attention kernel) builds the bias-and-mask tensor and
    concatenates key sources: concatenation and indexing are ``gather/pool``, the rest
    ``bias & masks``. The attention kernel itself (SDPA, or scores, softmax and ``@ v``) is
    ``attention``.
    """
    if label == "attend":
        return "gather/pool" if op in _GATHER_OPS else "bias & masks"
    return {None: "residual/other", "block": "residual/other", "mixer": "gather/pool",
            "kernel": "attention"}.get(label, label or "residual/other")


class ScopeTracker:
    """A stack of scope labels, pushed and popped by module hooks and function wrappers.

    With ``annotate`` every scope is a ``torch.profiler`` range named ``minilg::<label>``; with a
    ``counter`` (a running ``FlopCounterMode``) the FLOPs counted since the last push or pop go
    to the category of the scope that was innermost, so the MACs of every category are exact.
    """

    def __init__(self, annotate: bool = False, counter: FlopCounterMode | None = None) -> None:
        self.annotate, self.counter = annotate, counter
        self.stack: list[tuple[str, Any]] = []
        self.flops = dict.fromkeys(CATEGORIES, 0)
        self._last = 0

    def _flush(self) -> None:
        if self.counter is not None:
            now = int(self.counter.get_total_flops())
            self.flops[category(self.stack[-1][0] if self.stack else None)] += now - self._last
            self._last = now

    def push(self, label: str) -> None:
        self._flush()
        scope = torch.profiler.record_function(_PREFIX + label) if self.annotate else None
        if scope is not None:
            scope.__enter__()  # type: ignore[no-untyped-call]
        self.stack.append((label, scope))

    def pop(self) -> None:
        self._flush()
        _, scope = self.stack.pop()
        if scope is not None:
            scope.__exit__(None, None, None)


def _scoped(fn: Callable[..., Any], label: str, tracker: ScopeTracker) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        tracker.push(label)
        try:
            return fn(*args, **kwargs)
        finally:
            tracker.pop()

    return wrapped


@contextlib.contextmanager
def tracking(block: nn.Module, tracker: ScopeTracker) -> Iterator[ScopeTracker]:
    """Mark the scopes of ``block`` while the block runs: hooks on its modules, and wrappers
    around :func:`minilg.attention.core.attend` (label ``attend``) and the attention kernels
    (``fused_attention``, ``explicit_attention``: label ``kernel``) wherever they are bound."""
    from minilg.attention import core

    handles = []
    for module, label in module_labels(block).items():
        handles.append(module.register_forward_pre_hook(
            lambda _m, _a, label=label: tracker.push(label)))
        handles.append(module.register_forward_hook(lambda _m, _a, _o: tracker.pop()))
    patched: list[tuple[Any, str, Any]] = []
    for name, label in (("attend", "attend"), ("fused_attention", "kernel"),
                        ("explicit_attention", "kernel")):
        original: Callable[..., Any] = getattr(core, name)
        for module_name, namespace in list(sys.modules.items()):
            if module_name.startswith("minilg") and getattr(namespace, name, None) is original:
                patched.append((namespace, name, original))
                setattr(namespace, name, _scoped(original, label, tracker))
    try:
        yield tracker
    finally:
        for namespace, name, original in patched:
            setattr(namespace, name, original)
        for handle in handles:
            handle.remove()


def macs_breakdown(block: nn.Module, size: int, dim: int) -> dict[str, int]:
    """Exact MACs of one image through ``block`` on a ``size x size`` map, per category.

    Counted by ``FlopCounterMode`` under the math SDPA backend, as
    :func:`minilg.complexity.count_macs`; the categories sum to the block's whole count.
    """
    param = next(block.parameters())
    x = torch.randn(1, size, size, dim, device=param.device, dtype=param.dtype)
    with (torch.no_grad(), sdpa_kernel(SDPBackend.MATH),
          FlopCounterMode(display=False) as counter):
        tracker = ScopeTracker(counter=counter)
        with tracking(block, tracker):
            block(x)
        tracker._flush()
    odd = [c for c, f in tracker.flops.items() if f % 2]
    if odd:
        raise RuntimeError(f"odd FLOP counts in {odd}: not multiply-accumulates")
    return {c: f // 2 for c, f in tracker.flops.items()}


def attribute(
    events: Sequence[Any], device: torch.device, wall_us: float | None = None
) -> dict[str, float]:
    """Microseconds per category from one profiled block call (``prof.events()``).

    Every operator called directly inside a ``minilg::`` scope (not from another operator) is
    counted once, with everything it calls, in the category of its innermost scope; ``overhead``
    is the outermost scope's duration (or ``wall_us``) less all of them. On a GPU operators count
    their device time and ``wall_us`` is the call's CUDA-event time, so overhead is idle device.
    """
    totals = dict.fromkeys(CATEGORIES, 0.0)
    wall = 0.0
    for event in events:
        name, parent = str(event.name), event.cpu_parent
        if name == _PREFIX + "block" and (parent is None or not parent.name.startswith(_PREFIX)):
            wall += float(event.cpu_time_total if device.type != "cuda"
                          else event.device_time_total)
        if name.startswith(_PREFIX) or parent is None or not parent.name.startswith(_PREFIX):
            continue
        spent = event.cpu_time_total if device.type != "cuda" else event.device_time_total
        totals[category(parent.name[len(_PREFIX):], name)] += float(spent)
    totals["overhead"] = (wall if wall_us is None else wall_us) - sum(totals.values())
    return totals


def time_breakdown(
    block: nn.Module, x: Tensor, settings: Settings
) -> tuple[dict[str, float], float, float]:
    """Forward without grad of ``block`` on ``x``: milliseconds per category of the profiled
    call whose total is the median of ``settings.repeats`` (each its own profiler session), so
    the categories sum to that total; the total; and the median time of the same call without
    the profiler (interleaved with the profiled ones)."""
    from torch.profiler import ProfilerActivity, profile

    device = settings.device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with torch.no_grad():
        for _ in range(settings.warmup):
            block(x)
        runs: list[dict[str, float]] = []
        plain: list[float] = []
        for _ in range(settings.repeats):
            plain.append(elapsed(lambda: block(x), device) * 1e3)
            with (_quiet_stderr(), profile(activities=activities) as prof,
                  tracking(block, ScopeTracker(annotate=True))):
                wall = elapsed(lambda: block(x), device)
            runs.append(attribute(prof.events(), device, wall * 1e6 if device.type == "cuda"
                                  else None))
    median_run = sorted(runs, key=lambda r: sum(r.values()))[(len(runs) - 1) // 2]
    ms = {c: median_run[c] / 1e3 for c in CATEGORIES}
    return ms, sum(ms.values()), statistics.median(plain)


def breakdown(case: Case, size: int, settings: Settings) -> dict[str, Any]:
    """One record of ``--breakdown``: the block of ``case`` at ``size``, time and exact MACs per
    category; ``macs_total`` is the block's closed form, which the categories sum to."""
    block = case.block_module
    if block is None:
        raise BenchError(f"{case.name}: no block to break down")
    macs = macs_breakdown(block, size, case.dim)
    closed = int(block.macs(size, size))  # type: ignore[operator]
    if sum(macs.values()) != closed:
        raise RuntimeError(f"{case.name} @ {size}: the categories' MACs sum to "
                           f"{sum(macs.values()):,}, the block's closed form is {closed:,}")
    torch.manual_seed(0)
    x = torch.randn(settings.batch, size, size, case.dim, device=settings.device)
    ms, total, plain = time_breakdown(block, x.to(settings.dtype), settings)
    return {"case": case.name, "family": case.family, "mixer": case.mixer_name,
            "dim": case.dim, "size": size, "tokens": size * size, "batch": settings.batch,
            "macs_total": closed, "macs": macs, "ms": ms, "profiled_ms": total,
            "unprofiled_ms": plain}


# --------------------------------------------------------------------------------------------
# Output: table, CSV, JSON, plot
# --------------------------------------------------------------------------------------------


def results_table(rows: Sequence[Row]) -> str:
    """One line per (case, map): core and straightforward side by side; ``IQR%`` is the
    largest interquartile range of the four timings, relative to its median."""
    head = (f"{'case':<30}{'map':>5}{'GMACs':>8}{'fwd ms':>9}{'ref':>9}{'x':>6}"
            f"{'f+b ms':>9}{'ref':>9}{'x':>6}{'GFLOP/s':>9}{'%peak':>7}"
            f"{'MiB fwd':>9}{'ref':>8}{'MiB f+b':>9}{'ref':>8}{'IQR%':>6}{'diff':>9}")
    lines = [head, "-" * len(head)]
    core = [r for r in rows if r.path == "core"]
    for r in core:
        ref = next(s for s in rows if s.case == r.case and s.size == r.size and s is not r)
        lines.append(
            f"{r.case:<30}{r.size:>5}{r.macs / 1e9:>8.3f}{r.fwd_ms:>9.2f}{ref.fwd_ms:>9.2f}"
            f"{r.speedup_fwd:>6.2f}{r.fwdbwd_ms:>9.2f}{ref.fwdbwd_ms:>9.2f}"
            f"{r.speedup_fwdbwd:>6.2f}{r.gflops:>9.1f}{100 * r.peak_fraction:>7.0f}"
            f"{r.fwd_mib:>9.0f}{ref.fwd_mib:>8.0f}{r.fwdbwd_mib:>9.0f}{ref.fwdbwd_mib:>8.0f}"
            f"{100 * max(r.fwd_spread, r.fwdbwd_spread, ref.fwd_spread, ref.fwdbwd_spread):>6.0f}"
            f"{r.diff:>9.1e}"
        )
    return "\n".join(lines)


def results_markdown(rows: Sequence[Row], exponents: Sequence[dict[str, Any]]) -> str:
    """The table as markdown (``bench.md``), with the core's forward time exponents."""
    lines = ["| case | map | GMACs | fwd ms | ref | x | f+b ms | ref | x | GFLOP/s | % peak "
             "| MiB f+b | ref | exp. fwd |", "|---|" + "---:|" * 13]
    for r in (r for r in rows if r.path == "core"):
        ref = next(s for s in rows if s.case == r.case and s.size == r.size and s is not r)
        slope = next((e["fwd"] for e in exponents if e["case"] == r.case and e["path"] == "core"
                      and e["to"] == r.size and e["from"] < r.size), None)
        lines.append(
            f"| {r.case} | {r.size} | {r.macs / 1e9:.3f} | {r.fwd_ms:.1f} | {ref.fwd_ms:.1f} | "
            f"{r.speedup_fwd:.2f} | {r.fwdbwd_ms:.1f} | {ref.fwdbwd_ms:.1f} | "
            f"{r.speedup_fwdbwd:.2f} | {r.gflops:.1f} | {100 * r.peak_fraction:.0f} | "
            f"{r.fwdbwd_mib:.0f} | {ref.fwdbwd_mib:.0f} | "
            f"{'-' if slope is None else f'{slope:.2f}'} |"
        )
    return "\n".join(lines)


def scaling_table(exponents: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'case':<30}{'path':<17}{'maps':>11}{'MACs':>7}{'fwd':>7}{'f+b':>7}"]
    for e in exponents:
        maps = f"{e['from']}->{e['to']}"
        lines.append(f"{e['case']:<30}{e['path']:<17}{maps:>11}{e['macs']:>7.2f}"
                     f"{e['fwd']:>7.2f}{e['fwdbwd']:>7.2f}")
    return "\n".join(lines)


def breakdown_records(breakdowns: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per (case, map, category): ms, share of the time, MACs, share of MACs."""
    records = []
    for b in breakdowns:
        total_ms, total_macs = sum(b["ms"].values()), b["macs_total"]
        for c in CATEGORIES:
            records.append({"case": b["case"], "size": b["size"], "batch": b["batch"],
                            "category": c, "ms": b["ms"][c], "time_share": b["ms"][c] / total_ms,
                            "macs": b["macs"].get(c, 0),
                            "macs_share": b["macs"].get(c, 0) / total_macs})
    return records


def breakdown_table(breakdowns: Sequence[dict[str, Any]]) -> str:
    """One line per (case, map): ms per category, then the MACs' shares in percent."""
    short = ["proj", "attn", "bias", "gather", "conv", "MLP", "norms", "resid", "ovhd"]
    head = f"{'case':<30}{'map':>5}" + "".join(f"{s:>8}" for s in short) + f"{'total':>8}"
    lines = [head, "-" * len(head)]
    for b in breakdowns:
        ms = "".join(f"{b['ms'][c]:>8.2f}" for c in CATEGORIES)
        lines.append(f"{b['case']:<30}{b['size']:>5}{ms}{sum(b['ms'].values()):>8.2f}")
        share = "".join(f"{100 * b['macs'].get(c, 0) / b['macs_total']:>7.0f}%"
                        for c in CATEGORIES[:-1])
        lines.append(f"{'  MACs':<35}{share}")
    return "\n".join(lines)


def write_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    if not records:
        path.write_text("")
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        for record in records:
            writer.writerow({k: ";".join(f"{x:.4f}" for x in v) if isinstance(v, list) else v
                             for k, v in record.items()})


def plot(rows: Sequence[Row], path: Path) -> bool:
    """Time vs tokens, log-log, one colour per case, core solid and straightforward dashed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    axes = figure.subplots(1, 2)
    cases = list(dict.fromkeys(r.case for r in rows))
    for ax, attr, title in ((axes[0], "fwd_ms", "forward"),
                            (axes[1], "fwdbwd_ms", "forward + backward")):
        for index, case in enumerate(cases):
            for kind, style in zip(PATHS, ("-", "--"), strict=True):
                series = sorted((r for r in rows if r.case == case and r.path == kind),
                                key=lambda r: r.tokens)
                ax.plot([r.tokens for r in series], [getattr(r, attr) for r in series],
                        style, marker="o", color=f"C{index % 10}",
                        label=f"{case} ({kind})")
        ax.set(xscale="log", yscale="log", xlabel="tokens N = H W", ylabel="time (ms)",
               title=title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    figure.suptitle(f"minilg bench: {rows[0].device}, {rows[0].dtype}, batch {rows[0].batch}, "
                    f"{rows[0].threads} thread(s); solid core, dashed straightforward")
    figure.savefig(path, dpi=120)
    return True


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, no usage dump
        raise BenchError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m minilg bench",
        description="Exact MACs, forward and forward+backward time, GFLOP/s against a matmul "
        "peak, peak memory and time scaling of every mixer, beside a straightforward version "
        "of the same math. Nothing is asserted: the figures are this machine's.",
    )
    add = parser.add_argument
    add("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    add("--dtype", default="float32", choices=list(DTYPES))
    add("--batch", type=int, default=8)
    add("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="square map sides")
    add("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    add("--repeats", type=int, default=5, help="timed runs per path and mode (median)")
    add("--warmup", type=int, default=2, help="untimed runs first")
    add("--families", nargs="+", help="model families (default: every registered family)")
    add("--mixers", nargs="+", help="mixer names, e.g. W-MSA SW-MSA GG-MSA (default: all)")
    add("--stages", type=int, nargs="+", default=[1], help="1-based stages (default 1)")
    add("--memory-limit", type=float, default=4.0,
        help="GiB of score tensors above which a configuration is skipped (default 4)")
    add("--block-memory", action="store_true",
        help="also measure the stage-1 SW block's forward memory at --block-batch")
    add("--block-batch", type=int, default=128)
    add("--peak-n", type=int, default=2048, help="side of the fp32 matmul peak (default 2048)")
    add("--breakdown", action="store_true",
        help="also profile each configuration's whole block (forward, no grad): time and exact "
        "MACs per category (projections, attention, bias & masks, gather/pool, convolution, "
        "MLP, norms, residual/other, overhead)")
    add("--note", default="", help="a free-text note stored with the results (e.g. the load)")
    add("--out", type=Path, default=Path("runs/bench"))
    return parser


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Settings]:
    """Options and the run's settings; a :class:`BenchError` names a bad option."""
    args = build_parser().parse_args(list(argv))
    args.argv = list(argv)
    positive = {"--batch": [args.batch], "--sizes": args.sizes, "--threads": [args.threads],
                "--repeats": [args.repeats], "--stages": args.stages,
                "--block-batch": [args.block_batch], "--peak-n": [args.peak_n]}
    for option, values in positive.items():
        if any(v < 1 for v in values):
            raise BenchError(f"{option} must be positive integers, got {values}")
    if args.warmup < 0 or args.memory_limit <= 0:
        raise BenchError("--warmup must be >= 0 and --memory-limit > 0 (GiB)")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise BenchError(f"--device {args.device!r} is not a device (cpu, cuda, cuda:N)") from e
    if device.type not in {"cpu", "cuda"}:
        raise BenchError(f"--device must be cpu or cuda, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {args.device}: CUDA is not available in this torch build")
    args.sizes = sorted(set(args.sizes))
    settings = Settings(device, DTYPES[args.dtype], args.batch, args.repeats, args.warmup,
                        args.threads)
    return args, settings


def run_all(
    cases: Sequence[Case], args: argparse.Namespace, settings: Settings, peak: float
) -> tuple[list[Row], list[str], list[dict[str, Any]]]:
    """Measure every (case, size) within the memory limit; notes for the ones skipped; with
    ``--breakdown`` the block's breakdown of every configuration measured."""
    from tqdm.auto import tqdm

    rows: list[Row] = []
    notes: list[str] = []
    breakdowns: list[dict[str, Any]] = []
    configs = [(case, size) for case in cases for size in args.sizes]
    bar = tqdm(configs, desc="bench", unit="cfg", disable=not progress_enabled(), leave=False)
    for case, size in bar:
        bar.set_postfix_str(f"{case.name} @ {size}")
        try:
            scores, how = estimated_bytes(case.mixer, settings.batch, size, settings.dtype)
        except ValueError as e:  # the mixer refuses this size or input
            notes.append(f"{case.name} @ {size}: skipped, {e}")
            continue
        if scores > args.memory_limit * 2**30:
            notes.append(f"{case.name} @ {size}: skipped, straightforward scores need "
                         f"{scores / 2**30:.1f} GiB > --memory-limit {args.memory_limit:g} GiB"
                         + (f" ({how})" if how else ""))
            continue
        try:
            rows.extend(measure(case, size, settings, peak))
            if args.breakdown:
                breakdowns.append(breakdown(case, size, settings))
        except (ValueError, torch.OutOfMemoryError) as e:
            notes.append(f"{case.name} @ {size}: skipped, {type(e).__name__}: {e}")
            if settings.device.type == "cuda":
                torch.cuda.empty_cache()
    return rows, notes, breakdowns


def report(
    rows: Sequence[Row], notes: Sequence[str], blocks: Sequence[dict[str, Any]],
    targets: Sequence[Target], exponents: Sequence[dict[str, Any]],
) -> None:
    """The printout: results, scaling, block memory, targets, notes."""
    print(results_table(rows))
    print("\nTime exponent in the number of tokens (log-log slope; 'MACs' is the cost's own):")
    print(scaling_table(exponents))
    if blocks:
        print("\nForward without grad, peak memory above the input:")
        for b in blocks:
            print(f"  {b['what']:<26} {b['path']:<16} batch {b['batch']} map {b['size']}: "
                  f"{b['peak_mib']:,.0f} MiB (input {b['input_mib']:,.0f} MiB)")
    print("\nTargets (measured vs target; never asserted):")
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "-"}[t.met]
        extra = f"  [{t.note}]" if t.note else ""
        print(f"  {t.name:<58} {t.goal:<12} {t.measured}  {verdict}{extra}")
    for line in notes:
        print(f"note: {line}")


def write_outputs(out: Path, payload: dict[str, Any], rows: Sequence[Row]) -> list[Path]:
    """``bench.csv``, ``scaling.csv``, ``bench.json``, ``bench.md``, ``bench.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    records = [asdict(r) for r in rows]
    write_csv(out / "bench.csv", [{k: v for k, v in r.items() if not k.endswith("samples_ms")}
                                  for r in records])
    write_csv(out / "scaling.csv", payload["scaling"])
    (out / "bench.json").write_text(json.dumps({**payload, "rows": records}, indent=1) + "\n")
    (out / "bench.md").write_text(results_markdown(rows, payload["scaling"]) + "\n")
    written = [out / "bench.csv", out / "scaling.csv", out / "bench.json", out / "bench.md"]
    if payload["breakdown"]:
        write_csv(out / "breakdown.csv", breakdown_records(payload["breakdown"]))
        written.append(out / "breakdown.csv")
    if rows and plot(rows, out / "bench.png"):
        written.append(out / "bench.png")
    return written


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment(settings: Settings, peak: float, args: argparse.Namespace) -> dict[str, Any]:
    """How the figures were made: the command, the machine, the load, the settings."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "command": shlex.join(["python", "-m", "minilg", "bench", *args.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "loadavg_1_5_15": None if load is None else [round(v, 2) for v in load],
        "note": args.note,
        "device": str(settings.device), "dtype": args.dtype, "batch": settings.batch,
        "threads": settings.threads, "repeats": settings.repeats, "warmup": settings.warmup,
        "sizes": args.sizes, "memory_limit_gib": args.memory_limit,
        "matmul_peak_gflops": peak, "matmul_peak_n": args.peak_n,
        "gpu": torch.cuda.get_device_name(settings.device)
        if settings.device.type == "cuda" else None,
    }


def bench(args: argparse.Namespace, settings: Settings) -> int:
    """Discover, measure, print and write; returns the exit code."""
    cases = discover_cases(args.families, args.mixers, args.stages)
    if not cases:
        raise BenchError(f"no mixer matches --families {args.families} --mixers {args.mixers} "
                         f"--stages {args.stages}")
    for case in cases:
        (case.block_module or case.mixer).to(device=settings.device, dtype=settings.dtype)
    peak = matmul_peak(settings.device, args.peak_n, settings.repeats, settings.warmup)
    env = environment(settings, peak, args)
    print(f"minilg bench: torch {env['torch']}, {settings.device} {env['gpu'] or ''}"
          f" dtype {args.dtype}, batch {settings.batch}, threads {settings.threads}, "
          f"median of {settings.repeats} after {settings.warmup} warm-up, interleaved")
    print(f"matmul peak (fp32, n={args.peak_n}): {peak:.1f} GFLOP/s; GMACs per image; "
          "x = straightforward / core; IQR% = largest spread of the four timings;\n"
          "diff = max|core - ref| / max(1, max|ref|)\n")
    if any(case.model.endswith("*") for case in cases):
        print("* a family with only mini models, rebuilt in Swin-T's frame (C 96, 3 heads)\n")
    rows, notes, breakdowns = run_all(cases, args, settings, peak)
    after = matmul_peak(settings.device, args.peak_n, settings.repeats, settings.warmup)
    env["matmul_peak_gflops_before_after"] = [peak, after]
    if hasattr(os, "getloadavg"):
        env["loadavg_1_5_15_end"] = [round(v, 2) for v in os.getloadavg()]
    if after > peak:  # the peak is the better of the two: a load spike hit the first one
        peak = env["matmul_peak_gflops"] = after
        for row in rows:
            row.peak_fraction = row.gflops / peak
        print(f"matmul peak measured again after the cases: {peak:.1f} GFLOP/s (used for %peak)")
    blocks = block_memory(settings, args.block_batch) if args.block_memory else []
    exponents = scaling(rows)
    targets = [*speedup_targets(rows, settings), exponent_target(rows), memory_target(blocks)]
    report(rows, notes, blocks, targets, exponents)
    if breakdowns:
        print("\nWhere the block's forward spends its time (ms; MACs %), --breakdown:")
        print(breakdown_table(breakdowns))
    payload = {"environment": env, "scaling": exponents, "block_memory": blocks,
               "targets": [asdict(t) for t in targets], "notes": list(notes),
               "breakdown": breakdowns}
    written = write_outputs(args.out, payload, rows)
    print(f"\nwrote {', '.join(str(p) for p in written)}")
    return 0


def cli_bench(argv: list[str]) -> int:
    """``python -m minilg bench [options]``; expected failures: one line on stderr, exit 2."""
    threads = torch.get_num_threads()
    try:
        args, settings = parse(argv)
        torch.set_num_threads(settings.threads)
        return bench(args, settings)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except OSError as e:
        print(f"error: cannot write the results: {e}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)


__all__ = ["CATEGORIES", "Case", "Row", "ScopeTracker", "Target", "attribute", "breakdown",
           "category", "cli_bench", "discover_cases", "macs_breakdown", "measure",
           "module_labels", "score_bytes", "time_breakdown", "tracking"]
