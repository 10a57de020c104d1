"""The main job's task, ``match``: definition, independence of each side, loading."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from minilg.data import load_subset
from minilg.data.match import (
    MATCH_CHANCE,
    MATCH_CLASSES,
    MATCH_COLOURS,
    generate_match,
)

N = 400
COLOURS = np.array(list(MATCH_COLOURS.values()))


def _decode(image: npt.NDArray[np.uint8], x0: int) -> int:
    """The colour of the bar over columns ``x0 .. x0 + 7`` (32 px), checked to be one solid bar."""
    rgb = image.astype(np.float32)
    ink = rgb.max(-1) - rgb.min(-1) > 60  # painted pixels are far from grey
    assert ink[:, x0:x0 + 8].all() and not ink[:, 8:24].any()  # two full bars, grey between
    mean = rgb[:, x0:x0 + 8].reshape(-1, 3).mean(0) / 255.0
    return int(np.argmin(((COLOURS - mean) ** 2).sum(-1)))


def _label(image: npt.NDArray[np.uint8]) -> int:
    return int(_decode(image, 0) != _decode(image, 24))


def test_shapes_balance_and_determinism() -> None:
    images, labels = generate_match(N, 32, seed=3)
    assert images.shape == (N, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and Counter(labels.tolist()) == {c: N // 2 for c in range(2)}
    again, labels_again = generate_match(N, 32, seed=3)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert not np.array_equal(images, generate_match(N, 32, seed=4)[0])
    assert MATCH_CHANCE == 50.0 and len(MATCH_CLASSES) == 2


def test_label_says_whether_the_colours_match_across_the_image() -> None:
    images, labels = generate_match(N, 32, seed=0)
    assert [_label(image) for image in images] == labels.tolist()


def test_neither_side_alone_predicts_the_label() -> None:
    """Each side's colour is independent of the label: all 2 x 2 combinations occur about
    equally often, on the left and on the right."""
    images, labels = generate_match(1600, 32, seed=1)
    for x0 in (0, 24):
        side = [_decode(image, x0) for image in images]
        counts = Counter(zip(side, labels.tolist(), strict=True))
        assert len(counts) == 4
        # expected 400 each; 5 binomial standard deviations (sqrt(400 * 3/4) = 17.3)
        assert all(abs(n - 400) < 87 for n in counts.values()), counts


def test_bad_resolution_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match="resolution must be >= 16, got resolution=8"):
        generate_match(4, 8)


def test_loads_by_name_through_the_cache(tmp_path: Path) -> None:
    val = load_subset("match", "val", cache_dir=tmp_path, max_per_class=3)
    assert tuple(val.images.shape) == (6, 32, 32, 3) and val.num_classes == 2
    assert list(val.classes) == list(MATCH_CLASSES)
    # the PNG round trip keeps every image with its label
    assert [_label(image) for image in val.images.numpy()] == val.labels.tolist()
    with pytest.raises(ValueError, match="generated"):
        load_subset("match", root=tmp_path)
