"""Train minilg models: one config dataclass, one loop you can read in one sitting.

    python -m minilg train --model swin_mini --data synthetic --epochs 10 --out runs/swin
    python -m minilg train --out runs/swin --resume            # continue a stopped run exactly
    python -m minilg eval --checkpoint runs/swin
    python -m minilg compare --models deit_mini,window_mini,swin_mini --out runs/compare
    torchrun --nproc_per_node 2 -m minilg train --model swin_mini --out runs/ddp   # DDP

or from Python::

    from minilg.train import TrainConfig, train
    result = train(TrainConfig(model="swin_mini", epochs=5, out=None))
    result.history[-1]["val_top1"]

How the loop works (:func:`train` here; the run's state, how it is built, saved and restored, in
:mod:`minilg.training.state`; evaluation in :mod:`minilg.training.evaluation`; rebuilding a model
from its weights, :func:`load_model`, in :mod:`minilg.training.loading`):

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

import argparse
import contextlib
import functools
import os
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from minilg.errors import TrainingDivergedError
from minilg.io import progress_enabled, write_json
from minilg.training import checkpoint as ckpt
from minilg.training import distributed as ddp
from minilg.training import state
from minilg.training.config import TrainConfig, check_device, check_model, resolve_crop_scale
from minilg.training.evaluation import evaluate
from minilg.training.loading import load_model, locate_checkpoint, model_from_weights
from minilg.training.metrics import plot_curves
from minilg.training.optim import autocast, build_optimizer, lr_at, param_groups
from minilg.training.options import add_config_args, config_from_args, resumed_base
from minilg.training.rundir import claim_out_folder
from minilg.training.splits import Split, load_datasets

__all__ = [
    "TrainConfig",
    "TrainResult",
    "add_arguments",
    "build_optimizer",
    "evaluate",
    "load_datasets",
    "load_model",
    "locate_checkpoint",
    "lr_at",
    "model_from_weights",
    "param_groups",
    "resolve_crop_scale",
    "run",
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


# ============================================================================= the loop
def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; see the module docstring for what happens."""
    check_model(cfg)  # before any data is loaded: names, overrides, device, out folder
    check_device(cfg.device)
    device = ddp.resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = ddp.setup(device)
    try:
        with contextlib.ExitStack() as held:  # the out folder's lock, for the whole run
            out_dir = Path(cfg.out).expanduser() if cfg.out else None
            resuming = ddp.on_main_rank(info, lambda: claim_out_folder(cfg, out_dir, held))
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
    run = state.build_run(cfg, device, info, train_set)
    if resuming:
        assert out_dir is not None
        state.restore_run(run, out_dir, device, info)
    elif out_dir is not None and info.is_main:
        write_json(out_dir / ckpt.CONFIG_FILE, cfg.to_dict())
    run_info = state.run_info(cfg, run, len(train_set.labels), len(val_set.labels), device, info)
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
        ddp.on_main_rank(info, functools.partial(state.save_run, run, rng, cfg, out_dir, run_info))

    if out_dir is not None and info.is_main and run.history:
        title = f"{cfg.model} on {cfg.data}"
        plot_curves(run.history, out_dir / "curves.png", title, chance=100.0 / run.num_classes)
    run.model.eval()
    return TrainResult(run.model, run.history, cfg, out_dir, run_info)


def _train_epoch(
    run: state.RunState, net: nn.Module, data: Split, cfg: TrainConfig, device: torch.device,
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
    nonfinite: Tensor, run: state.RunState, cfg: TrainConfig, lr: float, info: ddp.DistInfo,
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
def _announce(
    cfg: TrainConfig, run: state.RunState, run_info: dict[str, Any], resuming: bool,
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


def _format_row(row: dict[str, Any], epochs: int) -> str:
    s = (
        f"epoch {row['epoch']:>3}/{epochs} | lr {row['lr']:.2e} | train loss "
        f"{row['train_loss']:.4f} top-1 {row['train_top1']:5.1f}"
    )
    if row["val_loss"] is not None:
        s += f" | val loss {row['val_loss']:.4f} top-1 {row['val_top1']:5.1f} top-5 "
        s += f"{row['val_top5']:5.1f}"
    return s + f" | {row['train_images_per_s']:.0f} img/s | {row['epoch_time_s']:.1f}s"


# ============================================================================= the train verb
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m minilg train [TrainConfig flags]``: one flag per :class:`TrainConfig` field."""
    add_config_args(parser)


def run(args: argparse.Namespace) -> int:
    """Train with the flags given (with ``--resume``: over the saved config of ``--out``)."""
    cfg = config_from_args(args, resumed_base(args))
    result = train(cfg)
    if cfg.out and int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {cfg.out}/ (checkpoints/, metrics.csv, metrics.json, curves.png)")
    return 0 if result.history else 1
