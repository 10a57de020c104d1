""":func:`load_subset`, the one call that selects data and resolution, and its three sources.

Sources, in the order tried:

* a prepared cache in ``cache_dir`` (no decoding, no network): loads in seconds;
* ``root=`` a local folder in the ImageFolder / fastai layout (``train/<wnid>/*.JPEG``,
  ``val/<wnid>/*.JPEG``; split folders may also be named training, valid, validation, dev);
  the folder is scanned directly (labels = sorted folder names, like the ``imagefolder``
  builder) so no Arrow copy of the images is made;
* the Hugging Face hub (:mod:`minilg.data.hub`): plain parquet repos as they are, the
  Imagenette / Imagewoof script repos through their parquet export, then the fastai tarball
  as a last resort.

``"synthetic"`` (alias ``"default"``) is generated on the fly (see
:mod:`minilg.data.synthetic`): PNGs are written into a wnid-style ImageFolder under the cache
directory and prepared through the very same ImageFolder path as real data. Which subsets
exist, and their split names, is :mod:`minilg.data.registry`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from minilg.data.core import (
    ImageArrayDataset,
    cache_stem,
    cached_or_built,
    default_cache_dir,
    load_cache,
)
from minilg.data.hub import hub_items, hub_labels, open_hub, unavailable
from minilg.data.match import (
    MATCH_CLASSES,
    MATCH_SIZES,
    MATCH_VERSION,
    MATCH_WNIDS,
    generate_match,
)
from minilg.data.prepare import (
    SPLIT_DIRS,
    ImageSource,
    class_folders,
    find_split_dir,
    folder_items,
    prepare_split,
)
from minilg.data.registry import SUBSETS, SubsetSpec, canonical_split, canonical_subset
from minilg.data.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_SIZES,
    SYNTHETIC_VERSION,
    SYNTHETIC_WNIDS,
    generate_synthetic,
    split_seed,
)
from minilg.errors import DatasetUnavailableError
from minilg.io import atomic_write_text, write_json
from minilg.validate import positive_int, whole_number

__all__ = ["load_subset"]

Labels = npt.NDArray[np.int64]


# --------------------------------------------------------------------------- selection


def _subsample(labels: Labels, max_per_class: int | None, seed: int) -> Labels:
    """Indices keeping at most ``max_per_class`` per label (random, seeded), in order."""
    idx = np.arange(labels.shape[0])
    if max_per_class is None:
        return idx
    rng = np.random.default_rng(seed)
    keep: list[Labels] = []
    for lab in np.unique(labels):
        members = idx[labels == lab]
        if members.shape[0] > max_per_class:
            members = np.sort(rng.choice(members, max_per_class, replace=False))
        keep.append(members)
    return np.sort(np.concatenate(keep)) if keep else idx[:0]


def _restrict(available: list[str], wnids: Sequence[str] | None, what: str) -> list[str]:
    """The sorted wnids to keep; ValueError naming any requested wnid that does not exist."""
    if wnids is None:
        return sorted(available)
    wanted = sorted(set(wnids))
    missing = [w for w in wanted if w not in set(available)]
    if missing:
        raise ValueError(
            f"wnids not found in {what}: {missing[:10]}{' ...' if len(missing) > 10 else ''} "
            f"({len(available)} classes available, e.g. {sorted(available)[:3]})"
        )
    return wanted


# --------------------------------------------------------------------------- local folders


def _missing_split(name: str, root: Path, split: str) -> DatasetUnavailableError:
    tried = f"local folder {root} (looked for {', '.join(f'{s}/' for s in SPLIT_DIRS[split])})"
    why = "folder does not exist" if not root.is_dir() else "no such split sub-folder"
    todo = [
        f"pass root= a folder laid out as root/{split}/<wnid>/<image files> (the fastai "
        "tarball layout, e.g. imagenette2-160/)",
        "or use the embedded default: load_subset('synthetic')",
    ]
    return unavailable(name, split, [(tried, why)], "missing", todo)


def _fingerprint(items: Sequence[tuple[ImageSource, int, str]]) -> str:
    """sha256 over every item's relative name, label, size and mtime (the folder's content)."""
    h = hashlib.sha256()
    for source, label, shown in items:
        # a dangling symlink has no size: it is fingerprinted by its name and skipped later
        st = source.lstat() if isinstance(source, Path) and not source.exists() else (
            source.stat() if isinstance(source, Path) else None)
        size, mtime = (st.st_size, st.st_mtime_ns) if st else (len(bytes(source)), 0)
        h.update(f"{shown}|{label}|{size}|{mtime}\n".encode())
    return h.hexdigest()


def _load_folder(
    spec: SubsetSpec, root: Path, split: str, resolution: int, wnids: Sequence[str] | None,
    cache_dir: Path, max_per_class: int | None, seed: int, mmap: bool, stem: Path | None = None,
) -> ImageArrayDataset:
    """An ImageFolder split through its cache. The class list is the train split's (shared by
    every split). The cache is keyed by the chosen files' names, sizes and mtimes, so an edited
    folder is prepared again; ``stem`` (the caller holds its lock) overrides that key."""
    split_dir = find_split_dir(root, split)
    if split_dir is None:
        raise _missing_split(spec.name, root, split)
    train_dir = find_split_dir(root, "train")
    classes = class_folders(train_dir if train_dir is not None else split_dir)
    keep = set(_restrict(classes, wnids, f"{train_dir or split_dir}"))
    kept, items = folder_items(split_dir, classes, keep=lambda f: f in keep)
    labels = np.array([lab for _, lab, _ in items], dtype=np.int64)
    chosen = [items[i] for i in _subsample(labels, max_per_class, seed)]

    def build(at: Path) -> ImageArrayDataset:
        return prepare_split(
            stem=at, items=chosen, total=len(chosen), classes=[spec.readable(w) for w in kept],
            wnids=kept, name=spec.name, split=split, resolution=resolution,
            source=f"folder {split_dir}", mmap=mmap,
        )

    if stem is not None:
        return build(stem)
    key = {"content": _fingerprint(chosen), "wnids": kept}
    return cached_or_built(cache_stem(cache_dir, spec.name, split, resolution, key), mmap, build)


# --------------------------------------------------------------------------- synthetic


@dataclass(frozen=True)
class _Generated:
    """A generated task: its split sizes, generator version, wnids, class names, generator."""

    sizes: dict[str, int]
    version: int
    wnids: tuple[str, ...]
    classes: tuple[str, ...]
    generate: Callable[[int, int, int], tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]]


_GENERATED: dict[str, _Generated] = {
    "synthetic": _Generated(SYNTHETIC_SIZES, SYNTHETIC_VERSION, SYNTHETIC_WNIDS,
                            SYNTHETIC_CLASSES, generate_synthetic),
    "match": _Generated(MATCH_SIZES, MATCH_VERSION, MATCH_WNIDS,
                            MATCH_CLASSES, generate_match),
}


def _load_synthetic(
    split: str, resolution: int, wnids: Sequence[str] | None, cache_dir: Path,
    max_per_class: int | None, seed: int, mmap: bool, name: str = "synthetic",
) -> ImageArrayDataset:
    """The generated set ``name`` through its cache, keyed by the generator's version and
    arguments (not by the PNG folder, so a copied or read-only cache still loads)."""
    gen = _GENERATED[name]
    n = gen.sizes[split]
    if max_per_class is not None:
        n = min(n, max_per_class * len(gen.classes))
    key = {"generator": gen.version, "seed": seed, "n": n,
           "wnids": sorted(set(wnids)) if wnids is not None else None}
    folder = cache_dir / name / f"folder-v{gen.version}-{resolution}px-seed{seed}-n{n}"

    def build(stem: Path) -> ImageArrayDataset:
        _write_synthetic_folder(folder, split, n, resolution, seed, gen)
        return _load_folder(SUBSETS[name], folder, split, resolution, wnids, cache_dir,
                            None, seed, mmap, stem=stem)

    stem = cache_stem(cache_dir, name, split, resolution, key)
    return cached_or_built(stem, mmap, build)


def _write_synthetic_folder(
    folder: Path, split: str, n: int, resolution: int, seed: int, gen: _Generated
) -> None:
    """Generate ``folder/<split>/<wnid>/*.png`` unless its ``.complete-<split>`` marker exists.

    The PNGs are scratch input for :func:`prepare_split`, not a result: they are written in
    place (an atomic write per file would fsync thousands of small files), and the marker,
    written last and atomically, is what says the folder is complete. A run killed midway
    leaves no marker, so the next one writes every PNG again.
    """
    marker = folder / f".complete-{split}"
    if marker.is_file():
        return
    images, labels = gen.generate(n, resolution, split_seed(seed, split))
    split_dir = folder / split
    for wnid in gen.wnids:
        (split_dir / wnid).mkdir(parents=True, exist_ok=True)

    def save(i: int) -> None:
        wnid = gen.wnids[int(labels[i])]
        # compress_level=1: still lossless, much faster to write than the default level
        Image.fromarray(images[i]).save(split_dir / wnid / f"{wnid}_{i:06d}.png", compress_level=1)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(save, range(n)))
    write_json(folder / "classes.json", dict(zip(gen.wnids, gen.classes, strict=True)))
    atomic_write_text(marker, "")


# --------------------------------------------------------------------------- hub


def _load_hub(
    spec: SubsetSpec, split: str, resolution: int, wnids: Sequence[str] | None,
    cache_dir: Path, max_per_class: int | None, seed: int, mmap: bool,
) -> ImageArrayDataset:
    """A hub split through its cache, keyed by the selection (the hub is not contacted when
    the cache is there); a fastai tarball goes through :func:`_load_folder`."""
    key = {
        "source": "hub",
        "wnids": sorted(set(wnids)) if wnids is not None else None,
        "max_per_class": max_per_class,
        "seed": seed if max_per_class is not None else None,
    }
    stem = cache_stem(cache_dir, spec.name, split, resolution, key)
    cached = load_cache(stem, mmap=mmap)
    if cached is not None:
        return cached
    ds = open_hub(spec, split, resolution)
    if isinstance(ds, Path):  # an extracted tarball
        return _load_folder(spec, ds, split, resolution, wnids, cache_dir, max_per_class, seed,
                            mmap)
    return cached_or_built(
        stem, mmap, lambda at: _prepare_hub(ds, spec, split, resolution, wnids, at,
                                            max_per_class, seed, mmap)
    )


def _prepare_hub(
    ds: Any, spec: SubsetSpec, split: str, resolution: int, wnids: Sequence[str] | None,
    stem: Path, max_per_class: int | None, seed: int, mmap: bool,
) -> ImageArrayDataset:
    """Prepare the cache at ``stem`` from a ``datasets.Dataset`` with an Image and a
    ClassLabel column; labels are re-indexed in sorted order of the kept wnids."""
    label_wnids, readable, old_labels = hub_labels(ds, spec)
    keep = _restrict(label_wnids, wnids, f"{spec.repo} labels")
    new_of_old = {label_wnids.index(w): i for i, w in enumerate(keep)}
    mapped = np.array([new_of_old.get(int(o), -1) for o in old_labels], dtype=np.int64)
    rows = np.flatnonzero(mapped >= 0)
    rows = rows[_subsample(mapped[rows], max_per_class, seed)]
    return prepare_split(
        stem=stem,
        items=hub_items(ds, spec, split, rows, [int(mapped[j]) for j in rows]),
        total=int(rows.shape[0]),
        classes=[readable[label_wnids.index(w)] for w in keep],
        wnids=keep,
        name=spec.name,
        split=split,
        resolution=resolution,
        source=f"hub {spec.repo}",
        mmap=mmap,
    )


# --------------------------------------------------------------------------- entry point


def load_subset(
    name: str,
    split: str = "train",
    resolution: int = 32,
    *,
    root: str | Path | None = None,
    wnids: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    mmap: bool = False,
) -> ImageArrayDataset:
    """Load (preparing on first use) one split of an ImageNet subset at one resolution.

    Args:
        name: one of :func:`~minilg.data.list_subsets` (``"synthetic"``/``"default"``,
            ``"imagenette"``, ``"imagewoof"``, ``"tiny-imagenet"``, ``"imagenet-100"``,
            ``"imagenet-1k"``, ``"imagefolder"``).
        split: ``"train"`` or ``"val"`` (``"validation"``/``"valid"`` accepted).
        resolution: output side R (>= 8); images are resized on the short side and
            centre-cropped.
        root: a local folder in the ImageFolder/fastai layout; required for
            ``"imagefolder"``, optional for the others (then the hub is not contacted).
        wnids: keep only these classes (labels re-indexed in sorted wnid order).
        cache_dir: where prepared arrays live (default ``$MINILG_CACHE`` or
            ``~/.cache/minilg``).
        max_per_class: keep at most this many images per class (seeded random choice; for
            ``"synthetic"`` it shrinks the generated set).
        seed: seed for ``max_per_class`` sampling, and the generator seed of ``"synthetic"``.
        mmap: leave the images memory-mapped on disk instead of reading them into RAM.

    Returns:
        an :class:`ImageArrayDataset` with ``images`` uint8 (N, R, R, 3), ``labels`` int64 (N,).

    Raises:
        DatasetUnavailableError: offline, gated or missing data (the message says what to do).
        ValueError: unknown name or split, a bad number, or requested wnids that do not exist.
    """
    spec = SUBSETS[canonical_subset(name)]
    split = canonical_split(split)
    whole_number(resolution, "resolution", minimum=8)
    if max_per_class is not None:
        positive_int(max_per_class, "max_per_class")
    cdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if spec.name in _GENERATED:
        if root is not None:
            raise ValueError(f"{spec.name!r} is generated; it takes no root=")
        return _load_synthetic(split, resolution, wnids, cdir, max_per_class, seed, mmap,
                               spec.name)
    if root is not None:
        return _load_folder(spec, Path(root).expanduser(), split, resolution, wnids, cdir,
                            max_per_class, seed, mmap)
    if spec.repo is None:
        raise ValueError(f"{spec.name!r} needs root= (a folder with train/ and val/ sub-folders)")
    return _load_hub(spec, split, resolution, wnids, cdir, max_per_class, seed, mmap)
