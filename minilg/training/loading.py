"""Rebuild a trained model from what a run (or ``python -m minilg convert``) wrote.

:func:`locate_checkpoint` finds the weights file behind a run folder, a checkpoint folder or a
``.safetensors`` file and verifies it; :func:`model_from_weights` builds the registered model
its metadata names and loads the weights: the one place weights files become models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from minilg.errors import CheckpointError
from minilg.registry import create_model
from minilg.training import checkpoint as ckpt
from minilg.training.config import TrainConfig

__all__ = ["load_model", "locate_checkpoint", "model_from_weights"]


def locate_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """The weights file behind ``path`` (run folder, checkpoint folder or ``.safetensors``),
    verified against its manifest when there is one, and the run's config dict if known."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p} does not exist: pass a run folder or a .safetensors file")
    folder = p.parent if p.is_file() else p
    if (folder / ckpt.MANIFEST_FILE).is_file():  # a checkpoint folder, or a file in one
        config = ckpt.verify_checkpoint(folder).get("config")
        return (folder / ckpt.WEIGHTS_FILE if p.is_dir() else p), config
    if p.is_file():  # a loose weights file: its metadata is all there is
        return p, None
    current = ckpt.latest_checkpoint(p)
    if current is not None and ckpt.recoverable_checkpoint(p) == current:
        print(f"note: {p / ckpt.CHECKPOINTS_DIR / ckpt.LATEST_FILE} is missing; using "
              f"{current.name}, the newest complete checkpoint", file=sys.stderr)
    if current is None:
        raise CheckpointError(
            f"no checkpoint in {p} (a run writes checkpoints/ after its first epoch)"
        )
    return current / ckpt.WEIGHTS_FILE, ckpt.verify_checkpoint(current).get("config")


def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig | None]:
    """Rebuild a trained model from a run folder, a checkpoint folder or a ``.safetensors`` file.

    Returns ``(model, config)``; ``config`` is the run's :class:`TrainConfig` when the
    checkpoint's manifest holds it, else ``None`` (the model is rebuilt from the name,
    ``num_classes`` and ``img_size`` in the safetensors metadata). Checksums are verified; a
    corrupt, foreign or inconsistent checkpoint raises :class:`CheckpointError`.
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
        model = create_model(
            meta["model"], num_classes=int(meta["num_classes"]), img_size=int(meta["img_size"]),
            **json.loads(meta.get("model_kwargs", "{}")),
        )
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{weights}: cannot rebuild its model {meta['model']!r}: {e}") from e
    ckpt.load_weights(weights, model)
    return model.to(device).eval(), cfg
