"""Full multi-head self-attention, MSA (ViT / DeiT; GG Eq. 3-4, HAT Eq. 5).

Every token attends to every other: one group of ``N = H*W`` tokens.
``Omega(MSA) = 4 N C^2 + 2 N^2 C`` (GG Eq. 4): ``3NC^2`` for Q, K, V, ``N^2 C`` for ``QK^T``,
``N^2 C`` for ``AV`` and ``NC^2`` for the output projection (HAT's Eq. 5 omits the last).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from minilg.attention.base import TokenMixer
from minilg.attention.core import GroupAttention, check_dim_heads


def msa_macs(tokens: int, dim: int) -> int:
    """Omega(MSA) = 4 N C^2 + 2 N^2 C (GG Eq. 4), in MACs."""
    return 4 * tokens * dim**2 + 2 * tokens**2 * dim


class FullAttention(TokenMixer):
    """MSA over all ``H*W`` tokens (plus optional prefix tokens such as DeiT's class token).

    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; with prefix tokens ``(B, P, C)`` use
    :meth:`forward_with_prefix`.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        check_dim_heads(dim, heads)
        self.dim = dim
        self.heads = heads
        self.attn = GroupAttention(dim, heads, qkv_bias=qkv_bias)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        _, height, _, _ = x.shape
        tokens = rearrange(x, "b h w c -> b 1 (h w) c")  # a single group holding every token
        out: Tensor = rearrange(self.attn(tokens), "b 1 (h w) c -> b h w c", h=height)
        return out

    def forward_with_prefix(self, x: Tensor, prefix: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, H, W, C)``, ``prefix (B, P, C)`` -> both updated; all ``P + HW`` attend."""
        self.check_input(x)
        num_prefix, height = prefix.shape[1], x.shape[1]
        tokens = torch.cat([prefix, rearrange(x, "b h w c -> b (h w) c")], dim=1)
        out = self.attn(tokens[:, None])[:, 0]
        grid = rearrange(out[:, num_prefix:], "b (h w) c -> b h w c", h=height)
        return grid, out[:, :num_prefix]

    def macs(self, height: int, width: int, num_prefix: int = 0) -> int:
        """``4 N C^2 + 2 N^2 C`` with ``N = H*W + num_prefix`` (GG Eq. 4)."""
        return msa_macs(height * width + num_prefix, self.dim)
