"""Weights files: a model's ``state_dict`` as safetensors, with the metadata that rebuilds it and
checksums over both.

:func:`save_weights` writes atomically and records ``tensors_sha256`` (every tensor's name,
dtype, shape and bytes) and ``metadata_sha256`` (every other metadata entry); :func:`load_weights`
and :func:`read_weights_metadata` verify them, so an edited ``img_size`` or a flipped byte is a
:class:`~minilg.errors.CheckpointError` naming the file. Files written by earlier minilg versions
load through :func:`minilg.models.legacy.upgrade_state_dict`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from minilg.errors import CheckpointError
from minilg.io import atomic_write_bytes
from minilg.models.legacy import upgrade_state_dict

__all__ = [
    "load_weights",
    "metadata_digest",
    "read_weights_metadata",
    "save_weights",
    "tensors_digest",
    "weights_bytes",
]


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def metadata_digest(metadata: dict[str, str]) -> str:
    """sha256 over every metadata entry but the checksums themselves, in key order."""
    plain = {k: v for k, v in metadata.items() if k not in _CHECKSUM_KEYS}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


_CHECKSUM_KEYS = ("tensors_sha256", "metadata_sha256")


def weights_bytes(model: nn.Module, metadata: dict[str, str]) -> bytes:
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {**metadata, "tensors_sha256": tensors_digest(tensors)}
    meta["metadata_sha256"] = metadata_digest(meta)
    return save(tensors, metadata=meta)


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, str]) -> None:
    """Atomically save ``model.state_dict()`` as safetensors with string ``metadata`` (plus the
    ``tensors_sha256`` and ``metadata_sha256`` checksums that :func:`load_weights` and
    :func:`read_weights_metadata` verify: the tensors, and the metadata that rebuilds the
    model)."""
    atomic_write_bytes(path, lambda: weights_bytes(model, metadata))


def read_weights_metadata(path: str | Path) -> dict[str, str]:
    """The metadata dictionary stored in a safetensors file header, verified against its
    ``metadata_sha256`` when there is one (an edited ``img_size`` is a CheckpointError)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 100_000_000:
                raise ValueError("bad header length")
            header: dict[str, Any] = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a safetensors file ({e})") from None
    meta: dict[str, str] = header.get("__metadata__") or {}
    expected = meta.get("metadata_sha256")
    if expected is not None and metadata_digest(meta) != expected:
        raise CheckpointError(
            f"{path} is corrupt: its metadata (model, num_classes, img_size, ...) do not match "
            "their checksum; it was edited after it was written"
        )
    return meta


def load_weights(path: str | Path, model: nn.Module, device: str | torch.device = "cpu") -> None:
    """Load safetensors weights into ``model`` (strict: every key and shape must match),
    verifying the stored tensor checksum when there is one."""
    meta = read_weights_metadata(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} cannot be read: {e}") from None
    expected = meta.get("tensors_sha256")
    if expected is not None and tensors_digest(tensors) != expected:
        raise CheckpointError(f"{path} is corrupt: its tensors do not match their checksum")
    try:
        model.load_state_dict(upgrade_state_dict(tensors, model.state_dict()))  # older layouts
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise CheckpointError(
            f"{path} does not fit {type(model).__name__}: {' '.join(first)}"
        ) from None
    model.to(device)
