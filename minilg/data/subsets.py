"""The subset registry and :func:`load_subset`, the one call that selects data and resolution.

Sources, in the order tried:

* a prepared cache in ``cache_dir`` (no decoding, no network): loads in seconds;
* ``root=`` a local folder in the ImageFolder / fastai layout (``train/<wnid>/*.JPEG``,
  ``val/<wnid>/*.JPEG``; split folders may also be named training, valid, validation, dev);
  the folder is scanned directly (labels = sorted folder names, like the ``imagefolder``
  builder) so no Arrow copy of the images is made;
* the Hugging Face hub through ``datasets.load_dataset``: plain parquet repos as they are, the
  Imagenette / Imagewoof script repos through their parquet export
  (``revision="refs/convert/parquet"``), then the fastai tarball as a last resort.

``"synthetic"`` (alias ``"default"``) is generated on the fly (see
:mod:`minilg.data.synthetic`): PNGs are written into a wnid-style ImageFolder under the cache
directory and prepared through the very same ImageFolder path as real data.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from filelock import FileLock
from PIL import Image

from minilg.data.core import (
    CacheWarning,
    ImageArrayDataset,
    default_cache_dir,
    load_cache,
)
from minilg.data.prepare import (
    ImageSource,
    class_folders,
    find_split_dir,
    folder_items,
    prepare_split,
)
from minilg.data.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_SIZES,
    SYNTHETIC_VERSION,
    SYNTHETIC_WNIDS,
    generate_synthetic,
    split_seed,
)
from minilg.errors import DataError, DatasetUnavailableError
from minilg.io import atomic_write_text

__all__ = ["SUBSETS", "SubsetSpec", "canonical_subset", "list_subsets", "load_subset"]

IMAGENETTE_CLASSES: Final[dict[str, str]] = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}
IMAGEWOOF_CLASSES: Final[dict[str, str]] = {
    "n02086240": "Shih-Tzu",
    "n02087394": "Rhodesian ridgeback",
    "n02088364": "beagle",
    "n02089973": "English foxhound",
    "n02093754": "Border terrier",
    "n02096294": "Australian terrier",
    "n02099601": "golden retriever",
    "n02105641": "Old English sheepdog",
    "n02111889": "Samoyed",
    "n02115641": "dingo",
}
_WNID: Final[re.Pattern[str]] = re.compile(r"^[ns]\d{8}$|^s\d{7}$")


@dataclass(frozen=True)
class SubsetSpec:
    """Where a named subset lives.

    Attributes:
        name: the name accepted by :func:`load_subset`.
        repo: Hugging Face hub dataset id (None: local only).
        splits: our split name -> the source's split name.
        gated: the hub repo needs an accepted licence and a token.
        parquet_configs: for script repos: ``(max resolution, config)`` of the parquet export.
        tarballs: ``(max resolution, url)`` of fastai-layout tarballs (last resort).
        known_classes: wnid -> readable name, when known.
    """

    name: str
    repo: str | None
    splits: dict[str, str]
    gated: bool = False
    parquet_configs: tuple[tuple[int, str], ...] = ()
    tarballs: tuple[tuple[int, str], ...] = ()
    known_classes: dict[str, str] = field(default_factory=dict)
    description: str = ""


_FASTAI: Final[str] = "https://s3.amazonaws.com/fast-ai-imageclas"


def _fastai_subset(name: str, classes: dict[str, str], description: str) -> SubsetSpec:
    """Imagenette / Imagewoof: the hub's parquet export (160px, 320px, full size) with the
    fastai tarballs of the same sizes as the fallback."""
    sizes = ((160, "160px", "-160"), (320, "320px", "-320"), (1 << 30, "full_size", ""))
    return SubsetSpec(
        name,
        f"frgfm/{name}",
        {"train": "train", "val": "validation"},
        parquet_configs=tuple((limit, config) for limit, config, _ in sizes),
        tarballs=tuple((limit, f"{_FASTAI}/{name}2{suffix}.tgz") for limit, _, suffix in sizes),
        known_classes=classes,
        description=description,
    )


SUBSETS: Final[dict[str, SubsetSpec]] = {
    s.name: s
    for s in (
        SubsetSpec(
            "synthetic",
            None,
            {"train": "train", "val": "val"},
            known_classes=dict(zip(SYNTHETIC_WNIDS, SYNTHETIC_CLASSES, strict=True)),
            description="embedded two-glyph task, 10 classes, generated in seconds",
        ),
        _fastai_subset(
            "imagenette", IMAGENETTE_CLASSES, "10 easy ImageNet classes, 9,469 train / 3,925 val"
        ),
        _fastai_subset("imagewoof", IMAGEWOOF_CLASSES, "10 dog breeds, 9,025 train / 3,929 val"),
        SubsetSpec(
            "tiny-imagenet",
            "zh-plus/tiny-imagenet",
            {"train": "train", "val": "valid"},
            description="200 classes at 64 px, 100,000 train / 10,000 val",
        ),
        SubsetSpec(
            "imagenet-100",
            "clane9/imagenet-100",
            {"train": "train", "val": "validation"},
            description="100 classes (CMC list), ~127k train / 5,000 val",
        ),
        SubsetSpec(
            "imagenet-1k",
            "ILSVRC/imagenet-1k",
            {"train": "train", "val": "validation"},
            gated=True,
            description="ILSVRC-2012, 1000 classes, gated on the hub",
        ),
        SubsetSpec(
            "imagefolder",
            None,
            {"train": "train", "val": "val"},
            description="any local folder: root/train/<class>/*, root/val/<class>/*",
        ),
    )
}
_ALIASES: Final[dict[str, str]] = {
    "default": "synthetic",
    "tinyimagenet": "tiny-imagenet",
    "tiny_imagenet": "tiny-imagenet",
    "imagenet100": "imagenet-100",
    "imagenet1k": "imagenet-1k",
    "imagenet": "imagenet-1k",
}
_SPLIT_ALIASES: Final[dict[str, str]] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
}


def list_subsets() -> list[str]:
    """Names accepted by :func:`load_subset` (aliases: ``default`` = ``synthetic``)."""
    return list(SUBSETS)


def canonical_subset(name: str) -> str:
    """The registry key of ``name`` (aliases resolved); ValueError listing the choices."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SUBSETS:
        raise ValueError(f"unknown subset {name!r}; choose one of {list_subsets()} (or 'default')")
    return key


