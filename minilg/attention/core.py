"""One attention for every key source: the kernel every mixer in minilg feeds.

Every mechanism of the four papers computes (GG Eq. 3, Swin Eq. 4, Focal Eq. 3, HAT Eqs. 8, 12,
SALG Eq. 2)

    Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B + mask) V

for *groups* of queries, and only the keys differ:

* the same group (full MSA, W-MSA / SW-MSA windows, Glance partitions);
* a gathered neighbourhood around each query window (Focal's ring, SALG's coverage areas);
* pooled maps (Focal's coarse levels, HAT-Net's global step, PVT's spatial reduction);
* extra tokens (a class token, SALG's aggregation tokens).

So a mechanism hands :func:`attend` its grouped queries ``(B, G, Tq, C)`` and one or more
:class:`KeySource` s, each with keys and values ``(B, G, Tk, C)``, an optional relative position
bias and an optional boolean mask of allowed (query, key) pairs. The sources are concatenated
along the key axis and one softmax runs over all of them. :class:`AttentionMixer` adds the
projections (one fused ``qkv`` Linear as Swin and Focal, or separate ``q`` and ``kv`` as PVT and
HAT-Net's global step) and the output projection ``proj``.

Broadcasting: biases and masks carry no batch axis unless they depend on the content (SALG's
regions). A mask with a group axis folds the groups into SDPA's *head* axis, ``(B, G*heads, T,
d)``, so a ``(G, heads, Tq, Tk)`` mask broadcasts over the batch and is never materialised per
sample; a mask without one (a position bias alone, or none) folds the groups into SDPA's *batch*
axis, ``(B*G, heads, T, d)``, where q, k and v are strided views of the projections: no copies.

Fully masked rows (padded queries, empty regions) output exactly zero, with finite gradients, in
every dtype: such rows are unmasked before the softmax (so no ``-inf - -inf = NaN``) and their
output is replaced by zeros afterwards (``masked_fill``, not a multiplication: ``NaN * 0`` is NaN).

MACs convention: a Linear ``C_in -> C_out`` on ``T`` tokens costs ``T * C_in * C_out`` MACs;
``Q K^T`` and ``A V`` cost ``T_q * T_k * C`` each. Softmax, bias adds and masking cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from minilg.attention.base import TokenMixer, reference_math, using_reference_math
from minilg.attention.scopes import scope
from minilg.validate import positive_int


@dataclass(frozen=True)
class KeySource:
    """Keys and values one group of queries attends to, with their bias and mask.

    Attributes:
        k, v: ``(B, G, Tk, C)`` (``G`` may be 1 to share the keys among all query groups).
        bias: additive bias broadcastable to ``(G, heads, Tq, Tk)`` (a relative position bias),
            or ``(B, G, heads or 1, Tq, Tk)`` when it depends on the sample: it may then hold
            ``-inf`` (a mask already applied, as SALG's regions; no row may be all ``-inf``).
        allowed: boolean mask broadcastable to ``(B, G, heads, Tq, Tk)``; ``False`` removes that
            key for that query (padding, other regions). Leave out the batch axis unless the mask
            depends on the sample.
        heads_first: ``k, v`` are ``(B, G, heads, Tk, d)`` instead, gathered straight into the
            kernel's layout (Focal's levels): :func:`attend` folds them without a copy.
    """

    k: Tensor
    v: Tensor
    bias: Tensor | None = None
    allowed: Tensor | None = None
    heads_first: bool = False

    def token_layout(self) -> KeySource:
        """The same source with ``k, v (B, G, Tk, C)`` (a copy when ``heads_first``)."""
        if not self.heads_first:
            return self
        k, v = (rearrange(t, "b g h t d -> b g t (h d)") for t in (self.k, self.v))
        return KeySource(k, v, self.bias, self.allowed)


def _as_5d(t: Tensor) -> Tensor:
    """Prepend singleton axes up to ``(B, G, heads, Tq, Tk)``."""
    return t.reshape((1,) * (5 - t.ndim) + tuple(t.shape))


def combined_mask(
    sources: Sequence[KeySource], tokens_q: int, dtype: torch.dtype
) -> Tensor | None:
    """One additive mask ``(b, g, h, Tq, sum Tk)`` for all sources (``-inf`` where not allowed).

    ``b, g, h`` are 1 unless some source's bias or mask varies along that axis. ``None`` when no
    source has a bias or a mask.
    """
    if all(s.bias is None and s.allowed is None for s in sources):
        return None
    parts: list[Tensor] = []
    for source in sources:
        tokens_k = source.k.shape[-2]
        bias = source.bias
        if bias is not None and bias.ndim == 5 and bias.shape[-2:] == (tokens_q, tokens_k):
            part = bias.to(dtype)  # a per-sample bias-and-mask already at full size (SALG's)
        else:
            part = torch.zeros((1, 1, 1, tokens_q, tokens_k), dtype=dtype,
                               device=source.k.device)
            if bias is not None:
                part = part + _as_5d(bias.to(dtype))
        if source.allowed is not None:
            part = part.masked_fill(~_as_5d(source.allowed), float("-inf"))
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    lead = [max(p.shape[axis] for p in parts) for axis in range(3)]
    return torch.cat([p.expand(*lead, tokens_q, p.shape[-1]) for p in parts], dim=-1)


#: Another implementation of :func:`attend` for the ``with attending_with(fn)`` block (the
#: benchmark's plain baseline); ``None``: the core's own.
AttendFn = Callable[[Tensor, Sequence["KeySource"], int], Tensor]
_ATTEND_WITH: ContextVar[AttendFn | None] = ContextVar("minilg_attend_with", default=None)


@contextmanager
def attending_with(fn: AttendFn) -> Iterator[None]:
    """Every :func:`attend` inside the block calls ``fn(q, sources, heads)`` instead (this thread
    only): how the benchmark runs every mixer through its plain baseline, same key sources."""
    token = _ATTEND_WITH.set(fn)
    try:
        yield
    finally:
        _ATTEND_WITH.reset(token)


def attend(
    q: Tensor, sources: Sequence[KeySource], heads: int,
    cache: MaskCache | None = None,
) -> Tensor:
    """Multi-head attention of grouped queries over concatenated key sources.

    Args:
        q: queries ``(B, G, Tq, C)``, ``C = heads * d``.
        sources: one or more :class:`KeySource`; all keys of all sources share one softmax.
        heads: number of heads; scale ``d^-1/2``.
        cache: where to keep the kernel's mask (a mixer's own dictionary): built once per
            bias, mask, batch and device while no gradient flows into them (:func:`kernel_mask`).

    Returns:
        ``(B, G, Tq, C)``, heads merged, before the output projection. Queries whose keys are all
        masked get exactly zero.
    """
    override = _ATTEND_WITH.get()
    if override is not None:
        return override(q, [s.token_layout() for s in sources], heads)
    with scope("attend"):
        batch, groups = q.shape[:2]
        (fold, unfold), mask, has_key = cached_kernel_mask(q, sources, heads, cache)
        q4 = rearrange(q, fold, h=heads)
        k4, v4 = _concatenated(sources, batch, groups, fold, heads)
        with scope("kernel"):
            kernel = explicit_attention if using_reference_math() else fused_attention
            out = kernel(q4, k4, v4, mask)
        if has_key is not None:
            out = out.masked_fill(~has_key, 0.0)
        return rearrange(out, unfold, g=groups)


#: Groups into SDPA's batch axis (q, k, v stay views) or into its head axis (the mask broadcasts
#: over the batch): ``(fold, unfold)`` patterns.
FOLD_BATCH = ("b g t (h d) -> (b g) h t d", "(b g) h t d -> b g t (h d)")
FOLD_HEADS = ("b g t (h d) -> b (g h) t d", "b (g h) t d -> b g t (h d)")
KernelMask = tuple[tuple[str, str], Tensor | None, Tensor | None]
MaskCache = dict[tuple[object, ...], tuple[list[Tensor | None], KernelMask]]


def kernel_mask(
    q: Tensor, sources: Sequence[KeySource], heads: int, once: bool = False
) -> KernelMask:
    """``(fold, mask, has_key)``: how :func:`attend` folds groups and the mask in that layout.

    ``has_key`` marks queries with at least one key (``None``: all of them, decided here when
    ``once``, the mask being kept for later calls). A mask without batch or group axis keeps
    groups in SDPA's batch axis; one with a group axis folds groups into heads, or, when
    ``once`` and the per-batch mask is smaller than the q, k, v copies that saves, is expanded
    to ``(B*G, h, Tq, Tk)`` so q, k and v stay views; a per-sample mask with a group axis
    (SALG's regions) already has that layout.
    """
    batch, groups, tokens_q, _ = q.shape
    mask = combined_mask(sources, tokens_q, q.dtype)
    has_key: Tensor | None = None
    if mask is not None and any(s.allowed is not None for s in sources):
        # A row of -inf only would softmax to NaN: give it zeros, and zero its output after.
        has_key = (mask != float("-inf")).any(dim=-1, keepdim=True)
        mask = mask.masked_fill(~has_key, 0.0)
        if once and bool(has_key.all()):
            has_key = None
    if not using_reference_math() and (mask is None or mask.shape[:2] == (1, 1)):
        # No batch or group axis in the mask (a position bias, a mask all groups share): q, k, v
        # are strided views and the mask broadcasts (kept 4-d: 3-d sends CPU SDPA to a slower path).
        return FOLD_BATCH, _map(lambda t: t[:, 0], mask), _map(lambda t: t[:, 0], has_key)
    per_sample = (not using_reference_math() and mask is not None
                  and mask.shape[:2] == (batch, groups))
    if per_sample or (once and mask is not None and mask.shape[0] == 1
                      and _expanding_pays(q, sources, mask)):

        def per_batch(t: Tensor) -> Tensor:
            expanded = t.expand(batch, *t.shape[1:])  # a view of a per-sample mask
            return rearrange(expanded, "b g h tq tk -> (b g) h tq tk")

        return FOLD_BATCH, _map(per_batch, mask), _map(per_batch, has_key)

    def fold(t: Tensor) -> Tensor:
        return _fold_mask(t, groups, heads)

    return FOLD_HEADS, _map(fold, mask), _map(fold, has_key)


def _map(fn: Callable[[Tensor], Tensor], t: Tensor | None) -> Tensor | None:
    return None if t is None else fn(t)


def _expanding_pays(q: Tensor, sources: Sequence[KeySource], mask: Tensor) -> bool:
    """True when a per-batch mask ``(B*G, h, Tq, Tk)`` is no larger than what folding groups
    into heads copies (q, and the keys and values not already head-major)."""
    batch, groups = q.shape[:2]
    copied = q.numel() + sum(2 * batch * groups * s.k.shape[-2] * q.shape[-1]
                             for s in sources if not s.heads_first)
    return batch * groups * mask[0, 0].numel() <= copied


def _version(t: Tensor | None) -> int | None:
    """``t``'s version counter (``-1`` for ``None``), or ``None`` when it has none (an inference
    tensor) or a gradient may flow into it: such a mask is never kept."""
    if t is None:
        return -1
    if t.requires_grad and torch.is_grad_enabled():
        return None
    try:
        return t._version
    except RuntimeError:
        return None


def cached_kernel_mask(
    q: Tensor, sources: Sequence[KeySource], heads: int, cache: MaskCache | None
) -> KernelMask:
    """:func:`kernel_mask`, kept in ``cache`` per (bias and mask objects and their versions,
    batch, groups, queries, dtype, device) while no gradient flows into them, so a mixer whose
    bias and mask are fixed (cached geometry, a bias cached without gradient) builds it once.
    Per-sample masks (SALG's regions, 5-d with a batch axis) are never kept."""
    tensors = [t for s in sources for t in (s.bias, s.allowed)]
    versions = [_version(t) for t in tensors]
    per_sample = any(t is not None and t.ndim == 5 and t.shape[0] != 1 for t in tensors)
    if cache is None or using_reference_math() or q.is_meta or per_sample or None in versions:
        return kernel_mask(q, sources, heads)
    key = (tuple(id(t) for t in tensors), tuple(versions), tuple(q.shape), heads, q.dtype,
           str(q.device), tuple((s.k.shape[-2], s.heads_first) for s in sources))
    hit = cache.get(key)
    if hit is None:
        mask = kernel_mask(q, sources, heads, once=True)
        if len(cache) >= 8:
            cache.clear()
        hit = cache[key] = (tensors, mask)  # the tensors kept alive: their ids stay theirs
    return hit[1]


def _concatenated(
    sources: Sequence[KeySource], batch: int, groups: int, fold: str, heads: int
) -> tuple[Tensor, Tensor]:
    """Keys and values of all sources folded by ``fold`` and concatenated along the key axis
    (a view, no copy, for a single source whose layout the fold keeps)."""
    ks: list[Tensor] = []
    vs: list[Tensor] = []
    for source in sources:
        if source.heads_first:
            fold_heads = "b g h t d -> " + fold.split("->")[1].strip()
            ks.append(rearrange(source.k.expand(batch, groups, -1, -1, -1), fold_heads))
            vs.append(rearrange(source.v.expand(batch, groups, -1, -1, -1), fold_heads))
        else:
            ks.append(rearrange(source.k.expand(batch, groups, -1, -1), fold, h=heads))
            vs.append(rearrange(source.v.expand(batch, groups, -1, -1), fold, h=heads))
    if len(sources) == 1:
        return ks[0], vs[0]
    return torch.cat(ks, dim=2), torch.cat(vs, dim=2)


def _fold_mask(mask: Tensor, groups: int, heads: int) -> Tensor:
    """``(b, g, h, Tq, Tk) -> (b, g*h or 1, Tq, Tk)`` matching queries folded as ``(g h)``."""
    b, g, h = mask.shape[:3]
    if g == 1 and h == 1:
        return mask[:, 0]
    mask = mask.expand(b, groups, heads, *mask.shape[3:])
    return rearrange(mask, "b g h tq tk -> b (g h) tq tk")


def fused_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """SDPA, except on the CPU when the mask needs a gradient (a learned bias in training).

    There SDPA leaves its fused kernel for a math path with an extra safe-softmax pass; the same
    math with the mask broadcast (never materialised per sample) is faster. No row is all
    ``-inf`` here (:func:`attend` unmasks those rows first), so a plain softmax is safe.
    """
    if mask is not None and mask.requires_grad and q.device.type == "cpu":
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + mask
        return torch.softmax(scores, dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """``softmax(q k^T / sqrt(d) + mask) v`` spelled out, the mask materialised per sample.

    ``q (B, H, Tq, d)``, ``k, v (B, H, Tk, d)``, ``mask`` broadcastable to ``(B, H, Tq, Tk)``.
    A row whose mask is all ``-inf`` gives NaN here, as in any plain softmax.
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask.expand(scores.shape).contiguous()
    return torch.softmax(scores, dim=-1) @ v


Projections = Literal["qkv", "q_kv", "v"]


class AttentionMixer(TokenMixer):
    """A token mixer with multi-head projections around :func:`attend`.

    ``projections``: ``"qkv"`` one fused Linear ``C -> 3C`` (Swin, Focal: channel
    ``s*C + head*d + i`` for ``s`` in q, k, v); ``"q_kv"`` a Linear ``q`` (``C -> C``) and a
    Linear ``kv`` (``C -> 2C``) for keys from another map (PVT, HAT-Net's global step); ``"v"``
    a Linear ``v`` (``C -> C``), values only (GG's Gaze-only ablation). Always an output
    projection ``proj``.
    """

    def __init__(
        self, dim: int, heads: int, *, qkv_bias: bool = True, projections: Projections = "qkv"
    ) -> None:
        super().__init__()
        check_dim_heads(dim, heads)
        self.dim, self.heads = dim, heads
        self.projections: Projections = projections
        if projections == "q_kv":
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        elif projections == "v":
            self.v = nn.Linear(dim, dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(..., C) -> 3 x (..., C)`` with the fused projection."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return q, k, v

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(..., C) -> 2 x (..., C)``: keys and values (``kv``, or the k, v of ``qkv``)."""
        if self.projections == "q_kv":
            k, v = self.kv(x).chunk(2, dim=-1)
            return k, v
        _, k, v = self.project_qkv(x)
        return k, v

    def attention(self, q: Tensor, *sources: KeySource) -> Tensor:
        """:func:`attend` with this mixer's heads: grouped queries ``(B, G, Tq, C)`` over
        ``sources`` -> ``(B, G, Tq, C)``, unprojected."""
        return attend(q, sources, self.heads, self.__dict__.setdefault("_mask_cache", {}))

    def cached_bias(self, key: tuple[object, ...], build: Callable[[], Tensor | None]
                    ) -> Tensor | None:
        """``build()`` (a position bias from this mixer's ``*bias_table`` parameters) once per
        ``key`` while no gradient flows into it (``torch.is_grad_enabled()`` false, or no table
        requires grad), rebuilt when a table changes (its version) or moves; otherwise per call.
        """
        tables: list[Tensor] = [p for name, p in self.named_parameters()
                                if name.endswith("bias_table")]
        if using_reference_math() or (torch.is_grad_enabled()
                                      and any(p.requires_grad for p in tables)):
            return build()
        versions = tuple((id(p), p._version, str(p.device), p.dtype) for p in tables)
        cache: dict[tuple[object, ...], tuple[object, list[Tensor], Tensor | None]] = (
            self.__dict__.setdefault("_bias_cache", {}))
        hit = cache.get(key)
        if hit is None or hit[0] != versions:
            hit = cache[key] = (versions, tables, build())  # tables kept: their ids stay theirs
        return hit[2]

    def projection_macs(self, tokens: int) -> int:
        """MACs of the q, k, v and output projections on ``tokens`` tokens (fused layout)."""
        return linear_macs(tokens, self.dim, 3 * self.dim) + linear_macs(tokens, self.dim, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}"


def check_dim_heads(dim: int, heads: int) -> None:
    """Raise a ValueError naming the argument when ``dim`` cannot be split into ``heads``."""
    dim, heads = positive_int(dim, "dim"), positive_int(heads, "heads")
    if dim % heads != 0:
        allowed = [h for h in range(1, dim + 1) if dim % h == 0]
        shown = ", ".join(map(str, allowed[:12])) + (", ..." if len(allowed) > 12 else "")
        raise ValueError(f"heads must divide dim={dim} (allowed values: {shown}), "
                         f"got heads={heads}")


def attention_macs(tokens_q: int, tokens_k: int, dim: int) -> int:
    """MACs of ``Q K^T`` plus ``A V`` for one group: ``2 * Tq * Tk * C`` (summed over heads)."""
    return 2 * tokens_q * tokens_k * dim


def linear_macs(tokens: int, dim_in: int, dim_out: int) -> int:
    """MACs of a Linear (or 1x1 conv) on ``tokens`` tokens; the bias add is not counted."""
    return tokens * dim_in * dim_out


__all__ = [
    "AttendFn", "AttentionMixer", "KeySource", "attend", "attending_with", "attention_macs",
    "check_dim_heads",
    "combined_mask", "explicit_attention", "fused_attention", "linear_macs", "reference_math",
    "using_reference_math",
]
