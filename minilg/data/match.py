"""*Far match*: a seeded procedural task that only reach can solve (the candidate main-job task).

Every image (a smooth grey background with fine pixel noise) holds two **tokens**, one on each
side, as far apart as their size allows: the left one inside the first ``3/8`` of the width,
the right one inside the last ``3/8`` (at 32 px: ``x < 12`` and ``x >= 20``; a horizontal flip,
the training augmentation, swaps them), each at its own random height. A token is a solid square
of 3 x 3 cells (one cell is ``resolution // 8`` pixels: one 4 x 4 patch of ``deit_mini``, 2 x 2
patches of the hierarchical minis at 32 px) in one of four **colours** (red, green, blue,
yellow).

**The label says whether the two tokens have the same colour** (2 classes, chance 50 %):

=====  ========  ============  ==========================================
label  wnid      name          meaning
=====  ========  ============  ==========================================
0      m0000001  same_colour   the right token has the left token's colour
1      m0000002  other_colour  the right token has one of the three others
=====  ========  ============  ==========================================

It is Long Range Arena's retrieval task (do two documents match?) in its simplest form: a
comparison of two things far apart. The left colour is uniform, and the right one is the same
or a uniformly chosen other one with probability 1/2 each, so **either token alone is
independent of the label** (each colour is equally likely on either side in both classes): the
whole label needs reach (``reach_top1`` = ``top1``), and there is no local shortcut. A model
whose features never join the two halves of the image before the average pool and linear head
scores class ``c`` as ``g_c(left half) + h_c(right half)``, and cross-entropy's best such score
is a constant: chance. A model that mixes the two (attention at any distance) has both colours
in one feature vector, where "same" is a threshold on a sum (``2 e_a`` against ``e_a + e_b``).
(Version 1 asked for the shape as well, 4 classes; at a CPU budget of 4 epochs x 3,000 images
``gg_mini`` and ``sra_mini`` stayed at chance on it, so the task keeps only the colour.)

**Augmentation.** A horizontal flip keeps the label (the relation is symmetric); random resized
crops could cut a token out: use ``scale=None``. (Version 2.)
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = [
    "MATCH_CHANCE",
    "MATCH_CLASSES",
    "MATCH_COLOURS",
    "MATCH_SIZES",
    "MATCH_VERSION",
    "MATCH_WNIDS",
    "generate_match",
]

MATCH_CLASSES: Final[tuple[str, ...]] = ("same_colour", "other_colour")
MATCH_WNIDS: Final[tuple[str, ...]] = tuple(f"m{i + 1:07d}" for i in range(len(MATCH_CLASSES)))
MATCH_CHANCE: Final[float] = 100.0 / len(MATCH_CLASSES)  # top-1 in %, guessing
MATCH_SIZES: Final[dict[str, int]] = {"train": 6000, "val": 1000}
# Bump whenever the generator's output changes (it names the cache folder).
MATCH_VERSION: Final[int] = 2

MATCH_COLOURS: Final[dict[str, tuple[float, float, float]]] = {
    "red": (0.9, 0.15, 0.1),
    "green": (0.1, 0.75, 0.15),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.85, 0.1),
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
    """Generate ``n`` balanced two-token images (see the module docstring).

    Args:
        n: number of images; labels cycle through the 2 classes (balanced if ``n`` is even).
        resolution: side in pixels (>= 16); one cell is ``resolution // 8`` px.
        seed: generator seed; the output is a pure function of ``(n, resolution, seed)``.

    Returns:
        images: uint8 array (n, resolution, resolution, 3), RGB.
        labels: int64 array (n,), values in {0, 1}.
    """
    if resolution < 16:
        raise ValueError(f"resolution must be >= 16, got resolution={resolution}")
    rng = np.random.default_rng(seed)
    r, cell = resolution, resolution // 8
    side = 3 * cell
    labels = rng.permutation(np.arange(n) % len(MATCH_CLASSES)).astype(np.int64)
    colours = np.array(list(MATCH_COLOURS.values()), dtype=np.float32)
    colour_left = rng.integers(0, len(colours), n)
    colour_right = _partner(rng, colour_left, labels, len(colours))

    grey = rng.uniform(*_FIELD, (n, 1, 4, 4)).astype(np.float32)
    field = F.interpolate(torch.from_numpy(grey), size=(r, r), mode="bicubic", align_corners=False)
    images = rearrange(field, "n c h w -> n h w c").numpy().repeat(3, axis=-1)
    images += rng.normal(0.0, _PIXEL_NOISE, (n, r, r, 1)).astype(np.float32)

    band = 3 * r // 8  # each token inside its outer 3/8 of the width, on the cell grid
    x_slots, y_slots = (band - side) // cell + 1, (r - side) // cell + 1
    for i in range(n):
        for x0, colour in ((0, colour_left[i]), (r - band, colour_right[i])):
            x = x0 + cell * int(rng.integers(0, x_slots))
            y = cell * int(rng.integers(0, y_slots))
            images[i, y : y + side, x : x + side] = colours[colour]

    out = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), labels
