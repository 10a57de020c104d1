"""``--train-step``: one training step of the mini models, against ``swin_mini``'s.

A step is what ``make run`` repeats: forward in train mode, cross-entropy on random labels,
backward, one SGD step (the optimizer's cost is the same for every model of about the same size).
Every model's step is timed once per round, in rotated order (:func:`~minilg.bench.timing
.paired_rounds`), and each model's figure is the median over the rounds of ``its step /
swin_mini's step`` in the same round, with its interquartile range.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minilg.bench.settings import BenchError, Settings
from minilg.bench.timing import elapsed, paired_ratio, paired_rounds
from minilg.registry import create_model, list_models

__all__ = ["REFERENCE", "TRAIN_MODELS", "train_steps"]

#: The model every step is compared with, and the models compared (the targets' three).
REFERENCE = "swin_mini"
TRAIN_MODELS = ("focal_mini", "salg_mini", "hat_net_mini")


def _step(model: nn.Module, settings: Settings, batch: int) -> Callable[[], None]:
    """One SGD step of ``model`` on a fixed random batch (images at its ``img_size``)."""
    size, classes = int(model.img_size), int(model.num_classes)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=generator).to(settings.device,
                                                                   settings.dtype)
    y = torch.randint(0, classes, (batch,), generator=generator).to(settings.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x).float(), y).backward()  # type: ignore[no-untyped-call]
        optimizer.step()

    return step


def train_steps(
    settings: Settings, batch: int, models: Sequence[str] = TRAIN_MODELS
) -> list[dict[str, Any]]:
    """One record per model (the reference first): median step time (ms) over the rounds, and
    the median per-round ratio to :data:`REFERENCE` with its ``[q1, q3]``."""
    names = [REFERENCE, *models]
    missing = [n for n in names if n not in list_models()]
    if missing:
        raise BenchError(f"--train-step needs the registered models {missing}")
    steps = {}
    for name in names:
        torch.manual_seed(0)
        model = create_model(name).to(device=settings.device, dtype=settings.dtype)
        steps[name] = _step(model, settings, batch)
        for _ in range(max(settings.warmup, 1)):
            steps[name]()
    timed = paired_rounds(steps, settings.repeats, lambda fn: elapsed(fn, settings.device) * 1e3)
    records = []
    for name in names:
        ratio = paired_ratio(timed[name], timed[REFERENCE])
        records.append({"model": name, "batch": batch, "threads": settings.threads,
                        "step_ms": sorted(timed[name])[(len(timed[name]) - 1) // 2],
                        "vs_reference": ratio.median, "vs_reference_iqr": [ratio.q1, ratio.q3],
                        "reference": REFERENCE, "samples_ms": timed[name]})
    return records
