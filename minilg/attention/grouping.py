"""Grouping: how tokens become query groups and key sets, the one vocabulary every mixer uses.

Attention itself lives in :mod:`minilg.attention.core`; this module only moves tokens around.
Every function works on channels-last maps ``(B, H, W, C)`` and comes with the labels that tell
real tokens from padding, so attention can mask the padding and it never changes a real token.

* Non-overlapping windows (Swin Sec. 3.2): :func:`window_partition` / :func:`window_reverse`,
  after zero padding to a multiple of the window (:func:`pad_to_multiple`); the regions of a
  shifted window grid (:func:`shifted_window_labels`).
* Dilated partitions (GG Eqs. 6-8, 10): :func:`dilated_split` / :func:`dilated_merge`.
* Overlapping neighbourhoods (Focal's fine level, SALG's coverage areas): :func:`neighbourhood`
  gathers, for each ``Mh x Mw`` window, the ``(Mh + 2r) x (Mw + 2r)`` tokens around it; outside
  the map is zero padding that :func:`neighbourhood_labels` marks, or the map wraps around when
  asked (``wrap=True``).
* Sub-window pooling (Focal Eq. 1, HAT-Net Eq. 10, PVT): :func:`subwindow_pool` (mean, max,
  mean over real tokens only) and :class:`SubWindowPool` (a learned linear map over the
  sub-window's positions, initialised to the mean).
* Keys gathered from several maps at once (Focal's levels): :func:`gather_rows`.
* Irregular groups from a per-token label map (SALG's regions): :func:`label_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from minilg.validate import Pair, as_pair


def padded_size(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ``>= size``."""
    return -(-size // multiple) * multiple


def clip_to_map(window: Pair, size: Pair) -> Pair:
    """A window (or grid, or pool size) no larger than the ``(H, W)`` map, per axis (Swin's rule:
    a larger one would only add padding)."""
    return min(window[0], size[0]), min(window[1], size[1])


def pad_to_multiple(x: Tensor, window: Pair) -> Tensor:
    """Zero-pad ``(B, H, W, C)`` on the bottom/right so H and W are multiples of ``window``."""
    _, h, w, _ = x.shape
    pad_h, pad_w = padded_size(h, window[0]) - h, padded_size(w, window[1]) - w
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))


def padding_labels(size: Pair, window: Pair, device: torch.device | None = None) -> Tensor:
    """``(Hp, Wp)`` int64 map: 0 on real tokens, -1 on padding added by :func:`pad_to_multiple`."""
    hp, wp = padded_size(size[0], window[0]), padded_size(size[1], window[1])
    labels = torch.full((hp, wp), -1, dtype=torch.long, device=device)
    labels[: size[0], : size[1]] = 0
    return labels


# --- non-overlapping windows ----------------------------------------------------------------


def window_partition(x: Tensor, window: Pair) -> Tensor:
    """``(B, Hp, Wp, C) -> (B, nWindows, Mh*Mw, C)``; H and W must divide by the window."""
    return rearrange(x, "b (nh mh) (nw mw) c -> b (nh nw) (mh mw) c", mh=window[0], mw=window[1])


def window_reverse(windows: Tensor, window: Pair, padded: Pair) -> Tensor:
    """Exact inverse of :func:`window_partition`: ``(B, nWindows, Mh*Mw, C) -> (B, Hp, Wp, C)``."""
    return rearrange(
        windows, "b (nh nw) (mh mw) c -> b (nh mh) (nw mw) c",
        nh=padded[0] // window[0], mh=window[0], mw=window[1],
    )


def window_labels(labels: Tensor, window: Pair) -> Tensor:
    """``(Hp, Wp)`` labels -> ``(nWindows, Mh*Mw)``, in :func:`window_partition`'s order."""
    return rearrange(labels, "(nh mh) (nw mw) -> (nh nw) (mh mw)", mh=window[0], mw=window[1])


# --- shifted windows (Swin) -----------------------------------------------------------------


def shifted_window_labels(
    size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]
) -> Tensor:
    """Region labels of the rolled, padded map ``(Hp, Wp)``: ``-1`` padding, else region id.

    After rolling by ``-shift`` each axis has three bands (Swin's ``img_mask``): tokens that were
    inside ``[0, Hp - M)``, the band ``[Hp - M, Hp - s)`` and the wrapped band ``[Hp - s, Hp)``.
    Two tokens may attend to each other only if both bands (rows and columns) agree.
    """
    labels = padding_labels(size, window)
    hp, wp = labels.shape

    def bands(length: int, m: int, s: int) -> Tensor:
        band = torch.zeros(length, dtype=torch.long)
        if s > 0:
            band[length - m : length - s] = 1
            band[length - s :] = 2
        return band

    region = bands(hp, window[0], shift[0])[:, None] * 3 + bands(wp, window[1], shift[1])[None, :]
    rolled_padding = torch.roll(labels, shifts=(-shift[0], -shift[1]), dims=(0, 1))
    return torch.where(rolled_padding < 0, rolled_padding, region)


# --- dilated partitions (GG) ----------------------------------------------------------------


