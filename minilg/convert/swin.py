"""Official Swin Transformer checkpoints (``SwinTransformer`` of Liu et al. 2021) -> minilg Swin.

    >>> model = minilg.convert.from_official("swin", checkpoint["model"], embed_dim=96,
    ...                                      depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24])

The config holds the official constructor's arguments, flat; missing ones take its defaults
(:data:`OFFICIAL_DEFAULTS`, listed in ``Conversion.defaults``). The state dict alone fixes most
of the architecture, so the converter reads it and cross-checks the config, naming the first
field that disagrees: ``embed_dim``, ``in_chans`` and ``patch_size`` (the patch-embedding conv),
``depths`` (blocks per ``layers.<i>``), ``num_heads`` (columns of the relative position bias
tables), ``window_size`` (their ``(2M - 1)^2`` rows), ``mlp_ratio`` (rows of ``mlp.fc1``),
``num_classes`` (rows of ``head``), and ``img_size`` (the number of windows in ``attn_mask``).

Key layout (official -> minilg)::

    patch_embed.{proj,norm}                    -> stem.{proj,norm}
    layers.i.blocks.j.{norm1,norm2,mlp.fc1,mlp.fc2}      -> stages.i.blocks.j.<same>
    layers.i.blocks.j.attn.{qkv,proj}          -> stages.i.blocks.j.mixer.{qkv,proj}
    layers.i.blocks.j.attn.relative_position_bias_table  -> ...mixer.position_bias.bias_table
    layers.i.downsample.{norm,reduction}       -> stages.{i+1}.downsample.{norm,reduction}
    norm, head                                 -> norm, head
    layers.i.blocks.j.attn.relative_position_index, layers.i.blocks.j.attn_mask: dropped
        ("rebuilt from the config"; their shapes are checked when present; they may be absent,
        as in timm exports and many re-saved checkpoints)

The official ``layers.i.downsample`` (PatchMerging at the END of stage ``i``) is minilg's
``stages[i + 1].downsample``, which runs at the START of stage ``i + 1``: the same sequence of
operations, so the official output of ``layers[i]`` is
``model.stages[i + 1].downsample(stage_i)`` in minilg.
Everything else is the same computation: pre-norm blocks, LayerNorm eps 1e-5, exact GELU, the
qkv channel order ``s*C + head*d + i``, ``d^-1/2`` scaling, the ``(2M-1)^2`` bias table indexed
``dy * (2M - 1) + dx``, the cyclic shift by ``M // 2`` in odd blocks, PatchMerging's
``x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]`` order, final norm, mean, head.

Behaviours that differ (none on the maps an official model accepts):

* Masking. The official SW-MSA adds ``-100`` to the logits of pairs from different shift
  regions; minilg excludes them (probability exactly 0 instead of about ``e^-100``). The official
  code has no padding: every stage map must be a multiple of the window (checked here). On maps
  that the window does not divide, minilg pads Q, K, V after the projections and masks the
  padded keys, whereas official derivatives that pad (Focal, Swin's detection code) pad before
  the qkv projection without a mask, so their padded keys (``qkv(0) = bias``) take part.
* Clipped windows. When a stage map is no larger than the window (``min(H, W) <= M``) the
  official block uses window ``min(H, W)`` with no shift, and its bias table has
  ``(2 min(H, W) - 1)^2`` rows; minilg clips the window at run time but keeps the table of the
  nominal window. The converter embeds the small table at the centre of the large one (the rows
  minilg reads at that size; the others are zero and are used only if the model later runs on
  larger maps). At ``img_size`` both are the same computation.
* Input size. The official model only accepts ``img_size`` inputs; minilg runs any size.
* Dropout. minilg's Swin has no dropout layers, so ``drop_rate`` and ``attn_drop_rate`` other
  than 0 are refused (they change training only; pass 0 to convert for inference).

Official YAML configs (``configs/swin/*.yaml``) map to constructor arguments as the official
``models/build.py`` does (``DATA.IMG_SIZE -> img_size``, ``MODEL.NUM_CLASSES``,
``MODEL.DROP_RATE``, ``MODEL.DROP_PATH_RATE``, ``MODEL.SWIN.<NAME> -> <name>``,
``TRAIN.USE_CHECKPOINT``, ``FUSED_WINDOW_PROCESS``); values the file leaves out come from the
training ``config.py``, whose Swin defaults equal the constructor's, and the number of classes
follows ``DATA.DATASET`` as in the official training script (21841 for ``imagenet22K``). See
:func:`yaml_to_kwargs`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from minilg.convert import (
    Conversion,
    ConversionError,
    Drop,
    register_converter,
    register_yaml_mapping,
    strict_load,
)
from minilg.models.swin import SwinConfig, build_swin

# The official ``SwinTransformer.__init__`` defaults (``norm_layer=nn.LayerNorm`` aside).
OFFICIAL_DEFAULTS: dict[str, Any] = {
    "img_size": 224, "patch_size": 4, "in_chans": 3, "num_classes": 1000, "embed_dim": 96,
    "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7, "mlp_ratio": 4.0,
    "qkv_bias": True, "qk_scale": None, "drop_rate": 0.0, "attn_drop_rate": 0.0,
    "drop_path_rate": 0.1, "ape": False, "patch_norm": True, "use_checkpoint": False,
    "fused_window_process": False,
}
# Accepted, with no effect on the weights or on the outputs.
WITHOUT_EFFECT = {
    "use_checkpoint": "use_checkpoint (activation checkpointing) only saves training memory",
    "fused_window_process": "fused_window_process only fuses the shift and the partition",
}
REBUILT = "rebuilt from the config"


@register_converter("swin")
def convert_swin(state_dict: Mapping[str, Tensor], config: dict[str, Any]) -> Conversion:
    """Official ``SwinTransformer`` state dict + constructor kwargs -> minilg Swin (eval mode)."""
    cfg, defaults, notes = resolve_config(config)
    cross_check(state_dict, cfg)
    swin = minilg_config(cfg)
    try:
        model = build_swin(swin)
    except ValueError as e:
        raise ConversionError(f"minilg cannot build this Swin: {e}") from e
    conversion = strict_load(model, state_dict, rename, adapt=_embed_clipped_table)
    conversion.defaults, conversion.notes = defaults, notes
    absent = sum(1 for k in official_keys(cfg) if _BUFFERS.fullmatch(k) and k not in state_dict)
    if absent:
        conversion.notes.append(f"{absent} relative_position_index / attn_mask buffer(s) absent "
                                "from the checkpoint: minilg rebuilds them from the config")
    conversion.name = "swin_tiny"
    conversion.overrides = {
        k: list(v) if isinstance(v, tuple) else v for k, v in vars(swin).items()
    }
    return conversion


# ----------------------------------------------------------------------------- config
def resolve_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Fill official defaults and refuse options minilg does not implement (naming them).

    Returns ``(config, defaults_taken, notes)``.
    """
    known = set(OFFICIAL_DEFAULTS) | {"norm_layer"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConversionError(
            f"unknown SwinTransformer argument(s) {unknown}; known: {sorted(known)}"
        )
    defaults = copy.deepcopy({
        k: v for k, v in OFFICIAL_DEFAULTS.items() if k not in config and k not in WITHOUT_EFFECT
    })
    cfg = {**OFFICIAL_DEFAULTS, **config}
    norm = cfg.pop("norm_layer", nn.LayerNorm)
    if norm is not nn.LayerNorm and norm not in ("LayerNorm", "nn.LayerNorm"):
        raise ConversionError(f"norm_layer={norm!r} is not supported (only nn.LayerNorm)")
    _check_values(cfg)
    unsupported = {
        "ape": (cfg["ape"], False, "absolute position embedding"),
        "patch_norm": (cfg["patch_norm"], True, "LayerNorm after the patch embedding"),
        "qkv_bias": (cfg["qkv_bias"], True, "bias in the qkv projection"),
        "drop_rate": (cfg["drop_rate"], 0.0, "minilg's Swin has no dropout"),
        "attn_drop_rate": (cfg["attn_drop_rate"], 0.0, "minilg's Swin has no attention dropout"),
    }
    for name, (value, supported, what) in unsupported.items():
        if value != supported:
            raise ConversionError(
                f"unsupported official option {name}={value!r} ({what}); minilg's Swin "
                f"implements only {name}={supported!r}"
            )
    head_dims = {cfg["embed_dim"] * 2**i // h for i, h in enumerate(cfg["num_heads"])}
    if cfg["qk_scale"] and any(cfg["qk_scale"] != d**-0.5 for d in head_dims):
        raise ConversionError(
            f"unsupported official option qk_scale={cfg['qk_scale']!r}: minilg scales by "
            f"head_dim^-0.5 (head dims {sorted(head_dims)}); qk_scale must be None"
        )
    notes = [text for name, text in WITHOUT_EFFECT.items() if cfg[name]]
    return cfg, defaults, notes


def _check_values(cfg: dict[str, Any]) -> None:
    """Types and ranges of the structural arguments (a ConversionError naming the argument)."""
    img = cfg["img_size"]
    if isinstance(img, (list, tuple)):
        if len(img) != 2 or img[0] != img[1]:
            raise ConversionError(f"img_size must be an int or a square pair, got {img!r}")
        cfg["img_size"] = img = img[0]
    for name in ("img_size", "patch_size", "in_chans", "embed_dim", "window_size"):
        if isinstance(cfg[name], bool) or not isinstance(cfg[name], int) or cfg[name] < 1:
            raise ConversionError(f"{name} must be a positive int, got {cfg[name]!r}")
    if not isinstance(cfg["num_classes"], int) or cfg["num_classes"] < 0:
        raise ConversionError(f"num_classes must be an int >= 0, got {cfg['num_classes']!r}")
    for name in ("depths", "num_heads"):
        value = cfg[name]
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and v > 0 for v in value
        ):
            raise ConversionError(f"{name} must be a list of positive ints, got {value!r}")
        cfg[name] = list(value)
    if len(cfg["depths"]) != len(cfg["num_heads"]):
        raise ConversionError(
            f"depths and num_heads need one entry per stage, got {cfg['depths']} and "
            f"{cfg['num_heads']}"
        )
    if cfg["img_size"] % cfg["patch_size"]:
        raise ConversionError(
            f"img_size={cfg['img_size']} must be a multiple of patch_size={cfg['patch_size']}"
        )
    if isinstance(cfg["mlp_ratio"], bool) or not isinstance(cfg["mlp_ratio"], (int, float)) \
            or cfg["mlp_ratio"] <= 0:
        raise ConversionError(f"mlp_ratio must be a positive number, got {cfg['mlp_ratio']!r}")
    if not 0.0 <= cfg["drop_path_rate"] < 1.0:
        raise ConversionError(f"drop_path_rate must be in [0, 1), got {cfg['drop_path_rate']!r}")


def stage_windows(cfg: Mapping[str, Any]) -> list[tuple[int, int, bool]]:
    """``(map side, window, shifted)`` per stage as the official blocks build them.

    A stage whose map is no larger than ``window_size`` uses window = map and no shift.
    """
    side = cfg["img_size"] // cfg["patch_size"]
    out = []
    for stage in range(len(cfg["depths"])):
        res = side // 2**stage
        clipped = res <= cfg["window_size"]
        out.append((res, res if clipped else cfg["window_size"], not clipped))
    return out


def minilg_config(cfg: Mapping[str, Any]) -> SwinConfig:
    """The :class:`SwinConfig` of the official model (stage widths double from ``embed_dim``)."""
    return SwinConfig(
        dims=tuple(cfg["embed_dim"] * 2**i for i in range(len(cfg["depths"]))),
        depths=tuple(cfg["depths"]), heads=tuple(cfg["num_heads"]),
        mlp_ratio=float(cfg["mlp_ratio"]), drop_path_rate=float(cfg["drop_path_rate"]),
        num_classes=cfg["num_classes"], img_size=cfg["img_size"], in_chans=cfg["in_chans"],
        patch_size=cfg["patch_size"], norm_eps=1e-5, window=cfg["window_size"], shift=True,
    )


# ----------------------------------------------------------------------------- cross-check
def _get(state_dict: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in state_dict:
        raise ConversionError(f"missing key {key!r} in the official state dict")
    return state_dict[key]


def _mismatch(field: str, config: object, found: object, where: str) -> ConversionError:
    shown = found if isinstance(found, str) else repr(found)
    return ConversionError(
        f"{field}: the config says {config!r} but the state dict has {shown} ({where})"
    )


def cross_check(state_dict: Mapping[str, Tensor], cfg: Mapping[str, Any]) -> None:
    """Check the config against what the state dict determines (a ConversionError naming the
    first field that disagrees), and that every key the official model has is present."""
    if "absolute_pos_embed" in state_dict:
        raise ConversionError("'absolute_pos_embed' is in the state dict: a model built with "
                              "ape=True, which minilg's Swin does not support")
    dim, chans, patch, _ = _get(state_dict, "patch_embed.proj.weight").shape
    for name, found in (("embed_dim", dim), ("in_chans", chans), ("patch_size", patch)):
        if cfg[name] != found:
            raise _mismatch(name, cfg[name], found, "patch_embed.proj.weight")
    blocks = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.")
    found_depths: dict[int, int] = {}
    for key in state_dict:
        if match := blocks.match(key):
            stage, index = int(match[1]), int(match[2])
            found_depths[stage] = max(found_depths.get(stage, 0), index + 1)
    depths = [found_depths.get(i, 0) for i in range(max(found_depths, default=-1) + 1)]
    if depths != list(cfg["depths"]):
        raise _mismatch("depths", list(cfg["depths"]), depths, "blocks per layers.<i>")
    _check_stages(state_dict, cfg)
    head = state_dict.get("head.weight")
    classes = 0 if head is None else int(head.shape[0])
    if classes != cfg["num_classes"]:
        raise _mismatch("num_classes", cfg["num_classes"], classes, "rows of head.weight")
    # the index/mask buffers are rebuilt from the config: timm exports and re-saved
    # checkpoints often lack them, and that is fine
    missing = [k for k in official_keys(cfg) if k not in state_dict and not _BUFFERS.fullmatch(k)]
    if missing:
        raise ConversionError(f"missing key {missing[0]!r} in the official state dict"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def _check_stages(state_dict: Mapping[str, Tensor], cfg: Mapping[str, Any]) -> None:
    """Heads, window, mlp_ratio and img_size per stage, from tables, fc1 and attn_mask."""
    for stage, (res, window, shifted) in enumerate(stage_windows(cfg)):
        dim, heads = cfg["embed_dim"] * 2**stage, cfg["num_heads"][stage]
        if res % window:
            raise ConversionError(
                f"img_size={cfg['img_size']}: the official Swin needs each stage map to be a "
                f"multiple of window_size={cfg['window_size']} (stage {stage} is {res}x{res})"
            )
        for index in range(cfg["depths"][stage]):
            prefix = f"layers.{stage}.blocks.{index}."
            rows, cols = _get(state_dict, prefix + "attn.relative_position_bias_table").shape
            if cols != heads:
                raise _mismatch("num_heads", list(cfg["num_heads"]), f"{cols} in stage {stage}",
                                prefix + "attn.relative_position_bias_table")
            side = (math.isqrt(rows) + 1) // 2
            if rows != (2 * side - 1) ** 2 or side != window:
                raise _mismatch(
                    "window_size", cfg["window_size"], f"window {side} ({rows} rows)",
                    f"{prefix}attn.relative_position_bias_table; img_size={cfg['img_size']} "
                    f"gives window {window} in stage {stage}",
                )
            hidden = _get(state_dict, prefix + "mlp.fc1.weight").shape[0]
            if hidden != int(dim * cfg["mlp_ratio"]):
                raise _mismatch("mlp_ratio", cfg["mlp_ratio"], f"{hidden / dim:g} ({hidden} "
                                f"hidden for {dim} channels)", prefix + "mlp.fc1.weight")
            _check_buffers(state_dict, cfg, prefix, window, shifted and index % 2 == 1, res)


def _check_buffers(state_dict: Mapping[str, Tensor], cfg: Mapping[str, Any], prefix: str,
                   window: int, shifted: bool, res: int) -> None:
    """Shapes of the buffers that are dropped: ``(M^2, M^2)`` index, ``(nW, M^2, M^2)`` mask."""
    tokens = window * window
    index = state_dict.get(prefix + "attn.relative_position_index")
    if index is not None and tuple(index.shape) != (tokens, tokens):
        raise ConversionError(f"shape mismatch: {prefix}attn.relative_position_index "
                              f"{tuple(index.shape)}, expected {(tokens, tokens)} for window "
                              f"{window}")
    mask = state_dict.get(prefix + "attn_mask")
    if mask is not None and not shifted:
        raise ConversionError(f"unexpected key {prefix + 'attn_mask'!r}: with window_size="
                              f"{cfg['window_size']} and img_size={cfg['img_size']} this "
                              f"block is not shifted")
    expected = ((res // window) ** 2, tokens, tokens)
    if mask is not None and tuple(mask.shape) != expected:
        raise _mismatch("img_size", cfg["img_size"], f"{mask.shape[0]} windows",
                        f"{prefix}attn_mask {tuple(mask.shape)}, expected {expected}")


def official_keys(cfg: Mapping[str, Any]) -> list[str]:
    """Every key of the official model's state dict for ``cfg``, in its order (buffers too)."""
    keys = [f"patch_embed.{m}.{p}" for m in ("proj", "norm") for p in ("weight", "bias")]
    wb = ("weight", "bias")
    windows = stage_windows(cfg)
    for stage, depth in enumerate(cfg["depths"]):
        for index in range(depth):
            prefix = f"layers.{stage}.blocks.{index}."
            if windows[stage][2] and index % 2 == 1:
                keys.append(prefix + "attn_mask")
            keys += [prefix + f"norm1.{p}" for p in wb]
            keys += [prefix + "attn.relative_position_bias_table",
                     prefix + "attn.relative_position_index"]
            keys += [prefix + f"{m}.{p}" for m in ("attn.qkv", "attn.proj", "norm2", "mlp.fc1",
                                                   "mlp.fc2") for p in wb]
        if stage < len(cfg["depths"]) - 1:
            keys += [f"layers.{stage}.downsample.{p}"
                     for p in ("reduction.weight", "norm.weight", "norm.bias")]
    keys += ["norm.weight", "norm.bias"]
    return keys + (["head.weight", "head.bias"] if cfg["num_classes"] > 0 else [])


# ----------------------------------------------------------------------------- renaming
_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"patch_embed\.(proj|norm)\.(weight|bias)"), r"stem.\1.\2"),
    (re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.(norm1|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)"),
     r"stages.\1.blocks.\2.\3.\4"),
    (re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)"),
     r"stages.\1.blocks.\2.mixer.\3.\4"),
    (re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table"),
     r"stages.\1.blocks.\2.mixer.position_bias.bias_table"),
    (re.compile(r"layers\.(\d+)\.downsample\.(norm\.weight|norm\.bias|reduction\.weight)"),
     lambda m: f"stages.{int(m.group(1)) + 1}.downsample.{m.group(2)}"),
    (re.compile(r"(norm|head)\.(weight|bias)"), r"\1.\2"),
]
_BUFFERS = re.compile(r"layers\.\d+\.blocks\.\d+\.(attn\.relative_position_index|attn_mask)")


def rename(key: str) -> str | Drop | None:
    """Official key -> minilg key, :class:`Drop` for the rebuilt buffers, ``None`` if unknown."""
    if _BUFFERS.fullmatch(key):
        return Drop(REBUILT)
    for pattern, replacement in _RULES:
        if pattern.fullmatch(key):
            return pattern.sub(replacement, key)
    return None


def _embed_clipped_table(key: str, tensor: Tensor, target: Tensor) -> Tensor:
    """A ``(2m-1)^2``-row table of a clipped window ``m`` placed at the centre of minilg's
    ``(2M-1)^2``-row table (the rows minilg indexes on an ``m x m`` map); others stay zero."""
    if not key.endswith("relative_position_bias_table") or tensor.shape == target.shape:
        return tensor
    small, large = (math.isqrt(t.shape[0]) for t in (tensor, target))
    if small > large or small % 2 == 0 or tensor.shape[1:] != target.shape[1:]:
        return tensor  # the shape check reports it
    offset = (large - small) // 2
    out = torch.zeros(large, large, *target.shape[1:], dtype=tensor.dtype)
    out[offset : offset + small, offset : offset + small] = tensor.reshape(small, small, -1)
    return out.reshape(target.shape)


# ----------------------------------------------------------------------------- YAML
_YAML = {
    ("DATA", "IMG_SIZE"): ("img_size", 224),
    ("MODEL", "NUM_CLASSES"): ("num_classes", 1000),
    ("MODEL", "DROP_RATE"): ("drop_rate", 0.0),
    ("MODEL", "DROP_PATH_RATE"): ("drop_path_rate", 0.1),
    ("TRAIN", "USE_CHECKPOINT"): ("use_checkpoint", False),
    ("FUSED_WINDOW_PROCESS",): ("fused_window_process", False),
}
_YAML_SWIN = ("patch_size", "in_chans", "embed_dim", "depths", "num_heads", "window_size",
              "mlp_ratio", "qkv_bias", "qk_scale", "ape", "patch_norm")


@register_yaml_mapping("swin")
def yaml_to_kwargs(nested: Mapping[str, Any]) -> dict[str, Any]:
    """Official nested YAML (merged with its ``BASE``) -> constructor kwargs, as ``build.py``.

    ``DATA.IMG_SIZE``, ``MODEL.NUM_CLASSES``, ``MODEL.DROP_RATE``, ``MODEL.DROP_PATH_RATE``,
    ``TRAIN.USE_CHECKPOINT``, ``FUSED_WINDOW_PROCESS`` and ``MODEL.SWIN.<NAME>`` (lower-cased);
    values the file leaves out take the training ``config.py`` defaults (equal to the
    constructor's for Swin), except ``num_classes``, which the official training script sets
    from ``DATA.DATASET`` (21841 for ``imagenet22K``, else 1000) unless the file gives
    ``MODEL.NUM_CLASSES``. ``MODEL.TYPE`` must be ``swin``; an unknown ``MODEL.SWIN`` key is an
    error. Training settings (``TRAIN.*`` otherwise, ``AUG``, ``TEST``, ...) are ignored.
    """
    model = nested.get("MODEL") or {}
    kind = model.get("TYPE", "swin")
    if kind != "swin":
        raise ConversionError(f"MODEL.TYPE={kind!r}: only 'swin' (SwinTransformer) converts")
    out: dict[str, Any] = {}
    for path, (name, default) in _YAML.items():
        node: Any = nested
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        out[name] = default if node is None else node
    if model.get("NUM_CLASSES") is None:  # the official data/build.py sets it per data set
        dataset = (nested.get("DATA") or {}).get("DATASET", "imagenet")
        out["num_classes"] = 21841 if dataset == "imagenet22K" else 1000
    swin = model.get("SWIN") or {}
    unknown = sorted(set(swin) - {n.upper() for n in _YAML_SWIN})
    if unknown:
        raise ConversionError(f"unknown MODEL.SWIN key(s) {unknown}")
    for name in _YAML_SWIN:
        out[name] = swin.get(name.upper(), OFFICIAL_DEFAULTS[name])
    return out
