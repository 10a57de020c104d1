"""Train and evaluate minilg models: one config dataclass, one loop you can read in one sitting.

    python -m minilg train --model swin_mini --data synthetic --epochs 10 --out runs/swin
    python -m minilg train --out runs/swin --resume            # continue a stopped run exactly
    python -m minilg eval --checkpoint runs/swin
    python -m minilg compare --models deit_mini,window_mini,swin_mini --out runs/compare
    torchrun --nproc_per_node 2 -m minilg train --model swin_mini --out runs/ddp   # DDP

or from Python::

    from minilg.train import TrainConfig, train
    result = train(TrainConfig(model="swin_mini", epochs=5, out=None))
    result.history[-1]["val_top1"]

How the loop works (everything below is in :func:`train`):

* **Checks first** -- every option is range-checked when the :class:`TrainConfig` is built; the
  model and its ``model_kwargs`` (built on the meta device), the device and the ``out`` folder
  are checked before any data is loaded. A second run into a folder in use is refused (a lock
  that dies with its process, :mod:`minilg.training.rundir`).
* **Data** -- the whole uint8 dataset ``(N, H, W, 3)`` sits on the training device. Each epoch a
  seeded CPU :class:`torch.Generator` draws a permutation; each step takes the next global batch of
  indices and :class:`minilg.data.augment.BatchAugment` crops, flips, mixes and normalises the
  batch on the device (no DataLoader, no worker processes).
* **Optimiser** -- AdamW; norms, biases, position-bias tables, ``pos_embed`` and ``cls_token``
  get no weight decay (:func:`param_groups`). The learning rate follows a linear warm-up then a
  cosine decay, set every step from :func:`lr_at`. Gradients are clipped by global norm.
* **Mixed precision** -- on CUDA, ``amp="auto"`` uses bf16 where supported, else fp16 with a
  gradient scaler. ``compile=True`` wraps the model in :func:`torch.compile`.
* **Divergence** -- a NaN or infinite loss stops the run with
  :class:`~minilg.errors.TrainingDivergedError`; the last good checkpoint stays current.
* **Checkpoints** -- after every epoch, weights, training state and a manifest with checksums are
  written as one atomic unit (:mod:`minilg.training.checkpoint`). The state includes every RNG, so
  resuming a stopped run ends with bit-identical weights on CPU.
* **DDP** -- under ``torchrun`` every rank draws the same permutation and augments the same
  *global* batch from the same generator, then keeps its own slice ``[rank*b:(rank+1)*b]``. The
  ranks therefore see disjoint shards of exactly the batch a single process would see, and the
  averaged gradients match single-process training with that global batch.
* **Outputs** -- ``config.json``, ``metrics.csv``/``metrics.json`` (one row per epoch),
  ``curves.png`` and ``checkpoints/`` in the ``out`` folder; ``out=None`` keeps everything in
  memory.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

import minilg
from minilg.data import load_subset
from minilg.data.augment import BatchAugment
from minilg.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    MinilgError,
    NothingToResumeError,
    RunExistsError,
    TrainingDivergedError,
)
from minilg.io import progress_enabled, write_json
from minilg.training import checkpoint as ckpt
from minilg.training import distributed as ddp
from minilg.training.config import TrainConfig, check_device, check_model, resolve_crop_scale
from minilg.training.metrics import plot_curves, write_metrics
from minilg.training.optim import amp_dtype, autocast, build_optimizer, lr_at, param_groups
from minilg.training.rundir import check_writable_folder, run_lock

__all__ = [
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "evaluate",
    "load_datasets",
    "load_model",
    "locate_checkpoint",
    "lr_at",
    "model_from_weights",
    "param_groups",
    "resolve_crop_scale",
    "train",
]

# How often (in steps) the loop looks at its NaN/inf counter; each look is one host sync.
DIVERGENCE_CHECK_EVERY = 20


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: nn.Module  # the trained model (unwrapped from DDP/compile), in eval mode
    history: list[dict[str, Any]]  # one dict per epoch, the rows of metrics.csv
    config: TrainConfig
    out_dir: Path | None
    info: dict[str, Any] = field(default_factory=dict)  # params, num_classes, device, ...

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's metrics."""
        return self.history[-1] if self.history else {}


