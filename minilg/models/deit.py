"""DeiT (Touvron et al. 2021): ViT with full MSA at one resolution, class-token head.

The global-attention baseline of GG (Table 1, Table 4c) and HAT-Net (Table 2).
DeiT-T: C=192, 12 blocks, 3 heads; DeiT-S: C=384, 12 blocks, 6 heads; patch 16, MLP ratio 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minilg.attention.full import FullAttention
from minilg.models.backbone import BlockSpec, IsotropicBackbone
from minilg.registry import register_model, with_overrides


@dataclass(frozen=True)
class DeiTConfig:
    dim: int = 192
    depth: int = 12
    heads: int = 3
    patch_size: int = 16
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    num_classes: int = 1000
    img_size: int = 224
    in_chans: int = 3


def build_deit(config: DeiTConfig) -> IsotropicBackbone:
    def mixer(spec: BlockSpec) -> FullAttention:
        return FullAttention(spec.dim, spec.heads)

    return IsotropicBackbone(
        dim=config.dim, depth=config.depth, heads=config.heads, mixer=mixer,
        num_classes=config.num_classes, img_size=config.img_size,
        patch_size=config.patch_size, in_chans=config.in_chans, mlp_ratio=config.mlp_ratio,
        drop_path_rate=config.drop_path_rate,
    )


@register_model("deit_tiny", family="deit", paper="DeiT-T")
def deit_tiny(**overrides: Any) -> IsotropicBackbone:
    return build_deit(with_overrides(DeiTConfig(), overrides))


@register_model("deit_small", family="deit", paper="DeiT-S")
def deit_small(**overrides: Any) -> IsotropicBackbone:
    return build_deit(with_overrides(DeiTConfig(dim=384, heads=6), overrides))


@register_model("deit_mini", family="deit", mini=True)
def deit_mini(**overrides: Any) -> IsotropicBackbone:
    """CPU-trainable DeiT: 32 px, patch 4 (8x8 tokens), C=128, 6 blocks, 4 heads."""
    config = DeiTConfig(dim=128, depth=6, heads=4, patch_size=4, img_size=32, num_classes=10,
                        drop_path_rate=0.0)
    return build_deit(with_overrides(config, overrides))
