"""``python -m minilg convert``: an official checkpoint file -> a minilg safetensors file.

    python -m minilg convert --family swin --config cfg.json ckpt.pth out.safetensors

* ``ckpt.pth``: an official checkpoint; the weights sit under ``"model"`` (or ``"state_dict"``,
  or the file is the state dict itself). Read with ``torch.load(..., weights_only=True)``, so no
  pickled code runs; ``.safetensors`` inputs are read with safetensors.
* ``--config``: the official constructor's arguments, flat, as a JSON object (``{"embed_dim":
  96, "depths": [2, 2, 6, 2], ...}``), or the official nested upper-case YAML file
  (``.yaml``/``.yml``) read through the family's documented mapping. Without it every argument
  takes the official constructor's default.
* ``out.safetensors``: the minilg weights; the metadata names the registered model and its
  overrides, so ``python -m minilg eval --checkpoint out.safetensors`` and
  ``minilg.train.load_model("out.safetensors")`` rebuild it.

Expected failures (unknown family, missing file, a key or option the converter refuses) are
:class:`~minilg.convert.ConversionError`: one line on stderr, exit status 2. The conversion itself
is :mod:`minilg.convert`; this module, above it and above the training layer, reads the files and
writes the result in the format of :mod:`minilg.training.checkpoint`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from minilg.convert import (
    Conversion,
    ConversionError,
    config_from_yaml,
    convert_official,
    converted_metadata,
    families,
    unwrap_checkpoint,
)
from minilg.errors import CheckpointError
from minilg.training.checkpoint import read_weights_metadata, save_weights

__all__ = [
    "WRITTEN_BY", "add_arguments", "check_family", "check_output", "guess_family",
    "read_checkpoint", "read_config", "run", "save_converted",
]


def read_config(family: str, path: str | None) -> dict[str, Any]:
    """Flat constructor kwargs from a JSON object file or an official YAML file (``None``: {})."""
    if path is None:
        return {}
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        if not Path(path).is_file():
            raise ConversionError(f"no config file at {path}")
        return config_from_yaml(family, path)
    try:
        config = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConversionError(f"no config file at {path}") from e
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ConversionError(f"{path} must hold a JSON object of constructor arguments")
    return config


def read_checkpoint(path: str) -> Mapping[str, Tensor]:
    """The checkpoint in ``path``; its state dict (:func:`unwrap_checkpoint`) holds tensors
    only. The wrappers stay: :func:`convert_official` unwraps them and says so."""
    if not Path(path).is_file():
        raise ConversionError(f"no checkpoint at {path}")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise ConversionError(f"cannot read {path}: not a readable safetensors file "
                                  f"({_first_line(e)})") from None
    if _looks_like_text(Path(path)):
        raise ConversionError(f"cannot read {path}: it is a text file, not a PyTorch checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise ConversionError(f"cannot read {path} with weights_only=True: {_reason(e)}") from None
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    bad = [k for k, v in unwrap_checkpoint(checkpoint).items() if not isinstance(v, Tensor)]
    if bad:
        raise ConversionError(f"{path}: entry {bad[0]!r} is not a tensor (expected a state dict "
                              f"under 'model')")
    return checkpoint


# Distinctive official key fragments of each family (checked in this order).
_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("focal", ("pool_layers.", "relative_position_bias_table_to_neighbors",
               "relative_position_bias_table_to_windows")),
    ("hat_net", (".attn.grid_norm.", ".attn.ds_norm.", "classifier.")),
    ("swin", ("downsample.reduction.", ".attn_mask")),
    ("deit", ("cls_token", "dist_token")),
)


def guess_family(keys: Iterable[str]) -> str | None:
    """The official family whose distinctive keys ``keys`` contain (None when none does)."""
    names = list(keys)
    for family, fragments in _SIGNATURES:
        if any(f in k for k in names for f in fragments):
            return family
    return None


def check_family(family: str, state: Mapping[str, Tensor], path: str) -> None:
    """ConversionError when ``state`` looks like another family's checkpoint than ``family``."""
    guessed = guess_family(state)
    if guessed is None or guessed == family:
        return
    hint = f"pass --family {guessed}" if guessed in families() else (
        f"convert supports {', '.join(families())}")
    raise ConversionError(f"{path} looks like a {guessed} checkpoint, not {family}: {hint}")


