"""minilg.data.augment: batched augmentation, exact where the maths is exact."""

from __future__ import annotations

import pytest
import torch

from minilg.data.augment import (
    BatchAugment,
    horizontal_flip,
    mixup_cutmix,
    normalize,
    random_resized_crop,
    smooth_targets,
)


def _batch(b: int = 6, s: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (b, s, s, 3), generator=g, dtype=torch.uint8)
    labels = torch.arange(b) % 4
    return images, labels


def test_batch_augment_shapes_dtype_determinism() -> None:
    images, labels = _batch()
    aug = BatchAugment(12, mixup_alpha=0.4, cutmix_alpha=1.0, label_smoothing=0.1)
    x1, t1 = aug(images, labels, 4, torch.Generator().manual_seed(5), train=True)
    x2, t2 = aug(images, labels, 4, torch.Generator().manual_seed(5), train=True)
    x3, _ = aug(images, labels, 4, torch.Generator().manual_seed(6), train=True)
    assert x1.shape == (6, 3, 12, 12) and x1.dtype == torch.float32
    assert t1.shape == (6, 4) and t1.dtype == torch.float32
    assert torch.equal(x1, x2) and torch.equal(t1, t2) and not torch.equal(x1, x3)
    assert torch.allclose(t1.sum(1), torch.ones(6))
    xe, te = aug(images, labels, 4, train=False)
    assert xe.shape == (6, 3, 12, 12)
    assert torch.equal(te, torch.nn.functional.one_hot(labels, 4).float())


def test_normalize_and_eval_identity() -> None:
    images, labels = _batch(s=8)
    aug = BatchAugment(8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x, _ = aug(images, labels, 4, train=False)
    expected = (images.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-6)
    z = normalize(torch.full((1, 3, 2, 2), 0.5), (0.5, 0.25, 0.0), (1.0, 0.5, 0.5))
    assert torch.allclose(z[0, :, 0, 0], torch.tensor([0.0, 0.5, 1.0]))


def test_random_resized_crop_full_box_is_identity() -> None:
    x = torch.rand(3, 3, 10, 10)
    out = random_resized_crop(x, 10, torch.Generator().manual_seed(0), (1.0, 1.0), (1.0, 1.0))
    assert torch.allclose(out, x, atol=1e-5)
    small = random_resized_crop(x, 5, torch.Generator().manual_seed(0))
    assert small.shape == (3, 3, 5, 5)


def test_flip_is_exact() -> None:
    x = torch.rand(8, 3, 5, 7)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(horizontal_flip(x, g, p=1.0), x.flip(-1))
    assert torch.equal(horizontal_flip(x, g, p=0.0), x)
    mixed = horizontal_flip(x, g, p=0.5)
    flipped = [torch.equal(mixed[i], x[i].flip(-1)) for i in range(8)]
    kept = [torch.equal(mixed[i], x[i]) for i in range(8)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)


def test_smooth_targets_values() -> None:
    t = smooth_targets(torch.tensor([2, 0]), 5, 0.1)
    assert torch.allclose(t[0], torch.tensor([0.02, 0.02, 0.92, 0.02, 0.02]))
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert torch.equal(smooth_targets(torch.tensor([1]), 3), torch.tensor([[0.0, 1.0, 0.0]]))


def test_mixup_mixes_the_flipped_pair() -> None:
    b, k = 4, 4
    x = torch.rand(b, 3, 6, 6)
    t = smooth_targets(torch.arange(b), k)
    mixed, mt = mixup_cutmix(x, t, torch.Generator().manual_seed(1), mixup_alpha=0.4)
    lam = float(mt[0, 0])
    assert 0.0 <= lam <= 1.0
    for i in range(b):
        j = b - 1 - i
        assert torch.allclose(mixed[i], lam * x[i] + (1 - lam) * x[j], atol=1e-6)
        assert mt[i, i] == pytest.approx(lam) and mt[i, j] == pytest.approx(1 - lam)
    assert torch.allclose(mt.sum(1), torch.ones(b))


def test_cutmix_pastes_a_box_with_area_weight() -> None:
    b, k = 4, 4
    x = torch.rand(b, 3, 8, 8)
    t = smooth_targets(torch.arange(b), k)
    mixed, mt = mixup_cutmix(x, t, torch.Generator().manual_seed(3), cutmix_alpha=1.0)
    from_other = (mixed[0] == x[3]).all(0) & (mixed[0] != x[0]).any(0)  # (H, W) pasted pixels
    assert mt[0, 3] == pytest.approx(float(from_other.float().mean()))
    assert torch.equal(mixed[0][:, ~from_other], x[0][:, ~from_other])
    assert torch.allclose(mt.sum(1), torch.ones(b))