def dilated_split(x: Tensor, partition: Pair) -> Tensor:
    """GG Eqs. 6-8: ``(B, H, W, C) -> (B, d_h d_w, M_h M_w, C)`` with dilation ``d = ceil(H/M)``.

    The map is zero-padded on the bottom/right to ``(M d_h, M d_w)``; row ``r = a d_h + i`` goes
    to partition ``i`` (the offset inside the ``d_h x d_w`` dilation cell) as member ``a``, and
    likewise for columns. Partition ``p = i d_w + j`` holds the tokens ``(i + a d_h, j + b d_w)``,
    member ``a M_w + b``: the partition ``z^{dagger,i,j}`` of Eq. 8.
    """
    mh, mw = partition
    x = pad_to_multiple(x, partition)
    return rearrange(x, "b (mh dh) (mw dw) c -> b (dh dw) (mh mw) c", mh=mh, mw=mw)


def dilated_merge(parts: Tensor, partition: Pair, size: Pair) -> Tensor:
    """GG Eq. 10, the exact inverse of :func:`dilated_split`, cropped back to ``size``."""
    mh, mw = partition
    dh = padded_size(size[0], mh) // mh
    x = rearrange(parts, "b (dh dw) (mh mw) c -> b (mh dh) (mw dw) c", dh=dh, mh=mh, mw=mw)
    return x[:, : size[0], : size[1]]


# --- overlapping neighbourhoods (Focal, SALG) -------------------------------------------------


def neighbourhood(x: Tensor, window: Pair, ring: Pair, wrap: bool = False) -> Tensor:
    """Tokens around each window: ``(B, H, W, C) -> (B, nWindows, (Mh+2rh)(Mw+2rw), C)``.

    The map is first zero-padded bottom/right to a multiple of the window (as
    :func:`window_partition`), then by ``ring`` on every side: zeros by default, or the opposite
    border when ``wrap`` (cyclic, as ``torch.roll`` would). Window ``n`` (row-major) gets the
    ``(Mh + 2 rh) x (Mw + 2 rw)`` block centred on it, row-major. Which of those slots are real
    tokens: :func:`neighbourhood_labels`.
    """
    (mh, mw), (rh, rw) = window, ring
    x = pad_to_multiple(x, window)
    if rh or rw:
        x = rearrange(x, "b h w c -> b c h w")
        x = F.pad(x, (rw, rw, rh, rh), mode="circular" if wrap else "constant")
        x = rearrange(x, "b c h w -> b h w c")
    blocks = x.unfold(1, mh + 2 * rh, mh).unfold(2, mw + 2 * rw, mw)  # b nh nw c kh kw
    return rearrange(blocks, "b nh nw c kh kw -> b (nh nw) (kh kw) c")


def neighbourhood_labels(
    labels: Tensor, window: Pair, ring: Pair, wrap: bool = False, fill: int = -1
) -> Tensor:
    """:func:`neighbourhood` of an ``(H, W)`` int label map: ``(nWindows, K)``.

    Slots outside the map (and the bottom/right padding to the window) get ``fill`` unless they
    wrap around. With :func:`padding_labels`-style labels, ``>= 0`` marks a real token.
    """
    size = (labels.shape[0], labels.shape[1])
    padded = torch.full(
        (padded_size(size[0], window[0]), padded_size(size[1], window[1])), fill,
        dtype=torch.float64, device=labels.device,
    )
    padded[: size[0], : size[1]] = labels
    # Gather ``label - fill`` with zero padding: every slot outside the map reads back ``fill``.
    gathered = neighbourhood((padded - fill)[None, :, :, None], window, ring, wrap)
    return gathered[0, :, :, 0].long() + fill


# --- sub-window pooling (Focal Eq. 1, HAT-Net Eq. 10) -----------------------------------------

PoolMode = Literal["mean", "max", "real_mean"]


def subwindow_pool(x: Tensor, size: Pair, mode: PoolMode = "mean") -> Tensor:
    """Pool each ``sh x sw`` sub-window: ``(B, H, W, C) -> (B, ceil(H/sh), ceil(W/sw), C)``.

    Maps that ``size`` does not divide are zero-padded bottom/right. ``"mean"`` averages the
    padded sub-window (zeros count); ``"real_mean"`` averages only the real tokens of each
    sub-window (HAT-Net: padding never changes a pooled token); ``"max"`` takes the maximum
    (padding counts as 0).
    """
    sh, sw = size
    padded = pad_to_multiple(x, size)
    if mode == "max":
        return reduce(padded, "b (h sh) (w sw) c -> b h w c", "max", sh=sh, sw=sw)
    total = reduce(padded, "b (h sh) (w sw) c -> b h w c", "sum", sh=sh, sw=sw)
    if mode == "mean" or padded.shape[1:3] == x.shape[1:3]:
        return total / (sh * sw)
    real = pad_to_multiple(torch.ones_like(x[:1, :, :, :1]), size)
    count = reduce(real, "1 (h sh) (w sw) 1 -> 1 h w 1", "sum", sh=sh, sw=sw)
    return total / count


