"""Full multi-head self-attention, MSA (ViT / DeiT; GG Eqs. 3-4, HAT Eq. 5).

Every token attends to every other: one group of ``N = H*W`` tokens (plus extra tokens such as
DeiT's class token, which attend and are attended like any other).
``Omega(MSA) = 4 N C^2 + 2 N^2 C`` (GG Eq. 4): ``3NC^2`` for Q, K, V, ``N^2 C`` for ``QK^T``,
``N^2 C`` for ``AV`` and ``NC^2`` for the output projection (HAT's Eq. 5 omits the last).

Optional relative position bias over the whole map (``position_bias=(H, W)``): a Swin-style
table of ``(2H - 1)(2W - 1)`` entries per head built for the *nominal* feature size. Smaller maps
index the same table (offsets of a smaller map are a subset); larger maps are a ValueError naming
both sizes (no interpolation: build the model for the larger size). Extra tokens get no position
bias. This is what GG Table 4b's "MSA in stages 3-4" row needs to keep the position information
Swin's window attention has there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from minilg.attention.core import AttentionMixer, KeySource
from minilg.attention.position import RelativePositionBias
from minilg.validate import as_pair, check_size


def msa_macs(tokens: int, dim: int) -> int:
    """Omega(MSA) = 4 N C^2 + 2 N^2 C (GG Eq. 4), in MACs."""
    return 4 * tokens * dim**2 + 2 * tokens**2 * dim


class FullAttention(AttentionMixer):
    """MSA over all ``H*W`` tokens: ``(B, H, W, C) -> (B, H, W, C)``.

    With extra tokens ``(B, T, C)`` use :meth:`forward_with_extra`: all ``T + HW`` tokens attend.
    ``position_bias``: the nominal map size ``(H, W)`` of a relative position bias, or ``None``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        qkv_bias: bool = True,
        position_bias: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__(dim, heads, qkv_bias=qkv_bias)
        self.position_bias = (
            RelativePositionBias(heads, as_pair(position_bias, "position_bias"))
            if position_bias is not None else None
        )

    def _attend_tokens(self, tokens: Tensor, size: tuple[int, int], extra: int) -> Tensor:
        """``(B, T + HW, C)`` -> same, all tokens as queries and keys of one group."""
        q, k, v = self.project_qkv(tokens[:, None])
        bias = None
        if self.position_bias is not None:
            bias = F.pad(self.position_bias(size), (extra, 0, extra, 0))  # extra tokens: 0
        out = self.attention(q, KeySource(k, v, bias=bias))
        projected: Tensor = self.proj(out[:, 0])
        return projected

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        _, height, width, _ = x.shape
        out = self._attend_tokens(rearrange(x, "b h w c -> b (h w) c"), (height, width), 0)
        grid: Tensor = rearrange(out, "b (h w) c -> b h w c", h=height)
        return grid

    def forward_with_extra(self, x: Tensor, extra: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, H, W, C)``, ``extra (B, T, C)`` -> both updated; all ``T + HW`` attend."""
        self.check_input(x)
        _, height, width, _ = x.shape
        num_extra = extra.shape[1]
        tokens = torch.cat([extra, rearrange(x, "b h w c -> b (h w) c")], dim=1)
        tokens = self._attend_tokens(tokens, (height, width), num_extra)
        grid = rearrange(tokens[:, num_extra:], "b (h w) c -> b h w c", h=height)
        return grid, tokens[:, :num_extra]

    def macs(self, height: int, width: int, extra_tokens: int = 0) -> int:
        """``4 N C^2 + 2 N^2 C`` with ``N = H*W + extra_tokens`` (GG Eq. 4)."""
        height, width = check_size(height, width)
        return msa_macs(height * width + extra_tokens, self.dim)


__all__ = ["FullAttention", "msa_macs"]
