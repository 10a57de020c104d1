"""Building blocks the mechanisms and the backbones share: the MLPs, stochastic depth, layer
scale and the norms (layer 7: they import nothing from minilg above :mod:`minilg.validate`).

Everything works on channels-last maps ``(B, H, W, C)`` (or token rows ``(B, T, C)``); the MLPs
report their exact MACs for an ``H x W`` map (matmul and conv multiply-accumulates only; see
:mod:`minilg.complexity`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor, nn

NormFactory = Callable[[int], nn.Module]


class GELU(nn.GELU):
    """``nn.GELU`` that can overwrite its input, as ``nn.SiLU(inplace=True)`` does (same
    parameters, state dict and printout; ``inplace`` off by default)."""

    def __init__(self, approximate: str = "none", inplace: bool = False) -> None:
        super().__init__(approximate)
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            out: Tensor = torch.ops.aten.gelu_(x, approximate=self.approximate)
            return out
        return super().forward(x)


def in_place(act: nn.Module) -> nn.Module:
    """``act`` set to overwrite its input where it can (``nn.SiLU``, ``nn.ReLU``, :class:`GELU`),
    as the official HAT-Net does for its SiLUs. Used where the activation follows a layer whose
    backward does not read its output (a Linear, a convolution); autograd keeps what the
    activation's own gradient needs, so values and gradients are the same. On the CPU it saves
    writing a fresh ``rC``-wide map: a new buffer above the allocator's mmap threshold
    (38 MB per activation at HAT-Net-T's stage 1, batch 8) page-faults on first touch, which
    costs more than the activation itself."""
    if hasattr(act, "inplace"):
        setattr(act, "inplace", True)  # noqa: B010 (an attribute of some activations only)
    return act


class Mlp(nn.Module):
    """The transformer feed-forward network ``Linear(C, rC) -> GELU -> Linear(rC, C)`` (GG Eq. 2).

    Shapes: ``(..., C) -> (..., C)``. MACs on ``N`` tokens: ``2 r N C^2``. The GELU overwrites
    ``fc1``'s output (same values and gradients; see :func:`in_place`).
    """

    def __init__(self, dim: int, ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        if ratio <= 0:
            raise ValueError(f"mlp ratio must be positive, got ratio={ratio}")
        self.dim = dim
        self.hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, self.hidden)
        self.act = in_place(GELU())  # fc1's backward does not read its output
        self.fc2 = nn.Linear(self.hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        return out

    def macs(self, height: int, width: int) -> int:
        return 2 * height * width * self.dim * self.hidden  # two Linears on H W tokens


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``.

    ``forward(x)`` draws one keep/drop decision per sample. A block whose residual branch updates
    several tensors of the same sample (the map and its extra tokens) draws the decisions once
    with :meth:`sample_mask` and applies them to each with :meth:`apply_mask`.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def sample_mask(self, x: Tensor) -> Tensor | None:
        """``(B,)`` keep mask scaled by ``1/(1-p)`` for the batch of ``x``; ``None`` if inactive."""
        if self.p == 0.0 or not self.training:
            return None
        keep = 1.0 - self.p
        return torch.empty(x.shape[0], dtype=x.dtype, device=x.device).bernoulli_(keep) / keep

    @staticmethod
    def apply_mask(x: Tensor, mask: Tensor | None) -> Tensor:
        """``x * mask`` broadcast over every axis but the batch (``x`` itself when ``None``)."""
        return x if mask is None else x * mask.reshape((-1,) + (1,) * (x.ndim - 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.apply_mask(x, self.sample_mask(x))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT), initialised to ``init``."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


def layer_norm(eps: float = 1e-5) -> NormFactory:
    """``C -> nn.LayerNorm(C, eps)``: Swin and Focal use 1e-5, DeiT and PVT 1e-6."""
    return functools.partial(nn.LayerNorm, eps=eps)


class ChannelsLastGroupNorm(nn.GroupNorm):
    """``GroupNorm(groups, C)`` on channels-last maps ``(B, H, W, C)`` (HAT-Net: one group).

    With ``groups=1`` it normalises over ``(H, W, C)`` per sample. Parameter names are GroupNorm's
    (``weight``, ``bias``). ``(B, T, C)`` token rows are treated as a ``T x 1`` map.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 3:
            return self.forward(x[:, :, None])[:, :, 0]
        out: Tensor = super().forward(rearrange(x, "b h w c -> b c h w"))
        return rearrange(out, "b c h w -> b h w c")


def group_norm(groups: int = 1, eps: float = 1e-6) -> NormFactory:
    """``C -> ChannelsLastGroupNorm(groups, C, eps)``; HAT-Net's norm is ``group_norm(1, 1e-6)``."""
    return lambda dim: ChannelsLastGroupNorm(groups, dim, eps=eps)


class ConvMlp(nn.Module):
    """Inverted-residual MLP with a depthwise conv (HAT-Net's IRB, Sec. 3.3), channels-last.

    ``norm -> 1x1 (C -> rC) -> act -> k x k depthwise -> act -> 1x1 (rC -> C) -> norm``, convs
    without bias (the official layout: ``conv1.0`` norm, ``conv1.1`` conv, ``conv2.0`` dw conv,
    ``conv3.0`` conv, ``conv3.1`` norm). ``(B, H, W, C) -> (B, H, W, C)``.
    MACs: ``2 r H W C^2 + k^2 H W r C``.
    """

    def __init__(
        self, dim: int, ratio: float = 4.0, kernel: int = 3, norm: NormFactory | None = None,
        act: Callable[[], nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__()
        norm = norm or group_norm(1, 1e-6)
        self.dim, self.hidden, self.kernel = dim, int(dim * ratio), kernel
        self.conv1 = nn.Sequential(norm(dim), nn.Linear(dim, self.hidden, bias=False),
                                   in_place(act()))
        self.conv2 = nn.Sequential(
            nn.Conv2d(self.hidden, self.hidden, kernel, padding=kernel // 2, groups=self.hidden,
                      bias=False), in_place(act()))
        self.conv3 = nn.Sequential(nn.Linear(self.hidden, dim, bias=False), norm(dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError("ConvMlp runs on maps (B, H, W, C); extra tokens need a token MLP")
        y = rearrange(self.conv1(x), "b h w c -> b c h w")
        out: Tensor = self.conv3(rearrange(self.conv2(y), "b c h w -> b h w c"))
        return out

    def macs(self, height: int, width: int) -> int:
        tokens = height * width
        depthwise = self.kernel**2 * tokens * self.hidden
        return 2 * tokens * self.dim * self.hidden + depthwise  # two 1x1s + the depthwise conv
