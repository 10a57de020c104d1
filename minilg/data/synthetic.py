"""The embedded default dataset: *two glyph columns*, a seeded procedural image-classification task.

Every image is a smooth coloured random background (a low-frequency colour field plus fine
pixel noise) carrying two columns of tiny **glyphs**, one column near the left edge and one near
the right edge, so the two are always far apart (at 32 px: the left column starts at x = 0 or 2,
the right one at x = 24 or 26, each at its own random vertical offset). A glyph is a 3x3-cell
pattern (one cell = ``resolution // 16`` pixels, i.e. one 2x2 patch of the ``*_mini`` models at
32 px; glyphs sit on the cell grid) with exactly three "ink" cells, so all glyphs carry the same
mass and only the fine arrangement of the cells tells them apart. All glyphs of a column share
one contrast: brighter or darker than the background. (Version 1 of this task drew a single
glyph per side; transformers trained from scratch on a CPU budget could not find it, so each
side now repeats its glyph down a column: the same fine detail, far more often.)

The label has two factors:

* ``shape`` (fine, local): both glyphs of an image have the same shape, one of
  ``dash`` (-), ``bar`` (|), ``diagonal`` (/ or \\, drawn independently per copy), ``vee`` (v)
  and ``hat`` (^);
* ``contrast`` (long-range relation): whether the two columns have the *same* or *opposite*
  contrast, i.e. the XOR of two signs that sit on opposite sides of the image.

That gives 10 classes, label ``2 * shape_index + contrast_index``:

=====  ========  ==================  ==========================================
label  wnid      name                meaning
=====  ========  ==================  ==========================================
0      s0000001  dash_same           two dashes, both bright or both dark
1      s0000002  dash_opposite       two dashes, one bright and one dark
2      s0000003  bar_same            ...
3      s0000004  bar_opposite
4      s0000005  diagonal_same
5      s0000006  diagonal_opposite
6      s0000007  vee_same
7      s0000008  vee_opposite
8      s0000009  hat_same
9      s0000010  hat_opposite
=====  ========  ==================  ==========================================

Each glyph's contrast alone is independent of the label (both signs are equally likely in
every class), so the contrast factor lives only in the pair.

**Why a purely local model fails.** A model whose windows never exchange information, then
average-pools window features and applies a linear head, scores class ``c`` as
``g_c(left window) + h_c(right window) + const``. It reads the shape from either glyph, but an
additive score cannot compute an XOR (same/opposite) of the two contrasts: it tops out at
about 50 % (shape right, contrast a coin flip). Chance is 10 %.

**Why a purely coarse-global model fails.** After heavy pooling (e.g. 8 x 8 average pooling at
32 px) a three-cell glyph is a faint blob: its shape is gone (all shapes have the same ink)
while its sign (contrast) survives. Such a model can relate the two blobs and get the
same/opposite factor, but must guess the shape: at most about 2/10 = 20 %.

A model that sees fine detail *and* relates the two sides of the image solves the task. A small
CNN whose features are max-pooled per image half and combined by an MLP plateaus at the
local-only ~50 % for a few epochs, then jumps to ~100 % (about 2 CPU minutes at 32 px); the
same CNN with a global-average-pool + linear head (no exchange between the far-apart glyphs)
stays at the ~50 % local-only ceiling.

**Augmentation.** A horizontal flip preserves the label (shapes are mirror-symmetric as
families, contrast relation is symmetric). Random resized crops can cut a glyph out of the
picture and corrupt the label: use ``BatchAugment(scale=None)`` (no crop) for this dataset.
"""

from __future__ import annotations

import hashlib
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from einops import rearrange

from minilg.validate import whole_number

__all__ = [
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_SIZES",
    "SYNTHETIC_VERSION",
    "SYNTHETIC_WNIDS",
    "generate_synthetic",
    "split_seed",
]

SHAPE_NAMES: Final[tuple[str, ...]] = ("dash", "bar", "diagonal", "vee", "hat")
CONTRAST_NAMES: Final[tuple[str, ...]] = ("same", "opposite")
SYNTHETIC_CLASSES: Final[tuple[str, ...]] = tuple(
    f"{a}_{c}" for a in SHAPE_NAMES for c in CONTRAST_NAMES
)
SYNTHETIC_WNIDS: Final[tuple[str, ...]] = tuple(
    f"s{i + 1:07d}" for i in range(len(SYNTHETIC_CLASSES))
)
SYNTHETIC_SIZES: Final[dict[str, int]] = {"train": 5000, "val": 1000}
# Bump whenever the generator's output changes: it is part of the cache folder's name, so a
# cache written by an older generator is never mistaken for the current data set.
SYNTHETIC_VERSION: Final[int] = 4

