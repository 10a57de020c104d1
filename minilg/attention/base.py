"""The contract every attention mixer in minilg follows.

A *token mixer* maps a feature map ``(B, H, W, C) -> (B, H, W, C)`` for any ``H, W >= 1`` and
reports its exact cost: :meth:`TokenMixer.macs` returns the multiply-accumulates (MACs) of its
matmuls and convolutions for one image of size ``H x W``. Tests compare that closed form with the
count measured by :func:`minilg.complexity.count_macs`; they must agree exactly.

Mixers that let *extra tokens* take part (DeiT's class token, SALG's aggregation tokens)
implement :meth:`TokenMixer.forward_with_extra`: ``(x (B, H, W, C), extra (B, T, C)) ->`` both
updated, and count them in ``macs(H, W, extra_tokens=T)``.

Geometry (relative position indices, shift and padding masks, gather indices) depends only on
the map size and the device, so mixers build it once per ``(H, W, device)`` with
:meth:`TokenMixer.geometry` and keep it in a plain dictionary: it is never part of the
``state_dict`` and never holds the batch dimension.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

T = TypeVar("T")

_REFERENCE_MATH: ContextVar[bool] = ContextVar("minilg_reference_math", default=False)


@contextmanager
def reference_math() -> Iterator[None]:
    """Run every mixer the straightforward way: the benchmark's baseline and a test oracle.

    Inside the block :func:`minilg.attention.core.attend` computes
    ``softmax(q @ k.T * scale + mask) @ v`` with explicit batched matmuls and the mask
    materialised for every sample, and mixers rebuild their geometry on every call instead of
    caching it. Same math, same results (to float tolerance).
    """
    token = _REFERENCE_MATH.set(True)
    try:
        yield
    finally:
        _REFERENCE_MATH.reset(token)


def using_reference_math() -> bool:
    """True inside :func:`reference_math`."""
    return _REFERENCE_MATH.get()


class TokenMixer(nn.Module, ABC):
    """Base class: ``forward(x: (B, H, W, C)) -> (B, H, W, C)`` plus ``macs(H, W) -> int``."""

    dim: int

    def check_input(self, x: Tensor) -> None:
        """Raise a ValueError naming the problem if ``x`` is not a float ``(B, H, W, dim)``."""
        if x.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, H, W, C) with 4 dims, "
                f"got {x.ndim} dims: {tuple(x.shape)}"
            )
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} was built for C={self.dim} channels (last axis), "
                f"got input of shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects a floating-point input, got dtype {x.dtype}"
            )

    def geometry(self, key: Hashable, device: torch.device, build: Callable[[], T]) -> T:
        """``build()`` once per ``(key, device)``, then the cached value.

        ``key`` holds everything the geometry depends on besides the device (map size, window,
        shift, ...). The cache is a plain attribute, so it is neither saved nor moved by
        ``.to()``: a new device builds its own copy. ``build`` returns tensors on ``device``.
        """
        if using_reference_math():
            return build()
        cache: dict[Hashable, Any] = self.__dict__.setdefault("_geometry_cache", {})
        full_key = (key, str(device))
        if full_key not in cache:
            cache[full_key] = build()
        value: T = cache[full_key]
        return value

    def forward_with_extra(self, x: Tensor, extra: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, H, W, C)``, ``extra (B, T, C)`` -> both updated (mixers that support it)."""
        raise ValueError(
            f"{type(self).__name__} does not support extra tokens (class or aggregation tokens)"
        )

    @abstractmethod
    def macs(self, height: int, width: int) -> int:
        """Exact MACs (matmul + conv) of one forward pass on a single ``height x width`` map."""
