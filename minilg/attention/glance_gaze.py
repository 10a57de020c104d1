"""Glance-and-Gaze attention, GG-MSA (Yu et al. 2021, "Glance-and-Gaze Vision Transformer").

Read top to bottom, this module follows GG Sec. 3.2-3.3:

1. **Adaptively-dilated splitting** (Eqs. 6-8) and its inverse, **merging** (Eq. 10):
   :func:`dilated_split` cuts a ``(B, H, W, C)`` map into partitions of ``M x M`` tokens whose
   members lie at the *dilation rate* ``(d_h, d_w) = (H/M, W/M)``: partition ``(i, j)`` holds the
   tokens ``(i + a d_h, j + b d_w)`` for ``a, b = 0..M-1``. Every partition spans the whole map.
2. **Glance** (Eq. 9): multi-head self-attention inside each partition, with a Swin-style relative
   position bias over the in-partition coordinates ``(a, b)``. Cost ``2 M^2 N C`` (Eq. 12).
3. **Gaze** (Eq. 13): a depthwise ``k x k`` convolution on the values ``V`` (merged back to the
   map), added to the Glance output before the output projection. Cost ``k^2 N C`` (Eq. 14).
   The kernel is *fixed* (any odd ``k``) or *adaptive* (``k`` = dilation rate rounded up to odd,
   minimum 3; :func:`adaptive_gaze_kernel`).

Sizes that ``M`` does not divide (the paper assumes they do): the dilation rate is
``d = ceil(H/M)`` and the map is zero-padded on the bottom/right to ``M d``, so every partition
still holds tokens at one uniform stride ``d``; padded slots are masked as keys and cropped after
merging, so they never change a real token's output.

Design choices the paper leaves open (the authors published no code, so minilg's choices are
the reference ones):

* **No shifted windows.** GG-MSA "does not require two consecutive blocks (e.g. W-MSA and SW-MSA)
  to be always used together, instead, it is a standalone module as the original MSA" (Sec. 3.3):
  every partition already spans the whole map, so a shift would only permute which tokens share a
  partition. GG blocks never shift.
* **Gaze input.** ``Merging(V)`` of Eq. 13 is simply ``V`` on the map before splitting (merge is
  the exact inverse of split), so the convolution runs on the unpadded ``(B, C, H, W)`` values
  with zero padding ``k // 2``: padding added for the split never enters the Gaze branch.
* **Partition actually used.** The mixer uses the smallest partition that covers the map at the
  dilation rate ``d = ceil(H/M)``: ``M' = ceil(H/d) <= M`` (so ``ceil(H/M') = d`` too). ``M' = M``
  whenever ``M`` divides ``H``; ``M' = H`` when the map is smaller than ``M`` (Swin's window
  clipping). The real members of each partition and their in-partition coordinates are the same
  as with ``M``, so outputs are identical; only slots that would be all padding are skipped
  (e.g. ``8 x 8`` with ``M = 7``: ``d = 2``, ``M' = 4``, no padding instead of ``14 x 14``).
* **Ablation branches** (GG Table 4b): ``"glance"`` drops the convolution; ``"gaze"`` drops the
  attention, and with it the query and key projections it alone needs (``V = Linear(C, C)``, the
  depthwise conv, the output projection), so the model has no parameters without gradients.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from einops import rearrange
from torch import Tensor, nn

from minilg.attention import grouping
from minilg.attention.core import AttentionMixer, KeySource, attention_macs, linear_macs
from minilg.attention.grouping import allowed_from_labels, padded_size, padding_labels
from minilg.attention.position import RelativePositionBias
from minilg.validate import Pair, as_pair, check_size, one_of

Branches = Literal["glance+gaze", "glance", "gaze"]
BRANCHES: tuple[str, ...] = get_args(Branches)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def check_partition(partition: int | tuple[int, int]) -> tuple[int, int]:
    """``M -> (M, M)``; a ValueError unless ``M`` is a positive int (or a pair of them)."""
    return as_pair(partition, "partition")


def check_gaze_kernel(kernel: int | tuple[int, int]) -> tuple[int, int]:
    """``k -> (k, k)``; a ValueError unless ``k`` is a positive odd int (or a pair of them):
    odd, so that padding ``k // 2`` keeps the map size."""
    try:
        pair = as_pair(kernel, "gaze_kernel")
    except ValueError:
        pair = (0, 0)  # not positive integers: the same message below
    if pair[0] % 2 == 0 or pair[1] % 2 == 0:
        raise ValueError(f"gaze_kernel must be an odd integer >= 1 or a pair of them, "
                         f"got gaze_kernel={kernel!r}")
    return pair


# --------------------------------------------------------------------------------------------
# Adaptively-dilated splitting and merging (GG Eqs. 6-8 and 10)
# --------------------------------------------------------------------------------------------


def dilation_rate(size: tuple[int, int], partition: int | tuple[int, int]) -> tuple[int, int]:
    """The adaptive dilation rate ``(ceil(H/M_h), ceil(W/M_w))`` of an ``H x W`` map (Sec. 3.2)."""
    return _rate(size, check_partition(partition))


