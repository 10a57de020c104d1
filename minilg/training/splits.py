"""The train and validation splits of a run, as whole uint8 tensors on the training device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from minilg.data import load_subset
from minilg.errors import DataError
from minilg.training.config import TrainConfig

__all__ = ["Split", "load_datasets", "sample_subset"]


@dataclass
class Split:
    """One split of a data set, held on the device."""

    images: Tensor  # uint8 (N, H, W, 3)
    labels: Tensor  # int64 (N,)
    num_classes: int
    classes: list[str]


def sample_subset(images: Tensor, labels: Tensor, n: int | None) -> tuple[Tensor, Tensor]:
    """A seeded (seed 0, independent of the run's seed) random subset of size ``n``, in the
    data's order; everything when ``n`` is None or at least the data's size."""
    if n is None or n >= len(labels):
        return images, labels
    if n < 1:
        raise ValueError(f"a sample limit must be >= 1, got {n}")
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:n]
    idx = idx.sort().values.to(labels.device)
    return images[idx], labels[idx]


def load_datasets(cfg: TrainConfig, device: torch.device) -> tuple[Split, Split]:
    """The train and validation splits of ``cfg.data`` as tensors on ``device``.

    Raises :class:`minilg.errors.DatasetUnavailableError` when the data cannot be had offline,
    and :class:`minilg.errors.DataError` when the two splits do not share one class list.
    """
    splits = []
    for split, limit in (("train", cfg.max_train_samples), ("val", cfg.max_eval_samples)):
        ds = load_subset(cfg.data, split, cfg.resolution, root=cfg.root)
        images, labels = sample_subset(ds.images, ds.labels, limit)
        splits.append(
            Split(images.to(device), labels.to(device), ds.num_classes, list(ds.classes))
        )
    if splits[0].classes != splits[1].classes:
        raise DataError(
            f"{cfg.data}: the train and val splits have different classes "
            f"({splits[0].classes[:5]} ... vs {splits[1].classes[:5]} ...)"
        )
    return splits[0], splits[1]
