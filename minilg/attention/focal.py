"""Focal attention (Yang et al. 2021, "Focal Self-attention for Local-Global Interactions in
Vision Transformers"), window-wise, with fine keys nearby and pooled keys far away.

Read top to bottom, this module follows Focal Sec. 3.2:

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
   (:class:`~minilg.attention.grouping.SubWindowPool`, initialised to the mean), or by a plain
   mean or max (``pool=``).
3. **Attention** (Eqs. 2-3): queries from the fine map, keys and values from every level with
   the same ``qkv`` projection; each window's queries attend the ``s_r^l x s_r^l`` tokens of
   every level around their window, all levels concatenated, **one softmax** over all keys, each
   level with its own position bias ``B^l``.

Two behaviours (``follow=``), both exact about which keys a window sees:

* ``"paper"`` (default): the fine level is the true ``s_r x s_r`` neighbourhood (13 x 13 = 169
  keys for Focal-T) with the zero padding outside the map **masked**; pooled levels likewise
  (pooled tokens made only of padding are masked too). The input is projected on real tokens
  only. Biases (``position_bias="paper"``): each pooled level has the paper's
  ``B^l in R^{s_r x s_r}``, one scalar per head and pooled token, shared by all queries of the
  window (Eq. 3); for the fine level the paper's ``(2 s_p - 1)^2`` table cannot index a region
  larger than the window, so it uses a relative table over *every* query-key offset of the
  region, ``(s_p + s_r - 1)^2`` entries (361 for 7 and 13; Swin's table when ``s_r = s_p``).
  Stage 1 of Focal-T at 224: 169 + 49 = **218 keys** per window.
* ``"official"``: the data flow of the authors' code. The input is zero-padded bottom/right to
  the window and projected, padding **unmasked** (its keys equal the qkv bias). The fine level is
  the window's own ``s_p^2`` tokens plus a ring gathered as the official four cyclic rolls by
  ``(+-e, +-e)`` (``e = (s_r - s_p)/2``) would: 132 slots for ``s_p = 7, e = 3`` (the 120 ring
  tokens, 12 of them twice), **wrapping around the border**. minilg gathers the same slots in the
  same order with one index (:func:`official_ring_slots`) into a wrapped neighbourhood instead of
  four rolled copies. Biases: Swin's table for the own window, a dense learned
  ``(heads, s_p^2, slots)`` bias for the ring, and per pooled level a relative table of
  ``(s_p + s_r - 1)^2`` entries (query coordinate minus pooled-slot coordinate); pooled slots
  outside the map are zeros with ``-100`` added (not ``-inf``). 230, 206, 190, 50 keys by stage.
  ``position_bias="official"`` in paper mode uses these bias shapes on the paper's keys (the
  fine level as one dense ``(heads, s_p^2, s_r^2)`` table): the target of the documented mapping
  from official weights (:func:`official_to_paper_fine_bias`, duplicated slots merged with
  ``logaddexp``), exact on every window whose ring does not wrap.

Window shift (Table 8): ``"paper"`` shifts the window grid by offsetting it (zero padding on the
top/left, masked, so nothing wraps); ``"official"`` rolls the padded map by ``-shift`` as the
official code does and adds Swin's ``-100`` region mask to the own-window keys only.

Cost (Sec. 3.2.2 ``O((L + sum_l (s_r^l)^2) M N d)``), exactly, for ``N = HW`` real tokens,
``Np`` tokens after padding to the window grid and ``nW = Np / s_p^2`` windows::

    macs = qkv (N or Np) C 3C  +  sum_{pooled l} [ Np C (learned pooling)  +  (Np / s_w^2) C 2C ]
           + nW * 2 s_p^2 (sum_l keys_l) C  +  N C^2 (output projection)

with ``qkv`` on ``N`` tokens in paper mode, on ``Np`` in official mode (the official code
projects the padding), ``keys_1 = s_r^2`` (paper) or ``s_p^2 + ring slots`` (official) and
``keys_l = (s_r^l)^2`` for pooled levels. The pooling is the ``O(L M N d)`` term (one
multiply-add per position and channel with learned pooling; mean and max are not matmuls), and
pooled tokens get only their key and value projections (``2C``; the official code projects them
to ``3C`` and drops the queries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from minilg.attention.core import AttentionMixer, KeySource, attention_macs, linear_macs
from minilg.attention.grouping import (
    SubWindowPool,
    neighbourhood_labels,
    pad_to_multiple,
    padded_size,
    subwindow_pool,
    window_partition,
    window_reverse,
)
from minilg.attention.position import RelativePositionBias
from minilg.attention.window import shifted_window_labels
from minilg.validate import check_size

Follow = Literal["paper", "official"]
PositionBias = Literal["paper", "official", "none"]
Pool = Literal["fc", "mean", "max"]
FOLLOW: tuple[str, ...] = get_args(Follow)
POSITION_BIAS: tuple[str, ...] = get_args(PositionBias)
POOL: tuple[str, ...] = get_args(Pool)
Level = tuple[int, int]

# The official code's padding value for pooled slots outside the map (and the shift mask).
OFFICIAL_PAD = -100.0


# --------------------------------------------------------------------------------------------
# Focal levels
# --------------------------------------------------------------------------------------------


def check_levels(window: int, levels: Sequence[Sequence[int]]) -> tuple[Level, ...]:
    """Validate ``levels = ((s_w^1, s_r^1), ..., (s_w^L, s_r^L))`` for window ``s_p``.

    Level 1 is the fine level (``s_w = 1``); every level needs ``s_w | s_p`` and
    ``s_r - s_p / s_w`` even and ``>= 0``. Raises a ValueError naming the level and the rule.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window (s_p) must be a positive integer, got window={window!r}")
    if not isinstance(levels, (tuple, list)) or len(levels) == 0:
        raise ValueError(f"levels must be a non-empty list of (s_w, s_r) pairs, got {levels!r}")
    checked: list[Level] = []
    for number, level in enumerate(levels, start=1):
        name = f"levels[{number - 1}] (focal level l={number})"
        if (not isinstance(level, (tuple, list)) or len(level) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                           for v in level)):
            raise ValueError(f"{name} must be a pair (s_w, s_r) of positive ints, got {level!r}")
        s_w, s_r = int(level[0]), int(level[1])
        if number == 1 and s_w != 1:
            raise ValueError(f"{name} is the fine level and needs s_w = 1, got s_w={s_w}")
        if window % s_w:
            raise ValueError(f"{name}: s_w={s_w} must divide the window s_p={window}")
        span = window // s_w
        if s_r < span or (s_r - span) % 2:
            raise ValueError(
                f"{name}: s_r - s_p/s_w must be even and >= 0 so the region is centred on the "
                f"window, got s_r={s_r}, s_p/s_w={span}"
            )
        checked.append((s_w, s_r))
    return tuple(checked)