# ============================================================================= data
@dataclass
class _Split:
    images: Tensor  # uint8 (N, H, W, 3) on the device
    labels: Tensor  # int64 (N,) on the device
    num_classes: int
    classes: list[str]


def _subset(images: Tensor, labels: Tensor, n: int | None) -> tuple[Tensor, Tensor]:
    """A seeded (seed 0, independent of the run's seed) random subset of size ``n``."""
    if n is None or n >= len(labels):
        return images, labels
    if n < 1:
        raise ValueError(f"a sample limit must be >= 1, got {n}")
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:n]
    idx = idx.sort().values.to(labels.device)
    return images[idx], labels[idx]


def load_datasets(cfg: TrainConfig, device: torch.device) -> tuple[_Split, _Split]:
    """The train and validation splits of ``cfg.data`` as tensors on ``device``.

    Raises :class:`minilg.data.DatasetUnavailableError` when the data cannot be had offline, and
    :class:`minilg.data.core.DataError` when the two splits do not share one class list.
    """
    splits = []
    for split, limit in (("train", cfg.max_train_samples), ("val", cfg.max_eval_samples)):
        ds = load_subset(cfg.data, split, cfg.resolution, root=cfg.root)
        images, labels = _subset(ds.images, ds.labels, limit)
        splits.append(
            _Split(images.to(device), labels.to(device), ds.num_classes, list(ds.classes))
        )
    if splits[0].classes != splits[1].classes:
        raise DataError(
            f"{cfg.data}: the train and val splits have different classes "
            f"({splits[0].classes[:5]} ... vs {splits[1].classes[:5]} ...)"
        )
    return splits[0], splits[1]


# ============================================================================= evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 256,
    resolution: int | None = None,
    amp_dtype: torch.dtype | None = None,
    dist_info: ddp.DistInfo | None = None,
) -> dict[str, float]:
    """Cross-entropy, top-1 and top-5 (in %) of ``model`` on uint8 ``images`` (N, H, W, 3).

    Images get the evaluation transform of :class:`BatchAugment` (resize/centre-crop and
    normalise). Under DDP each rank evaluates ``images[rank::world_size]`` and the sums are
    all-reduced, so every rank returns the metrics of the whole set.
    """
    info = dist_info or ddp.DistInfo()
    device = next(model.parameters()).device
    resolution = resolution or int(images.shape[1])
    num_classes = int(getattr(model, "num_classes", 0)) or int(labels.max()) + 1
    aug = BatchAugment(resolution)
    was_training = model.training
    model.eval()
    shard = torch.arange(info.rank, len(labels), info.world_size, device=labels.device)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    k = min(5, num_classes)
    for start in range(0, len(shard), batch_size):
        idx = shard[start : start + batch_size]
        x, _ = aug(images[idx], labels[idx], num_classes, train=False)  # resize + normalise
        y = labels[idx].to(device)
        with autocast(device, amp_dtype):
            logits = model(x.to(device)).float()
        topk = logits.topk(k, dim=1).indices
        sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
        sums[1] += (topk[:, 0] == y).sum()
        sums[2] += (topk == y[:, None]).any(dim=1).sum()
        sums[3] += len(idx)
    ddp.all_reduce_sum(sums, info)
    model.train(was_training)
    n = max(1.0, float(sums[3]))
    return {
        "loss": float(sums[0]) / n,
        "top1": 100.0 * float(sums[1]) / n,
        "top5": 100.0 * float(sums[2]) / n,
        "n": float(sums[3]),
    }


# ============================================================================= the loop
@dataclass
class _Run:
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


