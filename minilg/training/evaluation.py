"""Evaluation: top-1/top-5 of a model on a split, and of a saved checkpoint
(``python -m minilg eval``)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilg.data import canonical_subset, load_subset
from minilg.data.augment import BatchAugment
from minilg.data.core import ImageArrayDataset
from minilg.errors import CheckpointError, ConfigError
from minilg.training import distributed as ddp
from minilg.training.config import AMP_CHOICES, check_device
from minilg.training.loading import locate_checkpoint, model_from_weights
from minilg.training.optim import amp_dtype, autocast
from minilg.training.splits import sample_subset
from minilg.training.weights import read_weights_metadata

__all__ = [
    "add_arguments", "check_classes", "check_resolution", "evaluate", "evaluate_checkpoint", "run",
    "symmetrised_top1",
]


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


def symmetrised_top1(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    twin: Callable[[Tensor], Tensor],
    *,
    batch_size: int = 256,
) -> float:
    """Top-1 (in %) of the summed logits of each image and its ``twin`` (uint8 (N, H, W, 3)).

    ``twin`` maps images to images of the same label under a symmetry of the task; summing the
    two scores keeps only the part of the model's score that the symmetry leaves unchanged. On
    the ``match`` task (:func:`minilg.data.match.swap_colours`) that is exactly the interaction
    of the two sides: the accuracy on the part of the label that needs reach.
    """
    device = next(model.parameters()).device
    num_classes = int(getattr(model, "num_classes", 0)) or int(labels.max()) + 1
    aug = BatchAugment(int(images.shape[1]))
    was_training = model.training
    model.eval()
    correct = 0

    def scores(x: Tensor, y: Tensor) -> Tensor:
        logits: Tensor = model(aug(x, y, num_classes, train=False)[0].to(device))
        return logits.float()

    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            x, y = images[start : start + batch_size], labels[start : start + batch_size]
            logits = scores(x, y) + scores(twin(x), y)
            correct += int((logits.argmax(-1).cpu() == y.cpu()).sum())
    model.train(was_training)
    return 100.0 * correct / max(1, len(labels))


def check_classes(meta: dict[str, str], ds: ImageArrayDataset, weights: Path) -> None:
    """CheckpointError unless the checkpoint's classes are the data's, in the same order."""
    saved = json.loads(meta["classes"]) if "classes" in meta else None
    if saved is None and int(meta.get("num_classes", ds.num_classes)) == ds.num_classes:
        return  # weights without class names (converted ones): the count is all we can compare
    if saved == ds.classes:
        return
    theirs = f"{len(saved)} classes ({', '.join(saved[:3])}, ...)" if saved else (
        f"{meta.get('num_classes')} classes")
    raise CheckpointError(
        f"{weights} was trained on {theirs} but {ds.name} val has {ds.num_classes} "
        f"({', '.join(ds.classes[:3])}, ...): evaluate it on the data it was trained on "
        "(--data / --root)"
    )


@torch.no_grad()
def check_resolution(model: nn.Module, resolution: int, img_size: int, device: torch.device
                     ) -> None:
    """ConfigError (with advice ``eval`` can follow) when ``model`` cannot run at
    ``resolution``: one image is tried before any data is loaded."""
    if resolution == img_size:
        return
    param = next(model.parameters())
    try:
        model(torch.zeros(1, 3, resolution, resolution, device=device, dtype=param.dtype))
    except (ValueError, RuntimeError) as e:
        why = str(e).splitlines()[0].split("; ")[0]  # not the model's advice to rebuild it
        raise ConfigError(
            "resolution", f"{resolution} does not fit this model, built for {img_size} px "
            f"({why}): evaluate it without --resolution (it then uses {img_size})"
        ) from None


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | None = None,
    root: str | None = None,
    resolution: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    max_samples: int | None = None,
    amp: str = "auto",
) -> dict[str, Any]:
    """Loss, top-1, top-5 (and ``n``, ``data``, ``resolution``, ``seconds``) of a checkpoint.

    ``data``, ``root`` and ``resolution`` default to the training run's. The checkpoint's
    checksums are verified and its classes must match the data's.
    """
    check_device(device)
    dev = ddp.resolve_device(device)
    weights, config = locate_checkpoint(checkpoint)
    model, cfg = model_from_weights(weights, config, dev)
    meta = read_weights_metadata(weights)
    data = data or (cfg.data if cfg else meta.get("data", "synthetic"))
    try:
        canonical_subset(data)
    except ValueError as e:
        raise ConfigError("data", str(e)) from None
    if root is None:  # the training run's; an empty --root '' clears it
        root = cfg.root if cfg else None
    root = root or None
    resolution = resolution or int(meta["img_size"])
    check_resolution(model, resolution, int(meta["img_size"]), dev)  # before any data loads
    ds = load_subset(data, "val", resolution, root=root)
    check_classes(meta, ds, weights)
    images, labels = sample_subset(ds.images, ds.labels, max_samples)
    t0 = time.perf_counter()
    m: dict[str, Any] = evaluate(
        model, images.to(dev), labels.to(dev), batch_size=batch_size, resolution=resolution,
        amp_dtype=amp_dtype(amp, dev),
    )
    return {"data": data, "resolution": resolution, **m, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- the eval verb
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m minilg eval --checkpoint RUN_DIR [--data ...] [--json]``."""
    parser.add_argument("--checkpoint", required=True,
                        help="run folder, checkpoint folder or .safetensors file")
    parser.add_argument("--data", help="dataset (default: the one it was trained on)")
    parser.add_argument("--root", help="data folder (default: the training run's; --root '' "
                        "for none)")
    parser.add_argument("--resolution", type=int, help="input side (default: the training one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-eval-samples", type=int)
    parser.add_argument("--amp", default="auto", choices=AMP_CHOICES)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def _at_least(name: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum}", value)


def run(args: argparse.Namespace) -> int:
    """Evaluate ``args.checkpoint`` and print one line (or JSON)."""
    _at_least("batch_size", args.batch_size, 1)
    _at_least("max_eval_samples", args.max_eval_samples, 1)
    _at_least("resolution", args.resolution, 8)
    m = evaluate_checkpoint(
        args.checkpoint, data=args.data, root=args.root, resolution=args.resolution,
        device=args.device, batch_size=args.batch_size, max_samples=args.max_eval_samples,
        amp=args.amp,
    )
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), **m}))
    else:
        print(
            f"{args.checkpoint}: {m['data']} val ({int(m['n'])} images @ {m['resolution']}px) | "
            f"loss {m['loss']:.4f} | top-1 {m['top1']:.2f}% | top-5 {m['top5']:.2f}%"
        )
    return 0
