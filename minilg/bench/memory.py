"""Memory: the peak of one call, the score tensors a configuration would need, a block's peak.

* **peak memory** of a call above what was allocated before it (``torch.profiler`` with
  ``profile_memory=True`` on the CPU, ``max_memory_allocated`` on CUDA);
* the bytes of the straightforward version's **score tensors** (``B x groups x heads x Tq x
  Tk`` elements), measured on the meta device, so free: configurations above ``--memory-limit``
  are skipped, never attempted;
* the forward memory of the canonical Swin model's stage-1 SW block (``--block-memory``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from minilg.attention.base import TokenMixer, reference_math
from minilg.bench.cases import build_model, canonical_models, stage_blocks
from minilg.bench.settings import MIB, PATHS, Settings, path_context, synchronize

__all__ = ["block_memory", "cpu_peak_bytes", "estimated_bytes", "peak_bytes", "quiet_stderr",
           "score_bytes", "sw_block"]


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
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

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
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
