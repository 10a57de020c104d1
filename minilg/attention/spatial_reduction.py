"""Spatial-reduction attention, SRA (PVT, Wang et al. 2021, Sec. 3.3).

All ``N = H*W`` tokens are queries; keys and values come from a map shrunk ``R`` times along
each side by a ``R x R`` convolution with stride ``R`` followed by LayerNorm (PVT's
``nn.LayerNorm(C)`` with the default eps 1e-5; PVT's block norms use 1e-6). Every query sees
the whole image, but only at a coarse ``(H/R) x (W/R)`` resolution: a global, not local, mixer.

MACs (``N' = ceil(H/R) * ceil(W/R)`` reduced tokens)::

    q projection N C^2 + reduction conv N' R^2 C^2 + k, v projections 2 N' C^2
    + attention 2 N N' C + output projection N C^2

(``N' R^2 = N`` when ``R`` divides the map.) Maps that ``R`` does not divide are zero-padded on
the bottom/right before the reduction conv, as a padded convolution would: every real token
then feeds some key, none is dropped. With ``R = 1`` there is no conv and no norm (PVT stage 4).
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from minilg.attention.core import AttentionMixer, KeySource, attention_macs, linear_macs
from minilg.attention.grouping import pad_to_multiple, padded_size
from minilg.validate import check_size, positive_int


def sra_macs(height: int, width: int, dim: int, reduction: int) -> int:
    """Closed-form MACs of :class:`SpatialReductionAttention` (see module docstring)."""
    height, width = check_size(height, width)
    tokens = height * width
    reduced = padded_size(height, reduction) * padded_size(width, reduction) // reduction**2
    conv = reduced * reduction**2 * dim * dim if reduction > 1 else 0
    return (
        linear_macs(tokens, dim, dim)  # q
        + conv
        + linear_macs(reduced, dim, 2 * dim)  # k, v
        + attention_macs(tokens, reduced, dim)
        + linear_macs(tokens, dim, dim)  # output projection
    )


class SpatialReductionAttention(AttentionMixer):
    """PVT's SRA: ``(B, H, W, C) -> (B, H, W, C)`` with keys/values reduced by ``R`` per side."""

    def __init__(self, dim: int, heads: int, reduction: int = 1, qkv_bias: bool = True) -> None:
        super().__init__(dim, heads, qkv_bias=qkv_bias, projections="q_kv")
        self.reduction = positive_int(reduction, "reduction")
        self.reduce: nn.Module = nn.Identity()
        self.norm: nn.Module = nn.Identity()
        if reduction > 1:
            self.reduce = nn.Conv2d(dim, dim, kernel_size=reduction, stride=reduction)
            self.norm = nn.LayerNorm(dim)  # PVT: the default eps 1e-5 (block norms: 1e-6)

    def reduced_tokens(self, x: Tensor) -> Tensor:
        """``(B, H, W, C) -> (B, N', C)``: the reduced key/value tokens (before projection)."""
        if self.reduction == 1:
            return rearrange(x, "b h w c -> b (h w) c")
        x = pad_to_multiple(x, (self.reduction, self.reduction))
        reduced = self.reduce(rearrange(x, "b h w c -> b c h w"))
        tokens: Tensor = self.norm(rearrange(reduced, "b c h w -> b (h w) c"))
        return tokens

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        height = x.shape[1]
        q = self.q(rearrange(x, "b h w c -> b 1 (h w) c"))  # one group: every token
        k, v = self.project_kv(self.reduced_tokens(x)[:, None])
        out: Tensor = self.proj(self.attention(q, KeySource(k, v)))
        return rearrange(out, "b 1 (h w) c -> b h w c", h=height)

    def macs(self, height: int, width: int) -> int:
        return sra_macs(height, width, self.dim, self.reduction)


__all__ = ["SpatialReductionAttention", "sra_macs"]