def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; see the module docstring for what happens."""
    check_model(cfg)  # before any data is loaded: names, overrides, device, out folder
    check_device(cfg.device)
    device = ddp.resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = ddp.setup(device)
    try:
        with contextlib.ExitStack() as held:  # the out folder's lock, for the whole run
            out_dir = Path(cfg.out).expanduser() if cfg.out else None
            resuming = _on_main_rank(info, lambda: _claim_out_folder(cfg, out_dir, held))
            return _train(cfg, device, info, out_dir, bool(resuming))
    finally:
        ddp.teardown(info)


def _train(
    cfg: TrainConfig, device: torch.device, info: ddp.DistInfo, out_dir: Path | None,
    resuming: bool,
) -> TrainResult:
    _set_threads(cfg, info, device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    train_set, val_set = load_datasets(cfg, device)  # whole uint8 arrays on the device
    run = _build_run(cfg, device, info, train_set)
    if resuming:
        assert out_dir is not None
        _restore(run, out_dir, device, info)
    elif out_dir is not None and info.is_main:
        write_json(out_dir / ckpt.CONFIG_FILE, cfg.to_dict())
    run_info = _run_info(cfg, run, len(train_set.labels), len(val_set.labels), device, info)
    _announce(cfg, run, run_info, resuming, out_dir, info)
    net = _wrap(run.model, cfg, device, info)

    last_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    while run.epoch < last_epoch:
        t0 = time.perf_counter()
        row = _train_epoch(run, net, train_set, cfg, device, info, out_dir)
        if run.epoch + 1 == cfg.epochs or (run.epoch + 1) % cfg.eval_every == 0:
            m = evaluate(run.model, val_set.images, val_set.labels, batch_size=cfg.eval_batch_size,
                         resolution=cfg.resolution, amp_dtype=run.amp, dist_info=info)
            row.update(val_loss=m["loss"], val_top1=m["top1"], val_top5=m["top5"])
        row["epoch_time_s"] = time.perf_counter() - t0
        run.history.append(row)
        run.epoch += 1
        if cfg.verbose and info.is_main:
            print(_format_row(row, cfg.epochs), flush=True)
        rng = ddp.all_gather_objects(ckpt.capture_rng(run.gen), info)  # every rank's RNGs
        _on_main_rank(info, functools.partial(_save, run, rng, cfg, out_dir, run_info))

    if out_dir is not None and info.is_main and run.history:
        title = f"{cfg.model} on {cfg.data}"
        plot_curves(run.history, out_dir / "curves.png", title, chance=100.0 / run.num_classes)
    run.model.eval()
    return TrainResult(run.model, run.history, cfg, out_dir, run_info)


def _train_epoch(
    run: _Run, net: nn.Module, data: _Split, cfg: TrainConfig, device: torch.device,
    info: ddp.DistInfo, out_dir: Path | None,
) -> dict[str, Any]:
    """One pass over the training split; returns the epoch's row of metrics (no val yet)."""
    net.train()
    t0 = time.perf_counter()
    perm = torch.randperm(len(data.labels), generator=run.gen).to(device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    nonfinite = torch.zeros((), device=device, dtype=torch.int64)  # steps with a NaN/inf loss
    my_slice = slice(info.rank * run.local_bs, (info.rank + 1) * run.local_bs)
    bar = tqdm(range(run.steps_per_epoch), desc=f"epoch {run.epoch + 1}/{cfg.epochs}",
               disable=not _show_progress(info), leave=False)
    lr = 0.0
    for i in bar:
        idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        # augment the whole global batch (same on every rank), keep this rank's slice
        x, targets = run.aug(data.images[idx], data.labels[idx], run.num_classes, run.gen)
        x, targets, y = x[my_slice], targets[my_slice], data.labels[idx][my_slice]

        lr = lr_at(run.step, run.total_steps, run.warmup_steps, cfg.lr, cfg.min_lr)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        with autocast(device, run.amp):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), targets)  # soft targets from BatchAugment
        run.optimizer.zero_grad(set_to_none=True)
        scaled: Tensor = run.scaler.scale(loss)
        scaled.backward()  # type: ignore[no-untyped-call]
        if cfg.clip_grad > 0:
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.step += 1

        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        nonfinite += (~torch.isfinite(loss.detach())).long()
        if (i + 1) % DIVERGENCE_CHECK_EVERY == 0 or i + 1 == run.steps_per_epoch:
            _stop_if_diverged(nonfinite, run, cfg, lr, info, out_dir)
        if i % 10 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_time = time.perf_counter() - t0
    totals = ddp.all_reduce_sum(torch.stack([loss_sum, correct]), info)
    seen = run.steps_per_epoch * cfg.batch_size
    return {
        "epoch": run.epoch + 1,
        "step": run.step,
        "lr": lr,
        "train_loss": float(totals[0]) / seen,
        "train_top1": 100.0 * float(totals[1]) / seen,
        "val_loss": None,
        "val_top1": None,
        "val_top5": None,
        "train_images_per_s": seen / train_time,
    }


