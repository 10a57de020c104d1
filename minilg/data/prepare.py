"""Decode-once preparation: image bytes or files -> uint8 (N, R, R, 3) cache.

Every image is decoded once with Pillow, turned upright by its EXIF orientation, converted to
RGB (ImageNet has grayscale and CMYK JPEGs; 16-bit images are scaled to 8 bits, not clipped),
resized so its short side is ``R`` and centre-cropped to ``R x R``. Unreadable images are skipped
and counted; they never stop a run.

Image folders: the class list (label ``i`` = ``i``-th sorted class folder) comes from the
``train`` split and is shared by every split, so a class missing from ``val/`` does not shift
the labels; a class folder in ``val/`` that ``train/`` lacks is a :class:`DataError`.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from minilg.data.core import (
    ImageArrayDataset,
    SkippedImagesWarning,
    images_path,
    load_cache,
    save_cache,
)
from minilg.errors import DataError, DatasetUnavailableError
from minilg.io import atomic_write_with, progress

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_DIRS",
    "EmptyClassWarning",
    "ImageSource",
    "class_folders",
    "decode_resize_crop",
    "find_split_dir",
    "folder_items",
    "prepare_split",
    "scan_image_folder",
]

IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
# Folder names accepted for each split (the ``imagefolder`` builder's conventions).
SPLIT_DIRS: Final[dict[str, tuple[str, ...]]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev"),
}
_DECODE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,  # includes PIL.UnidentifiedImageError and truncated files
    ValueError,
    SyntaxError,  # raised by some Pillow plugins on malformed headers
    EOFError,
    Image.DecompressionBombError,
)

# An item to decode: a file path or raw encoded bytes.
ImageSource = Path | bytes


def decode_resize_crop(source: ImageSource, resolution: int) -> npt.NDArray[np.uint8]:
    """Decode one image to RGB, resize the short side to ``resolution``, centre-crop.

    Args:
        source: a path to an image file, or the encoded bytes.
        resolution: output side R.

    Returns:
        uint8 array (R, R, 3).

    Raises:
        OSError, ValueError, ...: the image cannot be decoded (callers skip it).
    """
    with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as img:
        # JPEG: decode at a reduced scale directly (>= the requested size), much faster.
        img.draft("RGB", (resolution, resolution))
        upright = ImageOps.exif_transpose(img)  # camera photos: apply the EXIF orientation
        rgb = _to_rgb(upright if upright is not None else img)
    w, h = rgb.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (nw, nh) != (w, h):
        rgb = rgb.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    rgb = rgb.crop((left, top, left + resolution, top + resolution))
    out = np.asarray(rgb, dtype=np.uint8)
    if out.shape != (resolution, resolution, 3):
        raise ValueError(f"unexpected decoded shape {out.shape}")
    return out


_SIXTEEN_BIT_MODES: Final[frozenset[str]] = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with 16-bit (and 32-bit integer) grey levels scaled to 0-255 instead of clipped."""
    if img.mode in _SIXTEEN_BIT_MODES:
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    return img.convert("RGB")


def find_split_dir(root: Path, split: str) -> Path | None:
    """The sub-folder of ``root`` holding ``split`` (``train``/``val`` and their synonyms)."""
    for name in SPLIT_DIRS[split]:
        for candidate in (root / name, root / name.upper(), root / name.capitalize()):
            if candidate.is_dir():
                return candidate
    return None


def class_folders(split_dir: Path) -> list[str]:
    """The sorted class sub-folders of a split folder (hidden ones left out)."""
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


class EmptyClassWarning(UserWarning):
    """A class has no images in a split (an empty or missing class folder)."""


def scan_image_folder(
    split_dir: Path, classes: Sequence[str] | None = None
) -> tuple[list[str], list[tuple[Path, int]]]:
    """List an ImageFolder split: one sub-folder per class (named by wnid), images inside.

    Args:
        split_dir: e.g. ``root/val``.
        classes: the class list shared by every split (label ``i`` = ``classes[i]``); default:
            this split's own sorted folder names.

    Returns:
        the class list and ``(path, label)`` pairs sorted by label, then path.

    Raises:
        DataError: a class folder that ``classes`` lacks.

    Warns:
        EmptyClassWarning: classes without images here (empty or missing folders).
    """
    present = class_folders(split_dir)
    classes = list(present if classes is None else classes)
    extra = sorted(set(present) - set(classes))
    if extra:
        raise DataError(
            f"{split_dir} has class folder(s) {extra[:5]} that the training split lacks: a "
            "model trained there cannot predict them; remove them or add them to train/"
        )
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        for dirpath, _dirnames, filenames in os.walk(split_dir / name):
            for fn in sorted(filenames):
                if not fn.startswith(".") and Path(fn).suffix.lower() in IMAGE_EXTENSIONS:
                    items.append((Path(dirpath) / fn, label))
    items.sort(key=lambda t: (t[1], str(t[0])))
    found = {label for _, label in items}
    empty = [c for i, c in enumerate(classes) if i not in found]
    if empty:
        warnings.warn(
            f"{split_dir}: no images for {len(empty)} class(es): {empty[:5]}"
            f"{' ...' if len(empty) > 5 else ''} (labels still follow the shared class list)",
            EmptyClassWarning,
            stacklevel=2,
        )
    return classes, items


@dataclass
class _Result:
    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    skipped: list[str]


