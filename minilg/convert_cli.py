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
import pickle
import re
from collections.abc import Mapping
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
from minilg.training.checkpoint import save_weights

__all__ = ["add_arguments", "read_checkpoint", "read_config", "run", "save_converted"]


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
    """The official state dict in ``path`` (``"model"`` unwrapped), tensors only."""
    if not Path(path).is_file():
        raise ConversionError(f"no checkpoint at {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ConversionError(f"cannot read {path} with weights_only=True: {_reason(e)}") from e
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    state = unwrap_checkpoint(checkpoint)
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ConversionError(f"{path}: entry {bad[0]!r} is not a tensor (expected a state dict "
                              f"under 'model')")
    return state


def save_converted(conversion: Conversion, family: str, path: str | Path) -> None:
    """Write the converted weights as safetensors with :func:`converted_metadata`, the format
    ``python -m minilg eval`` and :func:`minilg.train.load_model` read."""
    try:
        save_weights(path, conversion.model, converted_metadata(conversion, family))
    except OSError as e:
        raise ConversionError(f"cannot write {path}: {e}") from e


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m minilg convert --family F [--config cfg.json] ckpt.pth out.safetensors``."""
    parser.add_argument(
        "--family", required=True, help=f"official family ({', '.join(families())})"
    )
    parser.add_argument("--config", help="JSON object of the official constructor's arguments, "
                        "or the official YAML config (.yaml/.yml); default: official defaults")
    parser.add_argument("checkpoint", help="official checkpoint (.pth/.pt, or .safetensors)")
    parser.add_argument("out", help="output .safetensors file")


def run(args: argparse.Namespace) -> int:
    """Convert ``args.checkpoint``, write ``args.out``, print the key accounting."""
    if args.family not in families():
        raise ConversionError(
            f"unknown family {args.family!r}; available: {', '.join(families())}"
        )
    config = read_config(args.family, args.config)
    conversion = convert_official(args.family, read_checkpoint(args.checkpoint), **config)
    save_converted(conversion, args.family, args.out)
    print(f"wrote {args.out} ({conversion.name})")
    print(conversion.summary())
    return 0


def _reason(error: Exception) -> str:
    """The informative line of a ``torch.load`` failure (the pickled class it refused)."""
    text = str(error)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (f"it pickles {found[1]}, which is not a tensor; keep only the weights (in a "
                f"trusted environment: torch.save({{'model': ckpt['model']}}, path))")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
