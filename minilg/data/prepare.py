"""Decode-once preparation: image bytes or files -> uint8 (N, R, R, 3) cache.

Every image is decoded once with Pillow, converted to RGB (ImageNet has grayscale and CMYK
JPEGs), resized so its short side is ``R`` and centre-cropped to ``R x R``. Unreadable images
are skipped and counted; they never stop a run.
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
from PIL import Image

from minilg.data.core import (
    DatasetUnavailableError,
    ImageArrayDataset,
    SkippedImagesWarning,
    images_path,
    load_cache,
    progress,
    save_cache,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_DIRS",
    "ImageSource",
    "decode_resize_crop",
    "find_split_dir",
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
        rgb = img.convert("RGB")
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


def find_split_dir(root: Path, split: str) -> Path | None:
    """The sub-folder of ``root`` holding ``split`` (``train``/``val`` and their synonyms)."""
    for name in SPLIT_DIRS[split]:
        for candidate in (root / name, root / name.upper(), root / name.capitalize()):
            if candidate.is_dir():
                return candidate
    return None


def scan_image_folder(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """List an ImageFolder split: one sub-folder per class (named by wnid), images inside.

    Returns:
        folder names sorted (label i = i-th name) and ``(path, label)`` pairs sorted by path.
    """
    class_dirs = sorted(
        d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(class_dirs):
        for dirpath, _dirnames, filenames in os.walk(split_dir / name):
            for fn in sorted(filenames):
                if not fn.startswith(".") and Path(fn).suffix.lower() in IMAGE_EXTENSIONS:
                    items.append((Path(dirpath) / fn, label))
    items.sort(key=lambda t: (t[1], str(t[0])))
    return class_dirs, items


@dataclass
class _Result:
    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    skipped: list[str]


def _decode_all(
    items: Iterable[tuple[ImageSource, int, str]],
    total: int,
    resolution: int,
    out_path: Path,
    desc: str,
    num_workers: int,
) -> _Result:
    """Decode ``items`` (source, label, display name) into a memmap at ``out_path``."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # unique per process: two runs preparing the same cache at once must not share a temp file
    tmp_path = out_path.with_name(f"{out_path.name}.{os.getpid()}.partial.npy")
    buf = np.lib.format.open_memmap(
        tmp_path, mode="w+", dtype=np.uint8, shape=(max(total, 1), resolution, resolution, 3)
    )
    labels = np.empty(total, dtype=np.int64)
    skipped: list[str] = []
    count = 0

    def work(item: tuple[ImageSource, int, str]) -> tuple[npt.NDArray[np.uint8] | None, int, str]:
        source, label, shown = item
        try:
            return decode_resize_crop(source, resolution), label, shown
        except _DECODE_ERRORS as exc:
            return None, label, f"{shown}: {type(exc).__name__}: {exc}"

    def chunks(it: Iterable[tuple[ImageSource, int, str]], n: int) -> Iterator[list[Any]]:
        chunk: list[Any] = []
        for x in it:
            chunk.append(x)
            if len(chunk) == n:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    bar_iter = progress(range(total), total=total, desc=desc)
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        for chunk in chunks(items, 256):
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
    buf.flush()
    if count == total:
        del buf
        os.replace(tmp_path, out_path)
        images = np.load(out_path, mmap_mode="r+")
    else:  # compact: keep the decoded prefix only
        images = np.lib.format.open_memmap(
            out_path, mode="w+", dtype=np.uint8, shape=(count, resolution, resolution, 3)
        )
        for start in range(0, count, 4096):
            stop = min(start + 4096, count)
            images[start:stop] = buf[start:stop]
        images.flush()
        del buf
        tmp_path.unlink()
    return _Result(images=images, labels=labels[:count], skipped=skipped)


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
            name=name,
            reason="missing",
            attempts=[(source, "no image files")],
        )
    workers = num_workers or min(8, os.cpu_count() or 1)
    result = _decode_all(
        items, total, resolution, images_path(stem), f"{name}/{split} {resolution}px", workers
    )
    counts = np.bincount(result.labels, minlength=len(classes))
    meta = {
        "name": name,
        "split": split,
        "resolution": resolution,
        "classes": classes,
        "wnids": wnids,
        "counts": [int(c) for c in counts],
        "num_images": int(result.labels.shape[0]),
        "skipped": len(result.skipped),
        "skipped_examples": result.skipped[:20],
        "source": source,
    }
    save_cache(stem, result.images, result.labels, meta)
    del result
    if meta["skipped"]:
        shown = "; ".join(meta["skipped_examples"][:3])  # type: ignore[index]
        warnings.warn(
            f"{name}/{split}: skipped {meta['skipped']} unreadable image(s) of {total} "
            f"(e.g. {shown}). They are left out of the cache.",
            SkippedImagesWarning,
            stacklevel=3,
        )
    loaded = load_cache(stem, mmap=mmap)
    if loaded is None:  # pragma: no cover - we just wrote it
        raise RuntimeError(f"failed to re-read the cache just written at {stem}")
    loaded.from_cache = False
    return loaded


def folder_items(
    split_dir: Path, keep: Callable[[str], bool] | None = None
) -> tuple[list[str], list[tuple[ImageSource, int, str]]]:
    """``scan_image_folder`` restricted to class folders accepted by ``keep`` (relabelled)."""
    folders, items = scan_image_folder(split_dir)
    kept = [f for f in folders if keep is None or keep(f)]
    remap = {folders.index(f): i for i, f in enumerate(kept)}
    out: list[tuple[ImageSource, int, str]] = [
        (p, remap[lab], str(p.relative_to(split_dir))) for p, lab in items if lab in remap
    ]
    return kept, out