def _cache_stem(
    cache_dir: Path, name: str, split: str, resolution: int, key: dict[str, Any]
) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / name / f"{split}-{resolution}px-{digest}"


def _subsample(
    labels: np.ndarray[Any, np.dtype[np.int64]], max_per_class: int | None, seed: int
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Indices keeping at most ``max_per_class`` per label (random, seeded), in order."""
    idx = np.arange(labels.shape[0])
    if max_per_class is None:
        return idx
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray[Any, np.dtype[np.int64]]] = []
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


def _readable(spec: SubsetSpec, wnid: str, fallback: str | None = None) -> str:
    return spec.known_classes.get(wnid, fallback if fallback is not None else wnid)


# --------------------------------------------------------------------------- local folders


def _load_folder(
    spec: SubsetSpec,
    root: Path,
    split: str,
    resolution: int,
    wnids: Sequence[str] | None,
    cache_dir: Path,
    max_per_class: int | None,
    seed: int,
    mmap: bool,
    stem: Path | None = None,
) -> ImageArrayDataset:
    """An ImageFolder split through its cache. The class list is the train split's (shared by
    every split). The cache is keyed by the chosen files' names, sizes and mtimes, so an edited
    folder is prepared again; ``stem`` (the caller holds its lock) overrides that key."""
    name = spec.name
    split_dir = find_split_dir(root, split)
    if split_dir is None:
        tried = f"local folder {root} (looked for {', '.join(_split_dirs(split))})"
        why = "folder does not exist" if not root.is_dir() else "no such split sub-folder"
        todo = [
            f"pass root= a folder laid out as root/{'train' if split == 'train' else 'val'}"
            "/<wnid>/<image files> (the fastai tarball layout, e.g. imagenette2-160/)",
            "or use the embedded default: load_subset('synthetic')",
        ]
        raise DatasetUnavailableError(
            _message(name, split, [(tried, why)], "missing", todo),
            name=name,
            reason="missing",
            attempts=[(tried, why)],
        )
    train_dir = find_split_dir(root, "train")
    classes = class_folders(train_dir if train_dir is not None else split_dir)
    keep = set(_restrict(classes, wnids, f"{train_dir or split_dir}"))
    kept, items = folder_items(split_dir, classes, keep=lambda f: f in keep)
    labels = np.array([lab for _, lab, _ in items], dtype=np.int64)
    chosen = [items[i] for i in _subsample(labels, max_per_class, seed)]

    def build(at: Path) -> ImageArrayDataset:
        return prepare_split(
            stem=at, items=chosen, total=len(chosen), classes=[_readable(spec, w) for w in kept],
            wnids=kept, name=name, split=split, resolution=resolution,
            source=f"folder {split_dir}", mmap=mmap,
        )

    if stem is not None:
        return build(stem)
    key = {"content": _fingerprint(chosen), "wnids": kept}
    return _cached_or_built(_cache_stem(cache_dir, name, split, resolution, key), mmap, build)


def _fingerprint(items: Sequence[tuple[ImageSource, int, str]]) -> str:
    """sha256 over every item's relative name, label, size and mtime (the folder's content)."""
    h = hashlib.sha256()
    for source, label, shown in items:
        st = source.stat() if isinstance(source, Path) else None
        size, mtime = (st.st_size, st.st_mtime_ns) if st else (len(bytes(source)), 0)
        h.update(f"{shown}|{label}|{size}|{mtime}\n".encode())
    return h.hexdigest()


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


def _cached_or_built(
    stem: Path, mmap: bool, build: Callable[[Path], ImageArrayDataset]
) -> ImageArrayDataset:
    """The valid cache at ``stem``, else ``build(stem)`` under the cache lock (one process
    prepares, the others wait and load its result); leftovers of killed preparations go first."""
    cached = load_cache(stem, mmap=mmap)
    if cached is not None:
        return cached
    with _cache_lock(stem):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheWarning)  # already said above
            cached = load_cache(stem, mmap=mmap)
        if cached is not None:
            return cached
        for leftover in stem.parent.glob(glob.escape(stem.name) + ".*"):
            if leftover.name.endswith((".partial.npy", ".tmp")):
                leftover.unlink(missing_ok=True)
        return build(stem)


def _split_dirs(split: str) -> list[str]:
    from minilg.data.prepare import SPLIT_DIRS

    return [f"{s}/" for s in SPLIT_DIRS[split]]


# --------------------------------------------------------------------------- synthetic


def _load_synthetic(
    split: str,
    resolution: int,
    wnids: Sequence[str] | None,
    cache_dir: Path,
    max_per_class: int | None,
    seed: int,
    mmap: bool,
) -> ImageArrayDataset:
    """The generated set through its cache, keyed by the generator's version and arguments
    (not by the PNG folder, so a copied or read-only cache still loads)."""
    spec = SUBSETS["synthetic"]
    n = SYNTHETIC_SIZES[split]
    if max_per_class is not None:
        n = min(n, max_per_class * len(SYNTHETIC_CLASSES))
    key = {"generator": SYNTHETIC_VERSION, "seed": seed, "n": n,
           "wnids": sorted(set(wnids)) if wnids is not None else None}
    folder = (
        cache_dir / "synthetic" / f"folder-v{SYNTHETIC_VERSION}-{resolution}px-seed{seed}-n{n}"
    )

    def build(stem: Path) -> ImageArrayDataset:
        _write_synthetic_folder(folder, split, n, resolution, seed)
        return _load_folder(spec, folder, split, resolution, wnids, cache_dir, None, seed, mmap,
                            stem=stem)

    return _cached_or_built(_cache_stem(cache_dir, "synthetic", split, resolution, key), mmap,
                            build)


def _write_synthetic_folder(folder: Path, split: str, n: int, resolution: int, seed: int) -> None:
    """Generate ``folder/<split>/<wnid>/*.png`` unless its ``.complete-<split>`` marker exists."""
    marker = folder / f".complete-{split}"
    if marker.is_file():
        return
    images, labels = generate_synthetic(n, resolution, split_seed(seed, split))
    split_dir = folder / split
    for wnid in SYNTHETIC_WNIDS:
        (split_dir / wnid).mkdir(parents=True, exist_ok=True)

    def save(i: int) -> None:
        wnid = SYNTHETIC_WNIDS[int(labels[i])]
        # compress_level=1: still lossless, much faster to write than the default level
        Image.fromarray(images[i]).save(split_dir / wnid / f"{wnid}_{i:06d}.png", compress_level=1)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(save, range(n)))
    classes = json.dumps(dict(zip(SYNTHETIC_WNIDS, SYNTHETIC_CLASSES, strict=True)), indent=1)
    atomic_write_text(folder / "classes.json", classes)
    marker.touch()


# --------------------------------------------------------------------------- hub


def _offline_env() -> list[str]:
    return [
        v
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
        if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
    ]


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 10:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def classify_error(exc: BaseException) -> str:
    """``"offline"``, ``"gated"``, ``"missing"``, ``"script"`` or ``"error"`` for an
    exception raised while loading from the hub (walks the ``__cause__`` chain)."""
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    if "GatedRepoError" in names or "gated" in text:
        return "gated"
    if (
        names
        & {
            "OfflineModeIsEnabled",
            "LocalEntryNotFoundError",
            "ConnectError",
            "ConnectTimeout",
            "TimeoutException",
            "ConnectionError",
        }
        or any(isinstance(e, ConnectionError) for e in chain)
        or "couldn't reach" in text
        or "offline" in text
    ):
        return "offline"
    if "dataset scripts are no longer supported" in text:
        return "script"
    if names & {
        "DatasetNotFoundError",
        "RepositoryNotFoundError",
        "FileNotFoundError",
        "DataFilesNotFoundError",
        "EmptyDatasetError",
        "RevisionNotFoundError",
    }:
        return "missing"
    return "error"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _message(
    name: str, split: str, attempts: list[tuple[str, str]], reason: str, todo: list[str]
) -> str:
    lines = [f"Could not load dataset {name!r} (split {split!r}).", "Tried:"]
    lines += [f"  {i}. {what} -> {why}" for i, (what, why) in enumerate(attempts, 1)]
    why = {
        "offline": "the Hugging Face hub could not be reached (offline mode or no network) "
        "and the data is not in the local caches.",
        "gated": "the dataset is gated: it needs a logged-in Hugging Face token whose account "
        "has accepted the dataset's terms.",
        "missing": "the data was not found where it was looked for.",
        "script": "the hub repo is a script dataset, which datasets >= 4 refuses to run.",
        "error": "loading failed (see the errors above).",
    }[reason]
    lines.append(f"Why: {why}")
    lines.append("What to do:")
    lines += [f"  - {t}" for t in todo]
    return "\n".join(lines)


def _todo(spec: SubsetSpec, reason: str) -> list[str]:
    todo: list[str] = []
    layout = (
        "root=<folder> in the fastai/ImageFolder layout (root/train/<wnid>/*.JPEG, "
        "root/val/<wnid>/*.JPEG)"
    )
    if reason == "gated" or spec.gated:
        todo.append(
            f"run `huggingface-cli login` (or `hf auth login`) with a token from "
            f"https://huggingface.co/settings/tokens, and accept the terms at "
            f"https://huggingface.co/datasets/{spec.repo} with the same account; then retry"
        )
    if reason in ("offline", "error", "missing", "script"):
        offline = _offline_env()
        if offline:
            todo.append(
                f"unset {' and '.join(offline)} (offline mode is on) and make sure the machine "
                "can reach huggingface.co, then retry (the prepared cache makes later runs "
                "offline-safe)"
            )
        else:
            todo.append(
                "go online (the machine must reach huggingface.co"
                + (" and s3.amazonaws.com" if spec.tarballs else "")
                + "), then retry; once prepared, the cache works offline"
            )
    if spec.tarballs:
        todo.append(f"or download {spec.tarballs[0][1]} elsewhere, extract it and pass {layout}")
    else:
        todo.append(f"or pass {layout}")
    todo.append("or use the embedded default, which needs no download: load_subset('synthetic')")
    return todo


def _pick(options: tuple[tuple[int, str], ...], resolution: int) -> str:
    for max_res, value in options:
        if resolution <= max_res:
            return value
    return options[-1][1]


def _hub_wnids_imagenet1k(repo: str) -> list[str] | None:
    """The 1000 wnids of ILSVRC/imagenet-1k in label order, from the repo's ``classes.py``."""
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id=repo, filename="classes.py", repo_type="dataset")
        found = re.findall(r"\"(n\d{8})\"\s*:", Path(path).read_text())
    except Exception:  # optional metadata: any failure means unknown
        return None
    return found if len(found) == 1000 else None


def _hub_calls(spec: SubsetSpec, split: str, resolution: int) -> list[tuple[str, dict[str, Any]]]:
    """``(description, load_dataset kwargs)`` to try: the parquet export of a script repo at
    the smallest size >= ``resolution``, or the plain repo."""
    assert spec.repo is not None
    hub_split = spec.splits[split]
    if spec.parquet_configs:
        config = _pick(spec.parquet_configs, resolution)
        return [
            (
                f"datasets.load_dataset({spec.repo!r}, {config!r}, split={hub_split!r}, "
                "revision='refs/convert/parquet') (the hub's parquet export)",
                {"path": spec.repo, "name": config, "split": hub_split,
                 "revision": "refs/convert/parquet"},
            )
        ]
    return [
        (
            f"datasets.load_dataset({spec.repo!r}, split={hub_split!r})",
            {"path": spec.repo, "split": hub_split},
        )
    ]


def _load_hub(
    spec: SubsetSpec,
    split: str,
    resolution: int,
    wnids: Sequence[str] | None,
    cache_dir: Path,
    max_per_class: int | None,
    seed: int,
    mmap: bool,
) -> ImageArrayDataset:
    key = {
        "source": "hub",
        "wnids": sorted(set(wnids)) if wnids is not None else None,
        "max_per_class": max_per_class,
        "seed": seed if max_per_class is not None else None,
    }
    stem = _cache_stem(cache_dir, spec.name, split, resolution, key)
    cached = load_cache(stem, mmap=mmap)
    if cached is not None:
        return cached

    import datasets  # deferred: importing datasets takes a second or two

    attempts: list[tuple[str, str]] = []
    reasons: list[str] = []
    ds: Any = None
    for what, kwargs in _hub_calls(spec, split, resolution):
        try:
            ds = datasets.load_dataset(**kwargs)
            break
        except Exception as exc:  # classified and reported below
            attempts.append((what, _describe(exc)))
            reasons.append(classify_error(exc))
    if ds is None and spec.tarballs:
        url = _pick(spec.tarballs, resolution)
        what = f"fastai tarball {url} (via datasets.DownloadManager)"
        if "offline" in reasons or _offline_env():
            attempts.append((what, "skipped: offline"))
        else:
            try:
                extracted = Path(datasets.DownloadManager().download_and_extract(url))
                subdirs = [d for d in extracted.iterdir() if d.is_dir()]
                root = subdirs[0] if len(subdirs) == 1 else extracted
                return _load_folder(
                    spec, root, split, resolution, wnids, cache_dir, max_per_class, seed, mmap
                )
            except DatasetUnavailableError:
                raise
            except Exception as exc:  # classified and reported below
                attempts.append((what, _describe(exc)))
                reasons.append(classify_error(exc))
    if ds is None:
        order = ("gated", "offline", "missing", "script", "error")
        reason = min(reasons, key=order.index) if reasons else "error"
        raise DatasetUnavailableError(
            _message(spec.name, split, attempts, reason, _todo(spec, reason)),
            name=spec.name,
            reason=reason,
            attempts=attempts,
        )
    with _cache_lock(stem):
        return _prepare_hub(ds, spec, split, resolution, wnids, stem, max_per_class, seed, mmap)


def _prepare_hub(
    ds: Any,
    spec: SubsetSpec,
    split: str,
    resolution: int,
    wnids: Sequence[str] | None,
    stem: Path,
    max_per_class: int | None,
    seed: int,
    mmap: bool,
) -> ImageArrayDataset:
    """Turn a ``datasets.Dataset`` with an Image and a ClassLabel column into a cache."""
    import datasets

    features = ds.features
    img_col = next(k for k, v in features.items() if isinstance(v, datasets.Image))
    lab_col = next(k for k, v in features.items() if isinstance(v, datasets.ClassLabel))
    names: list[str] = list(features[lab_col].names)
    if all(_WNID.match(n) for n in names):
        label_wnids = names
        readable = [_readable(spec, w) for w in names]
    else:
        known = list(spec.known_classes)
        hub_wnids = (
            _hub_wnids_imagenet1k(spec.repo)
            if spec.name == "imagenet-1k" and spec.repo is not None
            else None
        )
        if len(known) == len(names):
            label_wnids = sorted(known)
        elif hub_wnids is not None:
            label_wnids = hub_wnids
        else:
            label_wnids = names  # no wnids known: restrict by these names instead
        readable = [n.split(",")[0].strip() for n in names]
    keep = _restrict(label_wnids, wnids, f"{spec.repo} labels")
    # new label = position of the wnid in the sorted kept list
    new_of_old = {label_wnids.index(w): i for i, w in enumerate(keep)}
    old_labels = np.asarray(ds[lab_col], dtype=np.int64)
    mapped = np.array([new_of_old.get(int(o), -1) for o in old_labels], dtype=np.int64)
    idx = np.flatnonzero(mapped >= 0)
    idx = idx[_subsample(mapped[idx], max_per_class, seed)]
    ds = ds.cast_column(img_col, datasets.Image(decode=False))

    def items() -> Any:
        for start in range(0, idx.shape[0], 512):
            block = idx[start : start + 512]
            rows = ds.select(block)[img_col]
            for j, row in zip(block, rows, strict=True):
                src: ImageSource = (
                    row["bytes"] if row.get("bytes") is not None else Path(row["path"])
                )
                yield src, int(mapped[j]), f"{spec.repo}[{split}][{int(j)}]"

    return prepare_split(
        stem=stem,
        items=items(),
        total=int(idx.shape[0]),
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
        name: one of :func:`list_subsets` (``"synthetic"``/``"default"``, ``"imagenette"``,
            ``"imagewoof"``, ``"tiny-imagenet"``, ``"imagenet-100"``, ``"imagenet-1k"``,
            ``"imagefolder"``).
        split: ``"train"`` or ``"val"`` (``"validation"``/``"valid"`` accepted).
        resolution: output side R; images are resized on the short side and centre-cropped.
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
        ValueError: unknown name or split, or requested wnids that do not exist.
    """
    key = canonical_subset(name)
    sp = _SPLIT_ALIASES.get(split.strip().lower())
    if sp is None:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
    cdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    spec = SUBSETS[key]
    if key == "synthetic":
        if root is not None:
            raise ValueError("'synthetic' is generated; it takes no root=")
        ds = _load_synthetic(sp, resolution, wnids, cdir, max_per_class, seed, mmap)
        return ds
    if root is not None:
        return _load_folder(
            spec,
            Path(root).expanduser(),
            sp,
            resolution,
            wnids,
            cdir,
            max_per_class,
            seed,
            mmap,
        )
    if spec.repo is None:
        raise ValueError(f"{key!r} needs root= (a folder with train/ and val/ sub-folders)")
    return _load_hub(spec, sp, resolution, wnids, cdir, max_per_class, seed, mmap)
