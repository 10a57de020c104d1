"""Focal Transformer (Yang et al. 2021): Swin's pyramid with focal attention in every block.

Focal Sec. 3.1 and Table 1: a ``4 x 4`` stride-4 convolution + LayerNorm stem, four stages,
and between stages a ``2 x 2`` stride-2 convolution + LayerNorm ("patch embedding", not Swin's
patch merging); head: LayerNorm, global average pool, Linear. Focal-T: C = 96, depths
(2, 2, 6, 2), heads (3, 6, 12, 24); Focal-S: depths (2, 2, 18, 2); Focal-B: C = 128, heads
(4, 8, 16, 32). Window ``s_p = 7``, two focal levels per stage (Sec. 3.3): the fine level
``(s_w, s_r) = (1, 13)`` (the window expanded by 3 tokens per side) and one pooled level
``(7, s_r)`` with ``s_r = 7, 5, 3, 1`` by stage. A stage whose map is no larger than the window
at the nominal ``img_size`` (stage 4 at 224: 7 x 7) uses the whole map as its window, no ring
(``s_r^1 = 7``) and a single pooled token, as Table 1 and the official code.

Switches for the paper's ablations and the official options:

* ``follow``: ``"paper"`` (default) or ``"official"`` (see :mod:`minilg.attention.focal`);
* ``interactions`` (Fig. 5): ``"both"`` (Focal-T), ``"window"`` (window attention only),
  ``"local"`` (fine ring, no pooled level), ``"global"`` (window + pooled level, no ring);
* ``shift`` (Table 8): odd blocks shift the windows by ``s_p // 2``;
* ``window`` (Table 7: 14), ``expand`` (ring width, one for all stages or one per stage),
  ``focal_window`` / ``focal_regions`` (the pooled level's ``s_w`` and per-stage ``s_r``),
  ``focal_levels`` (levels per stage counting the fine one, the official ``focal_levels``:
  pooled level ``k = 0 .. L - 2`` pools ``floor(s_p / 2^k)`` sub-windows and gathers
  ``s_r + 2^k - 1`` of them per side, :func:`~minilg.attention.focal_official.official_levels`;
  default 2), ``levels`` (any levels per stage, overriding the fields above), ``depths``
  (Table 9);
* ``use_conv_embed``: overlapping convolutions (stem ``k = patch + 3``, stride ``patch``,
  padding 2: 7/4/2 as the official; between stages 3/2/1);
* official options: ``expand_layer`` (``"all"``; ``"even"`` / ``"odd"`` drop the ring on even /
  odd block indices, as the official code), ``focal_stages`` (stages with a pooled level),
  ``layer_scale``, ``pool``.

Stochastic depth: Focal-T 0.2; Focal-S / Focal-B 0.2 / 0.3 in paper mode (Sec. 4.1, the
ImageNet recipe) and 0.3 / 0.5 with ``follow="official"`` (the official classification configs;
the paper uses those for detection). An explicit ``drop_path_rate`` override wins.

Learned pooling starts as the mean (weights ``1/s_w^2``, bias 0) in minilg, as the paper's
block intends (its own ``init_weights``, which the backbone's initialisation calls); the official
model's final weight initialisation overwrites it (and every Linear) with a truncated normal, so
minilg's *initialisation* differs there on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from einops import rearrange
from torch import Tensor, nn

from minilg.attention.focal import FOLLOW, POOL, FocalAttention, Follow, Pool, PositionBias
from minilg.models.backbone import HierarchicalBackbone, HierarchicalConfig
from minilg.models.blocks import ConvDownsample, PatchEmbed
from minilg.models.stages import BlockSpec, BlockStages
from minilg.models.swin import MINI_FRAME
from minilg.nn import layer_norm
from minilg.registry import register_model, with_overrides

Interactions = Literal["both", "window", "local", "global"]
ExpandLayer = Literal["all", "even", "odd"]
StageLevels = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class FocalConfig(HierarchicalConfig):
    window: int = 7
    expand: int | tuple[int, ...] = 3
    focal_window: int | None = None
    focal_regions: tuple[int, ...] = (7, 5, 3, 1)
    focal_levels: tuple[int, ...] | None = None
    levels: tuple[StageLevels, ...] | None = None
    interactions: Interactions = "both"
    follow: Follow = "paper"
    position_bias: PositionBias | None = None
    shift: bool = False
    pool: Pool = "fc"
    use_conv_embed: bool = False
    expand_layer: ExpandLayer = "all"
    focal_stages: tuple[int, ...] = (0, 1, 2, 3)
    layer_scale: float | None = None


def check_config(config: FocalConfig) -> None:
    """Fail fast, naming the field, before any block is built."""
    choices: tuple[tuple[str, object, tuple[object, ...]], ...] = (
        ("follow", config.follow, FOLLOW), ("pool", config.pool, POOL),
        ("interactions", config.interactions, get_args(Interactions)),
        ("expand_layer", config.expand_layer, get_args(ExpandLayer)),
    )
    for name, value, allowed in choices:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {name}={value!r}")
    stages = len(config.dims)
    expand = (config.expand,) * stages if isinstance(config.expand, int) else config.expand
    if len(expand) != stages or min(expand) < 0 or config.window < 1:
        raise ValueError(f"window must be >= 1 and expand >= 0 (one, or one per stage), got "
                         f"window={config.window}, expand={config.expand!r}")
    if config.focal_levels is not None and (
            len(config.focal_levels) != stages or min(config.focal_levels) < 1):
        raise ValueError(f"focal_levels must hold one level count >= 1 per stage ({stages}), "
                         f"got focal_levels={config.focal_levels!r}")
    if config.levels is not None and len(config.levels) != stages:
        raise ValueError(f"levels needs one tuple of (s_w, s_r) per stage ({stages}), "
                         f"got {config.levels!r}")
    if config.levels is None and len(config.focal_regions) != stages:
        raise ValueError(f"focal_regions needs one s_r per stage ({stages}), "
                         f"got {config.focal_regions!r}")


def stage_levels(config: FocalConfig, spec: BlockSpec) -> tuple[int, StageLevels, int]:
    """``(window, levels, shift)`` of one block (Table 1, clipped to small maps, ablations)."""
    if config.levels is not None:
        shift = config.window // 2 if config.shift and spec.index % 2 else 0
        return config.window, tuple((int(a), int(b)) for a, b in config.levels[spec.stage]), shift
    side = min(spec.feature_size)
    clipped = side <= config.window
    window = side if clipped else config.window
    expand = config.expand if isinstance(config.expand, int) else config.expand[spec.stage]
    if clipped or config.interactions in ("window", "global"):
        expand = 0
    if config.expand_layer != "all" and spec.index % 2 == (config.expand_layer == "odd"):
        expand = 0  # the official "even"/"odd": no ring on even/odd block indices
    levels: list[tuple[int, int]] = [(1, window + 2 * expand)]
    if config.interactions in ("both", "global") and spec.stage in config.focal_stages:
        ratio = config.window // (config.focal_window or config.window)
        region = config.focal_regions[spec.stage]
        count = 2 if config.focal_levels is None else config.focal_levels[spec.stage]
        levels += [(max(1, window // ratio) if k == 0 else window // (ratio * 2**k),
                    region + 2**k - 1) for k in range(count - 1)]
    shift = window // 2 if config.shift and spec.index % 2 and not clipped else 0
    return window, tuple(levels), shift


class OverlapStem(ConvDownsample):
    """``use_conv_embed``'s stem: an overlapping conv + LayerNorm on images ``(B, 3, H, W)``."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ValueError(f"expected images of shape (B, {self.dim}, H, W), got "
                             f"{tuple(x.shape)}")
        return super().forward(rearrange(x, "b c h w -> b h w c"))


