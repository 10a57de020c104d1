"""Hierarchical multi-head self-attention, H-MHSA (Liu et al., "Vision Transformers with
Hierarchical Attention", HAT-Net, Sec. 3.2).

Read top to bottom, this module follows HAT-Net Sec. 3.2:

1. **Grid attention** (Eqs. 6-9). The map is cut into non-overlapping ``G1 x G1`` grids
   (Eq. 6), queries, keys and values come from one projection ``W_1^{q,k,v}`` (Eq. 7), every
   token attends the tokens of its own grid (Eq. 2 inside each grid, no position bias), the
   grids are put back on the map (Eq. 8) and the input is added: ``A_1 = A_1 + X`` (Eq. 9).
2. **Pooled global attention** (Eqs. 10-13). ``A_1`` is average-pooled by ``G2`` (Eq. 10):
   each ``G2 x G2`` cell becomes one token. Every token of ``A_1`` is a query (``W_2^q``); the
   pooled tokens give the keys and values (``W_2^k``, ``W_2^v``, Eq. 12); one softmax over all
   ``(H/G2)(W/G2)`` pooled tokens gives ``A_2`` (Eq. 13).
3. **Output** (Eq. 14): ``(A_1 + A_2) W^p``; the ``+ X`` of Eq. 14 is the block's residual.

Eq. 7 as printed lists ``V_2 = X_1 W_2^v`` twice after ``Q_1, K_1, V_1``; ``V_2`` is defined
by Eq. 12 (from the pooled map), so we read Eq. 7 as ``Q_1, K_1, V_1`` only (one fused ``qkv``
projection) and the repeated entries as a typesetting slip.

**Two behaviours** (``follow``), side by side:

============================  ==================================  ==================================
step                          ``"paper"`` (Eqs. 6-14)             ``"official"`` (the authors' code)
============================  ==================================  ==================================
input of the projections      ``norm(x)`` (pre-norm)              ``norm(x)``
grid residual (Eq. 9)         ``A_1 = local + x``, ``x`` the raw   ``A_1 = grid_norm(x + local)``,
                              mixer input (``grid_residual``)
                                                                  ``x`` the raw block input
pooled map (Eq. 10)           ``AvgPool(A_1)``                    ``ds_norm(AvgPool(A_1))``
global q / k, v (Eq. 12)      ``q(A_1)``, ``kv(pooled)``          same (separate 1x1 convs, biases)
output (Eq. 14)               ``proj(A_1 + A_2)``                 same
============================  ==================================  ==================================

Eqs. 6-14 have no norm at all (nor does the review of MHSA, Eqs. 1-4). ``paper`` mode
normalises once, at the input of the projections (a pre-norm, GroupNorm(1, C) as everywhere in
HAT-Net): without it the residual stream would enter the attention unnormalised, and it is the
one norm every transformer block of Eq. 3 implicitly has. ``official`` mode adds the two
GroupNorms the code has (``grid_norm``, ``ds_norm``). Both modes use GroupNorm(1, C, eps=1e-6),
which normalises over ``(H, W, C)`` of each sample. The official ``proj_norm`` is built but never
used in its forward; minilg does not build it (the converter drops it, saying so).

**Decision on Eq. 9: ``X`` is the raw input** (``grid_residual="input"``, the default). The
paper writes one symbol ``X`` for the input of H-MHSA throughout Sec. 3.2: it is what Eq. 6
reshapes into ``X_1``, what Eq. 7 projects, what Eq. 9 adds to ``A_1`` and what Eq. 14 adds
after the output projection, and Eq. 14's ``+ X`` is the block residual, the raw input. Reading
the pre-norm (which the paper never writes) as part of the projections, ``Q_1 K_1 V_1 =
norm(X_1) W_1``, keeps ``X`` one tensor in all four places; adding ``norm(X)`` in Eq. 9 instead
would make the same symbol mean the normalised input in Eq. 9 and the raw one in Eq. 14. The
authors' code agrees (``x + local`` before its ``grid_norm``). The other reading stays as a named
switch, ``grid_residual="normed"`` (``A_1 = local + norm(x)``, minilg's paper mode before this
decision), for comparison; the two readings give different outputs with the same weights. The
switch has no effect in ``official`` mode, which always adds the raw input.

**G1 = 1 is structural**: the block is plain MHSA over all ``H W`` tokens,
``proj(MHSA(qkv(norm(x))))``, with no ``q``, ``kv``, ``grid_norm``, ``ds_norm`` layers (HAT-Net's
last stage; ``G2`` is ignored). Among ``G1 > 1`` the sizes hold no parameters: the same weights
run with any ``G1 > 1`` and ``G2 >= 1`` (:meth:`HierarchicalAttention.set_sizes`), e.g. the
``G1 = 8, 8, 8``, ``G2 = 16, 8, 4`` the paper uses for 512 x 512 segmentation (Sec. 4.2).

**Any H, W.** ``G1`` and ``G2`` larger than the map are clipped to it (outputs unchanged).
Sizes that ``G1`` does not divide are zero-padded bottom/right after the projections and the
padding is masked as keys; the grid output is cropped back to the real tokens before the
residual and ``grid_norm``, so GroupNorm statistics never see padding. Sizes that ``G2`` does
not divide pool the partial cells over their real tokens only (``subwindow_pool(...,
"real_mean")``). So padding never changes a real token. The official code cannot run there at
all (its reshape needs ``G1`` to divide the map; its ``AvgPool2d`` would drop the remainder):
``official`` mode pads exactly as ``paper`` mode does, and equals the official code on every
size the official code accepts.

**Cost** (:func:`h_mhsa_macs`), with ``N = HW``, ``N_p`` the tokens after padding to ``G1``,
``P = ceil(H/G2) ceil(W/G2)`` pooled tokens::

    5 N C^2                 qkv (3), global query W_2^q (1), output W^p (1)
    + 2 G1^2 N_p C          Q_1 K_1^T and A V inside the grids
    + 2 P C^2               keys and values of the pooled tokens
    + 2 N P C               Q_2 K_2^T and A V of the global step

Eq. 15 writes ``HWC(4C + 2 G1^2) + 2 (HW / G2^2) C (C + HW)``: the same terms with four
``N C^2`` projections instead of five (like Eq. 5, which leaves out MHSA's output projection,
it omits one of the five ``C x C`` maps applied to all tokens) and ``N`` for ``N_p`` (it assumes
``G1`` divides the map). Norms and pooling are not MACs. ``G1 = 1``: ``4 N C^2 + 2 N^2 C``.
"""

