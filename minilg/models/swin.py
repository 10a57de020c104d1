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
from minilg.models.backbone import (
    HierarchicalBackbone,
    HierarchicalConfig,
    build_hierarchical,
)
from minilg.models.stages import BlockSpec
from minilg.registry import register_model, with_overrides


@dataclass(frozen=True)
class SwinConfig(HierarchicalConfig):
    window: int = 7
    shift: bool = True


def build_swin(config: SwinConfig) -> HierarchicalBackbone:
    """Swin from a :class:`SwinConfig`: odd blocks shift by ``window // 2`` when ``shift``."""
    if config.window < 1:
        raise ValueError(f"window must be >= 1, got window={config.window}")

    def mixer(spec: BlockSpec) -> WindowAttention:
        shifted = config.shift and spec.index % 2 == 1
        return WindowAttention(spec.dim, spec.heads, config.window,
                               shift=config.window // 2 if shifted else 0)

    return build_hierarchical(config, mixer)


@register_model("swin_tiny", family="swin", paper="Swin-T")
def swin_tiny(**overrides: Any) -> HierarchicalBackbone:
    return build_swin(with_overrides(SwinConfig(), overrides))


@register_model("swin_small", family="swin", paper="Swin-S")
def swin_small(**overrides: Any) -> HierarchicalBackbone:
    config = SwinConfig(depths=(2, 2, 18, 2), drop_path_rate=0.3)
    return build_swin(with_overrides(config, overrides))


# CPU-trainable frame shared by every family's ``*_mini`` (32 px, patch 2: maps 16, 8, 4, 2).
MINI_FRAME = HierarchicalConfig(dims=(32, 64, 128, 256), depths=(2, 2, 2, 2), heads=(1, 2, 4, 8),
                                patch_size=2, img_size=32, num_classes=10, drop_path_rate=0.0)
MINI = SwinConfig(**vars(MINI_FRAME), window=4)


@register_model("swin_mini", family="swin", mini=True)
def swin_mini(**overrides: Any) -> HierarchicalBackbone:
    """CPU-trainable Swin (32 px, patch 2, window 4): W-MSA + SW-MSA."""
    return build_swin(with_overrides(MINI, overrides))


@register_model("window_mini", family="swin", mini=True)
def window_mini(**overrides: Any) -> HierarchicalBackbone:
    """``swin_mini`` without shifted windows: tokens only mix inside fixed windows (local only)."""
    return build_swin(with_overrides(MINI, {"shift": False, **overrides}))
