"""``--official DIR``: minilg beside the official code, from checkouts the user points at.

``DIR`` holds any of the three official repositories, by their names: ``Swin-Transformer``
(microsoft), ``Focal-Transformer`` (microsoft) and ``HAT-Net`` (yun-liu). Nothing of them is in
minilg: their model files are imported from ``DIR`` at run time (with a stand-in for the few
``timm`` names they import when ``timm`` is not installed), the official models are built with
the Tiny configurations, and minilg's converters (:mod:`minilg.convert`) load *their* weights
into minilg's official-mode models. For every case the outputs are checked equal first (else the
case is reported and not timed), then both are timed in paired rounds in rotated order
(:func:`~minilg.bench.timing.paired_rounds`); the figure is the median of per-round ratios
``official / minilg`` with its interquartile range. Cases (stage 1 at 224, map 56, unless said):

* ``Swin-T W-MSA`` and ``Swin-T SW-MSA``: the official block's attention cut (roll, window
  partition, ``WindowAttention`` with its mask, reverse, roll back), against minilg's mixer;
* ``Focal-T block``: the official ``FocalTransformerBlock`` against minilg's block;
* ``HAT-Net-T stage 1`` (56²) and ``stage 2`` (28²): the stage's blocks in sequence;
* with ``--official-models``: ``Swin-T model``, ``Focal-T model``, ``HAT-Net-T model``, the
  whole classifiers on 224² images;
* memory (with ``--official-memory-batch``, 128 by default): the SW-MSA cut and minilg's SW-MSA
  mixer, forward without grad, each on the *whole* batch in one call (batch against batch: no
  slicing of the batch counts as a saving), peak allocation above the input
  (:func:`~minilg.bench.memory.peak_bytes`: the CPU profiler's allocation events replayed, or
  CUDA's peak statistics).
"""

from __future__ import annotations

import contextlib
import importlib.util
import statistics
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from minilg.bench.memory import peak_bytes
from minilg.bench.settings import MIB, BenchError, Settings
from minilg.bench.timing import elapsed, paired_ratio, paired_rounds
from minilg.convert import from_official

__all__ = ["CONFIGS", "REPOSITORIES", "compare", "import_official", "official_memory",
           "run_official", "timm_stand_in"]

#: family -> (checkout folder name, model file inside it, official class).
REPOSITORIES = {
    "swin": ("Swin-Transformer", "models/swin_transformer.py", "SwinTransformer"),
    "focal": ("Focal-Transformer", "classification/focal_transformer.py", "FocalTransformer"),
    "hat_net": ("HAT-Net", "HAT_Net.py", "HAT_Net"),
}
#: The Tiny configurations: the official classes' own constructor arguments.
CONFIGS: dict[str, dict[str, Any]] = {
    "swin": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24],
             "window_size": 7, "drop_path_rate": 0.0},
    "focal": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24],
              "window_size": 7, "drop_path_rate": 0.0, "use_shift": False,
              "focal_stages": [0, 1, 2, 3], "focal_levels": [2, 2, 2, 2],
              "focal_windows": [7, 5, 3, 1], "expand_sizes": [3, 3, 3, 3],
              "expand_stages": [0, 1, 2, 3], "expand_layer": "all", "focal_pool": "fc"},
    "hat_net": {"dims": [48, 96, 240, 384], "head_dim": 48, "expansions": [8, 8, 4, 4],
                "grid_sizes": [8, 7, 7, 1], "ds_ratios": [8, 4, 2, 1], "depths": [2, 2, 6, 3]},
}
TOLERANCE = 1e-4  # max|official - minilg| / max(1, max|official|), float32


