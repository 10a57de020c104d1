"""Tests for minilg.data: folder preparation and caching, errors, synthetic data, augmentation.

No network: hub calls are monkeypatched to raise the exceptions ``datasets`` raises.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from minilg.data import (
    DatasetUnavailableError,
    ImageArrayDataset,
    SkippedImagesWarning,
    generate_synthetic,
    list_subsets,
    load_subset,
)
from minilg.data import prepare as prepare_mod
from minilg.data.augment import (
    BatchAugment,
    horizontal_flip,
    mixup_cutmix,
    normalize,
    random_resized_crop,
    smooth_targets,
)
from minilg.data.subsets import classify_error
from minilg.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_WNIDS, split_seed

WNIDS = ["n03000684", "n01440764", "n02102040"]  # deliberately not sorted


def _solid(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """root/{train,val}/<wnid>/ with 2 good images per class, plus in train: a corrupt JPEG,
    a grayscale and a CMYK image."""
    root = tmp_path / "imagenette2-mini"
    for split in ("train", "val"):
        for k, wnid in enumerate(WNIDS):
            d = root / split / wnid
            d.mkdir(parents=True)
            for j in range(2):
                _solid((40 * k + 10, 100, 20 * j)).save(d / f"{wnid}_{j}.JPEG", quality=95)
    bad = root / "train" / "n01440764" / "broken.JPEG"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    Image.new("L", (32, 48), 200).save(root / "train" / "n02102040" / "gray.JPEG")
    Image.new("CMYK", (50, 40), (0, 255, 255, 0)).save(root / "train" / "n03000684" / "cmyk.JPEG")
    (root / "train" / "n03000684" / "notes.txt").write_text("not an image")
    return root


def _load(folder: Path, tmp_path: Path, **kw: Any) -> ImageArrayDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImagesWarning)
        return load_subset("imagefolder", root=folder, cache_dir=tmp_path / "cache", **kw)


# ------------------------------------------------------------------- folders and the cache


def test_imagefolder_prepare_and_cache(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.warns(SkippedImagesWarning, match="skipped 1 unreadable"):
        ds = load_subset("imagefolder", "train", 16, root=folder, cache_dir=tmp_path / "cache")
    assert isinstance(ds, ImageArrayDataset)
    assert ds.images.dtype == torch.uint8 and ds.images.is_contiguous()
    assert ds.images.shape == (8, 16, 16, 3)  # 6 + gray + cmyk; the corrupt file is skipped
    assert ds.labels.dtype == torch.int64
    assert ds.skipped == 1 and not ds.from_cache
    assert ds.wnids == sorted(WNIDS)
    assert ds.classes == ds.wnids  # plain folder: names are the folder names
    assert ds.class_counts() == [2, 3, 3]
    assert ds.num_classes == 3 and len(ds) == 8
    # labels follow sorted wnids: n01440764 -> 0, n02102040 -> 1, n03000684 -> 2
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    # grayscale became RGB with equal channels; CMYK (0,255,255,0) is red in RGB
    gray = ds.images[2].to(torch.int32)  # sorted paths: gray.JPEG before n02102040_0.JPEG
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    cmyk = ds.images[5].to(torch.float32).mean(dim=(0, 1))
    assert cmyk[0] > 200 and cmyk[1] < 50 and cmyk[2] < 50

    # second call: served from the cache, nothing is decoded again
    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("decoded again instead of loading the cache")

    monkeypatch.setattr(prepare_mod, "decode_resize_crop", boom)
    again = load_subset("imagefolder", "train", 16, root=folder, cache_dir=tmp_path / "cache")
    assert again.from_cache and again.cache_path is not None and again.cache_path.is_file()
    assert torch.equal(again.images, ds.images) and torch.equal(again.labels, ds.labels)
    assert again.skipped == 1 and again.classes == ds.classes


def test_val_split_and_resize_crop(folder: Path, tmp_path: Path) -> None:
    val = _load(folder, tmp_path, split="validation", resolution=24)
    assert val.split == "val" and val.images.shape == (6, 24, 24, 3) and val.skipped == 0
    # a solid 40x30 image resized and centre-cropped stays that solid colour
    first = val.images[0].to(torch.int32)
    assert (first - first[0, 0]).abs().max() <= 3


def test_known_subset_from_root_gets_readable_names(folder: Path, tmp_path: Path) -> None:
    ds = load_subset("imagenette", "val", 16, root=folder, cache_dir=tmp_path / "c")
    assert ds.name == "imagenette"
    assert ds.classes == ["tench", "English springer", "chain saw"]


def test_wnid_restriction(folder: Path, tmp_path: Path) -> None:
    ds = _load(folder, tmp_path, resolution=16, wnids=["n03000684", "n01440764"])
    assert ds.wnids == ["n01440764", "n03000684"]
    assert ds.class_counts() == [2, 3]
    assert set(ds.labels.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="n09999999"):
        _load(folder, tmp_path, wnids=["n09999999"])


def test_max_per_class(folder: Path, tmp_path: Path) -> None:
    ds = _load(folder, tmp_path, resolution=16, max_per_class=1)
    assert ds.class_counts() == [1, 1, 1]


def test_missing_folder_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError) as info:
        load_subset("imagefolder", root=tmp_path / "nowhere", cache_dir=tmp_path)
    msg = str(info.value)
    assert "nowhere" in msg and "train/" in msg and "synthetic" in msg
    assert isinstance(info.value, RuntimeError) and info.value.reason == "missing"


def test_bad_arguments(tmp_path: Path) -> None:
    assert {"synthetic", "imagenette", "tiny-imagenet", "imagenet-1k"} <= set(list_subsets())
    with pytest.raises(ValueError, match="unknown subset"):
        load_subset("cifar-7", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_subset("synthetic", "test", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="root"):
        load_subset("imagefolder", cache_dir=tmp_path)


# ------------------------------------------------------------------- hub errors (no network)


def _gated_error() -> Exception:
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import GatedRepoError

    # built without an HTTP response object (its __init__ wants one); only type and text matter
    gated = GatedRepoError.__new__(GatedRepoError)
    Exception.__init__(gated, "401 Client Error. Cannot access gated repo.")
    try:
        try:
            raise gated
        except GatedRepoError as inner:
            raise DatasetNotFoundError(
                "Dataset 'ILSVRC/imagenet-1k' is a gated dataset on the Hub. "
                "You must be authenticated to access it."
            ) from inner
    except DatasetNotFoundError as exc:
        out: Exception = exc
    return out


def _offline_error() -> Exception:
    from huggingface_hub.errors import OfflineModeIsEnabled

    try:
        try:
            raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode")
        except OfflineModeIsEnabled as inner:
            raise ConnectionError(
                "Couldn't reach 'zh-plus/tiny-imagenet' on the Hub (OfflineModeIsEnabled)"
            ) from inner
    except ConnectionError as exc:
        return exc


def _patch_load_dataset(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> list[dict[str, Any]]:
    import datasets

    calls: list[dict[str, Any]] = []

    def fake(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise exc

    monkeypatch.setattr(datasets, "load_dataset", fake)
    return calls


def test_gated_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _patch_load_dataset(monkeypatch, _gated_error())
    with pytest.raises(DatasetUnavailableError) as info:
        load_subset("imagenet-1k", "val", cache_dir=tmp_path)
    msg = str(info.value)
    assert calls == [{"path": "ILSVRC/imagenet-1k", "split": "validation"}]
    assert info.value.reason == "gated"
    assert "ILSVRC/imagenet-1k" in msg  # what was tried
    assert "You must be authenticated" in msg  # the original exception text
    assert "huggingface-cli login" in msg and "accept the terms" in msg  # what to do
    assert "https://huggingface.co/datasets/ILSVRC/imagenet-1k" in msg
    assert "root=" in msg and "load_subset('synthetic')" in msg


def test_offline_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = _patch_load_dataset(monkeypatch, _offline_error())
    with pytest.raises(DatasetUnavailableError) as info:
        load_subset("tiny-imagenet", "val", cache_dir=tmp_path)
    msg = str(info.value)
    assert calls[0]["split"] == "valid"  # tiny-imagenet names its split "valid"
    assert info.value.reason == "offline"
    assert "zh-plus/tiny-imagenet" in msg and "OfflineModeIsEnabled" in msg
    assert "unset HF_HUB_OFFLINE" in msg and "root=" in msg and "synthetic" in msg


def test_script_repo_uses_parquet_export_then_skips_tarball_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    calls = _patch_load_dataset(monkeypatch, _offline_error())
    with pytest.raises(DatasetUnavailableError) as info:
        load_subset("imagenette", "val", 64, cache_dir=tmp_path)
    assert calls == [
        {
            "path": "frgfm/imagenette",
            "name": "160px",
            "split": "validation",
            "revision": "refs/convert/parquet",
        }
    ]
    msg = str(info.value)
    assert "imagenette2-160.tgz" in msg and "skipped: offline" in msg
    assert "unset HF_DATASETS_OFFLINE" in msg


def test_missing_repo_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from datasets.exceptions import DatasetNotFoundError

    exc = DatasetNotFoundError(
        "Dataset 'clane9/imagenet-100' doesn't exist on the Hub or cannot be accessed."
    )
    _patch_load_dataset(monkeypatch, exc)
    with pytest.raises(DatasetUnavailableError) as info:
        load_subset("imagenet-100", cache_dir=tmp_path)
    assert info.value.reason == "missing"
    assert "doesn't exist on the Hub" in str(info.value)
    assert len(info.value.attempts) == 1


def test_classify_error() -> None:
    assert classify_error(_gated_error()) == "gated"
    assert classify_error(_offline_error()) == "offline"
    script = RuntimeError("Dataset scripts are no longer supported, but found imagenette.py")
    assert classify_error(script) == "script"
    assert classify_error(ValueError("boom")) == "error"


@pytest.mark.slow
def test_real_offline_mode_subprocess(tmp_path: Path) -> None:
    """With HF_HUB_OFFLINE=1 set before import, datasets itself refuses: no network use."""
    code = (
        "from minilg.data import load_subset, DatasetUnavailableError\n"
        "try:\n"
        f"    load_subset('tiny-imagenet', 'val', cache_dir=r'{tmp_path}')\n"
        "except DatasetUnavailableError as e:\n"
        "    print('REASON', e.reason); print(e)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "REASON offline" in out.stdout, out.stdout + out.stderr
    assert "Couldn't reach" in out.stdout and "unset HF_HUB_OFFLINE" in out.stdout


# ------------------------------------------------------------------- synthetic


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


# ------------------------------------------------------------------- augmentation


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


def test_synthetic_cache_from_another_generator_version_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache written by an older generator (another SYNTHETIC_VERSION) must be regenerated."""
    import minilg.data.subsets as subsets

    monkeypatch.setattr(subsets, "SYNTHETIC_VERSION", 1)
    old = load_subset("synthetic", "val", cache_dir=tmp_path, max_per_class=2)
    monkeypatch.setattr(subsets, "SYNTHETIC_VERSION", 2)
    new = load_subset("synthetic", "val", cache_dir=tmp_path, max_per_class=2)
    assert not new.from_cache and old.cache_path != new.cache_path
