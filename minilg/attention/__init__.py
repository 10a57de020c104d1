"""Attention mixers: ``(B, H, W, C) -> (B, H, W, C)`` modules with an exact ``macs(H, W)``.

* :mod:`~minilg.attention.core`: one attention over any key sources, and the projections.
* :mod:`~minilg.attention.grouping`: windows, dilated partitions, neighbourhoods, pooling, labels.
* :mod:`~minilg.attention.position`: relative position bias.
* one module per mechanism: :mod:`~minilg.attention.full` (MSA), :mod:`~minilg.attention.window`
  (W-MSA / SW-MSA), :mod:`~minilg.attention.spatial_reduction` (PVT's SRA),
  :mod:`~minilg.attention.glance_gaze` (GG-MSA).
"""

from minilg.attention.base import TokenMixer, reference_math
from minilg.attention.core import AttentionMixer, KeySource, attend
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
from minilg.attention.position import RelativePositionBias, relative_position_index
from minilg.attention.semantic_regions import SemanticRegionAttention, salg_attention_macs
from minilg.attention.spatial_reduction import SpatialReductionAttention, sra_macs
from minilg.attention.window import WindowAttention, window_msa_macs

__all__ = [
    "AttentionMixer", "FullAttention", "GlanceGazeAttention", "KeySource", "RelativePositionBias",
    "SpatialReductionAttention", "SubWindowPool", "TokenMixer", "WindowAttention", "attend",
    "dilated_merge", "dilated_split", "gg_msa_macs", "label_mask", "msa_macs", "neighbourhood",
    "pad_to_multiple", "reference_math", "relative_position_index", "sra_macs", "subwindow_pool",
    "window_msa_macs", "window_partition", "window_reverse",
]
__all__ += ["SemanticRegionAttention", "salg_attention_macs"]  # SALG (semantic_regions)