class _DropPath(nn.Module):
    """Stand-in for timm's DropPath: identity in eval (all that is timed here)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return x


def _to_2tuple(x: Any) -> Any:
    return x if isinstance(x, tuple) else (x, x)


@contextlib.contextmanager
def timm_stand_in() -> Iterator[None]:
    """While importing official files: ``timm`` itself if installed, else a stand-in for the
    names they import (DropPath, to_2tuple, trunc_normal_, register_model, _cfg)."""
    if importlib.util.find_spec("timm") is not None:
        yield
        return
    names = ["timm", "timm.models", "timm.models.layers", "timm.models.registry",
             "timm.models.vision_transformer"]
    modules = {name: types.ModuleType(name) for name in names}
    layers = modules["timm.models.layers"]
    layers.DropPath = _DropPath  # type: ignore[attr-defined]
    layers.to_2tuple = _to_2tuple  # type: ignore[attr-defined]
    layers.trunc_normal_ = nn.init.trunc_normal_  # type: ignore[attr-defined]
    modules["timm.models.registry"].register_model = lambda fn: fn  # type: ignore[attr-defined]
    modules["timm.models.vision_transformer"]._cfg = (  # type: ignore[attr-defined]
        lambda **kwargs: dict(kwargs))
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)


def import_official(root: Path, family: str) -> types.ModuleType | None:
    """The official model file of ``family`` from ``root/<checkout>``, or ``None`` if absent."""
    folder, file, _ = REPOSITORIES[family]
    path = root / folder / file
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"minilg_official_{family}", path)
    if spec is None or spec.loader is None:
        raise BenchError(f"--official: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    with timm_stand_in():
        spec.loader.exec_module(module)
    return module


def _models(module: types.ModuleType, family: str, settings: Settings) -> tuple[Any, Any]:
    """The official Tiny model (seeded, official init) and minilg's with its weights."""
    torch.manual_seed(0)
    official: nn.Module = getattr(module, REPOSITORIES[family][2])(**CONFIGS[family]).eval()
    converted = from_official(family, official.state_dict(), **CONFIGS[family]).eval()
    return (official.to(settings.device, settings.dtype),
            converted.to(settings.device, settings.dtype))


def swin_cut(module: Any, block: Any) -> Callable[[Tensor], Tensor]:
    """The official block's attention part on a map ``(B, H, W, C)``: roll, the official
    ``window_partition``, ``block.attn`` with ``block.attn_mask``, ``window_reverse``, roll."""
    shift, size = int(block.shift_size), int(block.window_size)

    def cut(x: Tensor) -> Tensor:
        _, height, width, channels = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = module.window_partition(x, size).view(-1, size * size, channels)
        out = block.attn(windows, mask=block.attn_mask).view(-1, size, size, channels)
        out = module.window_reverse(out, size, height, width)
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2)) if shift else out
        result: Tensor = out
        return result

    return cut


Pair = tuple[str, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor], tuple[int, int, int]]
LABELS = {"swin": "Swin-T", "focal": "Focal-T", "hat_net": "HAT-Net-T"}


def _sequence(blocks: Any) -> Callable[[Tensor], Tensor]:
    def run(x: Tensor) -> Tensor:
        for block in blocks:
            x = block(x)
        return x

    return run


def _pairs(module: types.ModuleType, family: str, settings: Settings, models: bool
           ) -> list[Pair]:
    """``(case, official fn, minilg fn, input shape without the batch)`` per case: maps
    ``(H, W, C)``, the official fn taking minilg's layout and returning it (the layout change is
    a view or one copy); with ``models`` also the whole models on ``(3, 224, 224)`` images."""
    official, ours = _models(module, family, settings)
    whole: list[Pair] = [(f"{LABELS[family]} model", official, ours, (3, 224, 224))]
    return _parts(module, family, official, ours) + (whole if models else [])


def _parts(module: types.ModuleType, family: str, official: Any, ours: Any) -> list[Pair]:
    """The stage-1 parts compared (see the module docstring)."""
    if family == "swin":
        blocks, mine = official.layers[0].blocks, ours.stages[0].blocks
        return [(f"Swin-T {name}", swin_cut(module, blocks[i]), mine[i].mixer, (56, 56, 96))
                for i, name in ((0, "W-MSA"), (1, "SW-MSA"))]
    if family == "focal":
        block = official.layers[0].blocks[0]

        def focal(x: Tensor) -> Tensor:
            out: Tensor = block(rearrange(x, "b h w c -> b (h w) c"))
            return rearrange(out, "b (h w) c -> b h w c", h=x.shape[1])

        return [("Focal-T block", focal, ours.stages[0].blocks[0], (56, 56, 96))]
    pairs: list[Pair] = []
    for stage, (size, dim) in enumerate(((56, 48), (28, 96))):
        run = _sequence(official.blocks[stage])

        def hat(x: Tensor, run: Callable[[Tensor], Tensor] = run) -> Tensor:
            return rearrange(run(rearrange(x, "b h w c -> b c h w")), "b c h w -> b h w c")

        pairs.append((f"HAT-Net-T stage {stage + 1}", hat,
                      _sequence(ours.stages[stage].blocks), (size, size, dim)))
    return pairs


