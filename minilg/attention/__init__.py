"""Attention mixers: ``(B, H, W, C) -> (B, H, W, C)`` modules with an exact ``macs(H, W)``.

* :mod:`~minilg.attention.core`: one attention over any key sources, and the projections.
* :mod:`~minilg.attention.grouping`: windows, dilated partitions, neighbourhoods, pooling, labels.
* :mod:`~minilg.attention.position`: relative position bias.
* one module per mechanism: :mod:`~minilg.attention.full` (MSA), :mod:`~minilg.attention.window`
  (W-MSA / SW-MSA), :mod:`~minilg.attention.spatial_reduction` (PVT's SRA),
  :mod:`~minilg.attention.glance_gaze` (GG-MSA), :mod:`~minilg.attention.focal` (focal attention;
  its official data flow beside it in :mod:`~minilg.attention.focal_official`),
  :mod:`~minilg.attention.hierarchical` (H-MHSA),
  :mod:`~minilg.attention.semantic_regions` (SALG).
"""

from minilg.attention.base import TokenMixer, reference_math
from minilg.attention.core import AttentionMixer, KeySource, attend
from minilg.attention.focal import FocalAttention, focal_macs
from minilg.attention.focal_official import OfficialFocalAttention
from minilg.attention.full import FullAttention, msa_macs
from minilg.attention.glance_gaze import (
    GlanceGazeAttention,
    dilated_merge,
    dilated_split,
    gg_msa_macs,
)
from minilg.attention.grouping import (
    SubWindowPool,
    label_mask,
    neighbourhood,
    pad_to_multiple,
    subwindow_pool,
    window_partition,
    window_reverse,
)
from minilg.attention.hierarchical import HierarchicalAttention, h_mhsa_macs
from minilg.attention.position import RelativePositionBias, relative_position_index
from minilg.attention.semantic_regions import SemanticRegionAttention, salg_attention_macs
from minilg.attention.spatial_reduction import SpatialReductionAttention, sra_macs
from minilg.attention.window import WindowAttention, window_msa_macs

__all__ = [
    "AttentionMixer", "FocalAttention", "FullAttention", "GlanceGazeAttention",
    "HierarchicalAttention", "KeySource", "OfficialFocalAttention", "RelativePositionBias",
    "SemanticRegionAttention", "SpatialReductionAttention", "SubWindowPool", "TokenMixer",
    "WindowAttention", "attend", "dilated_merge", "dilated_split", "focal_macs", "gg_msa_macs",
    "h_mhsa_macs", "label_mask", "msa_macs", "neighbourhood", "pad_to_multiple", "reference_math",
    "relative_position_index", "salg_attention_macs", "sra_macs", "subwindow_pool",
    "window_msa_macs", "window_partition", "window_reverse",
]
