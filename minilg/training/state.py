"""The state of a training run: what the loop changes, how it is built, saved and restored.

:func:`build_run` makes a fresh run (seeded model, optimiser, scaler, data generator,
augmentation, schedule); :func:`save_run` writes the checkpoint of the epoch just done and the
metric files; :func:`restore_run` loads the verified checkpoint of a run folder back into a
:class:`RunState`, every RNG included, so that a resumed run ends bit-identical on CPU.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from minilg.data.augment import BatchAugment
from minilg.errors import ConfigError, MinilgError
from minilg.registry import create_model
from minilg.training import checkpoint as ckpt
from minilg.training import distributed as ddp
from minilg.training.config import TrainConfig, resolve_crop_scale
from minilg.training.metrics import write_metrics
from minilg.training.optim import amp_dtype, build_optimizer
from minilg.training.rundir import saved_config
from minilg.training.splits import Split

__all__ = ["RunState", "build_run", "restore_run", "run_info", "save_run"]


@dataclass
class RunState:
    """Everything that changes while training, plus the fixed pieces the loop needs."""

    model: nn.Module  # unwrapped: what is saved and evaluated
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    gen: torch.Generator  # data order and augmentation (identical on every rank)
    aug: BatchAugment
    amp: torch.dtype | None
    num_classes: int
    classes: list[str]
    local_bs: int  # this rank's share of the global batch
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    epoch: int = 0  # epochs done
    step: int = 0  # optimiser steps done
    history: list[dict[str, Any]] = field(default_factory=list)


def build_run(
    cfg: TrainConfig, device: torch.device, info: ddp.DistInfo, train_set: Split
) -> RunState:
    """Model, optimiser, scaler, generator, augmentation and schedule of a fresh run."""
    n_train = len(train_set.labels)
    if cfg.batch_size % info.world_size:
        raise ConfigError("batch_size", f"must be divisible by the {info.world_size} ranks",
                          cfg.batch_size)
    if n_train < cfg.batch_size:
        raise ConfigError("batch_size", f"must not exceed the {n_train} training images",
                          cfg.batch_size)
    steps_per_epoch = n_train // cfg.batch_size  # drop the last partial batch
    seed_everything(cfg.seed)  # same seed on every rank -> identical initial weights
    model = create_model(
        cfg.model, num_classes=train_set.num_classes, img_size=cfg.resolution,
        drop_path_rate=cfg.drop_path, **cfg.model_kwargs,
    ).to(device)
    dtype = amp_dtype(cfg.amp, device)
    run = RunState(
        model=model,
        optimizer=build_optimizer(model, cfg),
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        # one CPU generator: identical on every rank, the same numbers on CPU or GPU batches
        gen=torch.Generator().manual_seed(cfg.seed),
        aug=BatchAugment(cfg.resolution, scale=resolve_crop_scale(cfg), hflip=cfg.hflip,
                         mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix,
                         label_smoothing=cfg.label_smoothing),
        amp=dtype,
        num_classes=train_set.num_classes,
        classes=train_set.classes,
        local_bs=cfg.batch_size // info.world_size,
        steps_per_epoch=steps_per_epoch,
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
    )
    # Stochastic depth / dropout use the global RNG: different per rank, like different samples.
    torch.manual_seed(cfg.seed + info.rank)
    return run


def restore_run(run: RunState, out_dir: Path, device: torch.device, info: ddp.DistInfo) -> None:
    """Load the verified checkpoint of ``out_dir`` into ``run`` (weights, state, RNGs)."""
    state = ckpt.load_checkpoint(out_dir, run.model, device, saved_config(out_dir))
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.step, run.history = state["epoch"], state["step"], list(state["history"])
    rng = state["rng"]
    ckpt.restore_rng(rng[info.rank] if len(rng) == info.world_size else rng[0], run.gen)
    if len(rng) != info.world_size and info.is_main:
        print(f"note: resuming {len(rng)}-rank RNG state on {info.world_size} ranks")


def save_run(
    run: RunState, rng: list[Any], cfg: TrainConfig, out_dir: Path | None, run_info: dict[str, Any]
) -> None:
    """The checkpoint of the epoch just done, then the metric files (main rank only)."""
    if out_dir is None:
        return
    state = {
        "epoch": run.epoch,
        "step": run.step,
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "history": run.history,
        "rng": rng,
    }
    meta = {
        "model": cfg.model,
        "model_kwargs": json.dumps(cfg.model_kwargs),
        "num_classes": str(run.num_classes),
        "classes": json.dumps(run.classes),
        "data": cfg.data,
        "img_size": str(cfg.resolution),
    }
    ckpt.save_checkpoint(out_dir, run.model, state, meta, cfg.to_dict())
    try:
        write_metrics(out_dir, run.history, {"config": cfg.to_dict(), "info": run_info})
    except OSError as e:
        raise MinilgError(
            f"could not write the metric files in {out_dir}: {e}; the checkpoint of epoch "
            f"{run.epoch} is saved (free space, then --resume)"
        ) from e


def run_info(
    cfg: TrainConfig, run: RunState, n_train: int, n_val: int, device: torch.device,
    info: ddp.DistInfo,
) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "params": sum(p.numel() for p in run.model.parameters()),
        "num_classes": run.num_classes,
        "classes": run.classes,
        "train_images": n_train,
        "val_images": n_val,
        "device": str(device),
        "world_size": info.world_size,
        "amp": str(run.amp).replace("torch.", "") if run.amp else "off",
    }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the same seed on every rank: identical initial weights)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
