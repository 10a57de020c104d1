"""The SALG stage (Zhang et al., Sec. III-A, III-C, Fig. 2 and 5): segment once, then
Local-Global blocks whose AGR tokens travel through the stage, with inter-region propagation
(Eqs. 3-4) between consecutive blocks.

The token mixer (Eq. 1 segmentation, Eq. 2 intra-region attention) is
:mod:`minilg.attention.semantic_regions`; this module holds what acts on a whole stage: where
the AGR tokens come from (:class:`RegionTokens`), the propagation step (a transformer layer over
the AGR tokens, Eq. 3, or their average, Eq. 4: :class:`InterRegionPropagation`), the stage that
hands its one segmentation (labels and region masks) to every block (:class:`SALGStage`) and
the stage factory (:class:`SALGStages`).

**Eq. 3** prints ``MSA(LN(T) + T)``; minilg reads it as the pre-norm residual
``T + MSA(LN(T))``, like Eq. 2 and Eq. 3's own MLP line (the literal form would add ``T`` to
``LN(T)`` inside the attention and drop the identity path). Propagation runs after a block's
MLP (Fig. 5: intra-region step, then inter-region step) and feeds the next block of the stage,
so a stage's last block has none (its AGR tokens are dropped: it could not change the output).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast, get_args

import torch
from torch import Tensor, nn

from minilg.attention.full import FullAttention
from minilg.attention.semantic_regions import (
    assign_regions,
    check_margin,
    check_window,
    num_regions,
    region_mask,
    region_means,
    region_sequences,
    segmentation_macs,
    window_grid_labels,
)
from minilg.models.blocks import Block, module_out_size
from minilg.models.stages import BlockStages, Stage, StageSpec
from minilg.nn import DropPath, Mlp
from minilg.validate import Pair, one_of

Propagation = Literal["msa", "ap", "none"]
PROPAGATIONS: tuple[str, ...] = get_args(Propagation)


def check_propagation(propagation: object) -> Propagation:
    """``"msa"`` (Eq. 3), ``"ap"`` (Eq. 4) or ``"none"`` (no inter-region step)."""
    checked: object = one_of(propagation, "propagation", PROPAGATIONS)
    return cast(Propagation, checked)


# --------------------------------------------------------------------------------------------
# Where AGR tokens come from, and the stage-level segmentation
# --------------------------------------------------------------------------------------------


class RegionTokens(nn.Module):
    """A SALG stage's segmentation and its AGR tokens (the stage's ``extra`` module).

    ``forward(x (B, H, W, C)) -> (B, n_R, C)``: each region's mean plus one learned embedding
    ``agr_token`` shared by all regions (``n_R`` depends on ``H, W``, so there cannot be one
    parameter per region). :meth:`segment` returns the stage's labels ``(B, H, W)``: Eq. 1, or
    the regular window grid when ``segmentation=False`` (Table III's "Base + Local & Global").
    ``macs(H, W)``: Eq. 1's similarities (0 without segmentation).
    """

    def __init__(self, dim: int, window: int | Pair = 7, margin: int | Pair = 1,
                 segmentation: bool = True) -> None:
        super().__init__()
        self.dim, self.window, self.margin = dim, check_window(window), check_margin(margin)
        self.segmentation = segmentation
        self.agr_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.agr_token, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return region_means(x, self.window) + self.agr_token

    def segment(self, x: Tensor) -> Tensor:
        """Labels ``(B, H, W)`` of the stage input ``x``."""
        if not self.segmentation:
            labels = window_grid_labels((x.shape[1], x.shape[2]), self.window, x.device)
            return labels.expand(x.shape[0], -1, -1)
        return assign_regions(x, self.window, self.margin)

    def mask(self, labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Eq. 2's region masks of the stage's ``labels (B, H, W)``, built once for all its
        blocks: :func:`~minilg.attention.semantic_regions.region_mask`,
        ``(B, n_R, 1, 1 + K, 1 + K)``, ``0`` or ``-inf``."""
        size = (labels.shape[1], labels.shape[2])
        sequences = region_sequences(size, self.window, self.margin, labels.device)
        return region_mask(labels, sequences, dtype)

    def num_tokens(self, height: int, width: int) -> int:
        return num_regions(height, width, self.window)

    def macs(self, height: int, width: int) -> int:
        if not self.segmentation:
            return 0
        return segmentation_macs(height, width, self.dim, self.window, self.margin)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, window={self.window}, margin={self.margin}, "
                f"segmentation={self.segmentation}")


# --------------------------------------------------------------------------------------------
# Inter-region propagation (Eqs. 3-4)
# --------------------------------------------------------------------------------------------


