"""Make an official-Focal reference fixture (the format of tests/data/focal_official_*.safetensors).

The official code is not part of minilg: pass the path of your own copy of
``classification/focal_transformer.py`` from microsoft/Focal-Transformer. The four ``timm``
names it imports are replaced by a small stand-in (``DropPath`` is the identity in eval mode;
these fixtures use no drop path), so timm need not be installed.

    python scripts/make_focal_fixture.py /path/to/focal_transformer.py out.safetensors \\
        --config '{"window_size": 5, "focal_levels": [4, 3, 4, 2], ...}'

Procedure (as every official fixture in tests/data): ``torch.manual_seed(0)``; the official
class built from the config (its own init); then ``p.add_(torch.randn_like(p) * 0.02)`` for every
parameter in ``model.parameters()`` order (buffers untouched); weights stored as float32; the
forward runs in float64 under ``torch.no_grad()`` on ``x = torch.randn(1, 3, S, S,
generator=torch.Generator().manual_seed(S))``. Stored: ``state_dict.<key>`` (the official state
dict), ``input_S``, ``logits_S`` and ``stage<i>_S`` (outputs of ``model.layers[i]``, tokens
``(1, H*W, C)``, after the stage's downsample for all but the last), metadata ``family``,
``official_class``, ``config`` (JSON), ``source``, ``noise``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

SOURCE = ("microsoft/Focal-Transformer@57bb3031582a2afb2d2a6916612bc4311316f9fc:"
          "classification/focal_transformer.py")
NOISE = "N(0,0.02^2) added to every parameter after official init, seed 0"


class DropPath(nn.Module):
    """Stand-in for timm's DropPath: the identity (fixtures run in eval mode)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return x


def to_2tuple(value: Any) -> tuple[Any, Any]:
    """Stand-in for timm's to_2tuple."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)  # type: ignore[return-value]


def install_timm_stand_in() -> None:
    """Register ``timm.models.layers`` (and ``timm.models.registry``) with the names the
    official files import."""
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath  # type: ignore[attr-defined]
    layers.to_2tuple = to_2tuple  # type: ignore[attr-defined]
    layers.trunc_normal_ = nn.init.trunc_normal_  # type: ignore[attr-defined]
    registry = types.ModuleType("timm.models.registry")

    def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn

    registry.register_model = register_model  # type: ignore[attr-defined]
    timm, models = types.ModuleType("timm"), types.ModuleType("timm.models")
    models.layers, models.registry = layers, registry  # type: ignore[attr-defined]
    timm.models = models  # type: ignore[attr-defined]
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers,
                        "timm.models.registry": registry})


def load_official(path: Path) -> types.ModuleType:
    """Import the official model file from ``path`` (with the timm stand-in)."""
    install_timm_stand_in()
    spec = importlib.util.spec_from_file_location("official_focal_transformer", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_fixture(official: types.ModuleType, config: dict[str, Any], sizes: list[int]
                 ) -> dict[str, Tensor]:
    """Build, perturb, run: the tensors of one fixture file."""
    torch.manual_seed(0)
    model = official.FocalTransformer(**config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    tensors = {f"state_dict.{k}": v.detach().clone().contiguous()
               for k, v in model.state_dict().items()}
    model = model.double().eval()
    for size in sizes:
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size),
                        dtype=torch.float32)
        stages: dict[int, Tensor] = {}
        hooks = [layer.register_forward_hook(
            lambda _m, _i, out, i=i, into=stages: into.__setitem__(i, out.detach().clone()))
            for i, layer in enumerate(model.layers)]
        with torch.no_grad():
            logits = model(x.double())
        for hook in hooks:
            hook.remove()
        tensors[f"input_{size}"] = x
        tensors[f"logits_{size}"] = logits.contiguous()
        for i, stage in stages.items():
            tensors[f"stage{i}_{size}"] = stage.contiguous()
    return tensors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official", type=Path, help="path to the official focal_transformer.py")
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    parser.add_argument("--config", required=True,
                        help="JSON of FocalTransformer constructor arguments")
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    tensors = make_fixture(load_official(args.official), config, [int(config["img_size"])])
    metadata = {"family": "focal", "official_class": "FocalTransformer",
                "config": json.dumps(config), "source": SOURCE, "noise": NOISE}
    save_file(tensors, str(args.output), metadata=metadata)
    print(f"wrote {args.output} ({len(tensors)} tensors)")


if __name__ == "__main__":
    main()
