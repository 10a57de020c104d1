"""Focal attention as the authors' code computes it (``follow="official"``), beside the paper's.

:class:`OfficialFocalAttention` overrides only the steps of
:class:`~minilg.attention.focal.FocalAttention` (Focal Sec. 3.2, Eqs. 1-3) where the official
code's data flow differs; everything else (levels, pooling, the one softmax over all levels) is
the paper module's:

=========================  ===================================  ===================================
step                       paper (:mod:`~minilg.attention.focal`)  official (this module)
=========================  ===================================  ===================================
input                      projected on real tokens only        zero-padded bottom/right to the
                                                                window, then projected; padding
                                                                **unmasked** (its keys = qkv bias)
fine level (l = 1)         the ``s_r x s_r`` neighbourhood,     the window's ``s_p^2`` tokens, then
                           outside the map masked               a ring gathered as four cyclic
                                                                rolls by ``(+-e, +-e)`` would,
                                                                **wrapping around the border**
fine-level bias            relative table over the region       Swin's table for the own window, a
                                                                dense ``(heads, s_p^2, slots)``
                                                                learned bias for the ring
pooled level k = l - 2      ``s_w | s_p``, ``s_p / s_w`` tokens  ``s_w = floor(s_p / 2^k)``, ``2^k``
                           per window side, the sub-windows     tokens per window side; the map is
                           tile the padded map                  trimmed symmetrically to
                                                                ``(Hp / s_p) 2^k s_w`` first
pooled-level bias          ``B^l in R^{s_r x s_r}`` (Eq. 3)     relative table ``(s_p+s_r-1)^2``
pooled slots outside map   masked                               zero keys with ``-100`` added
window shift               grid offset, top/left padding        roll by ``-shift`` and Swin's
                           masked                               ``-100`` region mask (own window)
=========================  ===================================  ===================================

Pooled levels (:func:`check_official_levels`): the official ``focal_level = L`` has pooled
levels ``k = 0 .. L - 2``; level ``k`` pools ``floor(s_p / 2^k)``-sized sub-windows, gives each
window ``2^k x 2^k`` pooled tokens (7 // 2 = 3: a 7-window maps to 6 rows of the trimmed map)
and gathers them with ``fw // 2`` more on every side (its ``nn.Unfold`` of kernel
``fw + 2^(k+1) - 2``, stride ``2^k``, keeps ``s_r = fw + 2^k - 1`` rows per side), so
``levels[k + 1] = (floor(s_p / 2^k), fw + 2^k - 1)``. The own-window table starts at zero, as
the official one (the ring and pooled-level tables start from a truncated normal, as there).

The ring has ``4 s_p^2 - 4 (s_p - e)^2`` slots for ``e = (s_r - s_p)/2``: 132 for ``s_p = 7,
e = 3`` (the 120 ring tokens, 12 of them twice). minilg gathers the same slots in the same order
with one index (:func:`official_ring_slots`) into a wrapped neighbourhood instead of four rolled
copies. Keys per window by stage of Focal-T: 230, 206, 190, 50.

Cost: as the paper's (:func:`~minilg.attention.focal.focal_macs`), with ``qkv`` on the ``Np``
padded tokens and ``keys_1 = s_p^2 + ring slots``.

Official weights also run on the paper's keys: :func:`official_to_paper_fine_bias` merges the
own-window and ring biases into one dense ``(heads, s_p^2, s_r^2)`` fine bias
(``position_bias="official"`` in paper mode), exact on every window whose ring does not wrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from minilg.attention.focal import (
    FocalAttention,
    FocalGeometry,
    Follow,
    Level,
    Pool,
    PositionBias,
    check_levels,
    ring_width,
)
from minilg.attention.grouping import neighbourhood_labels, pad_to_multiple, shifted_window_labels
from minilg.attention.position import DenseBias, RelativePositionBias
from minilg.validate import positive_int

# The official code's padding value for pooled slots outside the map (and the shift mask).
OFFICIAL_PAD = -100.0


# --------------------------------------------------------------------------------------------
# The official levels
# --------------------------------------------------------------------------------------------


def check_official_levels(window: int, levels: Sequence[Sequence[int]]) -> tuple[Level, ...]:
    """Validate official-mode levels: the fine level as the paper's (:func:`~minilg.attention.
    focal.check_levels`), then pooled level ``k`` (``levels[k + 1]``) with ``s_w =
    floor(s_p / 2^k) >= 1`` and ``s_r - 2^k`` even and ``>= 0`` (a region centred on the
    window's ``2^k x 2^k`` pooled tokens). A ValueError names the level and the rule."""
    whole = isinstance(levels, (tuple, list)) and len(levels) > 0
    checked = list(check_levels(window, levels[:1] if whole else levels))
    for number, level in enumerate(levels[1:], start=1):
        name, k = f"levels[{number}]", number - 1
        if not isinstance(level, (tuple, list)) or len(level) != 2:
            raise ValueError(f"{name} must be a pair (s_w, s_r) of positive integers, "
                             f"got {name}={level!r}")
        s_w, s_r = positive_int(level[0], f"{name}[0]"), positive_int(level[1], f"{name}[1]")
        if s_w != window // 2**k or s_w < 1:
            raise ValueError(f"{name} must have s_w = floor(s_p / 2^{k}) = {window // 2**k} >= 1 "
                             f"in official mode (pooled level k = {k}), got {name}={level!r}")
        if s_r < 2**k or (s_r - 2**k) % 2:
            raise ValueError(f"{name} must have s_r - 2^{k} even and >= 0 in official mode (a "
                             f"region centred on the window's {2**k} pooled tokens per side), "
                             f"got {name}={level!r}")
        checked.append((s_w, s_r))
    return tuple(checked)


def official_levels(window: int, expand: int, focal_level: int, focal_window: int
                    ) -> tuple[Level, ...]:
    """The levels of an official block: ``(1, s_p + 2e)``, then ``(floor(s_p / 2^k),
    fw + 2^k - 1)`` for ``k = 0 .. focal_level - 2`` (``fw`` odd)."""
    pooled = [(window // 2**k, focal_window + 2**k - 1) for k in range(focal_level - 1)]
    return check_official_levels(window, [(1, window + 2 * expand), *pooled])


# --------------------------------------------------------------------------------------------
# The official ring
# --------------------------------------------------------------------------------------------


def _grid(side: int) -> tuple[Tensor, Tensor]:
    """Row and column coordinates of a ``side x side`` grid (on the CPU: geometry is data)."""
    coords = torch.arange(side, device="cpu")
    a, b = torch.meshgrid(coords, coords, indexing="ij")
    return a, b


def official_ring_slots(window: int, expand: int) -> Tensor:
    """The official ring's slots, in its order, as indices into the ``(s_p + 2e)^2`` region.

    The official code rolls the map by ``(-e,-e), (-e,+e), (+e,-e), (+e,+e)``; window position
    ``(a, b)`` of the four copies holds region cell ``(a + dy, b + dx)`` with ``(dy, dx)`` =
    ``(2e, 2e), (2e, 0), (0, 2e), (0, 0)``; each copy drops the ``(s_p - e)^2`` positions that
    fall inside the window, leaving ``4 s_p^2 - 4 (s_p - e)^2`` slots. Requires
    ``0 < e <= s_p``.
    """
    if not 0 < expand <= window:
        raise ValueError(f"expand must be an integer with 0 < expand <= window={window}, "
                         f"got expand={expand!r}")
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
# The mixer: what differs from the paper's
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfficialGeometry(FocalGeometry):
    """:class:`~minilg.attention.focal.FocalGeometry` with the official additive terms."""

    pad_bias: Tensor | None       # (nW, 1, 1, K), -100 on pooled slots outside the map
    shift_bias: Tensor | None     # (nW, 1, s_p^2, s_p^2), -100 across shifted regions


class OfficialFocalAttention(FocalAttention, follow="official"):
    """Focal attention with the official code's data flow (module docstring):
    ``(B, H, W, C) -> (B, H, W, C)``. Arguments as :class:`~minilg.attention.focal.FocalAttention`
    (``position_bias`` ``"official"`` or ``"none"``); layers named as the official ``attn.*``:
    ``qkv``, ``proj``, ``window_bias``, ``ring_bias``, ``level_bias``, ``pools``.
    """

    position_biases = ("official", "none")
    projects_padding = True

    def __init__(
        self, dim: int, heads: int, window: int = 7,
        levels: Sequence[Sequence[int]] = ((1, 13), (7, 7)), follow: Follow = "official",
        shift: int = 0, pool_mode: Pool = "fc", position_bias: PositionBias | None = None,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, heads, window, levels, follow, shift, pool_mode, position_bias,
                         qkv_bias)

    @staticmethod
    def check_levels(window: int, levels: Sequence[Sequence[int]]) -> tuple[Level, ...]:
        """Official pooled levels (:func:`check_official_levels`)."""
        return check_official_levels(window, levels)

    def check_flow(self) -> None:
        if self.follow != "official":
            raise ValueError(f"follow must be 'official' for {type(self).__name__}, "
                             f"got follow={self.follow!r}")
        if self.expand > self.window:
            raise ValueError(
                f"levels[0] must have (s_r - s_p)/2 <= s_p in official mode (its ring is "
                f"gathered with shifts of at most the window), got levels[0]={self.levels[0]}")

    def build_fine_bias(self) -> None:
        """Swin's table for the own window and a dense bias for the ring slots."""
        ws = self.window
        self.window_bias: RelativePositionBias | None = None
        self.ring_bias: DenseBias | None = None
        if self.bias_kind == "none":
            return
        self.window_bias = RelativePositionBias(self.heads, (ws, ws))
        nn.init.zeros_(self.window_bias.bias_table)  # the official table starts at zero
        slots = self.keys_per_window()[0] - ws * ws
        self.ring_bias = DenseBias(self.heads, ws * ws, slots) if slots else None

    @staticmethod
    def level_keys(window: int, levels: Sequence[Level]) -> tuple[int, ...]:
        """Keys per window: own window plus ring slots, then ``(s_r^l)^2`` per pooled level."""
        e = ring_width(window, levels[0])
        fine = window**2 + (4 * window**2 - 4 * (window - e) ** 2 if e else 0)
        return (fine, *(s_r**2 for _, s_r in levels[1:]))

    @staticmethod
    def layout(height: int, width: int, window: int, shift: int) -> tuple[int, int, int]:
        """No offset (the shift rolls the map); padded bottom/right to the window grid."""
        return FocalAttention.layout(height, width, window, 0)

    @staticmethod
    def pooled_grid(hp: int, wp: int, window: int, number: int, s_w: int) -> tuple[int, int]:
        """``2^k`` pooled tokens per window side: ``((Hp / s_p) 2^k, (Wp / s_p) 2^k)``."""
        per_window = 2 ** (number - 1)
        return hp // window * per_window, wp // window * per_window

    @staticmethod
    def pooled_span(window: int, number: int, s_w: int) -> int:
        """``2^k`` for pooled level ``k = number - 1``."""
        span: int = 2 ** (number - 1)
        return span

    def pooled_origin(self, hp: int, wp: int, number: int) -> tuple[int, int]:
        """The symmetric trim (``> 0``) or padding (``< 0``) before pooling, top and left."""
        s_w = self.levels[number][0]
        rows, cols = self.pooled_grid(hp, wp, self.window, number, s_w)

        def half(excess: int) -> int:  # trim_t = excess // 2, pad_t = -excess // 2 (rounded down)
            return excess // 2 if excess >= 0 else -(-excess // 2)

        return half(hp - rows * s_w), half(wp - cols * s_w)

    def pooled_cells(self, tokens: Tensor, number: int) -> Tensor:
        """Every pooled token is a key (padding is not masked)."""
        hp, wp = tokens.shape
        rows, cols = self.pooled_grid(hp, wp, self.window, number, self.levels[number][0])
        return torch.arange(rows * cols, device="cpu").view(rows, cols)

    def pooled_input(self, level: int, xp: Tensor) -> Tensor:
        """The shifted, padded map trimmed (or zero-padded) symmetrically, extra at the
        bottom/right, to ``(Hp / s_p) 2^k s_w`` rows and columns."""
        _, hp, wp, _ = xp.shape
        s_w = self.levels[level][0]
        rows, cols = self.pooled_grid(hp, wp, self.window, level, s_w)
        top, left = self.pooled_origin(hp, wp, level)
        # F.pad crops with negative amounts: -top rows on top, the rest at the bottom
        extra_h, extra_w = rows * s_w - hp, cols * s_w - wp
        return F.pad(xp, (0, 0, -left, extra_w + left, -top, extra_h + top))

    def fine_index(self, tokens: Tensor) -> Tensor:
        """Own window, then the ring slots of the wrapped neighbourhood."""
        ws, e = self.window, self.expand
        fine = neighbourhood_labels(tokens, (ws, ws), (e, e), wrap=True)
        if e:
            fine = fine[:, torch.cat([window_cells(ws, e), official_ring_slots(ws, e)])]
        return fine

    def build_geometry(self, height: int, width: int, device: torch.device) -> OfficialGeometry:
        """Every padded token is a key; ``-100`` on pooled slots outside the map and, with a
        shift, between the rolled map's regions."""
        ws, shift = self.window, self.effective_shift(height, width)
        _, hp, wp = self.layout(height, width, ws, shift)
        index, rows = self.key_index(torch.arange(hp * wp, device="cpu").view(hp, wp))
        outside = (index < 0)[:, None, None, :]
        pad_bias = outside.float() * OFFICIAL_PAD if bool(outside.any()) else None
        shift_bias = None
        if shift:
            labels = shifted_window_labels((hp, wp), (ws, ws), (shift, shift))
            regions = rearrange(labels, "(nh mh) (nw mw) -> (nh nw) (mh mw)", mh=ws, mw=ws)
            across = regions[:, :, None] != regions[:, None, :]
            shift_bias = (across.float()[:, None] * OFFICIAL_PAD).to(device)
        return OfficialGeometry(
            shift, 0, (hp, wp), (hp, wp), torch.where(index < 0, rows, index).to(device), None,
            None if pad_bias is None else pad_bias.to(device), shift_bias)

    def project(self, x: Tensor, geo: FocalGeometry) -> tuple[Tensor, Tensor, Tensor]:
        """Pad bottom/right, roll by ``-shift``, then project every padded token."""
        xp = pad_to_multiple(x, (self.window, self.window))
        if geo.shift:
            xp = torch.roll(xp, (-geo.shift, -geo.shift), dims=(1, 2))
        q, kv = self.qkv(xp).split([self.dim, 2 * self.dim], dim=-1)
        return q, kv, xp

    def crop(self, out: Tensor, geo: FocalGeometry, height: int, width: int) -> Tensor:
        """Roll back by ``+shift``, then the real tokens."""
        if geo.shift:
            out = torch.roll(out, (geo.shift, geo.shift), dims=(1, 2))
        return out[:, :height, :width]

    def fine_bias_parts(self, geo: FocalGeometry) -> list[Tensor]:
        """Own window (plus the shift mask) | ring slots."""
        if self.window_bias is None:
            return []
        own = self.window_bias()
        if isinstance(geo, OfficialGeometry) and geo.shift_bias is not None:
            own = own + geo.shift_bias
        return [own] if self.ring_bias is None else [own, self.ring_bias.bias()]

    def position_bias(self, geo: FocalGeometry) -> Tensor | None:
        """The levels' biases plus ``-100`` on pooled slots outside the map."""
        bias = super().position_bias(geo)
        pad = geo.pad_bias if isinstance(geo, OfficialGeometry) else None
        if pad is None:
            return bias
        return pad if bias is None else bias + pad


__all__ = [
    "OFFICIAL_PAD", "OfficialFocalAttention", "OfficialGeometry", "check_official_levels",
    "official_levels", "official_ring_slots",
    "official_to_paper_fine_bias", "window_cells",
]
