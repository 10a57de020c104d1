"""The contract every attention mixer in minilg follows.

A *token mixer* maps a feature map ``(B, H, W, C) -> (B, H, W, C)`` for any ``H, W >= 1`` and
reports its exact cost: :meth:`TokenMixer.macs` returns the multiply-accumulates (MACs) of its
matmuls and convolutions for one image of size ``H x W``. Tests compare that closed form with the
count measured by :func:`minilg.complexity.count_macs`; they must agree exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn


class TokenMixer(nn.Module, ABC):
    """Base class: ``forward(x: (B, H, W, C)) -> (B, H, W, C)`` plus ``macs(H, W) -> int``."""

    dim: int

    def check_input(self, x: Tensor) -> None:
        """Raise a ValueError naming the problem if ``x`` is not ``(B, H, W, dim)``."""
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

    @abstractmethod
    def macs(self, height: int, width: int) -> int:
        """Exact MACs (matmul + conv) of one forward pass on a single ``height x width`` map."""
