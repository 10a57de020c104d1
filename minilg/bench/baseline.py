"""The plain baseline: the attention every mixer asks for, done the way a competent
straightforward implementation does it.

For grouped queries ``q (B, G, Tq, C)`` and key sources (:class:`~minilg.attention.core.KeySource`:
keys and values ``(B or 1, G or 1, Tk, C)``, a bias and a mask of allowed pairs), the same
equation as the core (Swin Eq. 4, Focal Eq. 3, ...)::

    SoftMax(Q K^T / sqrt(d) + B + mask) V

computed with **explicit scores** ``(B, G, heads, Tq, sum Tk)``: the sources' keys concatenated,
``q @ k^T * scale``, one additive bias-and-mask tensor **broadcast** over the batch (built per
call from the cached geometry, with a batch axis only when the mask depends on the sample, as
SALG's regions), softmax, ``@ v``. Mixers keep their geometry cached (this is not
:func:`~minilg.attention.base.reference_math`, which also rebuilds geometry and materialises
the mask per sample: the benchmark's older ``straightforward`` path). Queries whose keys are all
masked output exactly zero, as in the core.

:func:`plain_math` routes every mixer's call of :func:`minilg.attention.core.attend` to
:func:`plain_attend` for the duration of a ``with`` block (the module attribute ``attend`` of
every loaded ``minilg.attention`` module that holds the core's function is swapped, and restored
after); :func:`core_attend_calls` counts what still reaches the core, so the benchmark can check
that nothing escaped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from einops import rearrange
from torch import Tensor

from minilg.attention import core
from minilg.attention.core import KeySource
from minilg.attention.scopes import listening

__all__ = ["AttendCounter", "core_attend_calls", "plain_attend", "plain_mask", "plain_math"]


def _as_5d(t: Tensor) -> Tensor:
    """Prepend singleton axes up to ``(B, G, heads, Tq, Tk)``."""
    return t.reshape((1,) * (5 - t.ndim) + tuple(t.shape))


def plain_mask(sources: Sequence[KeySource], tokens_q: int, dtype: torch.dtype) -> Tensor | None:
    """The additive bias-and-mask ``(b, g, h, Tq, sum Tk)`` (``-inf`` where not allowed), ``b,
    g, h`` 1 unless a source varies along them; ``None`` when no source has a bias or mask."""
    if all(s.bias is None and s.allowed is None for s in sources):
        return None
    parts = []
    for source in sources:
        part = torch.zeros((1, 1, 1, tokens_q, source.k.shape[-2]), dtype=dtype,
                           device=source.k.device)
        if source.bias is not None:
            part = part + _as_5d(source.bias.to(dtype))
        if source.allowed is not None:
            part = part.masked_fill(~_as_5d(source.allowed), float("-inf"))
        parts.append(part)
    lead = [max(p.shape[axis] for p in parts) for axis in range(3)]
    return torch.cat([p.expand(*lead, tokens_q, p.shape[-1]) for p in parts], dim=-1)


def plain_attend(q: Tensor, sources: Sequence[KeySource], heads: int) -> Tensor:
    """``q (B, G, Tq, C)`` over ``sources`` -> ``(B, G, Tq, C)``, heads merged: explicit
    scores, the mask broadcast (see the module docstring)."""
    batch, groups, tokens_q, _ = q.shape
    k = torch.cat([s.k.expand(batch, groups, -1, -1) for s in sources], dim=2)
    v = torch.cat([s.v.expand(batch, groups, -1, -1) for s in sources], dim=2)
    q5, k5, v5 = (rearrange(t, "b g t (h d) -> b g h t d", h=heads) for t in (q, k, v))
    scores = (q5 * q5.shape[-1] ** -0.5) @ k5.transpose(-2, -1)  # (B, G, heads, Tq, Tk)
    mask = plain_mask(sources, tokens_q, q.dtype)
    has_key = None
    if mask is not None:
        if any(s.allowed is not None for s in sources):
            has_key = (mask != float("-inf")).any(dim=-1, keepdim=True)
            mask = mask.masked_fill(~has_key, 0.0)  # an all -inf row would softmax to NaN
        scores = scores + mask
    out = torch.softmax(scores, dim=-1) @ v5
    if has_key is not None:
        out = out.masked_fill(~has_key, 0.0)
    return rearrange(out, "b g h t d -> b g t (h d)")


def plain_math() -> contextlib.AbstractContextManager[None]:
    """Inside the block every mixer attends through :func:`plain_attend` (the core's
    :func:`~minilg.attention.core.attending_with` hook: same key sources, plain math)."""
    return core.attending_with(plain_attend)


class AttendCounter:
    """A scope listener (:mod:`minilg.attention.scopes`) counting the core's ``attend`` steps."""

    def __init__(self) -> None:
        self.count = 0

    def push(self, label: str) -> None:
        self.count += label == "attend"

    def pop(self) -> None:
        pass


def core_attend_calls(fn: Callable[[], object]) -> int:
    """How many times one call of ``fn()`` enters the core's ``attend``."""
    counter = AttendCounter()
    with listening(counter):
        fn()
    return counter.count