class SubWindowPool(nn.Module):
    """Learned sub-window pooling (Focal Eq. 1, ``focal_pool="fc"``): ``Linear(sh*sw, 1)``.

    One weight per position inside the sub-window, shared by all channels, plus a bias;
    initialised to the mean (weights ``1/(sh sw)``, bias 0), so a fresh layer equals
    :func:`subwindow_pool` ``"mean"`` up to float rounding. ``(B, H, W, C) -> (B, H/sh, W/sw, C)``
    with bottom/right zero padding. MACs: ``H' W' C sh sw`` (a matmul).
    """

    def __init__(self, size: Pair) -> None:
        super().__init__()
        self.size = as_pair(size, "size")
        self.pool = nn.Linear(self.size[0] * self.size[1], 1)
        self.init_weights()

    def init_weights(self) -> None:
        """The mean: weights ``1/(sh sw)``, bias 0 (called again by a backbone's init)."""
        nn.init.constant_(self.pool.weight, 1.0 / (self.size[0] * self.size[1]))
        nn.init.zeros_(self.pool.bias)

    def forward(self, x: Tensor) -> Tensor:
        sh, sw = self.size
        cells = rearrange(pad_to_multiple(x, self.size), "b (h sh) (w sw) c -> b h w c (sh sw)",
                          sh=sh, sw=sw)
        pooled: Tensor = self.pool(cells)[..., 0]
        return pooled

    def macs(self, height: int, width: int, channels: int) -> int:
        sh, sw = self.size
        return padded_size(height, sh) * padded_size(width, sw) * channels


class Pooling(nn.Module):
    """Sub-window pooling by mode (Focal Eq. 1, one level): learned (``"fc"``,
    :class:`SubWindowPool`), ``"mean"`` or ``"max"`` (:func:`subwindow_pool`)."""

    def __init__(self, size: int, mode: Literal["fc", "mean", "max"]) -> None:
        super().__init__()
        self.size, self.mode = (size, size), mode
        self.fc = SubWindowPool(self.size) if mode == "fc" else None

    def forward(self, x: Tensor) -> Tensor:
        """``(B, Hp, Wp, C) -> (B, Hp/s_w, Wp/s_w, C)``; ``Hp, Wp`` are multiples of ``s_w``."""
        if self.fc is not None:
            pooled: Tensor = self.fc(x)
            return pooled
        return subwindow_pool(x, self.size, "max" if self.mode == "max" else "mean")


# --- gathered keys from several maps (Focal) ---------------------------------------------


def gather_rows(maps: Sequence[Tensor], index: Tensor, heads: int = 1) -> tuple[Tensor, Tensor]:
    """Keys and values ``(B, nW, heads, K, d)`` each (Focal's levels): rows ``index (nW, K)``
    of the maps' tokens ``(B, h_l, w_l, 2C)`` concatenated, plus one zero row (the slot for
    keys outside the map).

    Gathered once, head-major: the maps' rows go into one table ``(B, 2, heads * R, d)`` and a
    single ``index_select`` writes k and v in the layout attention folds to ``(B, nW*heads, K,
    d)`` (a :class:`~minilg.attention.core.KeySource` with ``heads_first``): views, no copy.
    """
    dim = maps[0].shape[-1] // 2
    table = torch.cat(
        [rearrange(m, "b y x (s h d) -> b s h (y x) d", s=2, h=heads) for m in maps]
        + [maps[0].new_zeros(maps[0].shape[0], 2, heads, 1, dim // heads)], dim=3)
    rows = table.shape[3]
    per_head = index[:, None, :] + rows * torch.arange(heads, device=index.device)[:, None]
    gathered = table.flatten(2, 3).index_select(2, per_head.flatten())
    k, v = (rearrange(gathered[:, part], "b (n h k) d -> b n h k d", h=heads, k=index.shape[1])
            for part in (0, 1))
    return k, v


# --- irregular groups from labels (SALG) ------------------------------------------------------


def label_mask(query_labels: Tensor, key_labels: Tensor) -> Tensor:
    """``(..., Tq)``, ``(..., Tk)`` int labels -> ``(..., Tq, Tk)`` bool allowed pairs.

    A query may attend a key when both carry the same label and the key's label is ``>= 0``
    (negative labels mark padding or null tokens).
    """
    same = query_labels[..., :, None] == key_labels[..., None, :]
    return same & (key_labels >= 0)[..., None, :]


def allowed_from_labels(labels: Tensor) -> Tensor:
    """Self-attention mask inside groups: ``(G, T)`` labels -> ``(G, 1, T, T)`` bool."""
    return label_mask(labels, labels)[:, None]


__all__ = [
    "PoolMode", "Pooling", "SubWindowPool", "allowed_from_labels", "clip_to_map", "dilated_merge",
    "dilated_split",
    "gather_rows", "label_mask", "neighbourhood", "neighbourhood_labels", "pad_to_multiple",
    "padded_size", "padding_labels", "shifted_window_labels", "subwindow_pool", "window_labels",
    "window_partition", "window_reverse",
]
