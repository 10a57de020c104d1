"""Window attention W-MSA and shifted-window attention SW-MSA (Swin, Liu et al. 2021, Sec. 3.2).

W-MSA splits the map into non-overlapping ``M x M`` windows and runs MSA inside each, with a
relative position bias. SW-MSA first rolls the map by ``(-M//2, -M//2)`` so the next block's
windows straddle the previous block's boundaries; tokens that the roll brought together from
opposite edges are kept apart by a mask built from region labels. Only the last row and column
of windows hold such tokens, so SW-MSA attends those windows with the mask and all others with
the position bias alone (:meth:`WindowAttention.shifted_by_class`).

Cost, for the ``N = H*W`` tokens projected and the ``Np = Hp*Wp`` (padded) tokens attended:
``Omega(W-MSA) = 4 N C^2 + 2 M^2 Np C`` (GG Eq. 12 / Swin Eq. 2 with ``Np = N`` when ``M``
divides the map). The projections run on real tokens only; padding is added to Q, K, V just
before the windowed attention and masked as keys, so it never changes a real token's output
(the official Swin code pads *before* the qkv projection and does not mask: its padded keys,
``qkv(0) = bias``, do leak into border windows; minilg masks them instead).

Maps smaller than the window: as in Swin, the window is clipped to the map and the shift is
turned off along that axis (a shift would only move padding around).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from minilg.attention.core import AttentionMixer, KeySource, attention_macs, linear_macs
from minilg.attention.grouping import (
    allowed_from_labels,
    clip_to_map,
    pad_to_multiple,
    padded_size,
    shifted_window_labels,
    window_labels,
    window_partition,
    window_reverse,
)
from minilg.attention.position import RelativePositionBias
from minilg.validate import as_pair, check_size


def window_msa_macs(height: int, width: int, dim: int, window: tuple[int, int]) -> int:
    """``4 N C^2 + 2 M^2 Np C``: projections on ``N = HW`` tokens, attention on ``Np = HpWp``."""
    height, width = check_size(height, width)
    mh, mw = clip_to_map(window, (height, width))
    padded_tokens = padded_size(height, mh) * padded_size(width, mw)
    tokens = height * width
    projections = linear_macs(tokens, dim, 3 * dim) + linear_macs(tokens, dim, dim)
    return projections + attention_macs(mh * mw, mh * mw, dim) * (padded_tokens // (mh * mw))


class WindowAttention(AttentionMixer):
    """W-MSA (``shift=0``) or SW-MSA (``shift>0``, usually ``M//2``): ``(B,H,W,C) -> (B,H,W,C)``.

    Args:
        dim: channels ``C``.
        heads: attention heads (must divide ``dim``).
        window: window size ``M`` (int or ``(Mh, Mw)``).
        shift: cyclic shift ``s`` (int or pair), ``0 <= s < M``.
        qkv_bias: bias in the qkv projection.
        position_bias: add Swin's relative position bias inside each window.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        window: int | tuple[int, int] = 7,
        shift: int | tuple[int, int] = 0,
        qkv_bias: bool = True,
        position_bias: bool = True,
    ) -> None:
        super().__init__(dim, heads, qkv_bias=qkv_bias)
        self.window = as_pair(window, "window")
        self.shift = as_pair(shift, "shift", minimum=0)
        if not all(s < m for s, m in zip(self.shift, self.window, strict=True)):
            raise ValueError(f"shift must be an integer or pair with 0 <= shift < "
                             f"window={self.window}, got shift={shift!r}")
        self.position_bias = RelativePositionBias(heads, self.window) if position_bias else None

    def effective(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Window and shift used on an ``height x width`` map (clipped to the map, Swin rule)."""
        window = clip_to_map(self.window, (height, width))
        shift = (
            self.shift[0] if height > self.window[0] else 0,
            self.shift[1] if width > self.window[1] else 0,
        )
        return window, shift

    def window_mask(self, size: tuple[int, int], device: torch.device) -> Tensor | None:
        """``(nWindows, 1, M^2, M^2)`` allowed pairs (shift regions, padding), or ``None``.

        Built once per map size and device (:meth:`TokenMixer.geometry`).
        """
        window, shift = self.effective(*size)
        padded = (padded_size(size[0], window[0]), padded_size(size[1], window[1]))
        if shift == (0, 0) and padded == size:
            return None

        def build() -> Tensor:
            labels = shifted_window_labels(size, window, shift)
            return allowed_from_labels(window_labels(labels, window)).to(device)

        return self.geometry(("window_mask", size), device, build)

    def shifted_order(
        self, padded: tuple[int, int], window: tuple[int, int], shift: tuple[int, int],
        device: torch.device,
    ) -> tuple[Tensor, Tensor]:
        """Map positions ``(Hp*Wp,)`` of the tokens in rolled window order, and the inverse.

        Rolling by ``-shift`` then partitioning is one permutation of the padded map's tokens:
        a single gather (cached per size) instead of ``torch.roll`` and a partition copy.
        """

        def build() -> tuple[Tensor, Tensor]:
            positions = torch.arange(padded[0] * padded[1]).reshape(1, *padded, 1)
            rolled = torch.roll(positions, shifts=(-shift[0], -shift[1]), dims=(1, 2))
            order = window_partition(rolled, window).flatten()
            return order.to(device), torch.argsort(order).to(device)

        return self.geometry(("shifted_order", padded, window, shift), device, build)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        _, height, width, _ = x.shape
        window, shift = self.effective(height, width)
        padded = (padded_size(height, window[0]), padded_size(width, window[1]))
        if shift != (0, 0) and padded == (height, width):
            shifted: Tensor = self.proj(self.shifted_by_class(x, window, shift))
            return shifted
        q, k, v, padded = self.grouped_qkv(x, window, shift)
        bias = self.window_bias(window)
        allowed = self.window_mask((height, width), x.device)
        out = self.attention(q, KeySource(k, v, bias, allowed))
        del q, k, v  # views of the 3C-wide projection: free it before the copies below
        if shift != (0, 0):  # back to the map, rolled back by +shift: the inverse gather
            _, inverse = self.shifted_order(padded, window, shift, x.device)
            tokens = rearrange(out, "b g t c -> b (g t) c")[:, inverse]
            out = rearrange(tokens, "b (h w) c -> b h w c", h=padded[0])
        else:
            out = window_reverse(out, window, padded)
        projected: Tensor = self.proj(out[:, :height, :width])
        return projected

    def window_classes(
        self, size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int],
        device: torch.device,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """SW-MSA on a map the window divides: ``(whole, cut, cut_allowed, inverse)``.

        ``whole`` and ``cut``: map positions of the tokens of the rolled windows that the roll
        left in one piece and of those it brought edges into (the last row and column of
        windows), each in window order; ``cut_allowed (nCut, 1, M^2, M^2)`` the cut windows'
        mask; ``inverse`` takes the two classes, concatenated, back to map order. Cached per size.
        """

        def build() -> tuple[Tensor, Tensor, Tensor, Tensor]:
            order, _ = self.shifted_order(size, window, shift, torch.device("cpu"))
            allowed = allowed_from_labels(
                window_labels(shifted_window_labels(size, window, shift), window))
            cut = ~allowed.flatten(1).all(dim=1)  # (nW,) windows with a masked pair
            by_window = rearrange(order, "(g t) -> g t", t=window[0] * window[1])
            whole_tokens, cut_tokens = by_window[~cut].flatten(), by_window[cut].flatten()
            inverse = torch.argsort(torch.cat([whole_tokens, cut_tokens]))
            return (whole_tokens.to(device), cut_tokens.to(device), allowed[cut].to(device),
                    inverse.to(device))

        return self.geometry(("window_classes", size, window, shift), device, build)

    def window_bias(self, window: tuple[int, int]) -> Tensor | None:
        """The relative position bias ``(heads, M^2, M^2)`` of one window, or ``None``."""
        return self.position_bias(window) if self.position_bias is not None else None

    def shifted_by_class(
        self, x: Tensor, window: tuple[int, int], shift: tuple[int, int]
    ) -> Tensor:
        """SW-MSA without padding, before ``proj``: ``(B, H, W, C) -> (B, H, W, C)``.

        The same attention as one masked call over all windows, run per class of window
        (:meth:`window_classes`): the windows the roll left whole need only the position bias,
        which broadcasts over the batch, so q, k and v stay views of their projection; only
        the cut windows (the last row and column of windows: ``H/M + W/M - 1`` of them when
        both axes are shifted) carry the region mask. Each class is gathered from the C-wide
        input and projected on its own, and its projection is freed before the next class is
        projected (the stage-1 SW-MSA of Swin-T at batch 128 peaks at about a third of the
        official cut's memory, ``python -m minilg bench --official``).
        """
        _, height, width, _ = x.shape
        whole, cut, cut_allowed, inverse = self.window_classes(
            (height, width), window, shift, x.device)
        tokens = rearrange(x, "b h w c -> b (h w) c")
        bias = self.window_bias(window)
        outs = []
        for positions, allowed in ((whole, None), (cut, cut_allowed)):
            if positions.numel() == 0:
                continue
            grouped = rearrange(tokens[:, positions], "b (g t) c -> b g t c",
                                t=window[0] * window[1])
            q, k, v = self.qkv(grouped).chunk(3, dim=-1)  # each (B, nClass, M*M, C)
            del grouped
            outs.append(self.attention(q, KeySource(k, v, bias, allowed)))
            del q, k, v
        merged = rearrange(torch.cat(outs, dim=1), "b g t c -> b (g t) c")
        del outs
        return rearrange(merged[:, inverse], "b (h w) c -> b h w c", h=height)

    def grouped_qkv(
        self, x: Tensor, window: tuple[int, int], shift: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
        """``q, k, v (B, nW, M*M, C)`` in rolled window order, and the padded size.

        Without padding the C-wide input is permuted (roll and partition: one gather) before the
        projection, so q, k and v are views of its output; with padding the projection runs on
        the real tokens first and its output is padded and permuted.
        """
        _, height, width, _ = x.shape
        padded = (padded_size(height, window[0]), padded_size(width, window[1]))
        windows = (padded[0] // window[0]) * (padded[1] // window[1])
        source = x if padded == (height, width) else pad_to_multiple(self.qkv(x), window)
        if shift != (0, 0):  # roll by -shift and partition: one gather
            order, _ = self.shifted_order(padded, window, shift, x.device)
            tokens = rearrange(source, "b h w c -> b (h w) c")[:, order]
            grouped = rearrange(tokens, "b (g t) c -> b g t c", g=windows)
        else:
            grouped = window_partition(source, window)
        del source  # free a map-shaped qkv (the partition copied it) before attending
        if padded == (height, width):
            grouped = self.qkv(grouped)
        q, k, v = grouped.chunk(3, dim=-1)  # each (B, nW, M*M, C)
        return q, k, v, padded

    def macs(self, height: int, width: int) -> int:
        """``4 N C^2 + 2 M^2 Np C`` (GG Eq. 12, Swin Eq. 2); see the module docstring."""
        return window_msa_macs(height, width, self.dim, self.window)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, window={self.window}, shift={self.shift}"
