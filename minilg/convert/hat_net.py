"""Official HAT-Net checkpoints (``HAT_Net.py``, class ``HAT_Net``) -> :class:`HATNet`.

    >>> conv = convert_official("hat_net", state_dict, dims=[48, 96, 240, 384], head_dim=48,
    ...                         expansions=[8, 8, 4, 4], grid_sizes=[8, 7, 7, 1],
    ...                         ds_ratios=[8, 4, 2, 1], depths=[2, 2, 6, 3])

``config`` holds ``HAT_Net``'s own arguments; missing ones take its defaults (``dims=[64, 128,
256, 512], head_dim=64, expansions=[4, 4, 6, 6], grid_sizes=[1, 1, 1, 1], ds_ratios=[8, 4, 2,
1], depths=[3, 4, 8, 3], kernel_sizes=[3, 3, 3, 3], num_classes=1000``; note these are *not*
HAT-Net-T's, which passes its own). The model is built with ``follow="official"``.

The conversion is a rename plus a reshape (the official model is channels-first, minilg's
channels-last):

=====================================  ==============================================
official                               minilg
=====================================  ==============================================
``patch_embed.{0,1,3}``                ``stem.{0,1,3}``
``ds{2,3,4}.{conv,norm}``              ``stages.{1,2,3}.downsample.{conv,norm}``
``blocks.i.j.attn.<layer>``            ``stages.i.blocks.j.mixer.<layer>`` (``norm``, ``qkv``,
                                       ``proj``, ``grid_norm``, ``ds_norm``, ``q``, ``kv``)
``blocks.i.j.conv.conv{1,2,3}.k``      ``stages.i.blocks.j.mlp.conv{1,2,3}.k``
``classifier.1``                       ``head``
=====================================  ==============================================

1x1 convolutions ``(C_out, C_in, 1, 1)`` become Linear weights ``(C_out, C_in)``; channel orders
are the same (``qkv``: ``s C + h d + i``). ``blocks.i.j.attn.proj_norm`` is dropped: the official
forward never uses it. Unsupported official settings (``drop_rate`` != 0, a stem for other than
3 input channels, other than four stages) raise :class:`ConversionError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from minilg.convert import Conversion, ConversionError, config_overrides, register_converter
from minilg.models.hat_net import Activation, HATConfig, build_hat_net

OFFICIAL_DEFAULTS: dict[str, Any] = {
    "img_size": 224, "in_chans": 3, "num_classes": 1000, "dims": [64, 128, 256, 512],
    "head_dim": 64, "expansions": [4, 4, 6, 6], "grid_sizes": [1, 1, 1, 1],
    "ds_ratios": [8, 4, 2, 1], "depths": [3, 4, 8, 3], "drop_rate": 0.0,
    "drop_path_rate": 0.0, "kernel_sizes": [3, 3, 3, 3],
}
PROJ_NORM_REASON = "attn.proj_norm is built but never used in the official forward"
RENAMES: list[tuple[str, str]] = [
    (r"^patch_embed\.(\d+)\.", r"stem.\1."),
    (r"^blocks\.(\d+)\.(\d+)\.attn\.", r"stages.\1.blocks.\2.mixer."),
    (r"^blocks\.(\d+)\.(\d+)\.conv\.", r"stages.\1.blocks.\2.mlp."),
    (r"^classifier\.1\.", "head."),
]


def config_from_official(config: dict[str, Any]) -> tuple[HATConfig, dict[str, Any]]:
    """``HAT_Net`` kwargs -> (:class:`HATConfig`, the defaults that were filled in)."""
    unknown = sorted(set(config) - set(OFFICIAL_DEFAULTS) - {"act_layer"})
    if unknown:
        raise ConversionError(
            f"unknown HAT_Net argument(s) {unknown}; known: {sorted(OFFICIAL_DEFAULTS)}")
    defaults = {k: v for k, v in OFFICIAL_DEFAULTS.items() if k not in config}
    args = {**OFFICIAL_DEFAULTS, **config}
    act = args.pop("act_layer", "silu")
    act_name = str(act if isinstance(act, str) else getattr(act, "__name__", act)).lower()
    if act_name not in ("silu", "gelu"):
        raise ConversionError(f"act_layer={act!r} is not supported (SiLU or GELU)")
    activation: Activation = "silu" if act_name == "silu" else "gelu"
    if args["drop_rate"]:
        raise ConversionError(
            f"drop_rate={args['drop_rate']} (Dropout2d inside attention and IRB) is not supported")
    if args["in_chans"] != 3:
        raise ConversionError(
            f"in_chans={args['in_chans']}: the official stem is hard-coded to 3 input channels")
    if len(args["dims"]) != 4:
        raise ConversionError(f"the official HAT_Net has four stages, got dims={args['dims']}")
    hat = HATConfig(
        dims=tuple(args["dims"]), depths=tuple(args["depths"]), head_dim=args["head_dim"],
        mlp_ratios=tuple(args["expansions"]), kernel_sizes=tuple(args["kernel_sizes"]),
        grid_sizes=tuple(args["grid_sizes"]), pool_sizes=tuple(args["ds_ratios"]),
        num_classes=args["num_classes"], img_size=args["img_size"], follow="official",
        act=activation, drop_path_rate=args["drop_path_rate"],
    )
    return hat, defaults


def minilg_key(key: str) -> str | None:
    """The minilg name of an official key (``None``: no rule matches)."""
    match = re.match(r"^ds([234])\.", key)
    if match:
        return f"stages.{int(match.group(1)) - 1}.downsample.{key[len(match.group(0)):]}"
    for pattern, target in RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, target, key)
    return None


def official_key(name: str) -> str:
    """The official name of a minilg key (the inverse of :func:`minilg_key`)."""
    for pattern, target in [(r"^stem\.", "patch_embed."), (r"^head\.", "classifier.1."),
                            (r"^stages\.(\d+)\.blocks\.(\d+)\.mixer\.", r"blocks.\1.\2.attn."),
                            (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.", r"blocks.\1.\2.conv.")]:
        if re.match(pattern, name):
            return re.sub(pattern, target, name)
    match = re.match(r"^stages\.(\d+)\.downsample\.", name)
    if match:
        return f"ds{int(match.group(1)) + 1}.{name[len(match.group(0)):]}"
    return name


@register_converter("hat_net")
def convert(state_dict: Mapping[str, Tensor], config: dict[str, Any]) -> Conversion:
    """Official ``HAT_Net`` state dict + kwargs -> :class:`Conversion` (strict accounting)."""
    try:
        hat_config, defaults = config_from_official(config)
        model = build_hat_net(hat_config)
    except ValueError as error:
        if isinstance(error, ConversionError):
            raise
        raise ConversionError(f"unsupported HAT_Net configuration: {error}") from error
    targets = model.state_dict()
    conversion = Conversion(model=model, defaults=defaults)
    loaded: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if re.match(r"^blocks\.\d+\.\d+\.attn\.proj_norm\.(weight|bias)$", key):
            conversion.dropped[key] = PROJ_NORM_REASON
            continue
        name = minilg_key(key)
        if name is None or name not in targets:
            raise ConversionError(f"unknown official key {key!r} (no minilg parameter for it "
                                  "under this config)")
        target = targets[name]
        if value.ndim == 4 and target.ndim == 2:  # 1x1 conv -> Linear
            value = value.reshape(value.shape[0], value.shape[1]) if value.shape[2:] == (1, 1) \
                else value
        if tuple(value.shape) != tuple(target.shape):
            raise ConversionError(f"shape of {key!r} is {tuple(value.shape)}, the config needs "
                                  f"{tuple(target.shape)} (for {name!r})")
        loaded[name] = value
        conversion.used[key] = name
    missing = sorted(official_key(k) for k in set(targets) - set(loaded))
    if missing:
        raise ConversionError(f"official state dict lacks {len(missing)} key(s) the config "
                              f"needs, e.g. {missing[:3]}")
    with torch.no_grad():
        model.load_state_dict(loaded, strict=True)
    model.eval()
    conversion.name, conversion.overrides = "hat_net_tiny", config_overrides(hat_config)
    return conversion


__all__ = [
    "OFFICIAL_DEFAULTS", "config_from_official", "convert", "minilg_key", "official_key",
]