def build_focal(config: FocalConfig) -> HierarchicalBackbone:
    """A Focal Transformer (or one of its ablations) from a :class:`FocalConfig`."""
    check_config(config)
    norm = layer_norm(config.norm_eps)
    patch = config.patch_size

    def mixer(spec: BlockSpec) -> FocalAttention:
        window, levels, shift = stage_levels(config, spec)
        return FocalAttention(spec.dim, spec.heads, window, levels, follow=config.follow,
                              shift=shift, pool_mode=config.pool,
                              position_bias=config.position_bias)

    def downsample(dim: int, out_dim: int) -> nn.Module:
        if config.use_conv_embed:
            return ConvDownsample(dim, out_dim, 3, 2, 1, norm)
        return ConvDownsample(dim, out_dim, 2, 2, 0, norm)

    stem: nn.Module = (OverlapStem(config.in_chans, config.dims[0], patch + 3, patch, 2, norm)
                       if config.use_conv_embed else
                       PatchEmbed(config.in_chans, config.dims[0], patch))
    stages = BlockStages(mixer, norm=norm, downsample=downsample, layer_scale=config.layer_scale)
    return HierarchicalBackbone(
        dims=config.dims, depths=config.depths, heads=config.heads, stage=stages,
        num_classes=config.num_classes, img_size=config.img_size, in_chans=config.in_chans,
        mlp_ratio=config.mlp_ratio, drop_path_rate=config.drop_path_rate, stem=stem,
        norm=norm(config.dims[-1]),
    )


