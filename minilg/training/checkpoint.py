"""Checkpoint files: atomic writes, safetensors weights, and the state needed for exact resume.

A checkpoint in a run directory is two files:

* ``model.safetensors`` -- the model weights (and persistent buffers), loadable without torch
  pickles; its metadata records the model name, ``num_classes``, ``img_size``, epoch and step;
* ``train_state.pt`` -- everything else the loop needs to continue bit-for-bit: optimizer and
  grad-scaler state, epoch/step counters, the metrics so far, and every random-number state
  (torch CPU/CUDA, the data generator, python ``random``, numpy), one entry per DDP rank.

Each file is written to a temporary name in the same folder, flushed to disk, then moved into
place with :func:`os.replace`, which is atomic: a run killed mid-write leaves the previous
checkpoint intact and no half-written file behind. The two files carry the same ``step``; a
mismatch (a kill between the two renames) is reported instead of silently mixing states.
"""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
CONFIG_FILE = "config.json"


def atomic_write_bytes(path: str | Path, data: bytes | Callable[[], bytes]) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``).

    ``data`` may be a callable producing the bytes, so that a failure while *producing* them
    also leaves no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data() if callable(data) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically write a UTF-8 text file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _torch_save_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------- random states
def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Every random state the training loop touches, as plain tensors/lists (weights_only-safe)."""
    np_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": generator.get_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["data"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


# ----------------------------------------------------------------------------- weights
def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, str]) -> None:
    """Atomically save ``model.state_dict()`` as safetensors with string ``metadata``."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, lambda: save(tensors, metadata=metadata))


def read_weights_metadata(path: str | Path) -> dict[str, str]:
    """The metadata dictionary stored in a safetensors file header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header: dict[str, Any] = json.loads(f.read(n))
    meta: dict[str, str] = header.get("__metadata__", {})
    return meta


def load_weights(path: str | Path, model: nn.Module, device: str | torch.device = "cpu") -> None:
    """Load safetensors weights into ``model`` (strict: every key must match)."""
    model.load_state_dict(load_file(str(path), device=str(device)))


# ----------------------------------------------------------------------------- checkpoints
def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a resumable checkpoint."""
    d = Path(run_dir)
    return (d / WEIGHTS_FILE).is_file() and (d / STATE_FILE).is_file()


def save_checkpoint(
    run_dir: str | Path, model: nn.Module, state: dict[str, Any], metadata: dict[str, str]
) -> None:
    """Write ``model.safetensors`` then ``train_state.pt``, each atomically.

    ``state`` must contain an integer ``"step"``; it is copied into the weights' metadata so
    that :func:`load_checkpoint` can check that the two files belong together.
    """
    d = Path(run_dir)
    save_weights(d / WEIGHTS_FILE, model, {**metadata, "step": str(state["step"])})
    atomic_write_bytes(d / STATE_FILE, lambda: _torch_save_bytes(state))


def load_checkpoint(
    run_dir: str | Path, model: nn.Module, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load weights into ``model`` and return the training state saved beside them."""
    d = Path(run_dir)
    state: dict[str, Any] = torch.load(d / STATE_FILE, map_location="cpu", weights_only=True)
    meta_step = read_weights_metadata(d / WEIGHTS_FILE).get("step")
    if meta_step is not None and int(meta_step) != int(state["step"]):
        raise RuntimeError(
            f"checkpoint in {d} is inconsistent: weights are from step {meta_step} but the "
            f"training state is from step {state['step']} (was the run killed while saving?)"
        )
    load_weights(d / WEIGHTS_FILE, model, device)
    return state