class InterRegionPropagation(nn.Module):
    """Global step on the AGR tokens ``(B, T, C) -> (B, T, C)`` (Eq. 3 or Eq. 4).

    * ``"msa"`` (Eq. 3): ``T = T + MSA(LN(T))``, ``T = T + MLP(LN(T))``: a transformer layer
      over the ``T = n_R`` AGR tokens of each image (no position bias: the tokens have no grid
      positions of their own), with stochastic depth ``drop_path``.
      MACs ``4TC^2 + 2T^2C + 2rTC^2``.
    * ``"ap"`` (Eq. 4): every AGR token becomes the average of all of them. No parameters, no MACs.
    * ``"none"``: no inter-region step (Table III's "Base + Seg. + Local").
    """

    def __init__(self, dim: int, heads: int, propagation: Propagation = "ap",
                 mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.dim, self.propagation = dim, check_propagation(propagation)
        if self.propagation == "msa":
            self.norm1 = nn.LayerNorm(dim)
            self.attn = FullAttention(dim, heads)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = Mlp(dim, mlp_ratio)
            self.drop_path = DropPath(drop_path)

    def forward(self, tokens: Tensor) -> Tensor:
        if self.propagation == "ap":
            return tokens.mean(dim=1, keepdim=True).expand_as(tokens)
        if self.propagation == "none":
            return tokens
        tokens = tokens + self.drop_path(self.attn(self.norm1(tokens)[:, None])[:, 0])
        out: Tensor = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        return out

    def macs(self, tokens: int) -> int:
        if self.propagation != "msa":
            return 0
        return self.attn.macs(1, tokens) + self.mlp.macs(tokens, 1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, propagation={self.propagation!r}"


# --------------------------------------------------------------------------------------------
# The stage and its factory
# --------------------------------------------------------------------------------------------


class SALGStage(Stage):
    """A SALG stage: downsample, segment once, then Local-Global blocks with AGR tokens.

    ``extra`` (:class:`RegionTokens`) gives the labels, their region masks (built once: they
    are fixed for the stage) and the initial AGR tokens of the downsampled map; block ``i``
    updates map and AGR tokens with those labels (Eq. 2, the core's extra-token path), then
    ``propagation[i]`` updates the AGR tokens (Eq. 3 or 4) for block ``i + 1`` ("the refined
    AGR tokens ... are then fed to the intra-region self-attention in the next layer", Sec.
    III-C). The AGR tokens are dropped at the stage's end, so the last block has no
    propagation step: it could not change the output (and its parameters would never get a
    gradient).
    """

    def __init__(self, downsample: nn.Module, blocks: Sequence[Block], extra: RegionTokens,
                 propagation: Sequence[InterRegionPropagation]) -> None:
        super().__init__(downsample, blocks, extra)
        if len(propagation) != max(len(blocks) - 1, 0):
            raise ValueError(f"a stage of {len(blocks)} blocks takes {len(blocks) - 1} "
                             f"propagation steps, got {len(propagation)}")
        self.propagation = nn.ModuleList(propagation)

    @property
    def region_tokens(self) -> RegionTokens:
        assert isinstance(self.extra, RegionTokens)
        return self.extra

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        labels = self.region_tokens.segment(x)
        regions = self.region_tokens.mask(labels, x.dtype)  # fixed for the stage: built once
        agr = self.region_tokens(x)
        for index in range(len(self)):
            x, agr = self[index].forward_with_extra(x, agr, labels=labels, regions=regions)
            if index < len(self.propagation):
                agr = self.propagation[index](agr)
        return x

    def macs(self, height: int, width: int) -> int:
        tokens = self.region_tokens.num_tokens(*self.out_size(height, width))
        steps = sum(step.macs(tokens) for step in self.propagation)  # type: ignore[operator]
        return super().macs(height, width) + steps


@dataclass(frozen=True)
class SALGStages(BlockStages):
    """SALG's stage factory: :class:`SALGStage` s for the first ``len(margins)`` stages (with
    region tokens when ``regions``), plain stages of ``mixer`` blocks after them.

    ``margins``: ``p`` of each SALG stage (0 without segmentation: the regular window grid);
    ``propagation``: the inter-region step between consecutive blocks.
    """

    window: int = 7
    margins: tuple[int, ...] = ()
    regions: bool = True
    segmentation: bool = True
    propagation: Propagation = "ap"

    def __call__(self, spec: StageSpec) -> Stage:
        if not self.regions or spec.index >= len(self.margins):
            return super().__call__(spec)
        down = self.downsampling(spec)
        blocks = self.blocks(spec, module_out_size(down, *spec.in_size))
        tokens = RegionTokens(spec.dim, self.window, self.margins[spec.index], self.segmentation)
        steps = [InterRegionPropagation(spec.dim, spec.heads, self.propagation, spec.mlp_ratio,
                                        rate) for rate in spec.drop_path[:-1]]
        return SALGStage(down, blocks, tokens, steps)
