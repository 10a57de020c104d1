"""Optimiser pieces of the trainer: weight-decay groups, AdamW, the learning-rate schedule, AMP."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import nn

from minilg.training.config import TrainConfig

__all__ = ["amp_dtype", "autocast", "build_optimizer", "lr_at", "param_groups"]


def _no_decay_names(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for attr in ("no_weight_decay", "no_weight_decay_keywords"):
        fn = getattr(model, attr, None)
        if callable(fn):
            names |= set(fn())
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: weights with decay, and the rest without.

    No decay for: every parameter with ``ndim <= 1`` (norm scales and shifts, biases) and every
    name listed by ``model.no_weight_decay()`` (position-bias tables, ``pos_embed``,
    ``cls_token``); a listed name matches the full parameter name or its last components.
    """
    skip = _no_decay_names(model)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        listed = any(name == s or name.endswith("." + s) for s in skip)
        (no_decay if p.ndim <= 1 or listed else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; betas (0.9, 0.999) as in DeiT/Swin."""
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999), fused=fused
    )


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up, then cosine.

    * ``step < warmup_steps``: ``lr * (step + 1) / warmup_steps`` -- reaches ``lr`` on the last
      warm-up step, never 0;
    * then ``min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2`` with
      ``t = (step - warmup_steps) / (total_steps - warmup_steps)``, so ``lr`` at the first
      step after warm-up and ``min_lr`` at ``step == total_steps``.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = full fp32)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
