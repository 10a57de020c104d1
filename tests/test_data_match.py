"""The main job's task, ``match``: definition, independence of each side, loading."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

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


def test_swap_colours_exchanges_the_two_bars_colours_and_keeps_the_label() -> None:
    import torch

    from minilg.data.match import swap_colours

    images, labels = generate_match(64, 32, seed=5)
    x = torch.from_numpy(images)
    swapped = swap_colours(x).numpy()
    assert [_label(image) for image in swapped] == labels.tolist()  # same stays same
    for before, after in zip(images, swapped, strict=True):
        assert _decode(before, 0) != _decode(after, 0) and _decode(before, 24) != _decode(after, 24)
    assert np.array_equal(swapped[:, :, 8:24], images[:, :, 8:24])  # the background is kept
    assert torch.equal(swap_colours(swap_colours(x)), x)


class _BarModel:
    """A toy classifier of normalised images (B, 3, 32, 32): its 'other colour' logit is
    ``alpha * a + beta * b + gamma * a * b + c`` of the bars' colours ``a, b = +-1`` (blue: +1),
    read from the red channel of each bar's pixels."""

    def __init__(self, alpha: float, beta: float, gamma: float, c: float) -> None:
        import torch

        self.coef = (alpha, beta, gamma, c)
        self.num_classes = 2
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def parameters(self) -> Any:
        return iter([self.weight])

    training = False

    def eval(self) -> _BarModel:
        return self

    def train(self, mode: bool = True) -> _BarModel:
        return self

    def __call__(self, x: Any) -> Any:
        import torch

        a = torch.where(x[:, 0, :, :8].mean((1, 2)) < 0, 1.0, -1.0)  # blue has little red
        b = torch.where(x[:, 0, :, 24:].mean((1, 2)) < 0, 1.0, -1.0)
        alpha, beta, gamma, c = self.coef
        other = alpha * a + beta * b + gamma * a * b + c
        return torch.stack([torch.zeros_like(other), other], dim=1)


def test_reach_top1_is_chance_without_the_interaction_and_full_with_it() -> None:
    """The summed scores of an image and its colour-swapped twin keep only ``gamma * a * b``:
    models without it score exactly the share of the class they all fall in (50 % here),
    whatever their one-sided terms, though their plain top-1 is 25 or 75 %."""
    import torch

    from minilg.data.match import swap_colours
    from minilg.training.evaluation import evaluate, symmetrised_top1

    images, labels = generate_match(400, 32, seed=6)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    for one_sided in [(0.3, 0.2, 0.0, -0.1), (-0.05, 0.02, 0.0, 0.01), (1.0, 1.0, 0.0, 1.5)]:
        model = _BarModel(*one_sided)
        assert symmetrised_top1(model, x, y, swap_colours) == 50.0  # type: ignore[arg-type]
    # an AND-like one-sided rule: 'same' only when both bars are blue -> 3 of 4 pairs right
    plain = evaluate(_BarModel(-1.0, -1.0, 0.0, 1.5), x, y)["top1"]  # type: ignore[arg-type]
    assert abs(plain - 75.0) < 5.0
    reach = _BarModel(0.3, -0.2, -1.0, 0.1)  # 'other' when a * b = -1
    assert symmetrised_top1(reach, x, y, swap_colours) == 100.0  # type: ignore[arg-type]
