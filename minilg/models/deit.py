"""DeiT (Touvron et al. 2021): ViT with full MSA at one resolution, class-token head.

The global-attention baseline of GG (Table 1, Table 4c) and HAT-Net (Table 2).
DeiT-T: C=192, 12 blocks, 3 heads; DeiT-S: C=384, 12 blocks, 6 heads; patch 16, MLP ratio 4.
"""

from __future__ import annotations

from typing import Any

from minilg.attention.full import FullAttention
from minilg.models.backbone import IsotropicBackbone, IsotropicConfig, build_isotropic
from minilg.models.stages import BlockSpec
from minilg.registry import register_model, with_overrides


def build_deit(config: IsotropicConfig) -> IsotropicBackbone:
    def mixer(spec: BlockSpec) -> FullAttention:
        return FullAttention(spec.dim, spec.heads)

    return build_isotropic(config, mixer)


@register_model("deit_tiny", family="deit", paper="DeiT-T")
def deit_tiny(**overrides: Any) -> IsotropicBackbone:
    return build_deit(with_overrides(IsotropicConfig(), overrides))


@register_model("deit_small", family="deit", paper="DeiT-S")
def deit_small(**overrides: Any) -> IsotropicBackbone:
    return build_deit(with_overrides(IsotropicConfig(dim=384, heads=6), overrides))


@register_model("deit_mini", family="deit", mini=True)
def deit_mini(**overrides: Any) -> IsotropicBackbone:
    """CPU-trainable DeiT: 32 px, patch 4 (8x8 tokens), C=128, 6 blocks, 4 heads."""
    config = IsotropicConfig(
        dim=128, depth=6, heads=4, patch_size=4, img_size=32, num_classes=10, drop_path_rate=0.0
    )
    return build_deit(with_overrides(config, overrides))
