"""Attention mixers: ``(B, H, W, C) -> (B, H, W, C)`` modules with an exact ``macs(H, W)``."""

from minilg.attention.base import TokenMixer
from minilg.attention.core import GroupAttention, attention, merge_heads, split_heads
from minilg.attention.full import FullAttention, msa_macs
from minilg.attention.glance_gaze import (
    GlanceGazeAttention,
    dilated_merge,
    dilated_split,
    gg_msa_macs,
)
from minilg.attention.position import RelativePositionBias, relative_position_index
from minilg.attention.spatial_reduction import SpatialReductionAttention, sra_macs
from minilg.attention.window import WindowAttention, window_msa_macs
from minilg.attention.windows import pad_to_multiple, window_partition, window_reverse

__all__ = [
    "FullAttention", "GlanceGazeAttention", "GroupAttention", "RelativePositionBias",
    "SpatialReductionAttention", "TokenMixer", "WindowAttention", "attention", "dilated_merge",
    "dilated_split", "gg_msa_macs", "merge_heads", "msa_macs", "pad_to_multiple",
    "relative_position_index", "split_heads", "sra_macs", "window_msa_macs", "window_partition",
    "window_reverse",
]
