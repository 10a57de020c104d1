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
from minilg.models.backbone import (
    HierarchicalBackbone,
    HierarchicalConfig,
    build_hierarchical,
)
from minilg.models.stages import BlockSpec
from minilg.models.swin import MINI_FRAME
from minilg.registry import register_model, with_overrides


@dataclass(frozen=True)
class SRAConfig(HierarchicalConfig):
    reductions: tuple[int, ...] = (8, 4, 2, 1)
    norm_eps: float = 1e-6  # PVT's LayerNorm eps


def build_sra(config: SRAConfig) -> HierarchicalBackbone:
    if len(config.reductions) != len(config.dims):
        raise ValueError(
            f"reductions needs one entry per stage ({len(config.dims)}), got {config.reductions}"
        )

    def mixer(spec: BlockSpec) -> SpatialReductionAttention:
        return SpatialReductionAttention(spec.dim, spec.heads, config.reductions[spec.stage])

    return build_hierarchical(config, mixer)


@register_model("sra_mini", family="pvt", mini=True)
def sra_mini(**overrides: Any) -> HierarchicalBackbone:
    """CPU-trainable hierarchical model with PVT's SRA (R = 8, 4, 2, 1): global but coarse."""
    frame = {**vars(MINI_FRAME), "norm_eps": 1e-6}
    return build_sra(with_overrides(SRAConfig(**frame), overrides))