# 3x3 glyph masks, three ink cells each. Index 5 is the mirror image of index 2: "diagonal"
# glyphs are drawn as either, so every shape family is invariant to a horizontal flip.
_GLYPHS: Final[npt.NDArray[np.float32]] = np.array(
    [
        [[0, 0, 0], [1, 1, 1], [0, 0, 0]],  # dash      -
        [[0, 1, 0], [0, 1, 0], [0, 1, 0]],  # bar       |
        [[0, 0, 1], [0, 1, 0], [1, 0, 0]],  # diagonal  /
        [[1, 0, 1], [0, 1, 0], [0, 0, 0]],  # vee       v
        [[0, 0, 0], [0, 1, 0], [1, 0, 1]],  # hat       ^
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],  # diagonal  \
    ],
    dtype=np.float32,
)
_CONTRAST: Final[float] = 0.5  # glyph amplitude on a [0, 1] intensity scale
_PIXEL_NOISE: Final[float] = 0.03  # std of the fine per-pixel noise
_FIELD: Final[tuple[float, float]] = (0.4, 0.6)  # range of the background colour field


def split_seed(seed: int, split: str) -> int:
    """A 63-bit seed for ``split`` derived from ``seed``; train and val never share a stream."""
    digest = hashlib.sha256(f"minilg-synthetic:{seed}:{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generate_synthetic(
    n: int, resolution: int = 32, seed: int = 0
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Generate ``n`` balanced two-glyph images (see the module docstring).

    Args:
        n: number of images; labels cycle through the 10 classes (balanced if ``n % 10 == 0``).
        resolution: side in pixels (>= 16); one glyph cell is ``max(1, resolution // 16)`` px.
        seed: generator seed; the output is a pure function of ``(n, resolution, seed)``.

    Returns:
        images: uint8 array (n, resolution, resolution, 3), RGB.
        labels: int64 array (n,), values in [0, 10).
    """
    whole_number(n, "n")
    whole_number(resolution, "resolution", minimum=16)
    rng = np.random.default_rng(seed)
    num_classes = len(SYNTHETIC_CLASSES)
    r = resolution
    cell = max(1, r // 16)
    glyph = 3 * cell

    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    shape, opposite = labels // 2, labels % 2
    sign_left = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), n)
    sign_right = np.where(opposite == 1, -sign_left, sign_left)

    # Background: a low-frequency colour field (4x4 control points, bilinear) plus pixel noise.
    coarse = torch.from_numpy(rng.uniform(*_FIELD, (n, 3, 4, 4)).astype(np.float32))
    field = F.interpolate(coarse, size=(r, r), mode="bicubic", align_corners=False)
    background = rearrange(field, "n c h w -> n h w c").numpy()
    noise = rng.normal(0.0, _PIXEL_NOISE, (n, r, r, 1)).astype(np.float32)
    images = background + noise

    # Each side holds a column of copies of its glyph (dense, so the fine pattern is easy to find):
    # the left column inside the first quarter of the image, the right one inside the last
    # quarter, each at a random horizontal and vertical offset on the cell grid.
    quarter = r // 4
    masks = np.kron(_GLYPHS, np.ones((cell, cell), dtype=np.float32))  # (6, glyph, glyph)
    x_slots = (quarter - glyph) // cell + 1
    for i in range(n):
        for x0, sign in ((0, sign_left[i]), (r - quarter, sign_right[i])):
            x = x0 + cell * int(rng.integers(0, x_slots))
            y_first = cell * int(rng.integers(0, 3)) - glyph
            for y in range(y_first, r - glyph + 1, glyph + cell):
                if y < 0:
                    continue
                # a "diagonal" copy is drawn as / or \ at random, so flips keep the class
                o = 5 if shape[i] == 2 and rng.random() < 0.5 else int(shape[i])
                ink = (sign * _CONTRAST) * masks[o][..., None]
                images[i, y : y + glyph, x : x + glyph, :] += ink

    out = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), labels
