"""Core of :mod:`minilg.data`: the in-memory dataset and the on-disk cache of prepared splits.

A prepared split is three files in the cache directory, sharing one stem
(:func:`cache_stem`: ``<cache_dir>/<name>/<split>-<R>px-<digest of the selection>``)::

    <stem>.images.npy   uint8 (N, H, W, 3), RGB, H == W == resolution
    <stem>.labels.npy   int64 (N,)
    <stem>.json         classes, wnids, per-class counts, skipped files, source, checksum

Each file is written through :func:`minilg.io.atomic_write_with` (a temporary name, then moved
into place); the JSON comes last, so a half-written cache is never mistaken for a complete one.
Loading checks the arrays against the JSON (shapes, label range, class count, per-class counts,
checksum) and treats a mismatch as no cache. :func:`cached_or_built` prepares a split at most
once across processes, under ``<stem>.lock``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from filelock import FileLock

from minilg.errors import DataError
from minilg.io import atomic_write_with, write_json

__all__ = [
    "CACHE_FORMAT",
    "CacheWarning",
    "ImageArrayDataset",
    "SkippedImagesWarning",
    "array_digest",
    "cache_stem",
    "cached_or_built",
    "default_cache_dir",
    "images_path",
    "load_cache",
    "save_cache",
]

CACHE_FORMAT: Final[int] = 2


class SkippedImagesWarning(UserWarning):
    """Some image files could not be decoded and were left out of a prepared split."""


@dataclass
class ImageArrayDataset:
    """A whole image-classification split held as one uint8 tensor.

    Attributes:
        images: uint8 (N, H, W, 3), contiguous, RGB, H == W == ``resolution``.
        labels: int64 (N,), values in ``[0, num_classes)``.
        classes: human-readable class names; ``classes[label]``.
        wnids: WordNet ids (or fake ``s0000001``-style ids), sorted; ``wnids[label]``.
        name: subset name (``"imagenette"``, ``"synthetic"``, ...).
        split: ``"train"`` or ``"val"``.
        resolution: side of the square images in pixels.
        skipped: number of unreadable files left out during preparation.
        from_cache: True if this object was read from a prepared cache rather than built now.
        cache_path: the ``.json`` file of the cache this split lives in (None if not cached).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    wnids: list[str]
    name: str
    split: str
    resolution: int
    skipped: int = 0
    from_cache: bool = False
    cache_path: Path | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    def to(self, device: torch.device | str) -> ImageArrayDataset:
        """A copy with ``images`` and ``labels`` on ``device`` (still uint8 / int64)."""
        return dataclasses.replace(
            self, images=self.images.to(device), labels=self.labels.to(device)
        )

    def class_counts(self) -> list[int]:
        """Number of images per class, index = label."""
        counts = torch.bincount(self.labels.cpu(), minlength=self.num_classes)
        return [int(c) for c in counts]

    def channel_stats(
        self, max_images: int = 10_000
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) on the [0, 1] scale over up to ``max_images`` images.

        Use them as ``BatchAugment(mean=..., std=...)`` for per-dataset normalisation.
        """
        n = len(self)
        step = max(1, n // max_images)
        x = self.images[::step].cpu().to(torch.float64) / 255.0  # (n', H, W, 3)
        mean = x.mean(dim=(0, 1, 2))
        std = x.std(dim=(0, 1, 2))
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def __repr__(self) -> str:
        return (
            f"ImageArrayDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"resolution={self.resolution}, num_classes={self.num_classes}, "
            f"skipped={self.skipped}, device={self.images.device.type!r})"
        )


def default_cache_dir() -> Path:
    """``$MINILG_CACHE`` if set, else ``~/.cache/minilg``."""
    env = os.environ.get("MINILG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minilg"


def cache_stem(
    cache_dir: Path, name: str, split: str, resolution: int, key: dict[str, Any]
) -> Path:
    """The cache stem of one selection: ``key`` (JSON-able) names what was selected."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / name / f"{split}-{resolution}px-{digest}"


def _paths(stem: Path) -> tuple[Path, Path, Path]:
    return (
        stem.with_name(stem.name + ".images.npy"),
        stem.with_name(stem.name + ".labels.npy"),
        stem.with_name(stem.name + ".json"),
    )


# Arrays up to this many images are checksummed whole; larger ones through an evenly spaced
# sample of this many images (plus every label), so that loading stays fast.
_CHECKSUM_IMAGES: Final[int] = 65_536


