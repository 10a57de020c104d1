"""Swin Transformer (Liu et al. 2021): W-MSA and SW-MSA in alternating blocks.

The baseline of GG-Transformer (GG Table 1, 4b), Focal Transformer (Focal Table 2) and SALG.
Swin-T: C=96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7; Swin-S: depths (2, 2, 18, 2).
Odd blocks shift by ``window // 2`` (Swin Fig. 2), unless ``shift=False`` (plain W-MSA, a
local-only model used in the comparisons).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minilg.attention.window import WindowAttention
from minilg.models.backbone import BlockSpec, HierarchicalBackbone
from minilg.registry import register_model, with_overrides


@dataclass(frozen=True)
class SwinConfig:
    dims: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    heads: tuple[int, ...] = (3, 6, 12, 24)
    window: int = 7
    shift: bool = True
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    num_classes: int = 1000
    img_size: int = 224
    in_chans: int = 3
    patch_size: int = 4


def build_swin(config: SwinConfig) -> HierarchicalBackbone:
    """Swin from a :class:`SwinConfig`."""
    if config.window < 1:
        raise ValueError(f"window must be >= 1, got window={config.window}")

    def mixer(spec: BlockSpec) -> WindowAttention:
        shifted = config.shift and spec.index % 2 == 1
        return WindowAttention(spec.dim, spec.heads, config.window,
                               shift=config.window // 2 if shifted else 0)

    from minilg.layers import PatchEmbed

    return HierarchicalBackbone(
        dims=config.dims, depths=config.depths, heads=config.heads, mixer=mixer,
        num_classes=config.num_classes, img_size=config.img_size, in_chans=config.in_chans,
        mlp_ratio=config.mlp_ratio, drop_path_rate=config.drop_path_rate,
        stem=PatchEmbed(config.in_chans, config.dims[0], config.patch_size),
        stem_stride=config.patch_size,
    )


@register_model("swin_tiny", family="swin", paper="Swin-T")
def swin_tiny(**overrides: Any) -> HierarchicalBackbone:
    return build_swin(with_overrides(SwinConfig(), overrides))


@register_model("swin_small", family="swin", paper="Swin-S")
def swin_small(**overrides: Any) -> HierarchicalBackbone:
    config = SwinConfig(depths=(2, 2, 18, 2), drop_path_rate=0.3)
    return build_swin(with_overrides(config, overrides))


MINI = dict(dims=(32, 64, 128, 256), depths=(2, 2, 2, 2), heads=(1, 2, 4, 8), window=4,
            patch_size=2, img_size=32, num_classes=10, drop_path_rate=0.0)


@register_model("swin_mini", family="swin", mini=True)
def swin_mini(**overrides: Any) -> HierarchicalBackbone:
    """CPU-trainable Swin (32 px, patch 2, window 4): W-MSA + SW-MSA."""
    return build_swin(with_overrides(SwinConfig(**MINI), overrides))  # type: ignore[arg-type]


@register_model("window_mini", family="swin", mini=True)
def window_mini(**overrides: Any) -> HierarchicalBackbone:
    """``swin_mini`` without shifted windows: tokens only mix inside fixed windows (local only)."""
    return build_swin(with_overrides(SwinConfig(**MINI, shift=False), overrides))  # type: ignore[arg-type]
