"""Building blocks shared by every backbone: MLP, DropPath, LayerScale, patch embedding, patch
merging, and the pre-norm transformer block.

Everything works on channels-last maps ``(B, H, W, C)`` and reports its exact MACs for an input
of size ``H x W`` (matmul and conv multiply-accumulates only; see :mod:`minilg.complexity`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from minilg.attention.base import TokenMixer
from minilg.attention.core import linear_macs
from minilg.attention.grouping import padded_size

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


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: ``Conv(P x P, stride P)`` then optional LayerNorm.

    Shapes: ``(B, 3, H, W) -> (B, ceil(H/P), ceil(W/P), C)``; inputs that ``P`` does not divide
    are zero-padded on the bottom/right. MACs: ``H' W' P^2 C_in C``.
    """

    def __init__(
        self, in_chans: int, dim: int, patch: int, norm: bool = True, eps: float = 1e-5
    ) -> None:
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch size must be >= 1, got patch={patch}")
        self.in_chans, self.dim, self.patch = in_chans, dim, patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm: nn.Module = nn.LayerNorm(dim, eps=eps) if norm else nn.Identity()

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        patch = self.patch
        return padded_size(height, patch) // patch, padded_size(width, patch) // patch

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        x = pad_for_conv(x, self.patch, self.patch, 0)
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

    def __init__(self, dim: int, out_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.out_dim = dim, out_dim
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
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
    with ``macs(H, W)`` (the plain :class:`Mlp`, or :class:`ConvMlp`). ``norm`` may be
    ``nn.Identity`` for mechanisms that normalise inside their branches (HAT-Net).
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

    #: Without autograd, batches whose map holds more elements than this run in slices of
    #: samples, so the block's transient memory (qkv, windows, the MLP's 4C hidden layer) stays
    #: bounded at any batch size. Samples are independent, so the output is the same.
    inference_chunk_elements: int = 1 << 23

    def forward(self, x: Tensor) -> Tensor:
        per_sample = x[0].numel() if x.shape[0] else 1
        if torch.is_grad_enabled() or x.numel() <= self.inference_chunk_elements:
            return self._forward(x)
        out = torch.empty_like(x)
        step = max(1, self.inference_chunk_elements // per_sample)
        for start in range(0, x.shape[0], step):
            out[start : start + step] = self._forward(x[start : start + step])
        return out

    def _forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.scale1(self.mixer(self.norm1(x))))
        out: Tensor = x + self.drop_path(self.scale2(self.mlp(self.norm2(x))))
        return out

    def forward_with_extra(self, x: Tensor, extra: Tensor) -> tuple[Tensor, Tensor]:
        """Same block with extra tokens ``extra (B, T, C)`` (class or aggregation tokens).

        The mixer updates map and extra tokens together (``mixer.forward_with_extra``); the MLP
        runs on each token. Stochastic depth drops a sample's whole branch: one mask per sample
        for the map and its extra tokens.
        """
        y, e = self.mixer.forward_with_extra(self.norm1(x), self.norm1(extra))
        keep = self.drop_path.sample_mask(x)
        x = x + self.drop_path.apply_mask(self.scale1(y), keep)
        extra = extra + self.drop_path.apply_mask(self.scale1(e), keep)
        keep = self.drop_path.sample_mask(x)
        x = x + self.drop_path.apply_mask(self.scale2(self.mlp(self.norm2(x))), keep)
        extra = extra + self.drop_path.apply_mask(self.scale2(self.mlp(self.norm2(extra))), keep)
        return x, extra

    def macs(self, height: int, width: int, extra_tokens: int = 0) -> int:
        """Mixer plus MLP MACs on an ``height x width`` map (plus ``extra_tokens`` tokens)."""
        if extra_tokens:
            mixer = module_macs(self.mixer, height, width, extra_tokens=extra_tokens)
            # The token-wise MLP sees the map and the extra tokens as one row of tokens.
            return mixer + module_macs(self.mlp, height * width + extra_tokens, 1)
        return self.mixer.macs(height, width) + module_macs(self.mlp, height, width)


# --------------------------------------------------------------------------------------------
# Seams for the papers beyond Swin: norms, convolutional MLPs, stems and downsampling layers
# --------------------------------------------------------------------------------------------


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


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> tuple[int, int]:
    """Output length, and the extra bottom/right zero padding so every real token is covered.

    ``n = ceil((size - k + p) / s) + 1`` windows reach the last real token; the input is padded
    by ``s (n - 1) + k - 2p - size`` when that is positive (for ``k = s = 2``: odd sizes get 1).
    """
    reach = size - kernel + padding
    needed = -(-reach // stride) + 1 if reach > 0 else 1
    natural = (size + 2 * padding - kernel) // stride + 1 if size + 2 * padding >= kernel else 0
    if natural >= needed:
        return natural, 0
    return needed, stride * (needed - 1) + kernel - 2 * padding - size


def pad_for_conv(x: Tensor, kernel: int, stride: int, padding: int) -> Tensor:
    """Zero-pad ``(B, C, H, W)`` bottom/right so a strided conv covers every real token."""
    extra_h = _conv_out(x.shape[2], kernel, stride, padding)[1]
    extra_w = _conv_out(x.shape[3], kernel, stride, padding)[1]
    return F.pad(x, (0, extra_w, 0, extra_h)) if extra_h or extra_w else x


class ConvDownsample(nn.Module):
    """``Conv(k, stride s, padding p)`` then a norm, on channels-last maps.

    ``(B, H, W, C_in) -> (B, H', W', C_out)``. Focal's between-stage patch embedding is
    ``k = s = 2, p = 0`` + LayerNorm; HAT-Net's ``k = 3, s = 2, p = 1`` + GroupNorm(1, C).
    Sizes the stride does not fit get extra zero padding at the bottom/right, so no real token
    is dropped (as :class:`PatchMerging` does). MACs: ``H' W' k^2 C_in C_out``.
    """

    def __init__(
        self, dim: int, out_dim: int, kernel: int = 2, stride: int = 2, padding: int = 0,
        norm: NormFactory = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.dim, self.out_dim, self.kernel, self.stride, self.padding = (
            dim, out_dim, kernel, stride, padding)
        self.conv = nn.Conv2d(dim, out_dim, kernel, stride, padding)
        self.norm = norm(out_dim)

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        k, s, p = self.kernel, self.stride, self.padding
        return _conv_out(height, k, s, p)[0], _conv_out(width, k, s, p)[0]

    def forward(self, x: Tensor) -> Tensor:
        x = pad_for_conv(rearrange(x, "b h w c -> b c h w"), self.kernel, self.stride,
                         self.padding)
        out: Tensor = self.norm(rearrange(self.conv(x), "b c h w -> b h w c"))
        return out

    def macs(self, height: int, width: int) -> int:
        out_h, out_w = self.out_size(height, width)
        return out_h * out_w * self.kernel**2 * self.dim * self.out_dim


class ConvStem(nn.Sequential):
    """A stem of 3x3 convolutions: ``(B, 3, H, W) -> (B, H', W', C)`` channels-last.

    ``widths[i]`` channels with stride ``strides[i]`` (padding 1); between two convolutions a
    norm and an activation (HAT-Net: ``3 -> 16`` s2, GN, SiLU, ``16 -> C`` s2; SALG: three convs
    with strides 2, 2, 1). The modules are numbered as in an ``nn.Sequential`` (``0`` conv,
    ``1`` norm, ``2`` activation, ``3`` conv, ...). MACs: ``sum H_i W_i 9 C_in C_out``.
    """

    def __init__(
        self, in_chans: int, widths: Sequence[int], strides: Sequence[int],
        norm: Callable[[int], nn.Module] = lambda c: nn.GroupNorm(1, c, eps=1e-6),
        act: Callable[[], nn.Module] = nn.SiLU, kernel: int = 3,
    ) -> None:
        layers: list[nn.Module] = []
        for i, (width, stride) in enumerate(zip(widths, strides, strict=True)):
            if i > 0:
                layers += [norm(widths[i - 1]), act()]
            layers.append(nn.Conv2d(in_chans if i == 0 else widths[i - 1], width, kernel,
                                    stride, kernel // 2))
        super().__init__(*layers)
        self.in_chans, self.dim = in_chans, widths[-1]

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self if isinstance(m, nn.Conv2d)]

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        for conv in self.convs():
            k, s, p = conv.kernel_size[0], conv.stride[0], int(conv.padding[0])
            height, width = _conv_out(height, k, s, p)[0], _conv_out(width, k, s, p)[0]
        return height, width

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        for layer in self:
            x = layer(x)
        out: Tensor = rearrange(x, "b c h w -> b h w c")
        return out

    def macs(self, height: int, width: int) -> int:
        total = 0
        for conv in self.convs():
            k, s, p = conv.kernel_size[0], conv.stride[0], int(conv.padding[0])
            height, width = _conv_out(height, k, s, p)[0], _conv_out(width, k, s, p)[0]
            total += height * width * k * k * conv.in_channels * conv.out_channels
        return total


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
        self.conv1 = nn.Sequential(norm(dim), nn.Linear(dim, self.hidden, bias=False), act())
        self.conv2 = nn.Sequential(
            nn.Conv2d(self.hidden, self.hidden, kernel, padding=kernel // 2, groups=self.hidden,
                      bias=False), act())
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
        return 2 * linear_macs(tokens, self.dim, self.hidden) + depthwise
