"""What backbones are built from: stems (patch embedding, convolutional stems), downsampling
layers (patch merging, strided convolutions) and the pre-norm transformer block.

The MLPs, stochastic depth, layer scale and norms the blocks use are in :mod:`minilg.nn`.

Everything works on channels-last maps ``(B, H, W, C)`` and reports its exact MACs for an input
of size ``H x W`` (matmul and conv multiply-accumulates only; see :mod:`minilg.complexity`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from minilg.attention.base import TokenMixer
from minilg.attention.core import linear_macs
from minilg.attention.grouping import padded_size
from minilg.nn import DropPath, LayerScale, NormFactory


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

    def forward_with_extra(
        self, x: Tensor, extra: Tensor, **mixer_args: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Same block with extra tokens ``extra (B, T, C)`` (class or aggregation tokens).

        The mixer updates map and extra tokens together (``mixer.forward_with_extra``, which
        also receives ``mixer_args``: a SALG stage passes its region ``labels``); the MLP runs
        on each token. Stochastic depth drops a sample's whole branch: one mask per sample for
        the map and its extra tokens.
        """
        y, e = self.mixer.forward_with_extra(self.norm1(x), self.norm1(extra), **mixer_args)
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
# Stems and downsampling layers for the papers beyond Swin
# --------------------------------------------------------------------------------------------


class NoDownsample(nn.Identity):
    """The first stage's downsampling: none (the stem brought the map to stride 4).

    ``out_size(H, W) = (H, W)``, no MACs, no parameters (so no state-dict keys).
    """

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def macs(self, height: int, width: int) -> int:
        return 0


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