from __future__ import annotations

from typing import Literal, cast, get_args

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from minilg.attention.core import AttentionMixer, KeySource, attend, attention_macs, linear_macs
from minilg.attention.grouping import (
    allowed_from_labels,
    clip_to_map,
    pad_to_multiple,
    padded_size,
    padding_labels,
    subwindow_pool,
    window_labels,
    window_partition,
    window_reverse,
)
from minilg.nn import ChannelsLastGroupNorm
from minilg.validate import Pair, as_pair, check_size, one_of

Follow = Literal["paper", "official"]
FOLLOW: tuple[str, ...] = get_args(Follow)
GridResidual = Literal["input", "normed"]
GRID_RESIDUAL: tuple[str, ...] = get_args(GridResidual)


# --------------------------------------------------------------------------------------------
# Validation and the sizes actually used
# --------------------------------------------------------------------------------------------


def check_follow(follow: object) -> Follow:
    """``follow`` itself, or a ValueError naming the allowed values."""
    return cast(Follow, one_of(follow, "follow", FOLLOW))


def check_sizes(grid: object, pool: object) -> tuple[Pair, Pair]:
    """``(G1, G2)`` as pairs; a ValueError naming ``grid`` (G1) or ``pool`` (G2) when invalid.

    Both are positive ints or pairs of positive ints (``G1 = 1``: plain MHSA, HAT-Net's last
    stage).
    """
    return as_pair(grid, "grid"), as_pair(pool, "pool")


