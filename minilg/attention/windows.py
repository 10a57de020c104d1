"""Window partition and reverse (Swin Sec. 3.2), with padding to a multiple of the window.

A ``(B, H, W, C)`` map is zero-padded on the bottom and right to ``(Hp, Wp)``, multiples of the
window ``(Mh, Mw)``, then cut into ``(Hp/Mh) * (Wp/Mw)`` windows of ``Mh * Mw`` tokens each.
:func:`window_reverse` is the exact inverse and crops back to ``(H, W)``.
:func:`padding_labels` marks which padded-map positions are real tokens so attention can mask
the rest: padding never changes the output of a real token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def as_pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """``7 -> (7, 7)``; validates that both entries are positive integers."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return (int(pair[0]), int(pair[1]))


def padded_size(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ``>= size``."""
    return -(-size // multiple) * multiple


def pad_to_multiple(x: Tensor, window: tuple[int, int]) -> Tensor:
    """Zero-pad ``(B, H, W, C)`` on the bottom/right so H and W are multiples of ``window``."""
    _, h, w, _ = x.shape
    pad_h = padded_size(h, window[0]) - h
    pad_w = padded_size(w, window[1]) - w
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))


def window_partition(x: Tensor, window: tuple[int, int]) -> Tensor:
    """``(B, Hp, Wp, C) -> (B, nWindows, Mh*Mw, C)``; H and W must divide by the window."""
    return rearrange(
        x, "b (nh mh) (nw mw) c -> b (nh nw) (mh mw) c", mh=window[0], mw=window[1]
    )


def window_reverse(windows: Tensor, window: tuple[int, int], padded: tuple[int, int]) -> Tensor:
    """Exact inverse of :func:`window_partition`: ``(B, nWindows, Mh*Mw, C) -> (B, Hp, Wp, C)``."""
    return rearrange(
        windows,
        "b (nh nw) (mh mw) c -> b (nh mh) (nw mw) c",
        nh=padded[0] // window[0], mh=window[0], mw=window[1],
    )


def padding_labels(size: tuple[int, int], window: tuple[int, int]) -> Tensor:
    """``(Hp, Wp)`` int64 map: 0 on real tokens, -1 on padding added by :func:`pad_to_multiple`."""
    hp, wp = padded_size(size[0], window[0]), padded_size(size[1], window[1])
    labels = torch.full((hp, wp), -1, dtype=torch.long)
    labels[: size[0], : size[1]] = 0
    return labels


def allowed_from_labels(window_labels: Tensor) -> Tensor:
    """Boolean attention mask from region labels of windowed tokens.

    Args:
        window_labels: ``(nWindows, T)`` int labels; tokens may attend to each other only when
            they carry the same label, and label ``-1`` (padding) is never a key.

    Returns:
        ``(nWindows, 1, T, T)`` bool: broadcastable over batch and heads.
    """
    same = window_labels[:, :, None] == window_labels[:, None, :]
    real_key = (window_labels >= 0)[:, None, :]
    return rearrange(same & real_key, "g tq tk -> g 1 tq tk")