def compare(name: str, official: Callable[[Tensor], Tensor], ours: Callable[[Tensor], Tensor],
            x: Tensor, settings: Settings, size: int | None = None) -> dict[str, Any]:
    """Outputs checked equal, then paired rounds: ``official / minilg`` per round. ``size``:
    the map or image side recorded (default ``x.shape[1]``, a map's height)."""
    with torch.no_grad():
        expected, got = official(x).float(), ours(x).float()
        diff = float((expected - got).abs().max() / expected.abs().max().clamp(min=1))
        record: dict[str, Any] = {"case": name, "batch": x.shape[0],
                                  "size": x.shape[1] if size is None else size,
                                  "threads": settings.threads, "max_diff": diff}
        if not diff <= TOLERANCE:
            return {**record, "ratio": None, "note": f"outputs differ ({diff:.1e}): not timed"}
        for _ in range(settings.warmup):
            official(x)
            ours(x)
        timed = paired_rounds({"official": lambda: official(x), "minilg": lambda: ours(x)},
                              settings.repeats, lambda fn: elapsed(fn, settings.device) * 1e3)
    ratio = paired_ratio(timed["official"], timed["minilg"])
    return {**record, "official_ms": statistics.median(timed["official"]),
            "minilg_ms": statistics.median(timed["minilg"]), "ratio": ratio.median,
            "ratio_iqr": [ratio.q1, ratio.q3], "official_samples_ms": timed["official"],
            "minilg_samples_ms": timed["minilg"], "note": ""}


def official_memory(module: types.ModuleType, settings: Settings, batch: int) -> dict[str, Any]:
    """Peak memory of the official SW-MSA cut and minilg's SW-MSA mixer, stage 1 of Swin-T, on
    one ``(batch, 56, 56, 96)`` input each, forward without grad (see the module docstring)."""
    official, ours = _models(module, "swin", settings)
    cut = swin_cut(module, official.layers[0].blocks[1])
    mixer = ours.stages[0].blocks[1].mixer
    x = torch.randn(batch, 56, 56, 96, device=settings.device).to(settings.dtype)
    result: dict[str, Any] = {"case": "Swin-T SW-MSA mixer", "batch": batch, "size": 56,
                              "input_mib": x.numel() * x.element_size() / MIB}
    for side, fn in (("official", cut), ("minilg", mixer)):
        def forward(fn: Callable[[Tensor], Tensor] = fn) -> None:
            with torch.no_grad():
                fn(x)

        result[f"{side}_mib"] = peak_bytes(forward, settings.device) / MIB
    result["times_below"] = result["official_mib"] / result["minilg_mib"]
    return result


def run_official(root: Path, settings: Settings, memory_batch: int | None, models: bool = False
                 ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[str]]:
    """Every case whose checkout is under ``root`` (with ``models`` the whole models too):
    records, the memory record, notes."""
    if not root.is_dir():
        raise BenchError(f"--official must be a folder holding official checkouts, got {root}")
    records, notes, memory = [], [], None
    for family, (folder, file, _) in REPOSITORIES.items():
        module = import_official(root, family)
        if module is None:
            notes.append(f"--official: {root / folder / file} not found, {family} not compared")
            continue
        for name, official, ours, shape in _pairs(module, family, settings, models):
            torch.manual_seed(0)
            x = torch.randn(settings.batch, *shape, device=settings.device).to(settings.dtype)
            records.append(compare(name, official, ours, x, settings, max(shape[:2])))
        if family == "swin" and memory_batch:
            memory = official_memory(module, settings, memory_batch)
    return records, memory, notes
