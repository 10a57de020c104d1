"""Hugging Face hub access, and the one message shape for data that could not be had.

:func:`open_hub` tries the subset's hub repo through ``datasets.load_dataset`` (the Imagenette /
Imagewoof script repos through their parquet export, ``revision="refs/convert/parquet"``), then
the fastai tarball as a last resort. Each failure is classified by :func:`classify_error`
(offline, gated, missing, script, error) and reported by :func:`unavailable` as one
:class:`~minilg.errors.DatasetUnavailableError` saying what was tried, why it failed and what
to do. :func:`hub_labels` and :func:`hub_items` read a loaded ``datasets.Dataset`` as wnids and
``(image, label, name)`` items for :func:`minilg.data.prepare.prepare_split`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from minilg.data.prepare import ImageSource
from minilg.data.registry import SubsetSpec
from minilg.errors import DatasetUnavailableError

__all__ = [
    "classify_error",
    "hub_items",
    "hub_labels",
    "open_hub",
    "unavailable",
]

_WNID: Final[re.Pattern[str]] = re.compile(r"^[ns]\d{8}$|^s\d{7}$")
_REASONS: Final[tuple[str, ...]] = ("gated", "offline", "missing", "script", "error")
_WHY: Final[dict[str, str]] = {
    "offline": "the Hugging Face hub could not be reached (offline mode or no network) "
    "and the data is not in the local caches.",
    "gated": "the dataset is gated: it needs a logged-in Hugging Face token whose account "
    "has accepted the dataset's terms.",
    "missing": "the data was not found where it was looked for.",
    "script": "the hub repo is a script dataset, which datasets >= 4 refuses to run.",
    "error": "loading failed (see the errors above).",
    "no_datasets": "loading from the Hugging Face hub needs the datasets package, which is not "
    "installed (it is the optional extra minilg[hub]).",
}
_LAYOUT: Final[str] = (
    "root=<folder> in the fastai/ImageFolder layout (root/train/<wnid>/*.JPEG, "
    "root/val/<wnid>/*.JPEG)"
)


# --------------------------------------------------------------------------- errors


def _offline_env() -> list[str]:
    """The offline switches (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``) that are on."""
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


_OFFLINE_TYPES: Final[frozenset[str]] = frozenset({
    "OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectError", "ConnectTimeout",
    "TimeoutException", "ConnectionError",
})
_MISSING_TYPES: Final[frozenset[str]] = frozenset({
    "DatasetNotFoundError", "RepositoryNotFoundError", "FileNotFoundError",
    "DataFilesNotFoundError", "EmptyDatasetError", "RevisionNotFoundError",
})


def classify_error(exc: BaseException) -> str:
    """``"offline"``, ``"gated"``, ``"missing"``, ``"script"`` or ``"error"`` for an
    exception raised while loading from the hub (walks the ``__cause__`` chain)."""
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    if "GatedRepoError" in names or "gated" in text:
        return "gated"
    if (
        names & _OFFLINE_TYPES
        or any(isinstance(e, ConnectionError) for e in chain)
        or "couldn't reach" in text
        or "offline" in text
    ):
        return "offline"
    if "dataset scripts are no longer supported" in text:
        return "script"
    if names & _MISSING_TYPES:
        return "missing"
    return "error"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def unavailable(
    name: str, split: str, attempts: list[tuple[str, str]], reason: str, todo: list[str]
) -> DatasetUnavailableError:
    """The error for ``name``/``split``: what was tried, why it failed, what to do."""
    lines = [f"Could not load dataset {name!r} (split {split!r}).", "Tried:"]
    lines += [f"  {i}. {what} -> {why}" for i, (what, why) in enumerate(attempts, 1)]
    lines += [f"Why: {_WHY[reason]}", "What to do:"]
    lines += [f"  - {t}" for t in todo]
    return DatasetUnavailableError(
        "\n".join(lines), name=name, reason=reason, attempts=attempts
    )


def _todo(spec: SubsetSpec, reason: str) -> list[str]:
    todo: list[str] = []
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
        todo.append(f"or download {spec.tarballs[0][1]} elsewhere, extract it and pass {_LAYOUT}")
    else:
        todo.append(f"or pass {_LAYOUT}")
    todo.append("or use the embedded default, which needs no download: load_subset('synthetic')")
    return todo


# --------------------------------------------------------------------------- loading


def _pick(options: tuple[tuple[int, str], ...], resolution: int) -> str:
    for max_res, value in options:
        if resolution <= max_res:
            return value
    return options[-1][1]


def _hub_call(spec: SubsetSpec, split: str, resolution: int) -> tuple[str, dict[str, Any]]:
    """``(description, load_dataset kwargs)``: the parquet export of a script repo at the
    smallest size >= ``resolution``, or the plain repo."""
    assert spec.repo is not None
    hub_split = spec.splits[split]
    if not spec.parquet_configs:
        return (
            f"datasets.load_dataset({spec.repo!r}, split={hub_split!r})",
            {"path": spec.repo, "split": hub_split},
        )
    config = _pick(spec.parquet_configs, resolution)
    return (
        f"datasets.load_dataset({spec.repo!r}, {config!r}, split={hub_split!r}, "
        "revision='refs/convert/parquet') (the hub's parquet export)",
        {"path": spec.repo, "name": config, "split": hub_split,
         "revision": "refs/convert/parquet"},
    )


def _tarball_root(url: str) -> Path:
    """Download and extract a fastai tarball; the folder holding ``train/`` and ``val/``."""
    import datasets

    extracted = Path(datasets.DownloadManager().download_and_extract(url))
    subdirs = [d for d in extracted.iterdir() if d.is_dir()]
    return subdirs[0] if len(subdirs) == 1 else extracted


def open_hub(spec: SubsetSpec, split: str, resolution: int) -> Any:
    """The split as a ``datasets.Dataset``, or the ``Path`` of an extracted fastai tarball.

    Raises:
        DatasetUnavailableError: every source failed (the message lists each attempt).
    """
    try:
        import datasets  # deferred: importing datasets takes a second or two
    except ImportError:
        raise unavailable(
            spec.name, split, [(f"the Hugging Face hub ({spec.repo})", "skipped: no datasets")],
            "no_datasets",
            ["pip install 'minilg[hub]' (or pip install datasets), then retry",
             f"or pass {_LAYOUT}"],
        ) from None

    attempts: list[tuple[str, str]] = []
    reasons: list[str] = []
    what, kwargs = _hub_call(spec, split, resolution)
    try:
        return datasets.load_dataset(**kwargs)
    except Exception as exc:  # classified and reported below
        attempts.append((what, _describe(exc)))
        reasons.append(classify_error(exc))
    if spec.tarballs:
        url = _pick(spec.tarballs, resolution)
        what = f"fastai tarball {url} (via datasets.DownloadManager)"
        if "offline" in reasons or _offline_env():
            attempts.append((what, "skipped: offline"))
        else:
            try:
                return _tarball_root(url)
            except Exception as exc:  # classified and reported below
                attempts.append((what, _describe(exc)))
                reasons.append(classify_error(exc))
    reason = min(reasons, key=_REASONS.index)
    raise unavailable(spec.name, split, attempts, reason, _todo(spec, reason))


# --------------------------------------------------------------------------- a loaded split


def _hub_wnids_imagenet1k(repo: str) -> list[str] | None:
    """The 1000 wnids of ILSVRC/imagenet-1k in label order, from the repo's ``classes.py``."""
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id=repo, filename="classes.py", repo_type="dataset")
        found = re.findall(r"\"(n\d{8})\"\s*:", Path(path).read_text())
    except Exception:  # optional metadata: any failure means unknown
        return None
    return found if len(found) == 1000 else None