def ring_width(window: int, level: Level) -> int:
    """Tokens (of the level's granularity) added on each side of the window,
    ``(s_r - s_p/s_w) / 2``."""
    return (level[1] - window // level[0]) // 2


def official_ring_slots(window: int, expand: int) -> Tensor:
    """The official ring's slots, in its order, as indices into the ``(s_p + 2e)^2`` region.

    The official code rolls the map by ``(-e,-e), (-e,+e), (+e,-e), (+e,+e)``; window position
    ``(a, b)`` of the four copies holds region cell ``(a + dy, b + dx)`` with ``(dy, dx)`` =
    ``(2e, 2e), (2e, 0), (0, 2e), (0, 0)``; each copy drops the ``(s_p - e)^2`` positions that
    fall inside the window, leaving ``4 s_p^2 - 4 (s_p - e)^2`` slots (132 for 7 and 3: the 120
    ring cells, 12 of them twice). Requires ``0 < e <= s_p``.
    """
    if not 0 < expand <= window:
        raise ValueError(f"the official ring needs 0 < expand <= window, got {expand}, {window}")
    side, e = window + 2 * expand, expand
    a, b = _grid(window)
    slots = []
    offsets = ((2 * e, 2 * e), (2 * e, 0), (0, 2 * e), (0, 0))
    dropped = ((a < window - e) & (b < window - e), (a < window - e) & (b >= e),
               (a >= e) & (b < window - e), (a >= e) & (b >= e))
    for (dy, dx), drop in zip(offsets, dropped, strict=True):
        cells = (a + dy) * side + (b + dx)
        slots.append(cells[~drop])
    return torch.cat(slots)


def _grid(side: int) -> tuple[Tensor, Tensor]:
    """Row and column coordinates of a ``side x side`` grid (on the CPU: geometry is data)."""
    coords = torch.arange(side, device="cpu")
    a, b = torch.meshgrid(coords, coords, indexing="ij")
    return a, b


def window_cells(window: int, expand: int) -> Tensor:
    """Indices of the window's own ``s_p^2`` cells inside its ``(s_p + 2e)^2`` region."""
    side = window + 2 * expand
    a, b = _grid(window)
    return ((a + expand) * side + (b + expand)).flatten()


def official_to_paper_fine_bias(window_bias: Tensor, ring_bias: Tensor | None, window: int,
                                expand: int) -> Tensor:
    """Official fine-level biases -> one dense ``(heads, s_p^2, s_r^2)`` bias on paper keys.

    ``window_bias (heads, s_p^2, s_p^2)`` (own window), ``ring_bias (heads, s_p^2, slots)``.
    Two slots holding the same token with biases ``b1, b2`` weigh ``e^{s+b1} + e^{s+b2} =
    e^{s + logaddexp(b1, b2)}``, so merging them with ``logaddexp`` gives one key per region cell
    and the same softmax, exactly, wherever the official ring does not wrap.
    """
    heads, queries = window_bias.shape[:2]
    side = window + 2 * expand
    dense = torch.full((heads, queries, side * side), float("-inf"), dtype=window_bias.dtype,
                       device=window_bias.device)
    dense[:, :, window_cells(window, expand)] = window_bias
    if ring_bias is None or expand == 0:
        return dense
    for slot, cell in enumerate(official_ring_slots(window, expand).tolist()):
        dense[:, :, cell] = torch.logaddexp(dense[:, :, cell], ring_bias[:, :, slot])
    return dense


# --------------------------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------------------------


def focal_keys(window: int, levels: Sequence[Level], follow: Follow) -> tuple[int, ...]:
    """Keys per query window at each level (218 or 230 for Focal-T stage 1, by level)."""
    keys = []
    for number, level in enumerate(levels):
        if number == 0 and follow == "official":
            e = ring_width(window, level)
            keys.append(window**2 + (4 * window**2 - 4 * (window - e) ** 2 if e else 0))
        else:
            keys.append(level[1] ** 2)
    return tuple(keys)


def focal_layout(height: int, width: int, window: int, shift: int,
                 follow: Follow) -> tuple[int, int, int]:
    """``(offset, Hp, Wp)``: the window grid's top/left offset and the padded map size."""
    offset = shift if follow == "paper" and height > window and width > window else 0
    return offset, padded_size(height + offset, window), padded_size(width + offset, window)


def focal_macs(height: int, width: int, dim: int, window: int, levels: Sequence[Level],
               follow: Follow = "paper", shift: int = 0, pool: Pool = "fc") -> int:
    """Exact MACs of :class:`FocalAttention` on one ``height x width`` map (module docstring)."""
    height, width = check_size(height, width)
    _, hp, wp = focal_layout(height, width, window, shift, follow)
    tokens, padded = height * width, hp * wp
    total = linear_macs(padded if follow == "official" else tokens, dim, 3 * dim)
    total += linear_macs(tokens, dim, dim)
    for s_w, _ in levels[1:]:
        total += padded * dim if pool == "fc" else 0
        total += linear_macs(padded // s_w**2, dim, 2 * dim)
    keys = sum(focal_keys(window, levels, follow))
    return total + (padded // window**2) * attention_macs(window**2, keys, dim)


# --------------------------------------------------------------------------------------------
# The mixer
# --------------------------------------------------------------------------------------------


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
    """A learned bias per (query, key slot): ``bias_table (heads, Tq, Tk)`` (the official ring)."""

    def __init__(self, heads: int, queries: int, keys: int) -> None:
        super().__init__()
        self.bias_table = nn.Parameter(torch.empty(heads, queries, keys))
        nn.init.trunc_normal_(self.bias_table, std=0.02)

    def bias(self) -> Tensor:
        """``(heads, Tq, Tk)``."""
        return self.bias_table


class Pooling(nn.Module):
    """Sub-window pooling of one level (Eq. 1): learned (``"fc"``), ``"mean"`` or ``"max"``."""

    def __init__(self, size: int, mode: Pool) -> None:
        super().__init__()
        self.size, self.mode = (size, size), mode
        self.fc = SubWindowPool(self.size) if mode == "fc" else None

    def forward(self, x: Tensor) -> Tensor:
        """``(B, Hp, Wp, C) -> (B, Hp/s_w, Wp/s_w, C)``; ``Hp, Wp`` are multiples of ``s_w``."""
        if self.fc is not None:
            pooled: Tensor = self.fc(x)
            return pooled
        return subwindow_pool(x, self.size, "max" if self.mode == "max" else "mean")


@dataclass(frozen=True)
class FocalGeometry:
    """Per map size, every level at once: the keys of window ``n`` are rows ``index[n]`` of the
    fine map's tokens, then each pooled map's tokens, then one zero row (``-1`` slots)."""

    offset: int
    padded: tuple[int, int]
    index: Tensor                 # (nW, K) into the concatenated rows
    allowed: Tensor | None        # paper: (nW, 1, 1, K) slots inside the map
    pad_bias: Tensor | None       # official: (nW, 1, 1, K), -100 on pooled slots outside the map
    shift_bias: Tensor | None     # official shift: (nW, 1, s_p^2, s_p^2), -100 across regions


class FocalAttention(AttentionMixer):
    """Window-wise focal attention (Focal Eqs. 1-3): ``(B, H, W, C) -> (B, H, W, C)``.

    Args:
        dim, heads: channels ``C`` and attention heads.
        window: query window ``s_p``.
        levels: ``((1, s_r^1), (s_w^2, s_r^2), ...)``; see :func:`check_levels`. Focal-T stage 1:
            ``((1, 13), (7, 7))``; window attention alone: ``((1, s_p),)``.
        follow: ``"paper"`` or ``"official"`` (module docstring).
        shift: window shift (Table 8); 0 (the default, as every Focal config) or ``< s_p``.
        pool: sub-window pooling ``"fc"`` (learned, mean-initialised), ``"mean"`` or ``"max"``.
        position_bias: ``"paper"``, ``"official"`` or ``"none"``; defaults to ``follow``
            (official mode always uses the official biases or none).
        qkv_bias: bias in the qkv projection.
    """

    def __init__(
        self, dim: int, heads: int, window: int = 7,
        levels: Sequence[Sequence[int]] = ((1, 13), (7, 7)), follow: Follow = "paper",
        shift: int = 0, pool: Pool = "fc", position_bias: PositionBias | None = None,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, heads, qkv_bias=qkv_bias)
        self.levels = check_levels(window, levels)
        self.window = window
        for name, value, allowed in (("follow", follow, FOLLOW), ("pool", pool, POOL),
                                     ("position_bias", position_bias, (*POSITION_BIAS, None))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {name}={value!r}")
        if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift < window:
            raise ValueError(
                f"shift must be an int with 0 <= shift < window={window}, got shift={shift!r}")
        self.follow: Follow = follow
        self.bias_kind: PositionBias = position_bias or follow
        if follow == "official" and self.bias_kind == "paper":
            raise ValueError("position_bias='paper' needs follow='paper' (official keys differ)")
        self.shift, self.pool = shift, pool
        self.expand = ring_width(window, self.levels[0])
        if follow == "official" and self.expand > window:
            raise ValueError(f"follow='official' gathers its ring with shifts of at most the "
                             f"window: (s_r^1 - s_p)/2 = {self.expand} must be <= {window}")
        self.pools = nn.ModuleList(Pooling(s_w, pool) for s_w, _ in self.levels[1:])
        self.build_biases()

    def build_biases(self) -> None:
        """Fine-level and pooled-level position biases for ``self.bias_kind`` (module docstring)."""
        heads, ws, region = self.heads, self.window, self.levels[0][1]
        self.window_bias: RelativePositionBias | None = None
        self.ring_bias: DenseBias | None = None
        self.fine_bias: nn.Module | None = None
        self.level_bias = nn.ModuleList()
        if self.bias_kind == "none":
            return
        if self.follow == "official":
            self.window_bias = RelativePositionBias(heads, (ws, ws))
            slots = focal_keys(ws, self.levels, "official")[0] - ws * ws
            self.ring_bias = DenseBias(heads, ws * ws, slots) if slots else None
        elif self.bias_kind == "paper":
            self.fine_bias = RelativePositionBias(heads, (ws, ws), (region, region))
        else:
            self.fine_bias = DenseBias(heads, ws * ws, region * region)
        for _, s_r in self.levels[1:]:
            self.level_bias.append(RegionBias(heads, s_r) if self.bias_kind == "paper"
                                   else RelativePositionBias(heads, (ws, ws), (s_r, s_r)))

    def keys_per_window(self) -> tuple[int, ...]:
        """Keys each query window attends at each level (fine first)."""
        return focal_keys(self.window, self.levels, self.follow)

    def effective_shift(self, height: int, width: int) -> int:
        """The shift, or 0 on maps no larger than the window (as Swin and the official code)."""
        return self.shift if height > self.window and width > self.window else 0

    # --- geometry ---------------------------------------------------------------------------

    def build_geometry(self, height: int, width: int, device: torch.device) -> FocalGeometry:
        """Gather indices and masks of every level for one map size (cached per size/device)."""
        ws, official = self.window, self.follow == "official"
        shift = self.effective_shift(height, width)
        offset, hp, wp = focal_layout(height, width, ws, shift, self.follow)
        tokens = torch.full((hp, wp), -1, dtype=torch.long, device="cpu")
        if official:  # the padded map is what keys come from; its padding is not masked
            tokens = torch.arange(hp * wp, device="cpu").view(hp, wp)
        else:
            tokens[offset : offset + height, offset : offset + width] = (
                torch.arange(height * width, device="cpu").view(height, width))
        e = self.expand
        fine = neighbourhood_labels(tokens, (ws, ws), (e, e), wrap=official)
        if official and e:
            fine = fine[:, torch.cat([window_cells(ws, e), official_ring_slots(ws, e)])]
        levels, rows = [fine], hp * wp if official else height * width
        for s_w, s_r in self.levels[1:]:
            cells = torch.arange((hp // s_w) * (wp // s_w), device="cpu").view(hp // s_w, -1)
            if not official:  # pooled tokens made only of padding are masked
                real = rearrange(tokens >= 0, "(h sh) (w sw) -> h w (sh sw)", sh=s_w, sw=s_w)
                cells = torch.where(real.any(-1), cells, -1)
            span, f = ws // s_w, ring_width(ws, (s_w, s_r))
            pooled = neighbourhood_labels(cells, (span, span), (f, f))
            levels.append(torch.where(pooled < 0, pooled, pooled + rows))
            rows += cells.numel()
        index = torch.cat(levels, dim=1)
        outside = (index < 0)[:, None, None, :]
        pad_bias = outside.float() * OFFICIAL_PAD if official and bool(outside.any()) else None
        shift_bias = None
        if official and shift:
            labels = shifted_window_labels((hp, wp), (ws, ws), (shift, shift))
            regions = rearrange(labels, "(nh mh) (nw mw) -> (nh nw) (mh mw)", mh=ws, mw=ws)
            across = regions[:, :, None] != regions[:, None, :]
            shift_bias = across.float()[:, None] * OFFICIAL_PAD
        return FocalGeometry(
            offset, (hp, wp), torch.where(index < 0, rows, index).to(device),
            None if official else (~outside).to(device),
            None if pad_bias is None else pad_bias.to(device),
            None if shift_bias is None else shift_bias.to(device),
        )

    def key_regions(self, height: int, width: int) -> list[Tensor]:
        """Where every key of every window comes from, per level: ``(nW, K_l, 3)`` int64 rows
        ``(row, col, side)``: the key summarises map tokens ``[row, row + side) x [col, col +
        side)``. ``side = 0`` marks a slot outside the map (masked in paper mode, a zero key with
        ``-100`` in official mode). Official coordinates are on the padded map (the ring wraps:
        ``row`` may be on the far side); paper coordinates are on the map. For drawings and tests.
        """
        height, width = check_size(height, width)
        geo = self.build_geometry(height, width, torch.device("cpu"))
        (hp, wp), top = geo.padded, geo.offset
        official = self.follow == "official"
        fine_width = wp if official else width
        regions, start, first = [], 0, 0
        for number, keys in enumerate(self.keys_per_window()):
            index = geo.index[:, first : first + keys]
            s_w = self.levels[number][0]
            side_cells = fine_width if number == 0 else wp // s_w
            count = (hp * wp if official else height * width) if number == 0 else (
                (hp // s_w) * side_cells)
            local = index - start
            inside = (local >= 0) & (local < count)
            shift = 0 if number == 0 else top
            rows = torch.where(inside, (local // side_cells) * s_w - shift, -1)
            cols = torch.where(inside, (local % side_cells) * s_w - shift, -1)
            sides = torch.where(inside, s_w, 0)
            regions.append(torch.stack([rows, cols, sides], dim=-1))
            start, first = start + count, first + keys
        return regions

    # --- forward ----------------------------------------------------------------------------

    def padded_input(self, x: Tensor, geo: FocalGeometry, shift: int) -> Tensor:
        """``x`` zero-padded to the window grid (offset in paper mode, rolled if official shift)."""
        if self.follow == "official":
            xp = pad_to_multiple(x, (self.window, self.window))
            return torch.roll(xp, (-shift, -shift), dims=(1, 2)) if shift else xp
        (hp, wp), top = geo.padded, geo.offset
        return F.pad(x, (0, 0, top, wp - x.shape[2] - top, top, hp - x.shape[1] - top))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        _, height, width, dim = x.shape
        shift = self.effective_shift(height, width)
        geo = self.geometry(("focal", height, width), x.device,
                            lambda: self.build_geometry(height, width, x.device))
        xp = self.padded_input(x, geo, shift)
        if self.follow == "official":
            q, kv = self.qkv(xp).split([dim, 2 * dim], dim=-1)
        else:  # project real tokens only, then place the queries on the padded grid
            q, kv = self.qkv(x).split([dim, 2 * dim], dim=-1)
            (hp, wp), top = geo.padded, geo.offset
            q = F.pad(q, (0, 0, top, wp - width - top, top, hp - height - top))
        q = window_partition(q, (self.window, self.window))
        maps = [kv] + [self.pooled_kv(level, xp) for level in range(1, len(self.levels))]
        k, v = _gather(maps, geo.index)
        out = self.attend(q, KeySource(k, v, self.position_bias(geo), geo.allowed))
        out = window_reverse(out, (self.window, self.window), geo.padded)
        if shift and self.follow == "official":
            out = torch.roll(out, (shift, shift), dims=(1, 2))
        top = geo.offset
        projected: Tensor = self.proj(out[:, top : top + height, top : top + width])
        return projected

    def pooled_kv(self, level: int, xp: Tensor) -> Tensor:
        """Level ``l = level + 1``: pool (Eq. 1), then keys and values (Eq. 2): ``(B, h, w, 2C)``.

        Pooled tokens get only the k, v part of the shared ``qkv`` projection."""
        pooled = self.pools[level - 1](xp)
        dim = self.dim
        bias = None if self.qkv.bias is None else self.qkv.bias[dim:]
        return F.linear(pooled, self.qkv.weight[dim:], bias)

    def position_bias(self, geo: FocalGeometry) -> Tensor | None:
        """``B = {B^l}`` of Eq. 3 for all keys: ``(heads, Tq, K)``, or ``(nW, heads, Tq, K)``
        with the official padding / shift terms."""
        parts: list[Tensor] = []
        if self.window_bias is not None:  # official: own window | ring slots
            own = self.window_bias()
            if geo.shift_bias is not None:
                own = own + geo.shift_bias
            parts.append(own)
            if self.ring_bias is not None:
                parts.append(self.ring_bias.bias())
        elif self.fine_bias is not None:
            parts.append(_bias_of(self.fine_bias))
        parts += [_bias_of(module) for module in self.level_bias]
        if not parts:
            return geo.pad_bias
        lead = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))  # type: ignore[no-untyped-call]
        bias = torch.cat([p.expand(*lead, p.shape[-1]) for p in parts], dim=-1)
        return bias if geo.pad_bias is None else bias + geo.pad_bias

    def macs(self, height: int, width: int) -> int:
        """Exact MACs (module docstring; Focal Sec. 3.2.2)."""
        return focal_macs(height, width, self.dim, self.window, self.levels, self.follow,
                          self.effective_shift(*check_size(height, width)), self.pool)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.heads}, window={self.window}, "
                f"levels={self.levels}, follow={self.follow!r}, shift={self.shift}")


def _bias_of(module: nn.Module) -> Tensor:
    """The bias tensor of a :class:`RelativePositionBias`, :class:`RegionBias` or
    :class:`DenseBias`."""
    if isinstance(module, RelativePositionBias):
        out: Tensor = module()
        return out
    if isinstance(module, (RegionBias, DenseBias)):
        return module.bias()
    raise TypeError(f"not a position bias module: {type(module).__name__}")


def _gather(maps: Sequence[Tensor], index: Tensor) -> tuple[Tensor, Tensor]:
    """Keys and values ``(B, nW, K, C)`` each: rows ``index (nW, K)`` of the maps' tokens
    ``(B, h_l, w_l, 2C)`` concatenated, plus one zero row (the slot for ``-1``)."""
    dim = maps[0].shape[-1] // 2
    zero = maps[0].new_zeros(maps[0].shape[0], 1, dim)
    # k and v gathered apart from contiguous rows: their gradients scatter apart too
    k, v = (
        rearrange(
            torch.cat([rearrange(m[..., part], "b h w c -> b (h w) c") for m in maps] + [zero],
                      dim=1).index_select(1, index.flatten()),
            "b (n k) c -> b n k c", n=index.shape[0])
        for part in (slice(0, dim), slice(dim, 2 * dim))
    )
    return k, v


__all__ = [
    "DenseBias", "FocalAttention", "Pooling", "RegionBias", "check_levels", "focal_keys",
    "focal_layout", "focal_macs", "official_ring_slots", "official_to_paper_fine_bias",
    "ring_width", "window_cells",
]