def array_digest(images: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64]) -> str:
    """sha256 of the labels, the shapes and the images (or an evenly spaced sample of them)."""
    h = hashlib.sha256(f"{images.shape}|{labels.shape}|".encode())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    step = max(1, -(-images.shape[0] // _CHECKSUM_IMAGES))
    for start in range(0, images.shape[0], 1024 * step):
        h.update(np.ascontiguousarray(images[start : start + 1024 * step : step]).tobytes())
    return h.hexdigest()


def save_cache(
    stem: Path,
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.int64],
    meta: dict[str, Any],
) -> Path:
    """Write a prepared split next to ``stem``; returns the JSON path.

    ``images`` may be a memmap already sitting, complete, at the images path (then it is kept).
    The JSON, written last, carries :func:`array_digest` of the arrays; :func:`load_cache`
    checks it.
    """
    img_path, lab_path, json_path = _paths(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if not _is_file(images, img_path):
        atomic_write_with(img_path, lambda t: np.save(t, np.ascontiguousarray(images)))
    labels = labels.astype(np.int64)
    atomic_write_with(lab_path, lambda t: np.save(t, labels))  # t ends in .npy: kept as named
    checksum = array_digest(images, labels)
    write_json(json_path, {"format": CACHE_FORMAT, **meta, "checksum": checksum})
    return json_path


def _is_file(images: npt.NDArray[np.uint8], path: Path) -> bool:
    """Whether ``images`` is a memmap of the file at ``path`` (numpy keeps a ``str`` or a
    resolved ``Path`` as its filename)."""
    name = getattr(images, "filename", None)
    return name is not None and path.is_file() and os.path.samefile(name, path)


def images_path(stem: Path) -> Path:
    """Where :func:`save_cache` puts the images array for ``stem``."""
    return _paths(stem)[0]


class CacheWarning(UserWarning):
    """A prepared cache was found but is corrupt or from another format; it is rebuilt."""


def _check_arrays(
    meta: dict[str, Any], images: npt.NDArray[Any], labels: npt.NDArray[Any]
) -> None:
    """ValueError naming the first way the arrays contradict their JSON."""
    r, k = int(meta["resolution"]), len(meta["classes"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (r, r, 3):
        raise ValueError(f"images are {images.dtype} {images.shape}, not uint8 (N, {r}, {r}, 3)")
    if labels.dtype != np.int64 or labels.shape != (images.shape[0],):
        raise ValueError(f"labels are {labels.dtype} {labels.shape} for {images.shape[0]} images")
    if images.shape[0] != int(meta["num_images"]) or len(meta["wnids"]) != k:
        raise ValueError("the image or class count differs from the JSON")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels outside [0, {k})")
    if np.bincount(labels, minlength=k).tolist() != list(meta["counts"]):
        raise ValueError("the per-class counts differ from the JSON")
    if array_digest(images, labels) != meta.get("checksum"):
        raise ValueError("the arrays do not match their checksum")


def load_cache(stem: Path, *, mmap: bool = False) -> ImageArrayDataset | None:
    """Read and verify a prepared split; None if there is no complete, valid cache at ``stem``.

    A cache that exists but fails a check (format, shapes, label range, class count, per-class
    counts, checksum) warns with :class:`CacheWarning` and returns None, so that the caller
    rebuilds it. Nothing is written: a read-only or copied cache loads as well.
    With ``mmap=True`` the images stay on disk (copy-on-write memory map) until touched.
    """
    img_path, lab_path, json_path = _paths(stem)
    if not json_path.is_file():
        return None
    try:
        meta = json.loads(json_path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"format {meta.get('format')}, this minilg reads {CACHE_FORMAT}")
        images = np.load(img_path, mmap_mode="c" if mmap else None)
        labels = np.load(lab_path)
        _check_arrays(meta, images, labels)
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(
            f"ignoring the prepared cache {json_path}: {e}; it will be rebuilt",
            CacheWarning,
            stacklevel=2,
        )
        return None
    return ImageArrayDataset(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        classes=list(meta["classes"]),
        wnids=list(meta["wnids"]),
        name=str(meta["name"]),
        split=str(meta["split"]),
        resolution=int(meta["resolution"]),
        skipped=int(meta.get("skipped", 0)),
        from_cache=True,
        cache_path=json_path,
    )


@contextlib.contextmanager
def _cache_lock(stem: Path) -> Iterator[None]:
    """Hold ``<stem>.lock`` (an OS lock that dies with its process) while preparing ``stem``."""
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(stem) + ".lock")
        lock.acquire()
    except OSError as e:
        raise DataError(
            f"the cache folder {stem.parent} is not writable ({e.strerror or e}): set "
            "MINILG_CACHE (or cache_dir=) to a writable folder"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _remove_leftovers(stem: Path) -> None:
    """Delete the temporary files of a killed preparation of ``stem`` (the caller holds its
    lock, so no live writer owns them). :func:`minilg.io.atomic_write_with` names them
    ``.<target name>.<random>.tmp<suffix>``."""
    for leftover in stem.parent.glob("." + glob.escape(stem.name) + ".*.tmp*"):
        leftover.unlink(missing_ok=True)


def cached_or_built(
    stem: Path, mmap: bool, build: Callable[[Path], ImageArrayDataset]
) -> ImageArrayDataset:
    """The valid cache at ``stem``, else ``build(stem)`` under the cache lock (one process
    prepares, the others wait and load its result); leftovers of killed preparations go first.

    Raises:
        DataError: the cache folder is not writable (a valid cache there still loads).
    """
    cached = load_cache(stem, mmap=mmap)
    if cached is not None:
        return cached
    with _cache_lock(stem):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheWarning)  # already said above
            cached = load_cache(stem, mmap=mmap)
        if cached is not None:
            return cached
        _remove_leftovers(stem)
        return build(stem)
