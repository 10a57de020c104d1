"""``--breakdown``: where a whole block (norms, mixer, MLP, residual adds) spends its time and
its exact MACs, in the categories of :data:`CATEGORIES`.

Scopes come from hooks on the block's modules and from the attention core's own named scopes
(:mod:`minilg.attention.scopes`: ``attend`` and ``kernel``), to which a :class:`ScopeTracker`
listens (:func:`tracking`); time from ``torch.profiler`` operator events (:func:`attribute`),
MACs from ``FlopCounterMode`` (:func:`macs_breakdown`), whose categories sum to the block's
closed form.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from minilg.attention.scopes import PREFIX, listening
from minilg.bench.cases import Case
from minilg.bench.memory import quiet_stderr
from minilg.bench.settings import BenchError, Settings
from minilg.bench.timing import elapsed

__all__ = ["CATEGORIES", "ScopeTracker", "attribute", "breakdown", "category", "macs_breakdown",
           "module_labels", "time_breakdown", "tracking"]

#: The categories of the breakdown, in plotting order. ``overhead`` is time only: the block's
#: wall time less the time of its operators (Python, dispatch, the hooks that mark the scopes).
CATEGORIES = ("projections", "attention", "bias & masks", "gather/pool", "convolution", "MLP",
              "norms", "residual/other", "overhead")
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
    """A stack of scope labels: a listener of :mod:`minilg.attention.scopes` (:meth:`push`,
    :meth:`pop`) that the block's module hooks also feed (:meth:`enter`, :meth:`pop`).

    With ``annotate`` every module scope is a ``torch.profiler`` range named
    ``minilg::<label>`` (the core's scopes are ranges already); with a ``counter`` (a running
    ``FlopCounterMode``) the FLOPs counted since the last push or pop go to the category of the
    scope that was innermost, so the MACs of every category are exact.
    """

    def __init__(self, annotate: bool = False, counter: FlopCounterMode | None = None) -> None:
        self.annotate, self.counter = annotate, counter
        self.stack: list[tuple[str, Any]] = []
        self.flops = dict.fromkeys(CATEGORIES, 0)
        self._last = 0

    def flush(self) -> None:
        """Give the FLOPs counted since the last call to the innermost scope's category."""
        if self.counter is not None:
            now = int(self.counter.get_total_flops())
            self.flops[category(self.stack[-1][0] if self.stack else None)] += now - self._last
            self._last = now

    def push(self, label: str) -> None:
        """A core scope starts (it is its own profiler range)."""
        self.flush()
        self.stack.append((label, None))

    def enter(self, label: str) -> None:
        """A module scope starts: a profiler range of its own with ``annotate``."""
        self.flush()
        scope = torch.profiler.record_function(PREFIX + label) if self.annotate else None
        if scope is not None:
            scope.__enter__()  # type: ignore[no-untyped-call]
        self.stack.append((label, scope))

    def pop(self) -> None:
        """The innermost scope ends."""
        self.flush()
        _, scope = self.stack.pop()
        if scope is not None:
            scope.__exit__(None, None, None)


@contextlib.contextmanager
def tracking(block: nn.Module, tracker: ScopeTracker) -> Iterator[ScopeTracker]:
    """Mark the scopes of ``block`` while the block runs: hooks on its modules, and ``tracker``
    listening to the core's scopes (``attend``, ``kernel``); all removed afterwards."""
    handles = []
    for module, label in module_labels(block).items():
        handles.append(module.register_forward_pre_hook(
            lambda _m, _a, label=label: tracker.enter(label)))
        handles.append(module.register_forward_hook(lambda _m, _a, _o: tracker.pop()))
    try:
        with listening(tracker):
            yield tracker
    finally:
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
        tracker.flush()
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
        if name == PREFIX + "block" and (parent is None or not parent.name.startswith(PREFIX)):
            wall += float(event.cpu_time_total if device.type != "cuda"
                          else event.device_time_total)
        if name.startswith(PREFIX) or parent is None or not parent.name.startswith(PREFIX):
            continue
        spent = event.cpu_time_total if device.type != "cuda" else event.device_time_total
        totals[category(parent.name[len(PREFIX):], name)] += float(spent)
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
            with (quiet_stderr(), profile(activities=activities) as prof,
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