def _label_wnids(names: list[str], spec: SubsetSpec) -> tuple[list[str], list[str]]:
    """``(wnids, readable names)`` for a ClassLabel's ``names``.

    Names that are wnids are kept; otherwise the wnids come from the registry's known classes
    (same count) or, for imagenet-1k, the repo's ``classes.py``; failing both, the names
    themselves stand in for wnids.
    """
    if all(_WNID.match(n) for n in names):
        return names, [spec.readable(w) for w in names]
    readable = [n.split(",")[0].strip() for n in names]
    known = list(spec.known_classes)
    if len(known) == len(names):
        return sorted(known), readable
    if spec.name == "imagenet-1k" and spec.repo is not None:
        hub_wnids = _hub_wnids_imagenet1k(spec.repo)
        if hub_wnids is not None:
            return hub_wnids, readable
    return names, readable


def hub_labels(ds: Any, spec: SubsetSpec) -> tuple[list[str], list[str], npt.NDArray[np.int64]]:
    """``(wnid per label, readable name per label, labels (N,) int64)`` of a
    ``datasets.Dataset`` with a ClassLabel column."""
    import datasets

    lab_col = next(k for k, v in ds.features.items() if isinstance(v, datasets.ClassLabel))
    wnids, readable = _label_wnids(list(ds.features[lab_col].names), spec)
    return wnids, readable, np.asarray(ds[lab_col], dtype=np.int64)


def hub_items(
    ds: Any, spec: SubsetSpec, split: str, rows: npt.NDArray[np.int64], labels: list[int]
) -> Iterator[tuple[ImageSource, int, str]]:
    """``(encoded bytes or path, label, shown name)`` for ``rows`` of ``ds`` (read 512 at a
    time, undecoded), with ``labels[i]`` for ``rows[i]``."""
    import datasets

    img_col = next(k for k, v in ds.features.items() if isinstance(v, datasets.Image))
    ds = ds.cast_column(img_col, datasets.Image(decode=False))
    for start in range(0, rows.shape[0], 512):
        block = rows[start : start + 512]
        for j, row, label in zip(
            block, ds.select(block)[img_col], labels[start : start + 512], strict=True
        ):
            src: ImageSource = row["bytes"] if row.get("bytes") is not None else Path(row["path"])
            yield src, label, f"{spec.repo}[{split}][{int(j)}]"
