"""Semantic-aware regions and local-global attention (SALG, Zhang et al., Sec. III-B and III-C).

Read top to bottom, this module follows SALG Sec. III:

1. **Region means** (Sec. III-B, Fig. 3a): the map is cut into an ``n_h x n_w`` grid of equal
   ``M x M`` windows (``M = 7`` in the paper, the same window in every stage, so deeper stages
   have fewer, larger regions: Fig. 4) and each window's features are averaged:
   :func:`region_means`.
2. **Coverage areas** (Fig. 3b): each window grown by ``p`` tokens on every side, an
   ``(M + 2p) x (M + 2p)`` block: :func:`coverage_positions` (which map token sits in which slot).
3. **Assignment** (Eq. 1, Fig. 3c): every token goes to the region mean with the highest cosine
   similarity among the means whose coverage area contains it: :func:`assign_regions` returns one
   label per token. A token always lies in its own window's coverage area, so it always has a
   region; no region reaches past its coverage area. Similarities are einsum matmuls, so they
   count ``n_R (M + 2p)^2 C`` MACs (:func:`segmentation_macs`); the means (pooling) count none.
4. **Intra-region attention** (Eq. 2, Fig. 5): for every region, multi-head attention over its
   coverage area in which tokens of other regions are masked out (the paper's *null tokens*),
   plus the region's aggregation (AGR) token; Swin's relative position bias over coverage-area
   coordinates. :class:`SemanticRegionAttention`.
5. **Inter-region propagation** (Eqs. 3-4): between two blocks of a stage, the AGR tokens of
   all regions exchange information by a transformer layer (Eq. 3) or are replaced by their
   average (Eq. 4). It acts on a whole stage's tokens, built from blocks' parts, so it lives with
   the SALG stage (:mod:`minilg.models.salg_stage`), as do the AGR tokens' source
   (``RegionTokens``) and the stage's one segmentation.

The masked dense formulation, as computed: region ``r`` has queries *and* keys
``[t_r^AGR, the (M+2p)^2 coverage-area slots]``; a pair is allowed when both belong to ``r``
(the AGR token belongs to its region). Queries of other regions would be fully masked rows: they
keep every key instead (a finite softmax) and their outputs are set to exact zeros, so summing
every region's outputs back onto the map (a scatter-add) gives each token the output of the one
region it belongs to, exactly. The mask (:func:`region_mask`) depends only on the labels, so a
stage builds it once for all its blocks; each block adds its own position bias to it in one
step and hands the kernel that one additive mask. Padding (outside the map,
or the bottom/right padding to a multiple of ``M``) is never assigned and never attended.

Cost (:func:`intra_region_macs`), per image, ``N = HW`` tokens, ``T = n_R`` AGR tokens,
``K = (M_h + 2p)(M_w + 2p)``::

    4 (N + T) C^2  +  n_R * 2 (1 + K)^2 C

(q, k, v and output projections of map and AGR tokens; ``Q K^T`` and ``A V`` of the masked
dense attention, masked entries included because they are computed). With ``p = 0`` this is
W-MSA's ``4NC^2 + 2M^2NC`` plus the AGR token's share.

Choices the paper leaves open (there is no public code; these are minilg's, with reasons):

* **Non-divisible maps.** The map is zero-padded bottom/right to a multiple of ``M`` (as Swin,
  and as the paper pads detection inputs); region means average *real* tokens only, padding is
  never assigned. Maps smaller than ``M`` clip the window to the map (Swin's rule).
* **Ties** in Eq. 1 go to the lowest region index (row-major), so labels are deterministic.
  Similarities are computed in float32 whatever the input dtype, without gradient (the argmax is
  piecewise constant; gradients reach the features through attention, not through the labels).
* **Where segmentation runs.** Once per SALG stage, on the stage input, as the paper writes ("each
  SALG stage first performs region segmentation", Fig. 2); every block of the stage reuses the
  labels and their region masks (arguments of :meth:`SemanticRegionAttention.forward_with_extra`).
  A mixer called on its own segments its own input.
* **Where AGR tokens come from.** Their number ``n_R`` depends on ``H, W``, so they cannot be one
  parameter per region: each starts as its region mean plus one learned embedding shared by all
  regions (``RegionTokens``), then travels with the map from block to block through the
  stage (the core's extra-token path) and is dropped at the stage's end.
* **Position bias.** Swin's table over the coverage-area grid, ``(2(M+2p) - 1)^2`` entries per
  head; the AGR token gets none (it has no position).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from minilg.attention.core import AttentionMixer, KeySource, attention_macs, linear_macs
from minilg.attention.grouping import (
    label_mask,
    neighbourhood,
    neighbourhood_labels,
    subwindow_pool,
)
from minilg.attention.position import RelativePositionBias
from minilg.validate import Pair, as_pair, check_size

# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def check_window(window: object) -> Pair:
    """``M -> (M, M)``: the region window, tokens per side (a positive int or pair of them)."""
    return as_pair(window, "window", 1)


def check_margin(margin: object) -> Pair:
    """``p -> (p, p)``: tokens added on every side of a window to form its coverage area (an
    int ``>= 0`` or pair of them)."""
    return as_pair(margin, "margin", 0)


# --------------------------------------------------------------------------------------------
# Region grid, region means (Sec. III-B) and coverage areas (Fig. 3b)
# --------------------------------------------------------------------------------------------


def effective_window(size: Pair, window: int | Pair) -> Pair:
    """The window used on an ``H x W`` map: ``M`` clipped to the map (Swin's rule)."""
    mh, mw = check_window(window)
    return (min(mh, size[0]), min(mw, size[1]))


def region_grid(size: Pair, window: int | Pair) -> Pair:
    """``(n_h, n_w) = (ceil(H / M_h), ceil(W / M_w))``: the grid of region windows."""
    mh, mw = effective_window(size, window)
    return (-(-size[0] // mh), -(-size[1] // mw))


def num_regions(height: int, width: int, window: int | Pair) -> int:
    """``n_R = n_h n_w``, the number of regions (and of AGR tokens) on an ``H x W`` map."""
    nh, nw = region_grid(check_size(height, width), window)
    return nh * nw


def region_means(x: Tensor, window: int | Pair) -> Tensor:
    """Region means (Sec. III-B, Fig. 3a): ``(B, H, W, C) -> (B, n_R, C)``, row-major regions.

    Each window's real tokens are averaged (the bottom/right padding to a multiple of ``M`` does
    not count). Pooling: no MACs.
    """
    pooled = subwindow_pool(x, effective_window((x.shape[1], x.shape[2]), window), "real_mean")
    return rearrange(pooled, "b nh nw c -> b (nh nw) c")


def coverage_positions(
    size: Pair, window: int | Pair, margin: int | Pair, device: torch.device | None = None
) -> Tensor:
    """Which map token fills each coverage-area slot: ``(n_R, K)`` int64, ``K = (M_h+2p)(M_w+2p)``.

    Slot ``k`` of region ``r`` (row-major over the coverage block, as :func:`neighbourhood`) holds
    token ``u W + v``, or ``H W`` (one past the last token) when it lies outside the map or in
    the padding to a multiple of ``M``.
    """
    height, width = size
    win, ring = effective_window(size, window), check_margin(margin)
    index = torch.arange(height * width, device=device).reshape(height, width)
    slots = neighbourhood_labels(index, win, ring, fill=-1)
    return torch.where(slots < 0, height * width, slots)


def coverage(x: Tensor, window: int | Pair, margin: int | Pair) -> Tensor:
    """Coverage areas of a map: ``(B, H, W, C) -> (B, n_R, K, C)``, zeros outside the map."""
    win = effective_window((x.shape[1], x.shape[2]), window)
    return neighbourhood(x, win, check_margin(margin))


# --------------------------------------------------------------------------------------------
# Assignment (Eq. 1)
# --------------------------------------------------------------------------------------------


def region_similarity(x: Tensor, window: int | Pair, margin: int | Pair) -> Tensor:
    """Eq. 1's ``s^i_<u,v>``: cosine similarity of every coverage slot to its region's mean.

    ``(B, H, W, C) -> (B, n_R, K)`` float32; slots outside the map hold 0 (they are never used).
    One einsum: ``n_R K C`` MACs.
    """
    features = F.normalize(x.float(), dim=-1, eps=1e-6)
    means = F.normalize(region_means(x.float(), window), dim=-1, eps=1e-6)
    return torch.einsum("b r k c, b r c -> b r k", coverage(features, window, margin), means)


def assign_regions(x: Tensor, window: int | Pair = 7, margin: int | Pair = 1) -> Tensor:
    """Semantic-aware region segmentation (Eq. 1): one region label per token.

    Args:
        x: features ``(B, H, W, C)``.
        window: ``M``, the region window (int or pair).
        margin: ``p``, coverage-area expansion on every side (int or pair, ``>= 0``).

    Returns:
        ``(B, H, W)`` int64 labels in ``[0, n_R)`` (regions row-major over the window grid): the
        region whose mean is most cosine-similar to the token among those whose coverage area
        contains it (ties: lowest index). With ``p = 0`` the labels are the window grid.
    """
    batch, height, width, _ = x.shape
    positions = coverage_positions((height, width), window, margin, x.device)
    regions, slots = positions.shape
    with torch.no_grad():
        sims = region_similarity(x, window, margin).flatten(1)  # (B, n_R K)
    flat = repeat(positions, "r k -> b (r k)", b=batch)
    best = sims.new_full((batch, height * width + 1), float("-inf"))
    best = best.scatter_reduce(1, flat, sims, "amax")
    owner = repeat(torch.arange(regions, device=x.device), "r -> b (r k)", b=batch, k=slots)
    owner = torch.where(sims == best.gather(1, flat), owner, regions)
    labels = torch.full_like(best, regions, dtype=torch.long).scatter_reduce(1, flat, owner, "amin")
    return rearrange(labels[:, :-1], "b (h w) -> b h w", h=height)


def window_grid_labels(
    size: Pair, window: int | Pair, device: torch.device | None = None
) -> Tensor:
    """Labels of the regular window grid ``(H, W)`` (what Eq. 1 gives with ``p = 0``)."""
    (mh, mw), (_, nw) = effective_window(size, window), region_grid(size, window)
    rows = torch.arange(size[0], device=device) // mh
    cols = torch.arange(size[1], device=device) // mw
    return rows[:, None] * nw + cols[None, :]


def segmentation_macs(height: int, width: int, dim: int, window: int | Pair,
                      margin: int | Pair) -> int:
    """MACs of Eq. 1: the cosine similarities, ``n_R K C`` (one einsum)."""
    size = check_size(height, width)
    (mh, mw), (ph, pw) = effective_window(size, window), check_margin(margin)
    return num_regions(height, width, window) * (mh + 2 * ph) * (mw + 2 * pw) * dim


# --------------------------------------------------------------------------------------------
# Intra-region attention (Eq. 2)
# --------------------------------------------------------------------------------------------


def region_sequences(size: Pair, window: int | Pair, margin: int | Pair,
                     device: torch.device | None = None) -> Tensor:
    """Region ``r``'s token sequence of Eq. 2 as rows of a *token table*: ``(n_R, 1 + K)``.

    The table stacks the ``N = HW`` map tokens (row-major), one empty row (index ``N``: padding
    and slots outside the map) and the ``n_R`` AGR tokens (index ``N + 1 + r``). Sequence ``r`` is
    ``[t_r^AGR, coverage-area slots of r]`` (:func:`coverage_positions` order).
    """
    positions = coverage_positions(size, window, margin, device)
    agr_rows = size[0] * size[1] + 1 + torch.arange(positions.shape[0], device=device)
    return torch.cat([agr_rows[:, None], positions], dim=1)


def region_local_labels(labels: Tensor, sequences: Tensor) -> Tensor:
    """``labels (B, H, W)``, ``sequences (n_R, S)`` -> ``(B, n_R, S)``: ``r`` where the slot of
    sequence ``r`` belongs to region ``r`` (its AGR token always does), ``-1`` on null tokens and
    padding. ``label_mask`` of this with itself is Eq. 2's mask ``M_r`` for queries and keys."""
    batch, regions = labels.shape[0], sequences.shape[0]
    region = torch.arange(regions, device=labels.device)
    table = torch.cat([labels.flatten(1), labels.new_full((batch, 1), -1),
                       region.expand(batch, -1)], dim=1)
    slot_labels = table[:, sequences]  # (B, n_R, S)
    return torch.where(slot_labels == region[None, :, None], region[None, :, None], -1)


def region_mask(labels: Tensor, sequences: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Eq. 2's masks ``M_r`` of every region, once per stage: ``labels (B, H, W)``, ``sequences
    (n_R, S)`` -> ``(B, n_R, 1, S, S)`` additive, ``0`` where query and key both belong to ``r``,
    ``-inf`` elsewhere.

    Rows of queries outside region ``r`` (null tokens, padding) would be all ``-inf``: they are
    ``0`` instead, so their softmax is finite, and :class:`SemanticRegionAttention` zeroes their
    outputs (:func:`region_local_labels` ``< 0``). Built from the labels alone, the mask serves
    every block of a stage (:class:`~minilg.models.salg_stage.SALGStage`); each block adds its
    position bias to it (one addition, broadcast over the heads).
    """
    local = region_local_labels(labels, sequences)
    keep = label_mask(local, local) | (local < 0)[..., :, None]
    mask = torch.zeros(keep.shape, dtype=dtype, device=labels.device)
    return mask.masked_fill_(~keep, float("-inf"))[:, :, None]


def intra_region_macs(height: int, width: int, dim: int, window: int | Pair,
                      margin: int | Pair) -> int:
    """``4 (N + T) C^2 + n_R 2 (1 + K)^2 C``: see the module docstring."""
    size = check_size(height, width)
    (mh, mw), (ph, pw) = effective_window(size, window), check_margin(margin)
    regions, tokens = num_regions(height, width, window), height * width
    slots = 1 + (mh + 2 * ph) * (mw + 2 * pw)
    projections = linear_macs(tokens + regions, dim, 4 * dim)
    return projections + regions * attention_macs(slots, slots, dim)


def salg_attention_macs(height: int, width: int, dim: int, window: int | Pair = 7,
                        margin: int | Pair = 1) -> int:
    """MACs of :class:`SemanticRegionAttention` on its own: Eq. 1 plus Eq. 2."""
    return (segmentation_macs(height, width, dim, window, margin)
            + intra_region_macs(height, width, dim, window, margin))


class SemanticRegionAttention(AttentionMixer):
    """Intra-region self-attention with AGR tokens (SALG Eq. 2, Fig. 5).

    ``forward(x)``: ``(B, H, W, C) -> (B, H, W, C)``, segmenting ``x`` itself and starting the AGR
    tokens from its region means. ``forward_with_extra(x, agr, labels)``: ``agr (B, n_R, C)`` AGR
    tokens, both updated, with the stage's ``labels`` (or, without them, segmenting ``x``).

    Args:
        dim: channels ``C``.
        heads: attention heads (must divide ``dim``).
        window: region window ``M`` (int or pair).
        margin: coverage-area expansion ``p`` (int or pair, ``>= 0``).
        qkv_bias: bias in the qkv projection.
        position_bias: relative position bias over coverage-area coordinates.
    """

    def __init__(self, dim: int, heads: int, window: int | Pair = 7, margin: int | Pair = 1,
                 qkv_bias: bool = True, position_bias: bool = True) -> None:
        super().__init__(dim, heads, qkv_bias=qkv_bias)
        self.window, self.margin = check_window(window), check_margin(margin)
        grid = (self.window[0] + 2 * self.margin[0], self.window[1] + 2 * self.margin[1])
        self.position_bias = RelativePositionBias(heads, grid) if position_bias else None

    def sequences(self, size: Pair, device: torch.device) -> Tensor:
        """:func:`region_sequences`, built once per map size and device."""
        return self.geometry(("sequences", size), device,
                             lambda: region_sequences(size, self.window, self.margin, device))

    def bias(self, size: Pair) -> Tensor | None:
        """``(heads, 1 + K, 1 + K)``: the coverage-area bias; zero for pairs with the AGR token."""
        if self.position_bias is None:
            return None
        mh, mw = effective_window(size, self.window)
        grid = (mh + 2 * self.margin[0], mw + 2 * self.margin[1])
        return F.pad(self.position_bias(grid), (1, 0, 1, 0))

    def region_mask(self, labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """:func:`region_mask` of ``labels (B, H, W)`` with this mixer's coverage areas:
        ``(B, n_R, 1, 1 + K, 1 + K)``, ``0`` or ``-inf``."""
        size = (labels.shape[1], labels.shape[2])
        return region_mask(labels, self.sequences(size, labels.device), dtype)

    def intra_region(self, x: Tensor, agr: Tensor, labels: Tensor,
                     regions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Eq. 2's Local-MSA: ``x (B, H, W, C)``, ``agr (B, n_R, C)``, ``labels (B, H, W)``;
        ``regions``: :meth:`region_mask` of ``labels``, when the stage built it already.

        Returns the map and AGR outputs (after the output projection), same shapes.
        """
        self.check_input(x)
        self._check_regions(x, agr, labels)
        batch, height, width, _ = x.shape
        tokens = height * width
        sequences = self.sequences((height, width), x.device)  # (n_R, 1 + K)
        if regions is None:
            regions = region_mask(labels, sequences, x.dtype)
        self._check_mask(regions, labels, sequences)
        # The token table of region_sequences, projected: map tokens, an empty row, AGR tokens.
        table = torch.cat([self.qkv(rearrange(x, "b h w c -> b (h w) c")),
                           x.new_zeros(batch, 1, 3 * self.dim), self.qkv(agr)], dim=1)
        gathered = table.index_select(1, sequences.flatten())
        q, k, v = rearrange(gathered, "b (r s) c -> b r s c", r=sequences.shape[0]).chunk(3, -1)
        # Eq. 2's mask M_r plus the position bias, one addition: (B, n_R, heads or 1, S, S).
        bias = self.bias((height, width))
        mask = regions if bias is None else regions + bias
        out = self.attention(q, KeySource(k, v, mask))
        # Queries of other regions (null tokens, padding) give zeros: the sum gives each token
        # its own region's output.
        out = out.masked_fill((region_local_labels(labels, sequences) < 0)[..., None], 0.0)
        summed = out.new_zeros(batch, tokens + 1 + sequences.shape[0], self.dim)
        summed = summed.index_add(1, sequences.flatten(), rearrange(out, "b r s c -> b (r s) c"))
        grid = rearrange(summed[:, :tokens], "b (h w) c -> b h w c", h=height)
        projected: tuple[Tensor, Tensor] = (self.proj(grid), self.proj(summed[:, tokens + 1 :]))
        return projected

    def forward_with_extra(
        self, x: Tensor, extra: Tensor, labels: Tensor | None = None,
        regions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``x (B, H, W, C)``, AGR tokens ``extra (B, n_R, C)`` -> both updated (Eq. 2).

        ``labels (B, H, W)``: the regions, segmented once by the stage; ``None``: Eq. 1 on ``x``.
        ``regions``: their :meth:`region_mask`, built once by the stage (needs ``labels``).
        """
        self.check_input(x)
        if labels is None:
            if regions is not None:
                raise ValueError("regions (a region mask) needs the labels it was built from, "
                                 "got labels=None")
            labels = assign_regions(x, self.window, self.margin)
        return self.intra_region(x, extra, labels, regions)

    def forward(self, x: Tensor) -> Tensor:
        """Standalone: segment ``x``, start the AGR tokens from its region means, run Eq. 2."""
        self.check_input(x)
        if x.shape[0] == 0:  # an empty batch maps to an empty output, as in every mixer
            return x.new_empty(x.shape)
        agr = region_means(x, self.window)
        return self.intra_region(x, agr, assign_regions(x, self.window, self.margin))[0]

    def macs(self, height: int, width: int, extra_tokens: int = 0) -> int:
        """Standalone: Eq. 1 + Eq. 2 (:func:`salg_attention_macs`). With ``extra_tokens = n_R``
        (inside a stage, labels given by it): Eq. 2 only (:func:`intra_region_macs`)."""
        if not extra_tokens:
            return salg_attention_macs(height, width, self.dim, self.window, self.margin)
        regions = num_regions(height, width, self.window)
        if extra_tokens != regions:
            raise ValueError(
                f"extra_tokens must be the number of regions n_R={regions} of a {height}x{width} "
                f"map with window {self.window}, got extra_tokens={extra_tokens}"
            )
        return intra_region_macs(height, width, self.dim, self.window, self.margin)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.heads}, window={self.window}, "
                f"margin={self.margin}")

    def _check_mask(self, regions: Tensor, labels: Tensor, sequences: Tensor) -> None:
        expected = (labels.shape[0], sequences.shape[0], 1, sequences.shape[1], sequences.shape[1])
        if regions.shape != expected or not regions.dtype.is_floating_point:
            raise ValueError(
                f"regions (the region mask) must be floating point of shape (B, n_R, 1, 1 + K, "
                f"1 + K) = {expected} for window {self.window} and margin {self.margin}, got "
                f"{regions.dtype} {tuple(regions.shape)}"
            )

    def _check_regions(self, x: Tensor, agr: Tensor, labels: Tensor) -> None:
        batch, height, width, _ = x.shape
        regions = num_regions(height, width, self.window)
        if agr.shape != (batch, regions, self.dim):
            raise ValueError(
                f"agr (AGR tokens) must have shape (B, n_R, C) = {(batch, regions, self.dim)} "
                f"for a {height}x{width} map with window {self.window}, got {tuple(agr.shape)}"
            )
        if labels.shape != (batch, height, width):
            raise ValueError(
                f"labels must have shape (B, H, W) = {(batch, height, width)}, got "
                f"{tuple(labels.shape)}"
            )


__all__ = [
    "SemanticRegionAttention", "assign_regions", "check_margin", "check_window", "coverage",
    "coverage_positions", "effective_window", "intra_region_macs", "num_regions", "region_grid",
    "region_local_labels", "region_mask", "region_means", "region_sequences", "region_similarity",
    "salg_attention_macs", "segmentation_macs", "window_grid_labels",
]
