"""Focal attention (Yang et al. 2021, "Focal Self-attention for Local-Global Interactions in
Vision Transformers"), window-wise, with fine keys nearby and pooled keys far away.

Read top to bottom, this module follows Focal Sec. 3.2 (the paper's data flow; the authors' code
differs in a few steps, which :mod:`minilg.attention.focal_official` overrides beside it):

1. **Focal levels** (Sec. 3.2.1). Level ``l = 1..L`` has a *focal window size* ``s_w^l`` (the
   side of the sub-windows pooled into one token) and a *focal region size* ``s_r^l`` (how many
   of those tokens per side are attended around each ``s_p x s_p`` query window). Level 1 is the
   fine level (``s_w^1 = 1``, no pooling). A level is valid when ``s_w`` divides ``s_p`` and
   ``s_r - s_p / s_w`` is even and ``>= 0``, so the region is centred on the window
   (:func:`check_levels`). The paper's Table 1 numbers the same levels from 0, and the official
   code numbers only its pooled levels, from ``k = 0``:

   ==========================  ==================  ===================  ======================
   minilg / paper text (l)     Table 1             official code        Focal-T, stage 1
   ==========================  ==================  ===================  ======================
   ``levels[0]``, l = 1        ``s^0_{w,r}``       window + ring        ``(1, 13)``
   ``levels[1]``, l = 2        ``s^1_{w,r}``       pooled level k = 0   ``(7, 7)``
   ``levels[l-1]``, l >= 2     ``s^{l-1}_{w,r}``   pooled k = l - 2     ``s_w = s_p / 2^k``
   ==========================  ==================  ===================  ======================

2. **Sub-window pooling** (Eq. 1): the map is cut into ``s_w x s_w`` sub-windows and each is
   pooled by a learned linear map over its ``s_w^2`` positions, shared by all channels
   (:class:`~minilg.attention.grouping.SubWindowPool`, initialised to the mean), by a plain
   mean or max, or by a depthwise ``s_w x s_w`` convolution (:class:`ConvPool`, the official
   ``focal_pool="conv"``) (``pool_mode=``).
3. **Attention** (Eqs. 2-3): queries from the fine map, keys and values from every level with
   the same ``qkv`` projection; each window's queries attend the ``s_r^l x s_r^l`` tokens of
   every level around their window, all levels concatenated, **one softmax** over all keys, each
   level with its own position bias ``B^l``.

Exact about which keys a window sees: the fine level is the true ``s_r x s_r`` neighbourhood
(13 x 13 = 169 keys for Focal-T) with the zero padding outside the map **masked**; pooled levels
likewise (pooled tokens made only of padding are masked too). The input is projected on real
tokens only. Stage 1 of Focal-T at 224: 169 + 49 = **218 keys** per window.

Biases (``position_bias="paper"``, the default): each pooled level has the paper's
``B^l in R^{s_r x s_r}``, one scalar per head and pooled token, shared by all queries of the
window (Eq. 3); for the fine level the paper's ``(2 s_p - 1)^2`` table cannot index a region
larger than the window, so it uses a relative table over *every* query-key offset of the region,
``(s_p + s_r - 1)^2`` entries (361 for 7 and 13; Swin's table when ``s_r = s_p``).
``position_bias="official"`` uses the official code's bias shapes on the paper's keys (the fine
level as one dense ``(heads, s_p^2, s_r^2)`` table, pooled levels as relative tables): the
target of the documented mapping from official weights
(:func:`~minilg.attention.focal_official.official_to_paper_fine_bias`).

Window shift (Table 8): the window boundaries move to rows and columns ``s, s + M, ...`` as in
Swin and the official code (``M = s_p``): the map is zero-padded by ``(-s) mod M`` on the
top/left (masked, so nothing wraps), so a corner query sees exactly Swin's shifted-window keys.

``follow=`` selects the data flow: ``FocalAttention(..., follow="official")`` builds
:class:`~minilg.attention.focal_official.OfficialFocalAttention` (each flow registers itself as a
subclass with ``follow=...``).

Cost (Sec. 3.2.2 ``O((L + sum_l (s_r^l)^2) M N d)``), exactly, for ``N = HW`` real tokens,
``Np`` tokens after padding to the window grid and ``nW = Np / s_p^2`` windows::

    macs = qkv N C 3C  +  sum_{pooled l} [ P_l s_w^2 C (learned pooling)  +  P_l C 2C ]
           + nW * 2 s_p^2 (sum_l keys_l) C  +  N C^2 (output projection)

with ``keys_l = (s_r^l)^2`` and ``P_l = Np / s_w^2`` pooled tokens. The pooling is the
``O(L M N d)`` term (one multiply-add per position and channel with learned pooling, ``"fc"`` or
``"conv"``; mean and max are not matmuls), and pooled tokens get
only their key and value projections (``2C``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from minilg.attention.core import AttentionMixer, KeySource, attention_macs, linear_macs
from minilg.attention.grouping import (
    Pooling,
    gather_rows,
    neighbourhood_labels,
    pad_to_multiple,
    padded_size,
    window_partition,
    window_reverse,
)
from minilg.attention.position import DenseBias, RegionBias, RelativePositionBias, bias_of
from minilg.validate import check_size, one_of, positive_int, whole_number

Follow = Literal["paper", "official"]
PositionBias = Literal["paper", "official", "none"]
Pool = Literal["fc", "mean", "max", "conv"]
FOLLOW: tuple[str, ...] = get_args(Follow)
POSITION_BIAS: tuple[str, ...] = get_args(PositionBias)
POOL: tuple[str, ...] = get_args(Pool)
Level = tuple[int, int]


# --- Focal levels (Sec. 3.2.1) --------------------------------------------------------------------


def check_levels(window: int, levels: Sequence[Sequence[int]]) -> tuple[Level, ...]:
    """Validate ``levels = ((s_w^1, s_r^1), ..., (s_w^L, s_r^L))`` for window ``s_p``.

    Level 1 is the fine level (``s_w = 1``); every level needs ``s_w | s_p`` and
    ``s_r - s_p / s_w`` even and ``>= 0``. Raises a ValueError naming the level and the rule.
    """
    window = positive_int(window, "window")
    if not isinstance(levels, (tuple, list)) or len(levels) == 0:
        raise ValueError(f"levels must be a non-empty sequence of (s_w, s_r) pairs, "
                         f"got levels={levels!r}")
    checked: list[Level] = []
    for number, level in enumerate(levels):
        name = f"levels[{number}]"
        if not isinstance(level, (tuple, list)) or len(level) != 2:
            raise ValueError(f"{name} must be a pair (s_w, s_r) of positive integers, "
                             f"got {name}={level!r}")
        s_w, s_r = positive_int(level[0], f"{name}[0]"), positive_int(level[1], f"{name}[1]")
        if number == 0 and s_w != 1:
            raise ValueError(f"{name} (the fine level) must have s_w = 1, got {name}={level!r}")
        if window % s_w:
            raise ValueError(f"{name} must have an s_w that divides the window s_p={window}, "
                             f"got {name}={level!r}")
        span = window // s_w
        if s_r < span or (s_r - span) % 2:
            raise ValueError(f"{name} must have s_r - s_p/s_w even and >= 0 (a region centred "
                             f"on the window, s_p/s_w={span}), got {name}={level!r}")
        checked.append((s_w, s_r))
    return tuple(checked)


def ring_width(window: int, level: Level) -> int:
    """Tokens (of the level's granularity) added on each side of the window,
    ``(s_r - s_p/s_w) / 2``."""
    return (level[1] - window // level[0]) // 2


# --- Cost (Sec. 3.2.2) ----------------------------------------------------------------------------


def focal_keys(window: int, levels: Sequence[Level], follow: Follow = "paper") -> tuple[int, ...]:
    """Keys per query window at each level (218 or 230 for Focal-T stage 1, by level)."""
    return FocalAttention.flow(follow).level_keys(window, levels)


def focal_macs(height: int, width: int, dim: int, window: int, levels: Sequence[Level],
               follow: Follow = "paper", shift: int = 0, pool_mode: Pool = "fc") -> int:
    """Exact MACs of :class:`FocalAttention` on one ``height x width`` map (module docstring;
    ``follow="official"``: :mod:`minilg.attention.focal_official`)."""
    height, width = check_size(height, width)
    flow = FocalAttention.flow(follow)
    _, hp, wp = flow.layout(height, width, window, shift)
    tokens, padded = height * width, hp * wp
    total = linear_macs(padded if flow.projects_padding else tokens, dim, 3 * dim)
    total += linear_macs(tokens, dim, dim)
    for number, (s_w, _) in enumerate(levels[1:], start=1):
        rows, cols = flow.pooled_grid(hp, wp, window, number, s_w)
        total += rows * cols * s_w**2 * dim if pool_mode in ("fc", "conv") else 0
        total += linear_macs(rows * cols, dim, 2 * dim)
    keys = sum(flow.level_keys(window, levels))
    return total + (padded // window**2) * attention_macs(window**2, keys, dim)


# --- Pooling (Eq. 1) -----------------------------------------------------------------------------


class ConvPool(nn.Module):
    """``pool_mode="conv"`` (the official ``focal_pool="conv"``): a depthwise
    ``Conv2d(C, C, s_w, stride s_w)`` with bias over each sub-window,
    ``(B, H, W, C) -> (B, ceil(H/s_w), ceil(W/s_w), C)`` (bottom/right zero padding)."""

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(dim, dim, size, stride=size, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        x = pad_to_multiple(x, (self.size, self.size))
        pooled: Tensor = self.conv(rearrange(x, "b h w c -> b c h w"))
        return rearrange(pooled, "b c h w -> b h w c")


# --- The mixer ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FocalGeometry:
    """Per map size, every level at once: the keys of window ``n`` are rows ``index[n]`` of the
    fine map's tokens (numbered row-major on ``fine_grid``), then each pooled map's tokens, then
    one zero row (the slot for keys outside the map)."""

    shift: int
    offset: int
    padded: tuple[int, int]
    fine_grid: tuple[int, int]
    index: Tensor                 # (nW, K) into the concatenated rows
    allowed: Tensor | None        # paper: (nW, 1, 1, K) slots inside the map


class FocalAttention(AttentionMixer):
    """Window-wise focal attention (Focal Eqs. 1-3): ``(B, H, W, C) -> (B, H, W, C)``.

    Args:
        dim, heads: channels ``C`` and attention heads.
        window: query window ``s_p``.
        levels: ``((1, s_r^1), (s_w^2, s_r^2), ...)``; see :func:`check_levels`. Focal-T stage 1:
            ``((1, 13), (7, 7))``; window attention alone: ``((1, s_p),)``.
        follow: ``"paper"`` (this class) or ``"official"``
            (:class:`~minilg.attention.focal_official.OfficialFocalAttention`).
        shift: window shift (Table 8); 0 (the default, as every Focal config) or ``< s_p``.
        pool_mode: sub-window pooling ``"fc"`` (learned, mean-initialised), ``"mean"``,
            ``"max"`` or ``"conv"`` (depthwise convolution, :class:`ConvPool`).
        position_bias: ``"paper"``, ``"official"`` or ``"none"``; defaults to ``follow``.
        qkv_bias: bias in the qkv projection.
    """

    flows: ClassVar[dict[str, type[FocalAttention]]] = {}
    position_biases: ClassVar[tuple[str, ...]] = POSITION_BIAS
    projects_padding: ClassVar[bool] = False

    def __init_subclass__(cls, follow: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if follow is not None:
            FocalAttention.flows[follow] = cls

    def __new__(cls, *args: Any, **kwargs: Any) -> FocalAttention:
        """``FocalAttention(..., follow=f)`` builds the class registered for ``f``."""
        follow = str(kwargs.get("follow", args[4] if len(args) > 4 else "paper"))
        target = FocalAttention.flows.get(follow, cls) if cls is FocalAttention else cls
        instance: FocalAttention = super().__new__(target)
        return instance

    @classmethod
    def flow(cls, follow: str) -> type[FocalAttention]:
        """The class of data flow ``follow`` (a ValueError naming the allowed values)."""
        return FocalAttention.flows[one_of(follow, "follow", FOLLOW)]

    def __init__(
        self, dim: int, heads: int, window: int = 7,
        levels: Sequence[Sequence[int]] = ((1, 13), (7, 7)), follow: Follow = "paper",
        shift: int = 0, pool_mode: Pool = "fc", position_bias: PositionBias | None = None,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, heads, qkv_bias=qkv_bias)
        self.window = positive_int(window, "window")
        self.levels = self.check_levels(self.window, levels)
        self.follow: Follow = one_of(follow, "follow", get_args(Follow))
        self.shift = whole_number(shift, "shift")
        if self.shift >= self.window:
            raise ValueError(f"shift must be an integer >= 0 and < window={self.window}, "
                             f"got shift={shift!r}")
        self.pool_mode: Pool = one_of(pool_mode, "pool_mode", get_args(Pool))
        if position_bias is not None:
            one_of(position_bias, "position_bias", self.position_biases)
        self.bias_kind: PositionBias = position_bias or follow
        self.expand = ring_width(self.window, self.levels[0])
        self.check_flow()
        self.pools = nn.ModuleList(
            ConvPool(dim, s_w) if pool_mode == "conv" else Pooling(s_w, pool_mode)
            for s_w, _ in self.levels[1:])
        self.build_biases()

    @staticmethod
    def check_levels(window: int, levels: Sequence[Sequence[int]]) -> tuple[Level, ...]:
        """The levels, validated for this data flow (the paper's rule: :func:`check_levels`)."""
        return check_levels(window, levels)

    def check_flow(self) -> None:
        """Checks a data flow adds to the constructor's (none in the paper's)."""
        if self.follow != "paper":
            raise ValueError(f"follow must be 'paper' for {type(self).__name__}, "
                             f"got follow={self.follow!r}")

    def build_biases(self) -> None:
        """Fine-level and pooled-level position biases for ``self.bias_kind`` (module docstring)."""
        self.level_bias = nn.ModuleList()
        self.build_fine_bias()
        if self.bias_kind == "none":
            return
        for _, s_r in self.levels[1:]:
            self.level_bias.append(
                RegionBias(self.heads, s_r) if self.bias_kind == "paper"
                else RelativePositionBias(self.heads, (self.window,) * 2, (s_r, s_r)))

    def build_fine_bias(self) -> None:
        """``B^1``: a relative table over the region (``"paper"``) or a dense ``"official"``
        table ``(heads, s_p^2, s_r^2)``."""
        ws, region = self.window, self.levels[0][1]
        self.fine_bias: nn.Module | None = None
        if self.bias_kind == "paper":
            self.fine_bias = RelativePositionBias(self.heads, (ws, ws), (region, region))
        elif self.bias_kind == "official":
            self.fine_bias = DenseBias(self.heads, ws * ws, region * region)

    @staticmethod
    def level_keys(window: int, levels: Sequence[Level]) -> tuple[int, ...]:
        """Keys per query window at each level: ``(s_r^l)^2``."""
        return tuple(s_r**2 for _, s_r in levels)

    @staticmethod
    def layout(height: int, width: int, window: int, shift: int) -> tuple[int, int, int]:
        """``(offset, Hp, Wp)``: the top/left padding that puts the window boundaries at
        ``shift + k s_p`` (``(-shift) mod s_p``, as Swin; 0 without a shift or on maps no larger
        than the window) and the map's size padded to the window grid."""
        offset = (-shift) % window if height > window and width > window else 0
        return offset, padded_size(height + offset, window), padded_size(width + offset, window)

    @staticmethod
    def pooled_grid(hp: int, wp: int, window: int, number: int, s_w: int) -> tuple[int, int]:
        """Rows and columns of pooled level ``number``'s map on the ``Hp x Wp`` padded grid:
        ``(Hp / s_w, Wp / s_w)``."""
        return hp // s_w, wp // s_w

    @staticmethod
    def pooled_span(window: int, number: int, s_w: int) -> int:
        """Pooled tokens of level ``number`` per window side: ``s_p / s_w``."""
        return window // s_w

    def keys_per_window(self) -> tuple[int, ...]:
        """Keys each query window attends at each level (fine first)."""
        return self.level_keys(self.window, self.levels)

    def effective_shift(self, height: int, width: int) -> int:
        """The shift, or 0 on maps no larger than the window (as Swin and the official code)."""
        return self.shift if height > self.window and width > self.window else 0

    # --- geometry ---------------------------------------------------------------------------

    def fine_index(self, tokens: Tensor) -> Tensor:
        """Level 1: the ``s_r x s_r`` neighbourhood of every window, ``-1`` outside the map."""
        e = self.expand
        return neighbourhood_labels(tokens, (self.window, self.window), (e, e))

    def pooled_cells(self, tokens: Tensor, number: int) -> Tensor:
        """Pooled level ``number``'s tokens numbered row-major on its map, ``-1`` for those made
        only of padding (``tokens (Hp, Wp)`` numbers the fine map, ``-1`` on padding)."""
        s_w = self.levels[number][0]
        hp, wp = tokens.shape
        rows, cols = self.pooled_grid(hp, wp, self.window, number, s_w)
        cells = torch.arange(rows * cols, device="cpu").view(rows, cols)
        real = rearrange(tokens >= 0, "(h sh) (w sw) -> h w (sh sw)", sh=s_w, sw=s_w)
        return torch.where(real.any(-1), cells, -1)

    def key_index(self, tokens: Tensor) -> tuple[Tensor, int]:
        """``(index (nW, K), rows)``: every level's keys of every window as rows of the
        concatenated token maps (``-1`` outside the map), and the number of those rows.

        ``tokens (Hp, Wp)`` numbers the fine map's tokens on the padded grid (``-1``: padding).
        Pooled level ``l`` gathers ``s_r^l x s_r^l`` of its tokens around each window's
        ``span x span`` (:meth:`pooled_span`).
        """
        levels, rows = [self.fine_index(tokens)], int((tokens >= 0).sum())
        for number, (s_w, s_r) in enumerate(self.levels[1:], start=1):
            cells = self.pooled_cells(tokens, number)
            span = self.pooled_span(self.window, number, s_w)
            f = (s_r - span) // 2
            pooled = neighbourhood_labels(cells, (span, span), (f, f))
            levels.append(torch.where(pooled < 0, pooled, pooled + rows))
            rows += cells.numel()
        return torch.cat(levels, dim=1), rows

    def build_geometry(self, height: int, width: int, device: torch.device) -> FocalGeometry:
        """Gather indices and mask of every level for one map size (cached per size/device)."""
        shift = self.effective_shift(height, width)
        offset, hp, wp = self.layout(height, width, self.window, shift)
        tokens = torch.full((hp, wp), -1, dtype=torch.long, device="cpu")
        tokens[offset : offset + height, offset : offset + width] = (
            torch.arange(height * width, device="cpu").view(height, width))
        index, rows = self.key_index(tokens)
        allowed = (index >= 0)[:, None, None, :]
        return FocalGeometry(shift, offset, (hp, wp), (height, width),
                             torch.where(index < 0, rows, index).to(device), allowed.to(device))

    def key_regions(self, height: int, width: int) -> list[Tensor]:
        """Where every key of every window comes from, per level: ``(nW, K_l, 3)`` int64 rows
        ``(row, col, side)``: the key summarises map tokens ``[row, row + side) x [col, col +
        side)``. ``side = 0`` marks a slot outside the map (masked here; a zero key with ``-100``
        in official mode, whose coordinates are on the padded map, where the ring wraps).
        For drawings and tests.
        """
        height, width = check_size(height, width)
        geo = self.build_geometry(height, width, torch.device("cpu"))
        (hp, wp), top = geo.padded, geo.offset
        regions, start, first = [], 0, 0
        for number, keys in enumerate(self.keys_per_window()):
            index = geo.index[:, first : first + keys]
            s_w = self.levels[number][0]
            grid = (geo.fine_grid if number == 0
                    else self.pooled_grid(hp, wp, self.window, number, s_w))
            local = index - start
            inside = (local >= 0) & (local < grid[0] * grid[1])
            # fine keys are numbered on the real map; pooled ones on the padded grid
            top_row, left_col = (0, 0) if number == 0 else self.pooled_origin(hp, wp, number)
            shift = 0 if number == 0 else top
            rows = torch.where(inside, (local // grid[1]) * s_w + top_row - shift, -1)
            cols = torch.where(inside, (local % grid[1]) * s_w + left_col - shift, -1)
            sides = torch.where(inside, s_w, 0)
            regions.append(torch.stack([rows, cols, sides], dim=-1))
            start, first = start + grid[0] * grid[1], first + keys
        return regions

    def pooled_origin(self, hp: int, wp: int, number: int) -> tuple[int, int]:
        """Where pooled level ``number``'s first sub-window starts on the padded grid: ``(0, 0)``
        (the paper's sub-windows tile the padded grid)."""
        return 0, 0

    # --- forward ----------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        _, height, width, _ = x.shape
        geo = self.geometry(("focal", height, width), x.device,
                            lambda: self.build_geometry(height, width, x.device))
        q, kv, xp = self.project(x, geo)
        q = window_partition(q, (self.window, self.window))
        maps = [kv] + [self.pooled_kv(level, xp) for level in range(1, len(self.levels))]
        k, v = gather_rows(maps, geo.index, self.heads)
        bias = self.cached_bias(("focal", height, width, str(x.device), x.dtype),
                               lambda: self.position_bias(geo))
        out = self.attention(q, KeySource(k, v, bias, geo.allowed, True))
        out = window_reverse(out, (self.window, self.window), geo.padded)
        projected: Tensor = self.proj(self.crop(out, geo, height, width))
        return projected

    def project(self, x: Tensor, geo: FocalGeometry) -> tuple[Tensor, Tensor, Tensor]:
        """``(q, kv, xp)``: queries on the padded grid ``(B, Hp, Wp, C)``, fine keys and values
        ``(B, H, W, 2C)`` (real tokens only) and the zero-padded input the levels pool."""
        _, height, width, dim = x.shape
        (hp, wp), top = geo.padded, geo.offset
        pad = (0, 0, top, wp - width - top, top, hp - height - top)
        q, kv = self.qkv(x).split([dim, 2 * dim], dim=-1)
        return F.pad(q, pad), kv, F.pad(x, pad)

    def crop(self, out: Tensor, geo: FocalGeometry, height: int, width: int) -> Tensor:
        """The real tokens of the padded grid's output."""
        top = geo.offset
        return out[:, top : top + height, top : top + width]

    def pooled_kv(self, level: int, xp: Tensor) -> Tensor:
        """Level ``l = level + 1``: pool (Eq. 1), then keys and values (Eq. 2): ``(B, h, w, 2C)``.

        Pooled tokens get only the k, v part of the shared ``qkv`` projection."""
        pooled = self.pools[level - 1](self.pooled_input(level, xp))
        dim = self.dim
        bias = None if self.qkv.bias is None else self.qkv.bias[dim:]
        return F.linear(pooled, self.qkv.weight[dim:], bias)

    def pooled_input(self, level: int, xp: Tensor) -> Tensor:
        """The map level ``level`` pools: the padded input itself."""
        return xp

    def fine_bias_parts(self, geo: FocalGeometry) -> list[Tensor]:
        """The fine level's bias ``B^1``: ``[(heads, Tq, K_1)]``, or ``[]`` without biases."""
        return [] if self.fine_bias is None else [bias_of(self.fine_bias)]

    def position_bias(self, geo: FocalGeometry) -> Tensor | None:
        """``B = {B^l}`` of Eq. 3 for all keys: ``(heads, Tq, K)`` (or ``(nW, heads, Tq, K)``)."""
        parts = self.fine_bias_parts(geo) + [bias_of(module) for module in self.level_bias]
        if not parts:
            return None
        lead = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))  # type: ignore[no-untyped-call]
        return torch.cat([p.expand(*lead, p.shape[-1]) for p in parts], dim=-1)

    def macs(self, height: int, width: int) -> int:
        """Exact MACs (module docstring; Focal Sec. 3.2.2)."""
        return focal_macs(height, width, self.dim, self.window, self.levels, self.follow,
                          self.effective_shift(*check_size(height, width)), self.pool_mode)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.heads}, window={self.window}, "
                f"levels={self.levels}, follow={self.follow!r}, shift={self.shift}")


FocalAttention.flows["paper"] = FocalAttention


__all__ = [
    "FOLLOW", "POOL", "POSITION_BIAS", "ConvPool", "FocalAttention", "FocalGeometry", "Follow",
    "Level", "Pool", "PositionBias", "check_levels", "focal_keys", "focal_macs", "ring_width",
]
