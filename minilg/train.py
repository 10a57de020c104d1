"""Train and evaluate minilg models: one config dataclass, one loop you can read in one sitting.

    python -m minilg train --model swin_mini --data synthetic --epochs 10 --out runs/swin
    python -m minilg train --out runs/swin --resume            # continue a stopped run exactly
    python -m minilg eval --checkpoint runs/swin
    python -m minilg compare --models deit_mini,window_mini,swin_mini --out runs/compare
    torchrun --nproc_per_node 2 -m minilg.train --model swin_mini --out runs/ddp   # DDP

or from Python::

    from minilg.train import TrainConfig, train
    result = train(TrainConfig(model="swin_mini", epochs=5, out=None))
    result.history[-1]["val_top1"]

How the loop works (everything below is in :func:`train`):

* **Data** -- the whole uint8 dataset ``(N, H, W, 3)`` sits on the training device. Each epoch a
  seeded CPU :class:`torch.Generator` draws a permutation; each step takes the next global batch of
  indices and :class:`minilg.data.augment.BatchAugment` crops, flips, mixes and normalises the
  batch on the device (no DataLoader, no worker processes).
* **Optimiser** -- AdamW; norms, biases, position-bias tables, ``pos_embed`` and ``cls_token``
  get no weight decay (:func:`param_groups`). The learning rate follows a linear warm-up then a
  cosine decay, set every step from :func:`lr_at`. Gradients are clipped by global norm.
* **Mixed precision** -- on CUDA, ``amp="auto"`` uses bf16 where supported, else fp16 with a
  gradient scaler. ``compile=True`` wraps the model in :func:`torch.compile`.
* **Checkpoints** -- after every epoch, ``model.safetensors`` + ``train_state.pt`` are written
  atomically (:mod:`minilg.training.checkpoint`). The state includes every RNG, so resuming a
  stopped run ends with bit-identical weights on CPU.
* **DDP** -- under ``torchrun`` every rank draws the same permutation and augments the same
  *global* batch from the same generator, then keeps its own slice ``[rank*b:(rank+1)*b]``. The
  ranks therefore see disjoint shards of exactly the batch a single process would see, and the
  averaged gradients match single-process training with that global batch.
* **Outputs** -- ``config.json``, ``metrics.csv``/``metrics.json`` (one row per epoch),
  ``curves.png`` in the ``out`` folder; ``out=None`` keeps everything in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
import types
import typing
from collections.abc import Sequence
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
from minilg.data import DatasetUnavailableError, load_subset
from minilg.data.augment import BatchAugment
from minilg.training import checkpoint as ckpt
from minilg.training import distributed as ddp
from minilg.training.metrics import plot_curves, write_metrics

__all__ = [
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "cli_compare",
    "cli_eval",
    "cli_train",
    "evaluate",
    "load_datasets",
    "load_model",
    "lr_at",
    "param_groups",
    "resolve_crop_scale",
    "train",
]


# ============================================================================= configuration
@dataclass
class TrainConfig:
    """Everything that defines a training run. Plain values only: it is saved as JSON."""

    # what to train on
    model: str = "swin_mini"  # a name from minilg.list_models()
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # create_model overrides
    data: str = "synthetic"  # a name understood by minilg.data.load_subset
    root: str | None = None  # where load_subset finds/caches real data (e.g. Imagenette)
    resolution: int = 32  # input side in pixels
    # optimisation
    epochs: int = 10
    batch_size: int = 128  # global batch: split over DDP ranks
    lr: float = 1e-3  # peak learning rate, reached after warm-up
    min_lr: float = 1e-5  # end of the cosine decay
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    clip_grad: float = 1.0  # max global gradient norm; 0 disables clipping
    # regularisation and augmentation
    label_smoothing: float = 0.1
    mixup: float = 0.0  # mixup alpha; 0 disables
    cutmix: float = 0.0  # cutmix alpha; 0 disables
    # random-resized-crop area range (lo, hi); None: no crop; "auto": none for "synthetic"
    # (a crop can cut a stroke out of the picture, changing the label), (0.35, 1) otherwise
    crop_scale: tuple[float, float] | str | None = "auto"
    hflip: bool = True
    drop_path: float = 0.1  # stochastic depth rate
    # machinery
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    amp: str = "auto"  # "auto" | "bf16" | "fp16" | "off"
    compile: bool = False  # torch.compile the model
    threads: int = 0  # torch CPU threads; 0 = all cores (split between local DDP ranks)
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    eval_batch_size: int = 256
    max_train_samples: int | None = None  # use a seeded subset of the training split
    max_eval_samples: int | None = None  # use a seeded subset of the validation split
    out: str | None = "runs/default"  # run folder; None writes nothing
    resume: bool = False  # continue from the checkpoint in ``out``
    stop_after: int | None = None  # stop once this many epochs are done (simulates a kill)
    verbose: bool = True  # print one line per epoch

    def __post_init__(self) -> None:
        if isinstance(self.crop_scale, (list, tuple)):  # lists come back from config.json
            self.crop_scale = (float(self.crop_scale[0]), float(self.crop_scale[1]))
        elif self.crop_scale not in (None, "auto"):
            raise ValueError(f"crop_scale must be (lo, hi), None or 'auto': {self.crop_scale!r}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict (e.g. ``config.json``), ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resolve_crop_scale(cfg: TrainConfig) -> tuple[float, float] | None:
    """The crop range :class:`BatchAugment` gets: ``"auto"`` depends on the dataset."""
    if cfg.crop_scale == "auto":
        return None if cfg.data in ("synthetic", "default") else (0.35, 1.0)
    assert not isinstance(cfg.crop_scale, str)
    return cfg.crop_scale


# Fields that may differ when resuming without breaking exactness.
_RESUME_MAY_CHANGE = {"device", "compile", "threads", "out", "resume", "stop_after", "verbose"}


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


# ============================================================================= optimiser pieces
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


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = full fp32)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:n]
    idx = idx.sort().values.to(labels.device)
    return images[idx], labels[idx]


def load_datasets(cfg: TrainConfig, device: torch.device) -> tuple[_Split, _Split]:
    """The train and validation splits of ``cfg.data`` as tensors on ``device``.

    Raises :class:`minilg.data.DatasetUnavailableError` when the data cannot be had offline.
    """
    splits = []
    for split, limit in (("train", cfg.max_train_samples), ("val", cfg.max_eval_samples)):
        ds = load_subset(cfg.data, split, cfg.resolution, root=cfg.root)
        images, labels = _subset(ds.images, ds.labels, limit)
        splits.append(
            _Split(images.to(device), labels.to(device), ds.num_classes, list(ds.classes))
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
        with _autocast(device, amp_dtype):
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
def _show_progress(info: ddp.DistInfo) -> bool:
    quiet = os.environ.get("MINILG_QUIET", "") not in ("", "0") or bool(os.environ.get("CI"))
    return info.is_main and not quiet and sys.stderr.isatty()


def _set_threads(cfg: TrainConfig, info: ddp.DistInfo, device: torch.device) -> None:
    if device.type != "cpu":
        return
    n = cfg.threads or max(1, (os.cpu_count() or 1) // info.local_world_size)
    torch.set_num_threads(n)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_resume_config(saved: dict[str, Any], cfg: TrainConfig) -> None:
    def plain(c: TrainConfig) -> dict[str, Any]:  # tuples -> lists, as in config.json
        d: dict[str, Any] = json.loads(json.dumps(c.to_dict()))
        return d

    current, saved = plain(cfg), plain(TrainConfig.from_dict(saved))
    diff = [
        f"{k}: {saved[k]!r} -> {current[k]!r}"
        for k in current
        if k not in _RESUME_MAY_CHANGE and current[k] != saved[k]
    ]
    if diff:
        raise ValueError(
            "cannot resume: the config differs from the checkpoint's (" + "; ".join(diff) + ")"
        )


def _check_model_name(name: str) -> None:
    """Fail fast on a typo, before any data is loaded (the error is create_model's own)."""
    if name not in minilg.list_models():
        minilg.create_model(name)  # raises the library's ValueError listing the known names
        raise ValueError(f"unknown model {name!r}")  # pragma: no cover - create_model raised


def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; see the module docstring for what happens."""
    _check_model_name(cfg.model)
    device = ddp.resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = ddp.setup(device)
    try:
        return _train(cfg, device, info)
    finally:
        ddp.teardown(info)


def _train(cfg: TrainConfig, device: torch.device, info: ddp.DistInfo) -> TrainResult:
    _set_threads(cfg, info, device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    out_dir = Path(cfg.out) if cfg.out else None
    resuming = cfg.resume and out_dir is not None and ckpt.has_checkpoint(out_dir)
    if out_dir is not None and ckpt.has_checkpoint(out_dir) and not cfg.resume:
        raise FileExistsError(
            f"{out_dir} already holds a checkpoint: pass resume=True (--resume) to continue "
            "it, or choose another out folder"
        )
    if resuming:
        assert out_dir is not None
        _check_resume_config(json.loads((out_dir / ckpt.CONFIG_FILE).read_text()), cfg)

    # -- data: whole uint8 arrays on the device
    train_set, val_set = load_datasets(cfg, device)
    n_train, num_classes = len(train_set.labels), train_set.num_classes
    if cfg.batch_size % info.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} not divisible by {info.world_size} ranks")
    if n_train < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {n_train} training images")
    local_bs = cfg.batch_size // info.world_size
    steps_per_epoch = n_train // cfg.batch_size  # drop the last partial batch
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    # -- model and optimiser (same seed on every rank -> identical initial weights)
    _seed_everything(cfg.seed)
    model = minilg.create_model(
        cfg.model,
        num_classes=num_classes,
        img_size=cfg.resolution,
        drop_path_rate=cfg.drop_path,
        **cfg.model_kwargs,
    ).to(device)
    optimizer = build_optimizer(model, cfg)
    amp_dtype = _amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    # One CPU generator drives data order and augmentation: identical on every rank, and the
    # same random numbers whether the batch lives on the CPU or a GPU.
    gen = torch.Generator().manual_seed(cfg.seed)
    # Stochastic depth / dropout use the global RNG: different per rank, like different samples.
    torch.manual_seed(cfg.seed + info.rank)
    aug = BatchAugment(
        cfg.resolution,
        scale=resolve_crop_scale(cfg),
        hflip=cfg.hflip,
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        label_smoothing=cfg.label_smoothing,
    )

    start_epoch, step, history = 0, 0, []
    if resuming:
        assert out_dir is not None
        state = ckpt.load_checkpoint(out_dir, model, device)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, step, history = state["epoch"], state["step"], list(state["history"])
        rng = state["rng"]
        ckpt.restore_rng(rng[info.rank] if len(rng) == info.world_size else rng[0], gen)
        if len(rng) != info.world_size and info.is_main:
            print(f"note: resuming {len(rng)}-rank RNG state on {info.world_size} ranks")
    elif out_dir is not None and info.is_main:
        ckpt.write_json(out_dir / ckpt.CONFIG_FILE, cfg.to_dict())

    n_params = sum(p.numel() for p in model.parameters())
    run_info = {
        "model": cfg.model,
        "params": n_params,
        "num_classes": num_classes,
        "classes": train_set.classes,
        "train_images": n_train,
        "val_images": len(val_set.labels),
        "device": str(device),
        "world_size": info.world_size,
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
    }
    if cfg.verbose and info.is_main and resuming:
        print(f"{cfg.model}: resuming {out_dir} after epoch {start_epoch} (step {step})")
        if start_epoch >= cfg.epochs:
            print(f"nothing to do: all {cfg.epochs} epochs are done")
    elif cfg.verbose and info.is_main:
        print(
            f"{cfg.model}: {n_params / 1e6:.2f}M params | {cfg.data} {n_train} train / "
            f"{len(val_set.labels)} val images, {num_classes} classes | {steps_per_epoch} "
            f"steps/epoch x {cfg.epochs} epochs | {device} x{info.world_size} | amp "
            f"{run_info['amp']}"
        )

    raw_model = model  # what we save and evaluate
    net: nn.Module = model
    if info.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids)
    if cfg.compile:
        net = typing.cast(nn.Module, torch.compile(net))

    last_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    my_slice = slice(info.rank * local_bs, (info.rank + 1) * local_bs)
    for epoch in range(start_epoch, last_epoch):
        # ---------------------------------------------------------------- train one epoch
        net.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n_train, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.float64)
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not _show_progress(info),
            leave=False,
        )
        for i in bar:
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            # augment the whole global batch (same on every rank), keep this rank's slice
            x, targets = aug(train_set.images[idx], train_set.labels[idx], num_classes, gen)
            x, targets, y = x[my_slice], targets[my_slice], train_set.labels[idx][my_slice]

            lr = lr_at(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with _autocast(device, amp_dtype):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), targets)  # soft targets from BatchAugment
            optimizer.zero_grad(set_to_none=True)
            scaled: Tensor = scaler.scale(loss)
            scaled.backward()  # type: ignore[no-untyped-call]
            if cfg.clip_grad > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            step += 1

            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            if i % 10 == 0 and bar.disable is False:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time = time.perf_counter() - t0
        totals = ddp.all_reduce_sum(torch.stack([loss_sum, correct]), info)
        seen = steps_per_epoch * cfg.batch_size
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "lr": lr,
            "train_loss": float(totals[0]) / seen,
            "train_top1": 100.0 * float(totals[1]) / seen,
            "val_loss": None,
            "val_top1": None,
            "val_top5": None,
            "train_images_per_s": seen / train_time,
        }
        # ---------------------------------------------------------------- evaluate
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            m = evaluate(
                raw_model,
                val_set.images,
                val_set.labels,
                batch_size=cfg.eval_batch_size,
                resolution=cfg.resolution,
                amp_dtype=amp_dtype,
                dist_info=info,
            )
            row.update(val_loss=m["loss"], val_top1=m["top1"], val_top5=m["top5"])
        row["epoch_time_s"] = time.perf_counter() - t0
        history.append(row)
        if cfg.verbose and info.is_main:
            print(_format_row(row, cfg.epochs), flush=True)

        # ---------------------------------------------------------------- checkpoint
        rng = ddp.all_gather_objects(ckpt.capture_rng(gen), info)
        if out_dir is not None and info.is_main:
            state = {
                "epoch": epoch + 1,
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "history": history,
                "rng": rng,
            }
            meta = {
                "model": cfg.model,
                "model_kwargs": json.dumps(cfg.model_kwargs),
                "num_classes": str(num_classes),
                "img_size": str(cfg.resolution),
                "epoch": str(epoch + 1),
            }
            ckpt.save_checkpoint(out_dir, raw_model, state, meta)
            write_metrics(out_dir, history, {"config": cfg.to_dict(), "info": run_info})
        ddp.barrier(info)

    if out_dir is not None and info.is_main and history:
        title = f"{cfg.model} on {cfg.data}"
        plot_curves(history, out_dir / "curves.png", title, chance=100.0 / num_classes)
    raw_model.eval()
    return TrainResult(raw_model, history, cfg, out_dir, run_info)


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
def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig | None]:
    """Rebuild a trained model from a run folder or a ``.safetensors`` file.

    Returns ``(model, config)``; ``config`` is the run's :class:`TrainConfig` when a
    ``config.json`` sits beside the weights, else ``None`` (the model is then rebuilt from the
    name, ``num_classes`` and ``img_size`` stored in the safetensors metadata).
    """
    path = Path(checkpoint)
    weights = path / ckpt.WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"no checkpoint at {weights}")
    meta = ckpt.read_weights_metadata(weights)
    config_file = weights.parent / ckpt.CONFIG_FILE
    cfg = None
    if config_file.is_file():
        cfg = TrainConfig.from_dict(json.loads(config_file.read_text()))
    model = minilg.create_model(
        meta.get("model", cfg.model if cfg else ""),
        num_classes=int(meta["num_classes"]),
        img_size=int(meta["img_size"]),
        **json.loads(meta.get("model_kwargs", "{}")),
    )
    ckpt.load_weights(weights, model)
    return model.to(device).eval(), cfg


# ============================================================================= command line
_HELP = {
    "model": "model name (see python -m minilg list)",
    "model_kwargs": "JSON dict of create_model overrides, e.g. '{\"depths\": [1, 1, 1, 1]}'",
    "data": "dataset name for minilg.data.load_subset (default: the embedded synthetic set)",
    "root": "folder with / for downloaded data (e.g. Imagenette)",
    "batch_size": "global batch size (split over DDP ranks)",
    "crop_scale": "random-resized-crop area range 'LO,HI', 'none', or 'auto' (none for synthetic)",
    "amp": "mixed precision: auto (bf16/fp16 on CUDA, off on CPU), bf16, fp16, off",
    "threads": "torch CPU threads (0: all cores, split between local ranks)",
    "out": "run folder for checkpoints and metrics ('none' writes nothing)",
    "resume": "continue the run in --out from its last checkpoint",
    "stop_after": "stop after this many epochs (as if the job were killed)",
    "max_train_samples": "train on a seeded subset of this many images",
    "max_eval_samples": "evaluate on a seeded subset of this many images",
}


def _add_config_args(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One ``--flag`` per :class:`TrainConfig` field, typed from the annotations.

    Defaults are suppressed, so the parsed namespace holds only what the user typed; it is
    merged over the defaults (or over a resumed run's saved config) by :func:`_config_from_args`.
    """
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else "{}"
        help_ = _HELP.get(f.name, "") + f" (default: {default})"
        tp = hints[f.name]
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
            continue
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if isinstance(tp, types.UnionType):  # X | None
            tp = args[0]
        if f.name == "crop_scale":
            parser.add_argument(flag, type=_parse_crop, metavar="LO,HI|none|auto", help=help_)
        elif typing.get_origin(tp) is dict:
            parser.add_argument(flag, type=json.loads, metavar="JSON", help=help_)
        elif f.name == "amp":
            parser.add_argument(flag, choices=["auto", "bf16", "fp16", "off"], help=help_)
        else:
            parser.add_argument(flag, type=tp, help=help_)


def _parse_crop(text: str) -> tuple[float, float] | str | None:
    if text.lower() in ("none", "auto"):
        return None if text.lower() == "none" else "auto"
    lo, hi = (float(v) for v in text.split(","))
    return (lo, hi)


def _config_from_args(ns: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(ns).items() if k in names}
    if isinstance(given.get("out"), str) and given["out"].lower() == "none":
        given["out"] = None
    return dataclasses.replace(base or TrainConfig(), **given)


def cli_train(argv: list[str]) -> int:
    """``python -m minilg train ...``; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m minilg train",
        description="Train a minilg model (also under torchrun for DDP).",
        argument_default=argparse.SUPPRESS,
    )
    _add_config_args(parser)
    ns = parser.parse_args(argv)
    base = None
    out = getattr(ns, "out", TrainConfig.out)
    if getattr(ns, "resume", False) and out and (Path(out) / ckpt.CONFIG_FILE).is_file():
        saved = TrainConfig.from_dict(json.loads((Path(out) / ckpt.CONFIG_FILE).read_text()))
        base = dataclasses.replace(saved, stop_after=None)  # a resumed run goes to the end
    cfg = _config_from_args(ns, base)
    try:
        result = train(cfg)
    except (DatasetUnavailableError, ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.out and int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {cfg.out}/ (model.safetensors, metrics.csv, metrics.json, curves.png)")
    return 0 if result.history else 1


def cli_eval(argv: list[str]) -> int:
    """``python -m minilg eval --checkpoint RUN_DIR``: top-1/top-5 on the validation split."""
    parser = argparse.ArgumentParser(
        prog="python -m minilg eval", description="Evaluate a trained checkpoint."
    )
    parser.add_argument("--checkpoint", required=True, help="run folder or .safetensors file")
    parser.add_argument("--data", help="dataset (default: the one it was trained on)")
    parser.add_argument("--root", help="data folder (default: the training run's)")
    parser.add_argument("--resolution", type=int, help="input side (default: the training one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-eval-samples", type=int)
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    args = parser.parse_args(argv)
    device = ddp.resolve_device(args.device)
    try:
        model, cfg = load_model(args.checkpoint, device)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: cannot load {args.checkpoint}: {e}", file=sys.stderr)
        return 2
    cfg = cfg or TrainConfig(data=args.data or "synthetic")
    cfg = dataclasses.replace(
        cfg,
        data=args.data or cfg.data,
        root=args.root or cfg.root,
        resolution=args.resolution or int(getattr(model, "img_size", cfg.resolution)),
        max_eval_samples=args.max_eval_samples,
    )
    try:
        ds = load_subset(cfg.data, split="val", resolution=cfg.resolution, root=cfg.root)
    except DatasetUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images, labels = _subset(ds.images, ds.labels, cfg.max_eval_samples)
    t0 = time.perf_counter()
    m = evaluate(
        model,
        images.to(device),
        labels.to(device),
        batch_size=args.batch_size,
        resolution=cfg.resolution,
        amp_dtype=_amp_dtype(args.amp, device),
    )
    m["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "data": cfg.data, **m}))
    else:
        print(
            f"{args.checkpoint}: {cfg.data} val ({int(m['n'])} images @ {cfg.resolution}px) | "
            f"loss {m['loss']:.4f} | top-1 {m['top1']:.2f}% | top-5 {m['top5']:.2f}%"
        )
    return 0


def cli_compare(argv: list[str]) -> int:
    """``python -m minilg compare ...``: see :mod:`minilg.training.compare`."""
    from minilg.training.compare import cli_compare as _cli_compare

    return _cli_compare(argv)


if __name__ == "__main__":
    sys.exit(cli_train(sys.argv[1:]))