def _stop_if_diverged(
    nonfinite: Tensor, run: _Run, cfg: TrainConfig, lr: float, info: ddp.DistInfo,
    out_dir: Path | None,
) -> None:
    """TrainingDivergedError on every rank once any rank has seen a NaN or infinite loss."""
    if int(ddp.all_reduce_sum(nonfinite.clone(), info)) == 0:
        return
    kept = (
        f"the last good checkpoint (epoch {run.epoch}) in {out_dir} is kept"
        if out_dir is not None and run.epoch > 0
        else "nothing was saved"
    )
    raise TrainingDivergedError(
        f"training diverged: the loss became NaN or infinite in epoch {run.epoch + 1} (by step "
        f"{run.step}, lr {lr:.2e}); {kept}. Try a lower --lr (now {cfg.lr:g}), a longer "
        f"--warmup-epochs (now {cfg.warmup_epochs:g}), --clip-grad 1, or --amp off"
    )


# ============================================================================= set-up pieces
_T = typing.TypeVar("_T")


def _on_main_rank(info: ddp.DistInfo, fn: typing.Callable[[], _T]) -> _T | None:
    """Run ``fn`` on the main rank only and hand its result to every rank; if it fails there,
    every rank fails (none waits forever in a collective)."""
    result: _T | None = None
    error: Exception | None = None
    if info.is_main:
        try:
            result = fn()
        except Exception as e:
            error = e
    failed, result = ddp.broadcast_object((None if error is None else str(error), result), info)
    if error is not None:
        raise error
    if failed is not None:
        raise MinilgError(f"the main rank failed: {failed}")
    return result


def _claim_out_folder(cfg: TrainConfig, out_dir: Path | None, held: contextlib.ExitStack) -> bool:
    """Check and lock the out folder (held in ``held``); returns whether the run resumes."""
    if out_dir is None:
        if cfg.resume:
            raise ConfigError("resume", "needs an out folder to resume from (--out)")
        return False
    check_writable_folder(out_dir)
    held.enter_context(run_lock(out_dir))
    if cfg.resume and not ckpt.has_checkpoint(out_dir):
        raise NothingToResumeError(
            f"nothing to resume in {out_dir}: it holds no checkpoint (one is written after each "
            "epoch); start the run without --resume, or check --out"
        )
    if cfg.resume and ckpt.latest_checkpoint(out_dir) is None:
        raise CheckpointError(
            f"{out_dir} holds a checkpoint in the old two-file layout (model.safetensors + "
            "train_state.pt), which cannot be resumed safely; evaluate it with `python -m minilg "
            "eval --checkpoint` or start a new run in another folder"
        )
    if not cfg.resume and ckpt.has_checkpoint(out_dir):
        raise RunExistsError(
            f"{out_dir} already holds a checkpoint: pass resume=True (--resume) to continue "
            "it, or choose another out folder"
        )
    removed = ckpt.clean_orphans(out_dir)
    if removed and cfg.verbose:
        print(f"note: removed what an interrupted save left in {out_dir}: {', '.join(removed)}")
    if cfg.resume:
        _check_resume_config(_saved_config(out_dir), cfg)
    return cfg.resume