def keys_per_window(model: nn.Module) -> list[tuple[int, ...]]:
    """Keys per query window, by level, of the first block of each stage."""
    stages: Sequence[Any] = getattr(model, "stages")  # noqa: B009
    return [stage[0].mixer.keys_per_window() for stage in stages]


FOCAL_T = FocalConfig()


@register_model("focal_tiny", family="focal", paper="Focal-T")
def focal_tiny(**overrides: Any) -> HierarchicalBackbone:
    return build_focal(with_overrides(FOCAL_T, overrides))


def drop_path_for(overrides: dict[str, Any], paper: float, official: float) -> float:
    """Focal-S/B stochastic depth keyed to ``follow`` (module docstring)."""
    return official if overrides.get("follow") == "official" else paper


@register_model("focal_small", family="focal", paper="Focal-S")
def focal_small(**overrides: Any) -> HierarchicalBackbone:
    config = FocalConfig(depths=(2, 2, 18, 2), drop_path_rate=drop_path_for(overrides, 0.2, 0.3))
    return build_focal(with_overrides(config, overrides))


@register_model("focal_base", family="focal", paper="Focal-B")
def focal_base(**overrides: Any) -> HierarchicalBackbone:
    config = FocalConfig(dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2),
                         heads=(4, 8, 16, 32), drop_path_rate=drop_path_for(overrides, 0.3, 0.5))
    return build_focal(with_overrides(config, overrides))


# The shared mini frame (32 px, patch 2: maps 16, 8, 4, 2), window 4 as swin_mini. Focal's
# levels scaled to it: stage 1 fine region 8 (ring 2, Fig. 4's first level) + 4 x 4 pooling
# with s_r = 5; stage 2 ring 2 + s_r = 3 (already global); stages 3-4 (maps 4 and 2, no larger
# than the window) the whole map as window plus one pooled token, as Focal-T's stage 4.
MINI = FocalConfig(**vars(MINI_FRAME), window=4, expand=2, focal_regions=(5, 3, 1, 1))


@register_model("focal_mini", family="focal", mini=True)
def focal_mini(**overrides: Any) -> HierarchicalBackbone:
    """CPU-trainable Focal-T analogue of ``swin_mini`` (paper mode, window 4, two levels)."""
    return build_focal(with_overrides(MINI, overrides))