def _chunks(it: Iterable[tuple[ImageSource, int, str]], n: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for x in it:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decode_all(
    items: Iterable[tuple[ImageSource, int, str]],
    total: int,
    resolution: int,
    out_path: Path,
    desc: str,
    num_workers: int,
) -> _Result:
    """Decode ``items`` (source, label, display name) into the images array at ``out_path``.

    The array is filled as a memmap (it may not fit in memory) through
    :func:`minilg.io.atomic_write_with`: in a temporary file beside ``out_path``, removed if
    anything fails; only a complete array is moved into place. When images were skipped, the
    decoded prefix is copied into a file of the right length first.
    """
    shape = (resolution, resolution, 3)
    labels = np.empty(total, dtype=np.int64)
    done: list[tuple[list[str], int]] = []  # (skipped, count), set by write

    def write(tmp: Path) -> None:
        buf = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(max(total, 1), *shape)
        )
        skipped, count = _fill(buf, labels, items, total, resolution, desc, num_workers)
        buf.flush()
        del buf
        if count < total:
            _keep_prefix(tmp, count, shape)
        done.append((skipped, count))

    atomic_write_with(out_path, write)
    skipped, count = done[0]
    images = np.load(out_path, mmap_mode="r")
    return _Result(images=images, labels=labels[:count], skipped=skipped)


def _keep_prefix(path: Path, count: int, shape: tuple[int, int, int]) -> None:
    """Replace the uint8 ``.npy`` at ``path`` by its first ``count`` rows (copied through a
    scratch file beside it, which is always removed)."""
    full_path = path.with_name(path.name + ".full")
    path.replace(full_path)
    try:
        full = np.load(full_path, mmap_mode="r")
        kept = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, *shape))
        for start in range(0, count, 4096):
            kept[start : start + 4096] = full[start : min(start + 4096, count)]
        kept.flush()
        del full, kept
    finally:
        full_path.unlink(missing_ok=True)


def _fill(
    buf: Any,
    labels: npt.NDArray[np.int64],
    items: Iterable[tuple[ImageSource, int, str]],
    total: int,
    resolution: int,
    desc: str,
    num_workers: int,
) -> tuple[list[str], int]:
    """Decode every item into ``buf[:count]`` / ``labels[:count]``; returns (skipped, count)."""
    skipped: list[str] = []
    count = 0

    def work(item: tuple[ImageSource, int, str]) -> tuple[npt.NDArray[np.uint8] | None, int, str]:
        source, label, shown = item
        try:
            return decode_resize_crop(source, resolution), label, shown
        except _DECODE_ERRORS as exc:
            return None, label, f"{shown}: {type(exc).__name__}: {exc}"

    bar_iter = progress(range(total), total=total, desc=desc, unit="img")
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        for chunk in _chunks(items, 256):
            for arr, label, shown in pool.map(work, chunk):
                next(bar_iter, None)
                if arr is None:
                    skipped.append(shown)
                    continue
                buf[count] = arr
                labels[count] = label
                count += 1
    for _ in bar_iter:  # close the progress bar
        pass
    return skipped, count


def prepare_split(
    *,
    stem: Path,
    items: Sequence[tuple[ImageSource, int, str]] | Iterable[tuple[ImageSource, int, str]],
    total: int,
    classes: list[str],
    wnids: list[str],
    name: str,
    split: str,
    resolution: int,
    source: str,
    mmap: bool = False,
    num_workers: int | None = None,
) -> ImageArrayDataset:
    """Decode ``items`` once, cache them at ``stem`` and return the loaded split.

    Args:
        stem: cache file stem (see :mod:`minilg.data.core`).
        items: ``(path or bytes, label, name shown in messages)``, ``total`` of them.
        classes, wnids: per label.
        source: a short description of where the images came from (stored in the JSON).
        mmap: keep the returned images memory-mapped instead of reading them into RAM.
        num_workers: decoding threads (default: ``min(8, os.cpu_count())``).

    Warns:
        SkippedImagesWarning: if any image could not be decoded (they are left out).
    """
    if total == 0:
        raise DatasetUnavailableError(
            f"No images found for {name!r} split {split!r} in {source}.",
            name=name, reason="missing", attempts=[(source, "no image files")],
        )
    workers = num_workers or min(8, os.cpu_count() or 1)
    result = _decode_all(
        items, total, resolution, images_path(stem), f"{name}/{split} {resolution}px", workers
    )
    skipped = result.skipped
    meta = {
        "name": name, "split": split, "resolution": resolution, "classes": classes,
        "wnids": wnids, "counts": np.bincount(result.labels, minlength=len(classes)).tolist(),
        "num_images": int(result.labels.shape[0]), "skipped": len(skipped),
        "skipped_examples": skipped[:20], "source": source,
    }
    save_cache(stem, result.images, result.labels, meta)
    del result  # close the memmap before reading the cache back
    if skipped:
        warnings.warn(
            f"{name}/{split}: skipped {len(skipped)} unreadable image(s) of {total} "
            f"(e.g. {'; '.join(skipped[:3])}). They are left out of the cache.",
            SkippedImagesWarning,
            stacklevel=3,
        )
    loaded = load_cache(stem, mmap=mmap)
    if loaded is None:  # pragma: no cover - we just wrote it
        raise RuntimeError(f"failed to re-read the cache just written at {stem}")
    loaded.from_cache = False
    return loaded


def folder_items(
    split_dir: Path, classes: Sequence[str] | None = None, keep: Callable[[str], bool] | None = None
) -> tuple[list[str], list[tuple[ImageSource, int, str]]]:
    """``scan_image_folder`` restricted to class folders accepted by ``keep`` (relabelled in the
    order of ``classes``)."""
    folders, items = scan_image_folder(split_dir, classes)
    kept = [f for f in folders if keep is None or keep(f)]
    remap = {folders.index(f): i for i, f in enumerate(kept)}
    out: list[tuple[ImageSource, int, str]] = [
        (p, remap[lab], str(p.relative_to(split_dir))) for p, lab in items if lab in remap
    ]
    return kept, out