def _saved_config(out_dir: Path) -> dict[str, Any]:
    try:
        saved: dict[str, Any] = json.loads((out_dir / ckpt.CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{out_dir / ckpt.CONFIG_FILE} cannot be read ({e})") from None
    return saved


def _check_resume_config(saved: dict[str, Any], cfg: TrainConfig) -> None:
    def plain(c: TrainConfig) -> dict[str, Any]:  # tuples -> lists, as in config.json
        d: dict[str, Any] = json.loads(json.dumps(c.to_dict()))
        return d

    current, before = plain(cfg), plain(TrainConfig.from_dict(saved))
    diff = [
        f"{k}: {before[k]!r} -> {current[k]!r}"
        for k in current
        if k not in ckpt.RESUME_MAY_CHANGE and current[k] != before[k]
    ]
    if diff:
        raise ConfigError(
            "resume", f"cannot resume {cfg.out}: the config differs from the checkpoint's ("
            + "; ".join(diff) + "); resume with the same options or choose another out folder"
        )


def _build_run(
    cfg: TrainConfig, device: torch.device, info: ddp.DistInfo, train_set: _Split
) -> _Run:
    """Model, optimiser, scaler, generator, augmentation and schedule of a fresh run."""
    n_train = len(train_set.labels)
    if cfg.batch_size % info.world_size:
        raise ConfigError("batch_size", f"must be divisible by the {info.world_size} ranks",
                          cfg.batch_size)
    if n_train < cfg.batch_size:
        raise ConfigError("batch_size", f"must not exceed the {n_train} training images",
                          cfg.batch_size)
    steps_per_epoch = n_train // cfg.batch_size  # drop the last partial batch
    _seed_everything(cfg.seed)  # same seed on every rank -> identical initial weights
    model = minilg.create_model(
        cfg.model, num_classes=train_set.num_classes, img_size=cfg.resolution,
        drop_path_rate=cfg.drop_path, **cfg.model_kwargs,
    ).to(device)
    dtype = amp_dtype(cfg.amp, device)
    run = _Run(
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


def _restore(run: _Run, out_dir: Path, device: torch.device, info: ddp.DistInfo) -> None:
    """Load the verified checkpoint of ``out_dir`` into ``run`` (weights, state, RNGs)."""
    state = ckpt.load_checkpoint(out_dir, run.model, device, _saved_config(out_dir))
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.step, run.history = state["epoch"], state["step"], list(state["history"])
    rng = state["rng"]
    ckpt.restore_rng(rng[info.rank] if len(rng) == info.world_size else rng[0], run.gen)
    if len(rng) != info.world_size and info.is_main:
        print(f"note: resuming {len(rng)}-rank RNG state on {info.world_size} ranks")


def _save(
    run: _Run, rng: list[Any], cfg: TrainConfig, out_dir: Path | None, run_info: dict[str, Any]
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


def _run_info(
    cfg: TrainConfig, run: _Run, n_train: int, n_val: int, device: torch.device,
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


def _announce(
    cfg: TrainConfig, run: _Run, run_info: dict[str, Any], resuming: bool,
    out_dir: Path | None, info: ddp.DistInfo,
) -> None:
    if not (cfg.verbose and info.is_main):
        return
    if resuming:
        print(f"{cfg.model}: resuming {out_dir} after epoch {run.epoch} (step {run.step})")
        if run.epoch >= cfg.epochs:
            print(f"nothing to do: all {cfg.epochs} epochs are done")
        return
    print(
        f"{cfg.model}: {run_info['params'] / 1e6:.2f}M params | {cfg.data} "
        f"{run_info['train_images']} train / {run_info['val_images']} val images, "
        f"{run.num_classes} classes | {run.steps_per_epoch} steps/epoch x {cfg.epochs} epochs | "
        f"{run_info['device']} x{run_info['world_size']} | amp {run_info['amp']}"
    )


def _wrap(model: nn.Module, cfg: TrainConfig, device: torch.device, info: ddp.DistInfo
          ) -> nn.Module:
    """DDP and/or torch.compile around the model (the unwrapped one is saved and evaluated)."""
    net: nn.Module = model
    if info.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids)
    if cfg.compile:
        net = typing.cast(nn.Module, torch.compile(net))
    return net


def _show_progress(info: ddp.DistInfo) -> bool:
    return info.is_main and progress_enabled()


def _set_threads(cfg: TrainConfig, info: ddp.DistInfo, device: torch.device) -> None:
    if device.type != "cpu":
        return
    n = cfg.threads or max(1, (os.cpu_count() or 1) // info.local_world_size)
    torch.set_num_threads(n)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _format_row(row: dict[str, Any], epochs: int) -> str:
    s = (
        f"epoch {row['epoch']:>3}/{epochs} | lr {row['lr']:.2e} | train loss "
        f"{row['train_loss']:.4f} top-1 {row['train_top1']:5.1f}"
    )
    if row["val_loss"] is not None:
        s += f" | val loss {row['val_loss']:.4f} top-1 {row['val_top1']:5.1f} top-5 "
        s += f"{row['val_top5']:5.1f}"
    return s + f" | {row['train_images_per_s']:.0f} img/s | {row['epoch_time_s']:.1f}s"


# ============================================================================= loading models
def locate_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """The weights file behind ``path`` (run folder, checkpoint folder or ``.safetensors``),
    verified against its manifest when there is one, and the run's config dict if known."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p} does not exist: pass a run folder or a .safetensors file")
    folder = p.parent if p.is_file() else p
    config: dict[str, Any] | None = None
    if (folder / ckpt.MANIFEST_FILE).is_file():  # a checkpoint folder
        config = ckpt.verify_checkpoint(folder).get("config")
        return folder / ckpt.WEIGHTS_FILE if p.is_dir() else p, config
    if p.is_dir():
        current = ckpt.latest_checkpoint(p)
        if current is not None:
            config = ckpt.verify_checkpoint(current).get("config")
            return current / ckpt.WEIGHTS_FILE, config
        if not (p / ckpt.WEIGHTS_FILE).is_file():
            raise CheckpointError(
                f"no checkpoint in {p} (a run writes checkpoints/ after its first epoch)"
            )
        p = p / ckpt.WEIGHTS_FILE  # the old two-file layout
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((p.parent / ckpt.CONFIG_FILE).read_text())
    return p, config


def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig | None]:
    """Rebuild a trained model from a run folder, a checkpoint folder or a ``.safetensors`` file.

    Returns ``(model, config)``; ``config`` is the run's :class:`TrainConfig` when known (from
    the manifest or a ``config.json`` beside the weights), else ``None`` (the model is rebuilt
    from the name, ``num_classes`` and ``img_size`` in the safetensors metadata). Checksums are
    verified; a corrupt, foreign or inconsistent checkpoint raises :class:`CheckpointError`.
    """
    return model_from_weights(*locate_checkpoint(checkpoint), device=device)


def model_from_weights(
    weights: Path, config: dict[str, Any] | None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig | None]:
    """:func:`load_model` for a weights file already found by :func:`locate_checkpoint`."""
    meta = ckpt.read_weights_metadata(weights)
    if not {"model", "num_classes", "img_size"} <= meta.keys():
        raise CheckpointError(
            f"{weights} has no minilg metadata (model, num_classes, img_size): it was not "
            "written by minilg"
        )
    try:
        cfg = TrainConfig.from_dict(config) if config else None
        model = minilg.create_model(
            meta["model"], num_classes=int(meta["num_classes"]), img_size=int(meta["img_size"]),
            **json.loads(meta.get("model_kwargs", "{}")),
        )
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{weights}: cannot rebuild its model {meta['model']!r}: {e}") from e
    ckpt.load_weights(weights, model)
    return model.to(device).eval(), cfg


if __name__ == "__main__":  # torchrun -m minilg.train ... (same as python -m minilg train ...)
    from minilg.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
