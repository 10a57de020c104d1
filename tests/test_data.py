"""minilg.data: load_subset on local folders (registry, prepare, subsets) and the on-disk cache.

Data is what it claims to be: shared class lists, images decoded as seen, verified caches
prepared once and written atomically. The hub, the synthetic set and augmentation have their
own files (test_data_hub.py, test_data_synthetic.py, test_data_augment.py).
"""

from __future__ import annotations

import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from minilg.cli import main
from minilg.data import (
    DatasetUnavailableError,
    ImageArrayDataset,
    SkippedImagesWarning,
    canonical_subset,
    list_subsets,
    load_subset,
)
from minilg.data import prepare as prepare_mod
from minilg.data.core import CacheWarning
from minilg.data.prepare import EmptyClassWarning, decode_resize_crop
from minilg.errors import DataError

WNIDS = ["n03000684", "n01440764", "n02102040"]  # deliberately not sorted
COLOURS = {"a": (250, 10, 10), "b": (10, 250, 10), "c": (10, 10, 250), "d": (250, 250, 10)}


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


def _load_folder(folder: Path, tmp_path: Path, **kw: Any) -> ImageArrayDataset:
    """The ``folder`` fixture through load_subset, its one corrupt file's warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImagesWarning)
        return load_subset("imagefolder", root=folder, cache_dir=tmp_path / "cache", **kw)


def _layout(root: Path, layout: dict[str, list[str]], per_class: int = 2) -> Path:
    """root/<split>/<class>/<j>.png, each image a solid colour of its class."""
    for split, classes in layout.items():
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                Image.new("RGB", (20, 20), COLOURS[c]).save(root / split / c / f"{j}.png")
    return root


def _load(root: Path, cache: Path, split: str = "train", **kw: Any) -> Any:
    return load_subset("imagefolder", split, 16, root=root, cache_dir=cache, **kw)


def _colour_of(ds: Any, i: int) -> tuple[int, ...]:
    return tuple(int(v) for v in ds.images[i, 8, 8])


# ----------------------------------------------------------------------------- arguments


def test_bad_arguments(tmp_path: Path) -> None:
    assert {"synthetic", "imagenette", "tiny-imagenet", "imagenet-1k"} <= set(list_subsets())
    assert canonical_subset(" Default ") == "synthetic" and canonical_subset("imagenet") == (
        "imagenet-1k"
    )
    with pytest.raises(ValueError, match="unknown subset"):
        load_subset("cifar-7", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"^split must be one of \('train', .*got split='test'$"):
        load_subset("synthetic", "test", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="root"):
        load_subset("imagefolder", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"^resolution must be an integer >= 8, got resolution=4$"):
        load_subset("synthetic", resolution=4, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"^max_per_class must be a positive integer, got "):
        load_subset("synthetic", max_per_class=0, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # rejected before anything is written


def test_missing_folder_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError) as info:
        load_subset("imagefolder", root=tmp_path / "nowhere", cache_dir=tmp_path)
    msg = str(info.value)
    assert "nowhere" in msg and "train/" in msg and "synthetic" in msg
    assert isinstance(info.value, RuntimeError) and info.value.reason == "missing"


# ----------------------------------------------------------------------------- folders


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
    val = _load_folder(folder, tmp_path, split="validation", resolution=24)
    assert val.split == "val" and val.images.shape == (6, 24, 24, 3) and val.skipped == 0
    # a solid 40x30 image resized and centre-cropped stays that solid colour
    first = val.images[0].to(torch.int32)
    assert (first - first[0, 0]).abs().max() <= 3


def test_known_subset_from_root_gets_readable_names(folder: Path, tmp_path: Path) -> None:
    ds = load_subset("imagenette", "val", 16, root=folder, cache_dir=tmp_path / "c")
    assert ds.name == "imagenette"
    assert ds.classes == ["tench", "English springer", "chain saw"]


def test_wnid_restriction(folder: Path, tmp_path: Path) -> None:
    ds = _load_folder(folder, tmp_path, resolution=16, wnids=["n03000684", "n01440764"])
    assert ds.wnids == ["n01440764", "n03000684"]
    assert ds.class_counts() == [2, 3]
    assert set(ds.labels.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="n09999999"):
        _load_folder(folder, tmp_path, wnids=["n09999999"])


def test_max_per_class(folder: Path, tmp_path: Path) -> None:
    ds = _load_folder(folder, tmp_path, resolution=16, max_per_class=1)
    assert ds.class_counts() == [1, 1, 1]


# ----------------------------------------------------------------------------- class lists


def test_a_class_missing_from_val_does_not_shift_the_labels(tmp_path: Path) -> None:
    root = _layout(tmp_path / "d", {"train": ["a", "b", "c"], "val": ["a", "c"]})
    train = _load(root, tmp_path / "cache")
    with pytest.warns(EmptyClassWarning, match=r"no images for 1 class\(es\): \['b'\]"):
        val = _load(root, tmp_path / "cache", "val")
    assert train.classes == val.classes == ["a", "b", "c"]
    assert val.labels.tolist() == [0, 0, 2, 2]  # 'c' keeps label 2 (it was 1 before the fix)
    assert [_colour_of(val, i) for i in (0, 2)] == [COLOURS["a"], COLOURS["c"]]
    assert val.class_counts() == [2, 0, 2]


def test_an_extra_class_in_val_is_an_error_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _layout(tmp_path / "d", {"train": ["a", "b"], "val": ["a", "b", "d"]})
    with pytest.raises(DataError, match=r"has class folder\(s\) \['d'\] that the training split"):
        _load(root, tmp_path / "cache", "val")
    capsys.readouterr()
    code = main(["train", "--data", "imagefolder", "--root", str(root), "--resolution", "16",
                 "--batch-size", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "['d'] that the training split lacks" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_empty_class_folders_are_reported(tmp_path: Path) -> None:
    root = _layout(tmp_path / "d", {"train": ["a", "b"], "val": ["a", "b"]})
    (root / "train" / "c").mkdir()
    with pytest.warns(EmptyClassWarning, match=r"no images for 1 class\(es\): \['c'\]"):
        ds = _load(root, tmp_path / "cache")
    assert ds.classes == ["a", "b", "c"] and ds.class_counts() == [2, 2, 0]


# ----------------------------------------------------------------------------- decoding


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    levels = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)  # 8-bit k -> 16-bit 257 k
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    out = decode_resize_crop(tmp_path / "deep.png", 16)
    expected = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for channel in range(3):
        assert np.array_equal(out[..., channel], expected)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (32, 16), (0, 0, 255))  # wide: red top half, blue bottom half
    img.paste((255, 0, 0), (0, 0, 32, 8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "phone.jpg", quality=95, exif=exif.tobytes())
    out = decode_resize_crop(tmp_path / "phone.jpg", 16).astype(int)
    # displayed upright the picture is tall, with the red half on the right
    left, right = out[:, :6].mean(axis=(0, 1)), out[:, 10:].mean(axis=(0, 1))
    assert left[2] > 200 and left[0] < 50, left
    assert right[0] > 200 and right[2] < 50, right


# ----------------------------------------------------------------------------- the cache


def test_a_stale_cache_is_rebuilt(tmp_path: Path) -> None:
    root = _layout(tmp_path / "d", {"train": ["a", "b"]})
    first = _load(root, tmp_path / "cache")
    assert not first.from_cache and _load(root, tmp_path / "cache").from_cache
    Image.new("RGB", (24, 20), COLOURS["d"]).save(root / "train" / "b" / "1.png")  # edited
    again = _load(root, tmp_path / "cache")
    assert not again.from_cache
    assert _colour_of(again, 3) == COLOURS["d"] and _colour_of(first, 3) == COLOURS["b"]
    (root / "train" / "b" / "2.png").write_bytes((root / "train" / "b" / "0.png").read_bytes())
    assert len(_load(root, tmp_path / "cache")) == 5  # an added file is seen too


@pytest.mark.parametrize("damage", ["flip a pixel", "truncate images", "labels out of range",
                                    "garbled json"])
def test_a_corrupt_cache_is_rebuilt_with_a_warning(damage: str, tmp_path: Path) -> None:
    root = _layout(tmp_path / "d", {"train": ["a", "b"]})
    good = _load(root, tmp_path / "cache")
    assert good.cache_path is not None
    stem = str(good.cache_path)[: -len(".json")]
    images, labels = Path(stem + ".images.npy"), Path(stem + ".labels.npy")
    if damage == "flip a pixel":
        data = bytearray(images.read_bytes())
        data[-5] ^= 0x55
        images.write_bytes(bytes(data))
    elif damage == "truncate images":
        images.write_bytes(images.read_bytes()[:-100])
    elif damage == "labels out of range":
        np.save(labels, np.array([0, 0, 1, 7], dtype=np.int64))
    else:
        good.cache_path.write_text("{not json")
    with pytest.warns(CacheWarning, match="ignoring the prepared cache .* it will be rebuilt"):
        rebuilt = _load(root, tmp_path / "cache")
    assert not rebuilt.from_cache
    assert torch.equal(rebuilt.images, good.images) and torch.equal(rebuilt.labels, good.labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and the rebuilt cache is clean
        assert _load(root, tmp_path / "cache").from_cache


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_copied_read_only_cache_loads_without_writing(tmp_path: Path) -> None:
    root = _layout(tmp_path / "d", {"train": ["a", "b"]})
    original = _load(root, tmp_path / "cache")
    synth = load_subset("synthetic", "val", cache_dir=tmp_path / "cache", max_per_class=2)
    shutil.copytree(tmp_path / "cache", tmp_path / "copy")
    for folder in (tmp_path / "copy" / "synthetic").glob("folder-*"):
        shutil.rmtree(folder)  # even the generated PNGs are not needed once prepared
    for p in (tmp_path / "copy").rglob("*"):
        p.chmod(0o555 if p.is_dir() else 0o444)
    before = _snapshot(tmp_path / "copy")
    try:
        copy = _load(root, tmp_path / "copy")
        synth_copy = load_subset("synthetic", "val", cache_dir=tmp_path / "copy", max_per_class=2)
        assert _snapshot(tmp_path / "copy") == before  # nothing written, no lock taken
    finally:
        for p in (tmp_path / "copy").rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert copy.from_cache and torch.equal(copy.images, original.images)
    assert synth_copy.from_cache and torch.equal(synth_copy.images, synth.images)


def test_concurrent_preparation_decodes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _layout(tmp_path / "d", {"train": ["a", "b", "c"]})
    real = prepare_mod.decode_resize_crop
    calls: list[Path] = []

    def slow(source: Any, resolution: int) -> Any:
        calls.append(source)
        time.sleep(0.02)  # keep the first preparation busy while the second one arrives
        return real(source, resolution)

    monkeypatch.setattr(prepare_mod, "decode_resize_crop", slow)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(_load(root, tmp_path / "cache")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 6  # six images, decoded once in all
    assert sorted(r.from_cache for r in results) == [False, True]
    assert torch.equal(results[0].images, results[1].images)


def test_partial_files_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _layout(tmp_path / "d", {"train": ["a", "b"]})
    cache = tmp_path / "cache"

    def killed(source: Any, resolution: int) -> Any:
        raise KeyboardInterrupt  # interrupted while decoding

    monkeypatch.setattr(prepare_mod, "decode_resize_crop", killed)
    with pytest.raises(KeyboardInterrupt):
        _load(root, cache)
    ds_dir = cache / "imagefolder"
    (lock,) = ds_dir.glob("*.lock")
    assert sorted(p.name for p in ds_dir.iterdir()) == [lock.name]  # nothing but the lock
    monkeypatch.undo()
    # the temporary files of a process killed with SIGKILL (named like atomic_write_with's,
    # and the scratch copy of a prefix): removed by the next preparation
    stem = lock.name[: -len(".lock")]
    orphans = [ds_dir / f".{stem}.images.npy.x1y2z3.tmp.npy",
               ds_dir / f".{stem}.images.npy.x1y2z3.tmp.npy.full",
               ds_dir / f".{stem}.labels.npy.a1b2c3.tmp.npy"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    assert len(_load(root, cache)) == 4
    assert not any(orphan.exists() for orphan in orphans)
    assert sorted(p.name for p in ds_dir.iterdir()) == sorted(
        [lock.name] + [f"{stem}.{end}" for end in ("images.npy", "labels.npy", "json")]
    )


def test_skipped_images_leave_no_scratch_file(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The corrupt JPEG is skipped: the array is cut to the decoded prefix, atomically, and
    written once (save_cache keeps the memmap already in place)."""
    import minilg.data.core as core

    written: list[str] = []
    real = core.atomic_write_with
    monkeypatch.setattr(core, "atomic_write_with",
                        lambda path, write: (written.append(Path(path).name), real(path, write)))
    monkeypatch.chdir(tmp_path)  # a relative cache folder too
    with pytest.warns(SkippedImagesWarning, match="skipped 1 unreadable"):
        ds = load_subset("imagefolder", "train", 16, root=folder, cache_dir="cache")
    assert [name.split(".", 1)[1] for name in written] == ["labels.npy"]
    assert ds.cache_path is not None and len(ds) == 8 and ds.skipped == 1
    stem = ds.cache_path.name[: -len(".json")]
    files = sorted(p.name for p in ds.cache_path.parent.iterdir())
    assert files == sorted(f"{stem}.{end}" for end in ("images.npy", "json", "labels.npy", "lock"))
    assert np.load(ds.cache_path.parent / f"{stem}.images.npy").shape == (8, 16, 16, 3)


def test_an_unwritable_cache_folder_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _layout(tmp_path / "d", {"train": ["a", "b"], "val": ["a", "b"]})
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="is not writable"):
        _load(root, blocker / "cache")
    monkeypatch.setenv("MINILG_CACHE", str(blocker / "cache"))
    capsys.readouterr()
    code = main(["train", "--data", "imagefolder", "--root", str(root), "--resolution", "16",
                 "--batch-size", "2", "--out", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "set MINILG_CACHE" in err, err
