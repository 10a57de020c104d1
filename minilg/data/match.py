"""*Far match*: a seeded procedural task that only reach can solve (the main job's task).

Every image (a smooth grey background with fine pixel noise) holds two **bars**, one at each
edge and as far apart as the image allows: the left bar covers the first quarter of the width,
the right bar the last quarter (at 32 px: ``x < 8`` and ``x >= 24``, full height), so half the
image (16 px of background) lies between them. Each bar is one of two **colours**, blue or
orange (told apart by every colour-vision deficiency; both far from the grey).

**The label says whether the two bars have the same colour** (2 classes, chance 50 %):

=====  ========  ============  ==========================================
label  wnid      name          meaning
=====  ========  ============  ==========================================
0      m0000001  same_colour   the right bar has the left bar's colour
1      m0000002  other_colour  the right bar has the other colour
=====  ========  ============  ==========================================

It is Long Range Arena's retrieval task (do two documents match?) in its simplest form: a
comparison of two things far apart. Both colours are equally likely on either side in both
classes, so **either bar alone is independent of the label**: the whole label needs reach
(``reach_top1`` = ``top1``), and there is no local shortcut to rest on. A model whose features
never join the two halves of the image before the average pool and linear head scores class
``c`` as ``g_c(left half) + h_c(right half)``; with each side independent of the label,
cross-entropy's best such score is a constant: chance. A model that mixes the two (attention at
any distance, even uniform attention) holds both colours in one feature vector, where "same" is
a threshold on a sum (two blues, one of each, two oranges): one ReLU pair of an MLP.

**History.** Version 1 asked for shape and colour (4 classes) of small squares; version 2 kept
only the colour of 12 x 12 px squares among four colours; at the CPU budget runs stalled on
plateaus where two similar colours (red and yellow, green and yellow) were confused, or stayed at
chance. Version 3 (this one) has two colours and full-height bars: 50 % of the pixels carry the
colour, against 14 % for the squares.

**The part of the label that needs reach.** With ``a, b = +-1`` the two bars' colours, any
score a model gives an image is ``c + alpha a + beta b + gamma ab`` (plus terms of the
background): ``alpha a + beta b`` is what each side says alone, ``gamma ab`` the interaction
that only reach can compute, and the label is the sign of ``ab``. A model without reach has
``gamma = 0``, yet its top-1 need not be 50 %: near the end of training its logits are almost
constant, and the signs of tiny leftover terms ``alpha a + beta b`` classify the four colour
pairs (a quarter of the images each) as they fall, so its top-1 lands near 25, 50 or 75 %
(cross-entropy's optimum for it is the constant, at loss ln 2). :func:`swap_colours` exchanges
the two colours in both bars, which keeps the label and flips the signs of ``a`` and ``b``; the
sum of a model's scores for an image and its swapped twin is ``2c + 2 gamma ab``, exactly the
interaction. Its top-1, ``reach_top1`` (:func:`minilg.training.evaluation.symmetrised_top1`),
is the accuracy on the part of the label that needs reach: chance for every model whose two
halves never meet, whatever its leftover terms.

**Augmentation.** A horizontal flip keeps the label (the relation is symmetric); random resized
crops could cut a bar out: use ``scale=None``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

__all__ = [
    "MATCH_CHANCE",
    "MATCH_CLASSES",
    "MATCH_COLOURS",
    "MATCH_SIZES",
    "MATCH_VERSION",
    "MATCH_WNIDS",
    "generate_match",
    "swap_colours",
]

MATCH_CLASSES: Final[tuple[str, ...]] = ("same_colour", "other_colour")
MATCH_WNIDS: Final[tuple[str, ...]] = tuple(f"m{i + 1:07d}" for i in range(len(MATCH_CLASSES)))
MATCH_CHANCE: Final[float] = 100.0 / len(MATCH_CLASSES)  # top-1 in %, guessing
MATCH_SIZES: Final[dict[str, int]] = {"train": 6000, "val": 1000}
# Bump whenever the generator's output changes (it names the cache folder).
MATCH_VERSION: Final[int] = 3

MATCH_COLOURS: Final[dict[str, tuple[float, float, float]]] = {
    "blue": (0.1, 0.35, 0.95),
    "orange": (0.95, 0.55, 0.05),
}
_PIXEL_NOISE: Final[float] = 0.03  # std of the fine per-pixel noise
_FIELD: Final[tuple[float, float]] = (0.4, 0.6)  # range of the grey background field


def _partner(rng: np.random.Generator, first: npt.NDArray[np.int64],
             other: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.int64]:
    """``first`` where ``other == 0``; a uniformly chosen different value of ``k`` elsewhere."""
    step = rng.integers(1, k, len(first))
    return np.where(other == 1, (first + step) % k, first)


def generate_match(
    n: int, resolution: int = 32, seed: int = 0
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Generate ``n`` balanced two-bar images (see the module docstring).

    Args:
        n: number of images; labels cycle through the 2 classes (balanced if ``n`` is even).
        resolution: side in pixels (>= 16); each bar is ``resolution // 4`` px wide.
        seed: generator seed; the output is a pure function of ``(n, resolution, seed)``.

    Returns:
        images: uint8 array (n, resolution, resolution, 3), RGB.
        labels: int64 array (n,), values in {0, 1}: 0 = same colour, 1 = other colour.
    """
    if resolution < 16:
        raise ValueError(f"resolution must be >= 16, got resolution={resolution}")
    rng = np.random.default_rng(seed)
    r, bar = resolution, resolution // 4
    labels = rng.permutation(np.arange(n) % len(MATCH_CLASSES)).astype(np.int64)
    colours = np.array(list(MATCH_COLOURS.values()), dtype=np.float32)
    colour_left = rng.integers(0, len(colours), n)
    colour_right = _partner(rng, colour_left, labels, len(colours))

    grey = rng.uniform(*_FIELD, (n, 1, 4, 4)).astype(np.float32)
    field = F.interpolate(torch.from_numpy(grey), size=(r, r), mode="bicubic", align_corners=False)
    images = rearrange(field, "n c h w -> n h w c").numpy().repeat(3, axis=-1)
    images += rng.normal(0.0, _PIXEL_NOISE, (n, r, r, 1)).astype(np.float32)
    images[:, :, :bar] = colours[colour_left][:, None, None]  # (n, 1, 1, 3) over the left bar
    images[:, :, r - bar:] = colours[colour_right][:, None, None]

    out = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), labels


def swap_colours(images: Tensor) -> Tensor:
    """``images`` (uint8, (N, H, W, 3)) with the two bar colours exchanged, in both bars.

    The label is unchanged (same stays same); every other pixel is kept. Bars are painted
    after the noise, so a bar pixel holds exactly its colour's uint8 value.
    """
    blue, orange = (torch.tensor(np.rint(np.array(c) * 255.0), dtype=torch.uint8,
                                 device=images.device) for c in MATCH_COLOURS.values())
    is_blue = (images == blue).all(-1, keepdim=True)
    is_orange = (images == orange).all(-1, keepdim=True)
    return torch.where(is_blue, orange, torch.where(is_orange, blue, images))