def effective_sizes(height: int, width: int, grid: Pair, pool: Pair) -> tuple[Pair, Pair]:
    """``G1`` and ``G2`` clipped to the map (a larger one would only add masked padding)."""
    return clip_to_map(grid, (height, width)), clip_to_map(pool, (height, width))


# --------------------------------------------------------------------------------------------
# Cost (Eq. 15)
# --------------------------------------------------------------------------------------------


def h_mhsa_attention_macs(
    height: int, width: int, dim: int, grid: int | Pair = 8, pool: int | Pair = 8
) -> int:
    """MACs of the attention matmuls alone (``Q K^T`` and ``A V`` of both steps).

    ``2 G1^2 N_p C + 2 N P C``; ``2 N^2 C`` when ``G1 = 1``. These are the MACs the published
    HAT-Net FLOPs leave out (see :mod:`minilg.models.hat_net`).
    """
    height, width = check_size(height, width)
    grid_pair, pool_pair = check_sizes(grid, pool)
    tokens = height * width
    if grid_pair == (1, 1):
        return attention_macs(tokens, tokens, dim)
    (gh, gw), (ph, pw) = effective_sizes(height, width, grid_pair, pool_pair)
    windows = (padded_size(height, gh) // gh) * (padded_size(width, gw) // gw)
    pooled = (padded_size(height, ph) // ph) * (padded_size(width, pw) // pw)
    return windows * attention_macs(gh * gw, gh * gw, dim) + attention_macs(tokens, pooled, dim)


def h_mhsa_macs(
    height: int, width: int, dim: int, grid: int | Pair = 8, pool: int | Pair = 8
) -> int:
    """Exact MACs of :class:`HierarchicalAttention` on one ``height x width`` map.

    ``5 N C^2 + 2 G1^2 N_p C + 2 P C^2 + 2 N P C`` (Eq. 15 with the global query projection and
    the padding counted; module docstring); ``4 N C^2 + 2 N^2 C`` (MHSA) when ``G1 = 1``.
    """
    height, width = check_size(height, width)
    grid_pair, pool_pair = check_sizes(grid, pool)
    tokens = height * width
    if grid_pair == (1, 1):
        return 4 * linear_macs(tokens, dim, dim) + attention_macs(tokens, tokens, dim)  # MSA
    _, (ph, pw) = effective_sizes(height, width, grid_pair, pool_pair)
    pooled = (padded_size(height, ph) // ph) * (padded_size(width, pw) // pw)
    projections = 5 * linear_macs(tokens, dim, dim) + linear_macs(pooled, dim, 2 * dim)
    return projections + h_mhsa_attention_macs(height, width, dim, grid_pair, pool_pair)


# --------------------------------------------------------------------------------------------
# The mixer
# --------------------------------------------------------------------------------------------


class HierarchicalAttention(AttentionMixer):
    """H-MHSA (HAT-Net Eqs. 6-14): ``(B, H, W, C) -> (B, H, W, C)``, any ``H, W >= 1``.

    Args:
        dim: channels ``C``.
        heads: attention heads (HAT-Net: ``C / head_dim``).
        grid: ``G1`` (int or pair); ``1`` builds plain MHSA (structural, no global-step layers).
        pool: ``G2`` (int or pair), ignored when ``G1 = 1``.
        follow: ``"paper"`` (Eqs. 6-14 with one pre-norm) or ``"official"`` (the authors' data
            flow, two more GroupNorms); see the module docstring.
        qkv_bias: biases of ``qkv``, ``q`` and ``kv`` (the official 1x1 convs have them).
        eps: GroupNorm epsilon (official 1e-6).
        grid_residual: what Eq. 9 adds to the grid output in ``paper`` mode: ``"input"`` (the
            raw mixer input ``X``, the decision in the module docstring) or ``"normed"``
            (``norm(X)``, the other reading).

    Layers (named as the official ``attn.*``): ``norm``, ``qkv``, ``proj``; with ``G1 > 1`` also
    ``q``, ``kv`` and, in ``official`` mode, ``grid_norm`` and ``ds_norm``. The mixer includes
    its own norm: use it in a :class:`~minilg.models.blocks.Block` with ``norm=nn.Identity``.

    ``official`` mode equals the official module wherever that one runs (``G1`` dividing the
    map); on other sizes, where the official code fails, it pads and masks exactly as ``paper``
    mode does, so padding never changes a real token.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        grid: int | Pair = 8,
        pool: int | Pair = 8,
        follow: Follow = "official",
        qkv_bias: bool = True,
        eps: float = 1e-6,
        grid_residual: GridResidual = "input",
    ) -> None:
        grid_pair, pool_pair = check_sizes(grid, pool)
        self.follow: Follow = check_follow(follow)
        self.grid_residual = cast(GridResidual,
                                  one_of(grid_residual, "grid_residual", GRID_RESIDUAL))
        self.is_msa = grid_pair == (1, 1)
        super().__init__(dim, heads, qkv_bias=qkv_bias,
                         projections="qkv" if self.is_msa else "q_kv")
        self.grid, self.pool = grid_pair, pool_pair
        self.norm = ChannelsLastGroupNorm(1, dim, eps=eps)
        if not self.is_msa:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.grid_norm: nn.Module | None = None
        self.ds_norm: nn.Module | None = None
        if not self.is_msa and self.follow == "official":
            self.grid_norm = ChannelsLastGroupNorm(1, dim, eps=eps)
            self.ds_norm = ChannelsLastGroupNorm(1, dim, eps=eps)

    def set_sizes(self, grid: int | Pair | None = None, pool: int | Pair | None = None) -> None:
        """Run the same weights with another ``G1`` and/or ``G2`` (both parameter-free).

        ``G1 = 1`` is a different layout (plain MHSA): a ValueError if asked of an H-MHSA mixer,
        and an MHSA mixer (built with ``G1 = 1``) accepts no other ``G1``.
        """
        grid_pair, pool_pair = check_sizes(
            self.grid if grid is None else grid, self.pool if pool is None else pool)
        if self.is_msa and grid_pair != (1, 1):
            raise ValueError(
                f"grid must be 1 for a mixer built with G1 = 1 (plain MHSA, no global-step "
                f"layers), got grid={grid!r}")
        if not self.is_msa and grid_pair == (1, 1):
            raise ValueError(
                "grid must be >= 2 on some axis for an H-MHSA mixer (G1 = 1 selects plain MHSA, "
                f"a different layout without q, kv layers), got grid={grid!r}")
        self.grid, self.pool = grid_pair, pool_pair

    def grid_mask(self, size: Pair, grid: Pair, device: torch.device) -> Tensor | None:
        """``(nWindows * heads, 1, G1^2, G1^2)`` allowed pairs (padding is no key), or ``None``.

        One row per (grid, head) group, the layout :meth:`local_step` hands to ``attend``.
        """
        if size[0] % grid[0] == 0 and size[1] % grid[1] == 0:
            return None

        def build() -> Tensor:
            allowed = allowed_from_labels(window_labels(padding_labels(size, grid), grid))
            return repeat(allowed, "n 1 q k -> (n h) 1 q k", h=self.heads).to(device)

        return self.geometry(("grid_mask", size, grid), device, build)

    def local_step(self, normed: Tensor) -> Tensor:
        """Eqs. 6-8: attention inside ``G1 x G1`` grids of ``normed`` (B, H, W, C), unprojected.

        When ``G1`` divides the map, the C-wide input is cut into grids before the projection,
        so ``Q, K, V`` are views of its output (one copy of ``C`` channels instead of ``3C``).
        Otherwise the projections run on the real tokens; the padding to a multiple of ``G1`` is
        added to ``Q, K, V`` and masked as keys, and cropped from the output.
        """
        _, height, width, _ = normed.shape
        (gh, gw), _ = effective_sizes(height, width, self.grid, self.pool)
        if height % gh == 0 and width % gw == 0:
            q, k, v = self.qkv(window_partition(normed, (gh, gw))).chunk(3, dim=-1)
            out = attend(q, [KeySource(k, v)], self.heads)  # (B, grids, G1^2, C)
            return window_reverse(out, (gh, gw), (height, width))
        qkv = pad_to_multiple(self.qkv(normed), (gh, gw))  # (B, Hp, Wp, 3C)
        rows = qkv.shape[1] // gh
        q, k, v = rearrange(qkv, "b (nh gh) (nw gw) (s h d) -> s b (nh nw h) (gh gw) d",
                            gh=gh, gw=gw, s=3, h=self.heads)
        allowed = self.grid_mask((height, width), (gh, gw), normed.device)
        out = attend(q, [KeySource(k, v, allowed=allowed)], heads=1)  # (B, grids*heads, G1^2, d)
        local: Tensor = rearrange(out, "b (nh nw h) (gh gw) d -> b (nh gh) (nw gw) (h d)",
                                  nh=rows, h=self.heads, gh=gh)
        return local[:, :height, :width]

    def pooled_tokens(self, a1: Tensor) -> Tensor:
        """Eq. 10: ``AvgPool_G2(A_1)`` over real tokens only -> ``(B, ceil(H/G2), ceil(W/G2), C)``
        (``official``: followed by ``ds_norm``)."""
        _, pool = effective_sizes(a1.shape[1], a1.shape[2], self.grid, self.pool)
        pooled = subwindow_pool(a1, pool, "real_mean")
        return self.ds_norm(pooled) if self.ds_norm is not None else pooled

    def global_step(self, a1: Tensor) -> Tensor:
        """Eqs. 10-13: every token of ``A_1`` (B, H, W, C) attends all pooled tokens."""
        _, height, _, _ = a1.shape
        k, v = self.project_kv(rearrange(self.pooled_tokens(a1), "b h w c -> b 1 (h w) c"))
        q = self.q(rearrange(a1, "b h w c -> b 1 (h w) c"))
        out = self.attention(q, KeySource(k, v))
        return rearrange(out, "b 1 (h w) c -> b h w c", h=height)

    def full_attention(self, normed: Tensor) -> Tensor:
        """``G1 = 1``: plain MHSA (Eq. 2) over all tokens, unprojected."""
        _, height, _, _ = normed.shape
        q, k, v = self.project_qkv(rearrange(normed, "b h w c -> b 1 (h w) c"))
        return rearrange(self.attention(q, KeySource(k, v)), "b 1 (h w) c -> b h w c", h=height)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if x.shape[0] == 0:  # an empty batch maps to an empty output, as in every mixer
            return x.new_empty(x.shape)
        normed = self.norm(x)
        if self.is_msa:
            mixed: Tensor = self.proj(self.full_attention(normed))
            return mixed
        local = self.local_step(normed)
        # Eq. 9: A_1 = A_1 + X with X the raw input (official: then grid_norm); module docstring
        if self.grid_norm is not None:
            a1 = self.grid_norm(x + local)
        else:
            a1 = local + (normed if self.grid_residual == "normed" else x)
        out: Tensor = self.proj(self.global_step(a1) + a1)  # Eq. 14 without the block residual
        return out

    def macs(self, height: int, width: int) -> int:
        """Exact MACs: :func:`h_mhsa_macs` (Eq. 15 plus the terms it leaves out)."""
        return h_mhsa_macs(height, width, self.dim, self.grid, self.pool)

    def attention_macs(self, height: int, width: int) -> int:
        """The attention-matmul part of :meth:`macs` (:func:`h_mhsa_attention_macs`)."""
        return h_mhsa_attention_macs(height, width, self.dim, self.grid, self.pool)

    def extra_repr(self) -> str:
        if self.is_msa:
            return f"dim={self.dim}, heads={self.heads}, grid=1 (MHSA), follow={self.follow!r}"
        return (f"dim={self.dim}, heads={self.heads}, grid={self.grid}, pool={self.pool}, "
                f"follow={self.follow!r}, grid_residual={self.grid_residual!r}")


__all__ = [
    "FOLLOW", "GRID_RESIDUAL", "Follow", "GridResidual", "HierarchicalAttention", "check_follow",
    "check_sizes", "effective_sizes", "h_mhsa_attention_macs", "h_mhsa_macs",
]
