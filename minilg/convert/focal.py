"""Official Focal Transformer checkpoints -> ``focal_*`` models (``follow="official"``).

    >>> conv = minilg.convert.convert_official("focal", sd, embed_dim=96, focal_levels=[2] * 4)

``config`` takes the official ``FocalTransformer`` constructor's arguments; missing ones take its
defaults (note ``focal_levels=[1, 1, 1, 1]``: no pooled level unless given; the released yaml
files use 2). The domain is what the official code runs: any ``focal_levels`` per stage (pooled
levels ``k = 0 .. L - 2``, :mod:`minilg.attention.focal_official`), odd ``focal_windows``,
``expand_sizes`` per stage, ``expand_layer`` ``"all"``/``"even"``/``"odd"``, ``focal_stages``,
``focal_pool`` ``"fc"``/``"mean"``/``"max"``/``"conv"``/``"none"``, ``use_shift``,
``use_conv_embed``, ``use_layerscale``. The model follows the official data flow
(:mod:`minilg.attention.focal_official`), so its outputs equal the official model's; the
conversion names the registered model (``focal_tiny``) and the overrides that rebuild it, so
converted files reload with :func:`minilg.train.load_model`.

Pass ``follow="paper"`` (a minilg option) to run the same weights on the paper's keys: the fine
level's two official biases become one dense bias with duplicated ring slots merged by
``logaddexp`` (:func:`~minilg.attention.focal_official.official_to_paper_fine_bias`); that
model equals the official one on every window whose ring does not wrap around the border (only
where the pooled levels have a paper form: ``s_w`` dividing the window).

Key map (``s`` stage, ``i`` block, ``k`` pooled level)::

    patch_embed.proj / .norm               -> stem.proj (stem.conv if use_conv_embed) / .norm
    layers.s.blocks.i.(norm1|norm2|mlp)    -> stages.s.blocks.i.(same)
    layers.s.blocks.i.attn.(qkv|proj)      -> stages.s.blocks.i.mixer.(qkv|proj)
    ...attn.relative_position_bias_table   -> ...mixer.window_bias.bias_table
    ...attn.relative_position_bias_table_to_neighbors (1, h, 49, 132)
                                           -> ...mixer.ring_bias.bias_table (h, 49, 132)
    ...attn.relative_position_bias_table_to_windows.k (h, T)
                                           -> ...mixer.level_bias.k.bias_table (T, h)
    layers.s.blocks.i.pool_layers.k        -> ...mixer.pools.k.fc.pool ("fc")
                                              ...mixer.pools.k.conv ("conv")
    layers.s.blocks.i.gamma_1 / gamma_2          -> ...scale1.gamma / scale2.gamma
    layers.s.downsample.proj / .norm       -> stages.{s+1}.downsample.conv / .norm
    norm, head                                   -> norm, head

Dropped: the index buffers ``relative_position_index``, ``relative_position_index_k``,
``valid_ind_rolled``, ``valid_ind_unfold_k`` and ``attn_mask`` (minilg rebuilds its geometry).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from minilg.attention.focal_official import OfficialFocalAttention, official_to_paper_fine_bias
from minilg.convert import Conversion, ConversionError, config_overrides, register_converter
from minilg.models.focal import FocalConfig, build_focal

OFFICIAL_DEFAULTS: dict[str, Any] = {
    "img_size": 224, "patch_size": 4, "in_chans": 3, "num_classes": 1000, "embed_dim": 96,
    "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7, "mlp_ratio": 4.0,
    "qkv_bias": True, "qk_scale": None, "drop_rate": 0.0, "attn_drop_rate": 0.0,
    "drop_path_rate": 0.1, "ape": False, "patch_norm": True, "use_checkpoint": False,
    "use_shift": False, "focal_stages": [0, 1, 2, 3], "focal_levels": [1, 1, 1, 1],
    "focal_windows": [7, 5, 3, 1], "focal_pool": "fc", "expand_stages": [0, 1, 2, 3],
    "expand_sizes": [3, 3, 3, 3], "expand_layer": "all", "use_conv_embed": False,
    "use_layerscale": False, "layerscale_value": 1e-4, "use_pre_norm": False,
}
# Options minilg supports only at these values (anything else is a ConversionError).
REQUIRED: dict[str, Any] = {"qkv_bias": True, "ape": False, "patch_norm": True,
                            "use_pre_norm": False}
DROPPED_BUFFERS = re.compile(
    r"(relative_position_index(_\d+)?|valid_ind_rolled|valid_ind_unfold_\d+|attn_mask)$")
_DOWNSAMPLE = {"proj": "conv", "norm": "norm"}  # the official downsampling's layers
RENAMES: tuple[tuple[str, str | Callable[[re.Match[str]], str]], ...] = (
    (r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$",
     r"stages.\1.blocks.\2.mixer.window_bias.bias_table"),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table_to_neighbors$",
     r"stages.\1.blocks.\2.mixer.ring_bias.bias_table"),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table_to_windows\.(\d+)$",
     r"stages.\1.blocks.\2.mixer.level_bias.\3.bias_table"),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.(qkv|proj)\.", r"stages.\1.blocks.\2.mixer.\3."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.pool_layers\.(\d+)\.",
     r"stages.\1.blocks.\2.mixer.pools.\3.fc.pool."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.gamma_(\d)$", r"stages.\1.blocks.\2.scale\3.gamma"),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.(norm1|norm2|mlp)\.", r"stages.\1.blocks.\2.\3."),
    (r"^layers\.(\d+)\.downsample\.(proj|norm)\.",
     lambda m: f"stages.{int(m.group(1)) + 1}.downsample.{_DOWNSAMPLE[m.group(2)]}."),
    (r"^patch_embed\.norm\.", "stem.norm."),
    (r"^(norm|head)\.", r"\1."),
)


def focal_config(config: dict[str, Any]) -> tuple[FocalConfig, dict[str, Any]]:
    """Official constructor arguments -> :class:`FocalConfig` and the defaults that were used."""
    unknown = sorted(set(config) - set(OFFICIAL_DEFAULTS))
    if unknown:
        raise ConversionError(f"unknown official Focal option(s) {unknown}; "
                              f"known: {sorted(OFFICIAL_DEFAULTS)}")
    defaults = {k: v for k, v in OFFICIAL_DEFAULTS.items() if k not in config}
    c = {**OFFICIAL_DEFAULTS, **config}
    for name, value in REQUIRED.items():
        if c[name] != value:
            raise ConversionError(f"official option {name}={c[name]!r} is not supported "
                                  f"(minilg implements {name}={value!r})")
    heads, embed = list(c["num_heads"]), int(c["embed_dim"])
    if c["qk_scale"] not in (None, False):
        raise ConversionError(f"official option qk_scale={c['qk_scale']!r} is not supported "
                              "(minilg scales by head_dim^-0.5, qk_scale=None)")
    if c["focal_pool"] not in ("fc", "mean", "max", "conv", "none"):
        raise ConversionError(f"official option focal_pool={c['focal_pool']!r} is not "
                              "supported (fc, mean, max, conv or none)")
    stages = len(c["depths"])
    levels = [int(level) for level in c["focal_levels"]][:stages]
    if any(level < 1 for level in levels):
        raise ConversionError(f"official option focal_levels={levels} is not supported: "
                              "each stage needs at least 1 (the window and its ring)")
    windows = list(c["focal_windows"])
    if any(w % 2 == 0 for w in windows):
        raise ConversionError(f"official option focal_windows={windows} is not supported: "
                              "even focal windows give an unfold larger than the bias table")
    pooled = tuple(s for s in c["focal_stages"] if s < stages and levels[s] >= 2)
    if c["focal_pool"] == "none":
        pooled = ()
    return FocalConfig(
        dims=tuple(embed * 2**i for i in range(stages)), depths=tuple(c["depths"]),
        heads=tuple(heads), mlp_ratio=float(c["mlp_ratio"]),
        drop_path_rate=float(c["drop_path_rate"]), num_classes=int(c["num_classes"]),
        img_size=int(c["img_size"]), in_chans=int(c["in_chans"]),
        patch_size=int(c["patch_size"]), window=int(c["window_size"]),
        expand=tuple(int(e) for e in c["expand_sizes"][:stages]),
        focal_regions=tuple(windows[:stages]), focal_levels=tuple(levels),
        follow="official", shift=bool(c["use_shift"]),
        pool="fc" if c["focal_pool"] == "none" else c["focal_pool"],
        use_conv_embed=bool(c["use_conv_embed"]), expand_layer=c["expand_layer"],
        focal_stages=pooled,
        layer_scale=float(c["layerscale_value"]) if c["use_layerscale"] else None,
    ), defaults


def rename(key: str, use_conv_embed: bool, pool: str = "fc") -> str | None:
    """The minilg key of an official parameter key, or ``None`` if it is not one."""
    if key.startswith("patch_embed.proj."):
        return ("stem.conv." if use_conv_embed else "stem.proj.") + key[len("patch_embed.proj."):]
    conv_pool = re.match(r"^layers\.(\d+)\.blocks\.(\d+)\.pool_layers\.(\d+)\.", key)
    if conv_pool and pool == "conv":
        s, i, k = conv_pool.groups()
        return f"stages.{s}.blocks.{i}.mixer.pools.{k}.conv." + key[conv_pool.end():]
    for pattern, target in RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, target, key)
    return None


def reshape(key: str, value: Tensor, target: Tensor) -> Tensor:
    """Official layout -> minilg layout (ring bias without its batch axis, transposed tables)."""
    if key.endswith("relative_position_bias_table_to_neighbors"):
        value = value[0]
    elif re.search(r"relative_position_bias_table_to_windows\.\d+$", key):
        value = value.t()
    if tuple(value.shape) != tuple(target.shape):
        raise ConversionError(f"shape mismatch for {key}: official {tuple(value.shape)}, "
                              f"minilg expects {tuple(target.shape)} from the config")
    return value


@register_converter("focal")
def convert(state_dict: Mapping[str, Tensor], config: dict[str, Any]) -> Conversion:
    """Official ``FocalTransformer`` state dict -> minilg model (see the module docstring)."""
    follow = config.pop("follow", "official")
    if follow not in ("official", "paper"):
        raise ConversionError(f"follow must be 'official' or 'paper', got follow={follow!r}")
    focal, defaults = focal_config(config)
    try:
        model = build_focal(focal)
    except ValueError as e:
        raise ConversionError(f"minilg cannot build this Focal Transformer: {e}") from e
    targets = model.state_dict()
    conversion = Conversion(model, defaults=defaults)
    loaded: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if DROPPED_BUFFERS.search(key):
            conversion.dropped[key] = "index/mask buffer: minilg rebuilds its geometry"
            continue
        name = rename(key, focal.use_conv_embed, focal.pool)
        if name is None or name not in targets:
            raise ConversionError(f"unexpected official key {key!r} (not in the model built "
                                  "from this config)")
        loaded[name] = reshape(key, value, targets[name]).to(targets[name].dtype)
        conversion.used[key] = name
    missing = sorted(set(targets) - set(loaded))
    if missing:
        raise ConversionError(f"the official state dict lacks {len(missing)} tensor(s) the "
                              f"config needs, e.g. {missing[:3]}")
    model.load_state_dict(loaded, strict=True)
    if follow == "paper":
        focal = replace(focal, follow="paper", position_bias="official")
        try:
            conversion.model = to_paper_mode(model, focal)
        except ValueError as e:
            raise ConversionError(f"these official levels have no paper-mode form: {e}") from e
    conversion.model.eval()
    conversion.name = "focal_tiny"  # the registered model; the overrides rebuild the rest
    conversion.overrides = config_overrides(focal)
    return conversion


def to_paper_mode(official: nn.Module, config: FocalConfig) -> nn.Module:
    """The same weights on the paper's keys (``config``: ``follow="paper"``,
    ``position_bias="official"`` bias shapes)."""
    paper = build_focal(config)
    state = {k: v for k, v in official.state_dict().items()
             if ".window_bias." not in k and ".ring_bias." not in k}
    for name, module in official.named_modules():
        if isinstance(module, OfficialFocalAttention) and module.window_bias is not None:
            with torch.no_grad():
                ring = None if module.ring_bias is None else module.ring_bias.bias_table.double()
                dense = official_to_paper_fine_bias(module.window_bias().double(), ring,
                                                    module.window, module.expand)
            # merged in float64, rounded once to the model's dtype
            state[f"{name}.fine_bias.bias_table"] = dense.to(module.qkv.weight.dtype)
    paper.load_state_dict(state, strict=True)
    return paper