def _rate(size: Pair, partition: Pair) -> Pair:
    return (-(-size[0] // partition[0]), -(-size[1] // partition[1]))


def dilated_split(x: Tensor, partition: int | tuple[int, int]) -> Tensor:
    """Adaptively-dilated splitting (GG Eqs. 6-8): ``(B, H, W, C) -> (B, d_h d_w, M_h M_w, C)``.

    With dilation rate ``d = ceil(H/M)`` (per axis), the map is zero-padded on the bottom/right to
    ``(M d_h, M d_w)``; then row ``r = a d_h + i`` goes to partition ``i`` (the offset inside the
    ``d_h x d_w`` dilation cell) as member ``a`` (the position in the ``M x M`` grid), and likewise
    for columns. Partition ``p = i d_w + j`` thus holds the tokens ``(i + a d_h, j + b d_w)``,
    member ``a M_w + b`` (row-major over ``(a, b)``), exactly the partition
    ``z^{dagger,i,j}`` of Eq. 8.
    """
    return grouping.dilated_split(x, check_partition(partition))


def dilated_merge(
    parts: Tensor, partition: int | tuple[int, int], size: tuple[int, int]
) -> Tensor:
    """Merging (GG Eq. 10), the exact inverse of :func:`dilated_split`.

    ``(B, d_h d_w, M_h M_w, C) -> (B, H, W, C)``: every token goes back to its place and the
    padding added by the split is cropped, so ``dilated_merge(dilated_split(x, M), M, (H, W))``
    is ``x`` exactly.
    """
    return grouping.dilated_merge(parts, check_partition(partition), size)


def effective_partition(
    size: tuple[int, int], partition: int | tuple[int, int]
) -> tuple[int, int]:
    """Partition used on an ``H x W`` map: ``M' = ceil(H / ceil(H/M)) <= M`` per axis.

    Same dilation rate and same real members as ``M`` (see the module docstring), fewer padded
    slots; ``M' = M`` when ``M`` divides the size and ``M' = H`` when ``H < M``.
    """
    return _effective(size, check_partition(partition))


def _effective(size: Pair, partition: Pair) -> Pair:
    dh, dw = _rate(size, partition)
    return (-(-size[0] // dh), -(-size[1] // dw))


def adaptive_gaze_kernel(
    feature_size: tuple[int, int], partition: int | tuple[int, int]
) -> tuple[int, int]:
    """Adaptive Gazing (Sec. 3.3): ``k`` = dilation rate ``ceil(H/M)`` rounded up to odd, min 3.

    At 224 input with ``M = 7`` the four stages (56, 28, 14, 7 tokens) get 9, 5, 3, 3
    (GG Table 4a): ``k >= d`` so the Gaze window covers the gap between partition members.
    """
    return tuple(max(3, d if d % 2 else d + 1) for d in dilation_rate(feature_size, partition))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Cost (GG Eq. 14)
# --------------------------------------------------------------------------------------------


def gg_msa_macs(
    height: int,
    width: int,
    dim: int,
    partition: int | tuple[int, int] = 7,
    gaze_kernel: int | tuple[int, int] = 3,
    branches: Branches = "glance+gaze",
) -> int:
    """Exact MACs of :class:`GlanceGazeAttention` on one ``height x width`` map.

    ``Omega(GG-MSA) = 4 N C^2 + 2 M'^2 Np C + k_h k_w N C`` with ``N = HW``, ``M'`` the partition
    used (:func:`effective_partition`) and ``Np = d_h M'_h d_w M'_w >= N`` the padded token count.
    This is GG Eq. 14 (``4NC^2 + 2M^2NC + k^2NC``) exactly when ``M`` divides the map (then
    ``M' = M`` and ``Np = N``); the paper's formula leaves out only the padded slots, which take
    part in ``Q K^T`` and ``A V`` as masked keys / discarded queries. Branch variants drop terms:
    ``"glance"`` has no ``k^2 N C``; ``"gaze"`` has no attention and projects only ``V``
    (``2 N C^2 + k^2 N C``).
    """
    one_of(branches, "branches", BRANCHES)
    height, width = check_size(height, width)
    tokens = height * width
    kh, kw = check_gaze_kernel(gaze_kernel)
    gaze = kh * kw * tokens * dim if branches != "glance" else 0
    if branches == "gaze":
        return 2 * linear_macs(tokens, dim, dim) + gaze
    mh, mw = effective_partition((height, width), partition)
    padded_tokens = padded_size(height, mh) * padded_size(width, mw)
    members = mh * mw
    glance = attention_macs(members, members, dim) * (padded_tokens // members)
    projections = linear_macs(tokens, dim, 3 * dim) + linear_macs(tokens, dim, dim)
    return projections + glance + gaze


# --------------------------------------------------------------------------------------------
# The mixer
# --------------------------------------------------------------------------------------------


class GlanceGazeAttention(AttentionMixer):
    """GG-MSA (GG Fig. 2, Eqs. 6-14): ``(B, H, W, C) -> (B, H, W, C)``.

    ``out = W^o (Merge(MSA(Split(Q), Split(K), Split(V))) + DWConv_k(V))``

    Args:
        dim: channels ``C``.
        heads: attention heads (must divide ``dim``).
        partition: ``M``, tokens per side of a Glance partition (int or pair, ``>= 1``).
        gaze_kernel: depthwise kernel ``k`` of the Gaze branch (odd int or pair of odd ints). For
            Adaptive Gazing pass :func:`adaptive_gaze_kernel` of the block's nominal map size.
        branches: ``"glance+gaze"`` (GG-MSA), ``"glance"`` (G-MSA, Eq. 12) or ``"gaze"``
            (depthwise conv on ``V`` only) -- the GG Table 4b ablations.
        qkv_bias: bias in the qkv projection (the ``v`` projection of Gaze only).
        position_bias: relative position bias over in-partition coordinates (Swin-style table of
            ``(2M - 1)^2`` entries per head).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        partition: int | tuple[int, int] = 7,
        gaze_kernel: int | tuple[int, int] = 3,
        branches: Branches = "glance+gaze",
        qkv_bias: bool = True,
        position_bias: bool = True,
    ) -> None:
        one_of(branches, "branches", BRANCHES)
        # Q, K, V for the Glance branch; V alone when only the Gaze branch is kept.
        super().__init__(dim, heads, qkv_bias=qkv_bias,
                         projections="v" if branches == "gaze" else "qkv")
        self.partition = check_partition(partition)
        self.gaze_kernel = check_gaze_kernel(gaze_kernel)
        self.branches: Branches = branches
        self.glance = branches != "gaze"
        self.gaze = branches != "glance"
        self.position_bias = (
            RelativePositionBias(heads, self.partition) if self.glance and position_bias else None
        )
        self.gaze_conv: nn.Conv2d | None = None
        if self.gaze:
            kh, kw = self.gaze_kernel
            self.gaze_conv = nn.Conv2d(dim, dim, self.gaze_kernel, padding=(kh // 2, kw // 2),
                                       groups=dim, bias=True)

    def partition_mask(self, size: tuple[int, int], device: torch.device) -> Tensor | None:
        """``(d_h d_w, 1, M'^2, M'^2)`` mask of padded partition slots, or ``None`` (cached)."""
        partition = _effective(size, self.partition)
        if padded_size(size[0], partition[0]) * padded_size(size[1], partition[1]) == (
            size[0] * size[1]
        ):
            return None

        def build() -> Tensor:
            labels = padding_labels(size, partition)[None, :, :, None]
            parts = grouping.dilated_split(labels, partition)
            return allowed_from_labels(parts[0, :, :, 0]).to(device)

        return self.geometry(("partition_mask", size), device, build)

    def glance_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Glance (Eqs. 6-10): ``3 x (B, H, W, C) -> (B, H, W, C)``, no output projection."""
        _, height, width, _ = q.shape
        size = (height, width)
        partition = _effective(size, self.partition)
        q, k, v = (grouping.dilated_split(t, partition) for t in (q, k, v))  # (B, d_h d_w, M'^2, C)
        bias = self.position_bias(partition) if self.position_bias is not None else None
        out = self.attention(q, KeySource(k, v, bias, self.partition_mask(size, q.device)))
        return grouping.dilated_merge(out, partition, size)

    def gaze_convolution(self, v: Tensor) -> Tensor:
        """Gaze (Eq. 13): depthwise ``k x k`` conv on the values, ``(B,H,W,C) -> (B,H,W,C)``."""
        assert self.gaze_conv is not None
        out: Tensor = self.gaze_conv(rearrange(v, "b h w c -> b c h w"))
        return rearrange(out, "b c h w -> b h w c")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if not self.glance:  # Gaze only
            return self.proj(self.gaze_convolution(self.v(x)))  # type: ignore[no-any-return]
        q, k, v = self.project_qkv(x)  # each (B, H, W, C)
        out = self.glance_attention(q, k, v)
        if self.gaze:
            out = out + self.gaze_convolution(v)
        return self.proj(out)  # type: ignore[no-any-return]

    def macs(self, height: int, width: int) -> int:
        """``4NC^2 + 2M'^2 Np C + k^2 NC`` -- GG Eq. 14 plus padding; see :func:`gg_msa_macs`."""
        return gg_msa_macs(height, width, self.dim, self.partition, self.gaze_kernel,
                           self.branches)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.heads}, partition={self.partition}, "
                f"gaze_kernel={self.gaze_kernel}, branches={self.branches!r}")


__all__ = [
    "BRANCHES", "Branches", "GlanceGazeAttention", "adaptive_gaze_kernel", "check_gaze_kernel",
    "check_partition", "dilated_merge", "dilated_split", "dilation_rate", "effective_partition",
    "gg_msa_macs",
]
