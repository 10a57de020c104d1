"""Relative position bias (Swin Eq. 4, the ``B`` term; reused by GG, Focal and SALG).

A learnable table holds one scalar per head for every possible 2-D offset between a query grid
of shape ``(qh, qw)`` and a key grid of shape ``(kh, kw)``: offsets run over
``[-(kh-1), qh-1] x [-(kw-1), qw-1]``, so the table has ``(qh + kh - 1) * (qw + kw - 1)`` rows.
For self-attention in an ``M x M`` window this is Swin's ``(2M - 1)^2`` table; Focal's pooled
levels use a ``7 x 7`` query window against ``s_r x s_r`` pooled keys, giving ``(7 + s_r - 1)^2``.

Two further bias shapes Focal uses (Eq. 3): :class:`RegionBias`, one scalar per head and key
shared by all queries (the paper's ``B^l in R^{s_r x s_r}``), and :class:`DenseBias`, one per
(query, key slot) (the official code's ring bias). :func:`bias_of` returns any of the three.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from minilg.attention.base import using_reference_math
from minilg.validate import as_pair


def relative_position_index(
    query_grid: tuple[int, int],
    key_grid: tuple[int, int] | None = None,
    table_grids: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> Tensor:
    """Index into the bias table for every (query, key) pair.

    Args:
        query_grid: ``(qh, qw)``; queries are numbered row-major.
        key_grid: ``(kh, kw)``; defaults to ``query_grid`` (self-attention).
        table_grids: the ``(query_grid, key_grid)`` the table was built for, when indexing a
            smaller grid into a larger table (a window clipped to a small feature map).
            Defaults to ``(query_grid, key_grid)``.

    Returns:
        ``(qh*qw, kh*kw)`` int64 tensor with values in ``[0, (Qh+Kh-1)*(Qw+Kw-1))`` where
        ``(Qh, Qw), (Kh, Kw)`` are the table's grids.
    """
    qh, qw = query_grid
    kh, kw = key_grid if key_grid is not None else query_grid
    (table_qh, table_qw), (table_kh, table_kw) = table_grids or ((qh, qw), (kh, kw))
    if kh > table_kh or kw > table_kw or qw > table_qw or qh > table_qh:
        raise ValueError(
            f"query grid {query_grid} against key grid {key_grid} does not fit the relative "
            f"position table built for {table_grids}; build the mixer for the larger size"
        )
    qy, qx = torch.meshgrid(torch.arange(qh), torch.arange(qw), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(kh), torch.arange(kw), indexing="ij")
    dy = qy.reshape(-1, 1) - ky.reshape(1, -1) + (table_kh - 1)  # >= 0
    dx = qx.reshape(-1, 1) - kx.reshape(1, -1) + (table_kw - 1)  # >= 0
    return dy * (table_qw + table_kw - 1) + dx


class RelativePositionBias(nn.Module):
    """Learnable bias ``B`` of shape ``(heads, Tq, Tk)`` for a query grid against a key grid.

    The table is initialised with a truncated normal of std 0.02 (as Swin). Its parameter name
    ends in ``bias_table`` so optimisers can exclude it from weight decay.
    """

    def __init__(
        self, heads: int, query_grid: tuple[int, int], key_grid: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self.query_grid = as_pair(query_grid, "query_grid")
        self.key_grid = self.query_grid if key_grid is None else as_pair(key_grid, "key_grid")
        query_grid, key_grid = self.query_grid, self.key_grid
        rows = (query_grid[0] + key_grid[0] - 1) * (query_grid[1] + key_grid[1] - 1)
        self.bias_table = nn.Parameter(torch.empty(rows, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.index: Tensor
        self.register_buffer(
            "index", relative_position_index(query_grid, key_grid), persistent=False
        )

    def forward(
        self, query_grid: tuple[int, int] | None = None, key_grid: tuple[int, int] | None = None
    ) -> Tensor:
        """Returns the bias ``(heads, Tq, Tk)``.

        ``query_grid`` / ``key_grid`` select smaller grids than the table's (a window clipped to
        a feature map smaller than itself; full attention on a smaller map). Their indices into
        the table are built once per size and device. Larger grids than the table's raise a
        ValueError naming both. Without a gradient into the table (``torch.is_grad_enabled()``
        false, or a frozen table) the bias is built once and returned again until the table
        changes (its version) or is replaced.
        """
        query_grid = query_grid if query_grid is not None else self.query_grid
        key_grid = key_grid if key_grid is not None else (
            query_grid if self.query_grid == self.key_grid else self.key_grid
        )
        table = self.bias_table
        if using_reference_math() or (torch.is_grad_enabled() and table.requires_grad):
            return self.build(query_grid, key_grid)
        # No gradient can flow into the bias: built once, until the table changes, moves or is cast.
        kept: dict[object, tuple[Tensor, Tensor]] = self.__dict__.setdefault("_bias_cache", {})
        key = (query_grid, key_grid, id(table), table._version, str(table.device), table.dtype)
        hit = kept.get(key)
        if hit is None:
            kept.clear()
            hit = kept[key] = (table, self.build(query_grid, key_grid))  # table kept: id stays
        return hit[1]

    def build(self, query_grid: tuple[int, int], key_grid: tuple[int, int]) -> Tensor:
        """The bias ``(heads, Tq, Tk)`` for these grids, read from the table."""
        index = self.index
        if (query_grid, key_grid) != (self.query_grid, self.key_grid):
            cache: dict[tuple[object, ...], Tensor] = self.__dict__.setdefault("_index_cache", {})
            key = (query_grid, key_grid, str(self.bias_table.device))
            if key not in cache:
                cache[key] = relative_position_index(
                    query_grid, key_grid, (self.query_grid, self.key_grid)
                ).to(self.bias_table.device)
            index = cache[key]
        return rearrange(self.bias_table[index], "tq tk heads -> heads tq tk")


class RegionBias(nn.Module):
    """The paper's pooled-level bias ``B^l in R^{s_r x s_r}`` (Eq. 3), shared by the window's
    queries: ``bias_table (s_r^2, heads)`` -> ``(heads, 1, s_r^2)``."""

    def __init__(self, heads: int, region: int) -> None:
        super().__init__()
        self.bias_table = nn.Parameter(torch.empty(region * region, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)

    def bias(self) -> Tensor:
        """``(heads, 1, s_r^2)`` (a method, not ``forward``: it takes no input)."""
        return rearrange(self.bias_table, "tk heads -> heads 1 tk")


class DenseBias(nn.Module):
    """A learned bias per (query, key slot), ``bias_table (heads, Tq, Tk)``: Focal's official
    ring."""

    def __init__(self, heads: int, queries: int, keys: int) -> None:
        super().__init__()
        self.bias_table = nn.Parameter(torch.empty(heads, queries, keys))
        nn.init.trunc_normal_(self.bias_table, std=0.02)

    def bias(self) -> Tensor:
        """``(heads, Tq, Tk)``."""
        return self.bias_table


def bias_of(module: nn.Module) -> Tensor:
    """The bias tensor of a :class:`RelativePositionBias`, :class:`RegionBias` or
    :class:`DenseBias`."""
    if isinstance(module, RelativePositionBias):
        out: Tensor = module()
        return out
    if isinstance(module, (RegionBias, DenseBias)):
        return module.bias()
    raise TypeError(f"not a position bias module: {type(module).__name__}")


__all__ = [
    "DenseBias", "RegionBias", "RelativePositionBias", "bias_of", "relative_position_index",
]
