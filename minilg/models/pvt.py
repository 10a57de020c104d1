"""Spatial-reduction attention (PVT, Wang et al. 2021) in the shared hierarchical backbone.

A global-but-coarse baseline: every query attends to keys pooled ``R`` times per side, with
``R = 8, 4, 2, 1`` over the four stages as in PVT. This is *not* a reproduction of PVT itself
(PVT uses per-stage patch embeddings and position embeddings); it swaps only the token mixer of
the Swin-style backbone, so comparisons isolate the attention mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minilg.attention.spatial_reduction import SpatialReductionAttention
from minilg.layers import PatchEmbed
from minilg.models.backbone import BlockSpec, HierarchicalBackbone
from minilg.registry import register_model, with_overrides


@dataclass(frozen=True)
class SRAConfig:
    dims: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    heads: tuple[int, ...] = (1, 2, 4, 8)
    reductions: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    num_classes: int = 10
    img_size: int = 32
    in_chans: int = 3
    patch_size: int = 2


def build_sra(config: SRAConfig) -> HierarchicalBackbone:
    if len(config.reductions) != len(config.dims):
        raise ValueError(
            f"reductions needs one entry per stage ({len(config.dims)}), got {config.reductions}"
        )

    def mixer(spec: BlockSpec) -> SpatialReductionAttention:
        return SpatialReductionAttention(spec.dim, spec.heads, config.reductions[spec.stage])

    return HierarchicalBackbone(
        dims=config.dims, depths=config.depths, heads=config.heads, mixer=mixer,
        num_classes=config.num_classes, img_size=config.img_size, in_chans=config.in_chans,
        mlp_ratio=config.mlp_ratio, drop_path_rate=config.drop_path_rate,
        stem=PatchEmbed(config.in_chans, config.dims[0], config.patch_size),
        stem_stride=config.patch_size,
    )


@register_model("sra_mini", family="pvt", mini=True)
def sra_mini(**overrides: Any) -> HierarchicalBackbone:
    """CPU-trainable hierarchical model with PVT's SRA (R = 8, 4, 2, 1): global but coarse."""
    return build_sra(with_overrides(SRAConfig(), overrides))
