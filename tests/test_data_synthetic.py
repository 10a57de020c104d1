"""minilg.data.synthetic and the ``"synthetic"`` subset: deterministic, balanced, cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from minilg.data import generate_synthetic, load_subset
from minilg.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_WNIDS, split_seed


def test_synthetic_generator_deterministic_and_balanced() -> None:
    a_img, a_lab = generate_synthetic(80, 32, seed=3)
    b_img, b_lab = generate_synthetic(80, 32, seed=3)
    c_img, _ = generate_synthetic(80, 32, seed=4)
    assert a_img.shape == (80, 32, 32, 3) and a_img.dtype == np.uint8
    assert a_lab.dtype == np.int64
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    assert np.bincount(a_lab).tolist() == [8] * len(SYNTHETIC_CLASSES)
    big, _ = generate_synthetic(16, 64, seed=0)
    assert big.shape == (16, 64, 64, 3)


def test_synthetic_generator_arguments() -> None:
    with pytest.raises(ValueError, match=r"^resolution must be an integer >= 16, got resolution=8"):
        generate_synthetic(10, 8)
    with pytest.raises(ValueError, match=r"^n must be an integer >= 0, got n=-1$"):
        generate_synthetic(-1, 32)


def test_synthetic_subset(tmp_path: Path) -> None:
    tr = load_subset("synthetic", "train", cache_dir=tmp_path, max_per_class=6, seed=1)
    va = load_subset("default", "val", cache_dir=tmp_path, max_per_class=6, seed=1)
    assert tr.images.shape == (60, 32, 32, 3) and tr.images.dtype == torch.uint8
    assert tr.class_counts() == [6] * 10 and tr.num_classes == 10
    assert tr.classes == list(SYNTHETIC_CLASSES) and tr.wnids == list(SYNTHETIC_WNIDS)
    assert tr.name == "synthetic" and tr.split == "train" and va.split == "val"
    assert split_seed(1, "train") != split_seed(1, "val")
    assert not torch.equal(tr.images, va.images)
    # same seed -> identical data (read back from the cache), and the PNG round trip is lossless
    again = load_subset("synthetic", "train", cache_dir=tmp_path, max_per_class=6, seed=1)
    assert again.from_cache and torch.equal(again.images, tr.images)
    raw, raw_labels = generate_synthetic(60, 32, split_seed(1, "train"))
    order = np.argsort(raw_labels, kind="stable")
    assert np.array_equal(tr.labels.numpy(), raw_labels[order])
    assert np.array_equal(tr.images.numpy(), raw[order])
    res64 = load_subset("synthetic", "val", 64, cache_dir=tmp_path, max_per_class=2)
    assert res64.images.shape == (20, 64, 64, 3)


def test_synthetic_cache_from_another_generator_version_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache written by an older generator (another SYNTHETIC_VERSION) must be regenerated."""
    import dataclasses

    import minilg.data.subsets as subsets

    generator = subsets._GENERATED["synthetic"]
    monkeypatch.setitem(subsets._GENERATED, "synthetic", dataclasses.replace(generator, version=1))
    old = load_subset("synthetic", "val", cache_dir=tmp_path, max_per_class=2)
    monkeypatch.setitem(subsets._GENERATED, "synthetic", dataclasses.replace(generator, version=2))
    new = load_subset("synthetic", "val", cache_dir=tmp_path, max_per_class=2)
    assert not new.from_cache and old.cache_path != new.cache_path
