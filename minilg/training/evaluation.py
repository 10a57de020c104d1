"""Evaluate a saved checkpoint on a validation split (``python -m minilg eval``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from minilg.data import load_subset
from minilg.data.core import ImageArrayDataset
from minilg.data import canonical_subset
from minilg.errors import CheckpointError, ConfigError
from minilg.train import _subset, evaluate, locate_checkpoint, model_from_weights
from minilg.training import distributed as ddp
from minilg.training.checkpoint import read_weights_metadata
from minilg.training.config import check_device
from minilg.training.optim import amp_dtype

__all__ = ["check_classes", "evaluate_checkpoint"]


def check_classes(meta: dict[str, str], ds: ImageArrayDataset, weights: Path) -> None:
    """CheckpointError unless the checkpoint's classes are the data's, in the same order."""
    saved = json.loads(meta["classes"]) if "classes" in meta else None
    if saved is None and int(meta.get("num_classes", ds.num_classes)) == ds.num_classes:
        return  # an old checkpoint without class names: the count is all we can compare
    if saved == ds.classes:
        return
    theirs = f"{len(saved)} classes ({', '.join(saved[:3])}, ...)" if saved else (
        f"{meta.get('num_classes')} classes")
    raise CheckpointError(
        f"{weights} was trained on {theirs} but {ds.name} val has {ds.num_classes} "
        f"({', '.join(ds.classes[:3])}, ...): evaluate it on the data it was trained on "
        "(--data / --root)"
    )


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
    root = root or (cfg.root if cfg else None)
    resolution = resolution or int(meta["img_size"])
    ds = load_subset(data, "val", resolution, root=root)
    check_classes(meta, ds, weights)
    images, labels = _subset(ds.images, ds.labels, max_samples)
    t0 = time.perf_counter()
    m: dict[str, Any] = evaluate(
        model, images.to(dev), labels.to(dev), batch_size=batch_size, resolution=resolution,
        amp_dtype=amp_dtype(amp, dev),
    )
    return {"data": data, "resolution": resolution, **m, "seconds": time.perf_counter() - t0}
