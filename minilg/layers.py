"""Building blocks shared by every backbone: MLP, DropPath, LayerScale, patch embedding, patch
merging, and the pre-norm transformer block.

Everything works on channels-last maps ``(B, H, W, C)`` and reports its exact MACs for an input
of size ``H x W`` (matmul and conv multiply-accumulates only; see :mod:`minilg.complexity`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from minilg.attention.base import TokenMixer
from minilg.attention.core import linear_macs
from minilg.attention.windows import padded_size

NormFactory = Callable[[int], nn.Module]


def module_macs(module: nn.Module, height: int, width: int, **kwargs: int) -> int:
    """``module.macs(height, width)``: the closed-form MACs every minilg layer reports."""
    macs = getattr(module, "macs", None)
    if not callable(macs):
        raise TypeError(f"{type(module).__name__} does not report its MACs (no macs(H, W))")
    return int(macs(height, width, **kwargs))


def module_out_size(module: nn.Module, height: int, width: int) -> tuple[int, int]:
    """``module.out_size(height, width)`` of a stem or downsampling layer."""
    out_size = getattr(module, "out_size", None)
    if not callable(out_size):
        raise TypeError(f"{type(module).__name__} does not report out_size(H, W)")
    out_h, out_w = out_size(height, width)
    return int(out_h), int(out_w)


class Mlp(nn.Module):
    """The transformer feed-forward network ``Linear(C, rC) -> GELU -> Linear(rC, C)`` (GG Eq. 2).

    Shapes: ``(..., C) -> (..., C)``. MACs on ``N`` tokens: ``2 r N C^2``.
    """

    def __init__(self, dim: int, ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        if ratio <= 0:
            raise ValueError(f"mlp ratio must be positive, got ratio={ratio}")
        self.dim = dim
        self.hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, self.hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(self.hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        return out

    def macs(self, height: int, width: int) -> int:
        return 2 * linear_macs(height * width, self.dim, self.hidden)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT), initialised to ``init``."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: ``Conv(P x P, stride P)`` then optional LayerNorm.

    Shapes: ``(B, 3, H, W) -> (B, ceil(H/P), ceil(W/P), C)``; inputs that ``P`` does not divide
    are zero-padded on the bottom/right. MACs: ``H' W' P^2 C_in C``.
    """

    def __init__(self, in_chans: int, dim: int, patch: int, norm: bool = True) -> None:
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch size must be >= 1, got patch={patch}")
        self.in_chans, self.dim, self.patch = in_chans, dim, patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm: nn.Module = nn.LayerNorm(dim) if norm else nn.Identity()

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        patch = self.patch
        return padded_size(height, patch) // patch, padded_size(width, patch) // patch

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        pad_h = padded_size(x.shape[2], self.patch) - x.shape[2]
        pad_w = padded_size(x.shape[3], self.patch) - x.shape[3]
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        out: Tensor = self.norm(rearrange(self.proj(x), "b c h w -> b h w c"))
        return out

    def macs(self, height: int, width: int) -> int:
        out_h, out_w = self.out_size(height, width)
        return out_h * out_w * self.patch**2 * self.in_chans * self.dim


class PatchMerging(nn.Module):
    """Swin's downsampling: gather each 2x2 neighbourhood, LayerNorm(4C), Linear(4C -> C_out).

    Shapes: ``(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), C_out)`` (odd sizes are zero-padded).
    MACs: ``H' W' 4C C_out``.
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.dim, self.out_dim = dim, out_dim
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        return padded_size(height, 2) // 2, padded_size(width, 2) // 2

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] % 2 or x.shape[2] % 2:
            x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        x = rearrange(x, "b (h dy) (w dx) c -> b h w (dx dy c)", dy=2, dx=2)
        out: Tensor = self.reduction(self.norm(x))
        return out

    def macs(self, height: int, width: int) -> int:
        out_h, out_w = self.out_size(height, width)
        return linear_macs(out_h * out_w, 4 * self.dim, self.out_dim)


class Block(nn.Module):
    """Pre-norm transformer block on maps (GG Eqs. 1-2, Swin Eq. 3)::

        x = x + DropPath(LayerScale(mixer(norm1(x))))
        x = x + DropPath(LayerScale(mlp(norm2(x))))

    ``mixer`` is any :class:`TokenMixer`; ``mlp`` is any ``(B, H, W, C) -> (B, H, W, C)`` module
    with ``macs(H, W)`` (the plain :class:`Mlp`, or a convolutional one).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(
        self,
        dim: int,
        mixer: TokenMixer,
        mlp: nn.Module,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
        norm: NormFactory = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.norm1 = norm(dim)
        self.mixer = mixer
        self.norm2 = norm(dim)
        self.mlp = mlp
        self.scale1: nn.Module = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.scale2: nn.Module = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.scale1(self.mixer(self.norm1(x))))
        out: Tensor = x + self.drop_path(self.scale2(self.mlp(self.norm2(x))))
        return out

    def forward_with_prefix(self, x: Tensor, prefix: Tensor) -> tuple[Tensor, Tensor]:
        """Same block with extra tokens ``prefix (B, P, C)`` (e.g. a class token) beside the map.

        The mixer must provide ``forward_with_prefix`` (e.g. ``minilg.attention.FullAttention``).
        """
        mixer_with_prefix = getattr(self.mixer, "forward_with_prefix", None)
        if mixer_with_prefix is None:
            raise ValueError(f"{type(self.mixer).__name__} does not support prefix tokens")
        y, p = mixer_with_prefix(self.norm1(x), self.norm1(prefix))
        x = x + self.drop_path(self.scale1(y))
        prefix = prefix + self.drop_path(self.scale1(p))
        x = x + self.drop_path(self.scale2(self.mlp(self.norm2(x))))
        prefix = prefix + self.drop_path(self.scale2(self.mlp(self.norm2(prefix))))
        return x, prefix

    def macs(self, height: int, width: int, num_prefix: int = 0) -> int:
        """Mixer plus MLP MACs on an ``height x width`` map (plus ``num_prefix`` extra tokens)."""
        if num_prefix:
            mixer = module_macs(self.mixer, height, width, num_prefix=num_prefix)
            # The token-wise MLP sees the map and the prefix tokens as one row of tokens.
            return mixer + module_macs(self.mlp, height * width + num_prefix, 1)
        return self.mixer.macs(height, width) + module_macs(self.mlp, height, width)