# The marker of a file this command wrote (in its safetensors metadata): only such a file is
# replaced, and only with --force.
WRITTEN_BY = "python -m minilg convert"


def check_output(out: str, checkpoint: str, force: bool) -> None:
    """Before any work: ``out`` is not the input, its folder exists, and an existing ``out`` is
    replaced only with ``force`` and only when this command wrote it."""
    target, source = Path(out), Path(checkpoint)
    if target.exists() and source.exists() and target.samefile(source):
        raise ConversionError(f"output {out} is the input checkpoint: choose another output file")
    if target.is_dir():
        raise ConversionError(f"output {out} is a folder: name the .safetensors file to write")
    if not target.parent.is_dir():
        raise ConversionError(f"cannot write {out}: its folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise ConversionError(f"cannot write {out}: its folder {target.parent} is not writable")
    if not target.exists() and not target.is_symlink():
        return
    try:
        meta = read_weights_metadata(target)
    except CheckpointError:
        meta = {}
    ours = meta.get("written_by") == WRITTEN_BY or "converted_from" in meta  # or an older one
    if not ours:
        raise ConversionError(f"output {out} already exists and convert did not write it: "
                              "choose another output file")
    if not force:
        raise ConversionError(f"output {out} already exists: pass --force to replace it")


def save_converted(conversion: Conversion, family: str, path: str | Path) -> None:
    """Write the converted weights as safetensors with :func:`converted_metadata` (and the
    :data:`WRITTEN_BY` marker), the format ``python -m minilg eval`` and
    :func:`minilg.train.load_model` read."""
    meta = {**converted_metadata(conversion, family), "written_by": WRITTEN_BY}
    try:
        save_weights(path, conversion.model, meta)
    except OSError as e:  # the message names the output, not the temporary file beside it
        raise ConversionError(f"cannot write {path}: {e.strerror or type(e).__name__}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m minilg convert --family F [--config cfg.json] ckpt.pth out.safetensors``."""
    parser.add_argument(
        "--family", required=True, help=f"official family ({', '.join(families())})"
    )
    parser.add_argument("--config", help="JSON object of the official constructor's arguments, "
                        "or the official YAML config (.yaml/.yml); default: official defaults")
    parser.add_argument("checkpoint", help="official checkpoint (.pth/.pt, or .safetensors)")
    parser.add_argument("out", help="output .safetensors file (never an existing file convert did "
                        "not write)")
    parser.add_argument("--force", action="store_true",
                        help="replace an output file that convert wrote before")


def run(args: argparse.Namespace) -> int:
    """Convert ``args.checkpoint``, write ``args.out``, print the key accounting."""
    if args.family not in families():
        raise ConversionError(
            f"unknown family {args.family!r}; available: {', '.join(families())}"
        )
    check_output(args.out, args.checkpoint, args.force)
    config = read_config(args.family, args.config)
    state = read_checkpoint(args.checkpoint)
    check_family(args.family, state, args.checkpoint)
    conversion = convert_official(args.family, state, **config)
    save_converted(conversion, args.family, args.out)
    print(f"wrote {args.out} ({conversion.name})")
    print(conversion.summary())
    return 0


def _reason(error: Exception) -> str:
    """Why ``torch.load`` (weights only) failed, without torch's advice to load unsafely."""
    text = str(error)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (f"it pickles {found[1]}, which is not a tensor; keep only the weights (in a "
                f"trusted environment: torch.save({{'model': ckpt['model']}}, path))")
    if "weights_only" in text or "Weights only" in text or isinstance(error, KeyError):
        return "it is not a PyTorch checkpoint of tensors (unreadable or corrupt)"
    return f"it is not a readable PyTorch checkpoint (corrupt or truncated: {_first_line(error)})"


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0].split(". ")[0] if lines else type(error).__name__


def _looks_like_text(path: Path) -> bool:
    """Whether the file starts with printable text (a checkpoint starts with zip or pickle
    bytes)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return False
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as e:  # text cut inside a character at the 512th byte is text
        if e.start < len(head) - 3:
            return False
        decoded = head[: e.start].decode("utf-8")
    return all(c.isprintable() or c in "\n\r\t" for c in decoded)
