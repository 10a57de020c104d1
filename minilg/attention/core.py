"""Multi-head attention over groups of tokens: the one attention kernel every mixer uses.

Every mechanism in minilg reduces to the same computation (GG Eq. 3, Swin Eq. 4):

    Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V

applied independently to *groups* of tokens: one group for full MSA, one group per window for
W-MSA, one per dilated partition for Glance, one per window with pooled keys for Focal. Only how
the groups are formed (splitting, pooling, masking) differs between papers, so this module holds
the shared pieces:

* :func:`split_heads` / :func:`merge_heads` -- ``(B, G, T, C) <-> (B, G, heads, T, C/heads)``;
* :func:`attention` -- the math above via :func:`torch.nn.functional.scaled_dot_product_attention`
  with an optional additive bias and a boolean mask of allowed (query, key) pairs;
* :class:`GroupAttention` -- self-attention inside groups with its qkv and output projections.

MACs convention: a Linear ``C_in -> C_out`` on ``T`` tokens costs ``T * C_in * C_out`` MACs;
``Q K^T`` and ``A V`` cost ``T_q * T_k * C`` each. Softmax, bias adds and masking cost nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``(B, G, T, heads*d) -> (B, G, heads, T, d)``."""
    return rearrange(x, "b g t (heads d) -> b g heads t d", heads=heads)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, G, heads, T, d) -> (B, G, T, heads*d)``."""
    return rearrange(x, "b g heads t d -> b g t (heads d)")


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor | None = None,
    allowed: Tensor | None = None,
) -> Tensor:
    """Scaled dot-product attention per group and head.

    Args:
        q: queries ``(B, G, heads, Tq, d)``.
        k, v: keys and values ``(B, G, heads, Tk, d)``.
        bias: additive bias broadcastable to ``(B, G, heads, Tq, Tk)`` (relative position bias).
        allowed: boolean mask broadcastable to ``(B, G, heads, Tq, Tk)``; ``False`` removes that
            key for that query (padding, shifted-window regions, irregular regions).

    Returns:
        ``(B, G, heads, Tq, d)``. A query whose keys are *all* masked gets a zero output rather
        than NaN (it attends to nothing, so it receives nothing).
    """
    batch, groups, _, tokens_q, _ = q.shape
    tokens_k = k.shape[-2]
    mask: Tensor | None = bias.to(q.dtype) if bias is not None else None
    if allowed is not None:
        # A large finite negative instead of -inf keeps fully-masked rows finite (uniform weights);
        # those rows are zeroed below.
        block = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
        block = block.masked_fill(~allowed, torch.finfo(q.dtype).min)
        mask = block if mask is None else mask + block
    if mask is not None and mask.ndim > 3:
        # Masks that differ per group or sample: spell out (B, G) so they flatten like q, k, v.
        mask = mask.expand(batch, groups, mask.shape[-3], tokens_q, tokens_k)
        mask = rearrange(mask, "b g heads tq tk -> (b g) heads tq tk")
    # SDPA's fused CPU kernels take 4-D (batch, heads, tokens, dim): fold groups into the batch.
    q4, k4, v4 = (rearrange(t, "b g heads t d -> (b g) heads t d") for t in (q, k, v))
    out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask)
    out = rearrange(out, "(b g) heads t d -> b g heads t d", b=batch)
    if allowed is not None:
        has_key = allowed.any(dim=-1, keepdim=True)
        out = out * has_key.to(out.dtype)
    return out


class GroupAttention(nn.Module):
    """Multi-head self-attention inside each group: ``(B, G, T, C) -> (B, G, T, C)``.

    Holds the qkv projection ``W^{q,k,v}`` (one Linear ``C -> 3C``) and the output projection
    ``W^o`` of the standard transformer block (GG Eq. 3, ViT Eq. 2). Mixers call
    :meth:`project_qkv` and :meth:`project_out` around their own grouping.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        check_dim_heads(dim, heads)
        self.dim = dim
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(..., C) -> 3 x (..., C)``: queries, keys, values of every token."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return q, k, v

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        bias: Tensor | None = None,
        allowed: Tensor | None = None,
    ) -> Tensor:
        """Grouped ``q (B, G, Tq, C)``, ``k, v (B, G, Tk, C)`` -> ``(B, G, Tq, C)``, unprojected."""
        heads = self.heads
        out = attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads),
                        bias=bias, allowed=allowed)
        return merge_heads(out)

    def forward(
        self, x: Tensor, bias: Tensor | None = None, allowed: Tensor | None = None
    ) -> Tensor:
        """Self-attention inside each group: ``(B, G, T, C) -> (B, G, T, C)``."""
        q, k, v = self.project_qkv(x)
        out: Tensor = self.proj(self.attend(q, k, v, bias=bias, allowed=allowed))
        return out


def check_dim_heads(dim: int, heads: int) -> None:
    """Raise a ValueError naming the argument when ``dim`` cannot be split into ``heads``."""
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got dim={dim}")
    if heads < 1:
        raise ValueError(f"heads must be a positive integer, got heads={heads}")
    if dim % heads != 0:
        allowed = [h for h in range(1, dim + 1) if dim % h == 0]
        raise ValueError(
            f"dim={dim} is not divisible by heads={heads}; heads must divide dim "
            f"(allowed values: {allowed[:12]}{'...' if len(allowed) > 12 else ''})"
        )


def attention_macs(tokens_q: int, tokens_k: int, dim: int) -> int:
    """MACs of ``Q K^T`` plus ``A V`` for one group: ``2 * Tq * Tk * C`` (summed over heads)."""
    return 2 * tokens_q * tokens_k * dim


def linear_macs(tokens: int, dim_in: int, dim_out: int) -> int:
    """MACs of a Linear (or 1x1 conv) on ``tokens`` tokens; the bias add is not counted."""
    return tokens * dim_in * dim_out
