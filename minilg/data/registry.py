"""The subset registry: which named subsets exist, where each lives, and their split names.

:data:`SUBSETS` maps a name to a :class:`SubsetSpec` (hub repo, split names, known classes);
:func:`canonical_subset` resolves aliases (``"default"`` is ``"synthetic"``) and
:func:`canonical_split` the split synonyms (``"validation"`` is ``"val"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from minilg.data.match import MATCH_CLASSES, MATCH_WNIDS
from minilg.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_WNIDS
from minilg.validate import one_of

__all__ = [
    "IMAGENETTE_CLASSES",
    "IMAGEWOOF_CLASSES",
    "SUBSETS",
    "SubsetSpec",
    "canonical_split",
    "canonical_subset",
    "list_subsets",
]

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


@dataclass(frozen=True)
class SubsetSpec:
    """Where a named subset lives.

    Attributes:
        name: the name accepted by :func:`minilg.data.load_subset`.
        repo: Hugging Face hub dataset id (None: local only).
        splits: our split name -> the source's split name.
        gated: the hub repo needs an accepted licence and a token.
        parquet_configs: for script repos: ``(max resolution, config)`` of the parquet export.
        tarballs: ``(max resolution, url)`` of fastai-layout tarballs (last resort).
        known_classes: wnid -> readable name, when known.
        description: one line for listings.
    """

    name: str
    repo: str | None
    splits: dict[str, str]
    gated: bool = False
    parquet_configs: tuple[tuple[int, str], ...] = ()
    tarballs: tuple[tuple[int, str], ...] = ()
    known_classes: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def readable(self, wnid: str) -> str:
        """The readable name of ``wnid`` if known, else ``wnid`` itself."""
        return self.known_classes.get(wnid, wnid)


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
        SubsetSpec(
            "match",
            None,
            {"train": "train", "val": "val"},
            known_classes=dict(zip(MATCH_WNIDS, MATCH_CLASSES, strict=True)),
            description="embedded colour-match task, 2 classes, needs reach (squares far apart)",
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
    """Names accepted by :func:`minilg.data.load_subset` (alias: ``default`` = ``synthetic``)."""
    return list(SUBSETS)


def canonical_subset(name: str) -> str:
    """The registry key of ``name`` (aliases resolved); ValueError listing the choices."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SUBSETS:
        raise ValueError(f"unknown subset {name!r}; choose one of {list_subsets()} (or 'default')")
    return key


def canonical_split(split: str) -> str:
    """``"train"`` or ``"val"`` for ``split`` or a synonym of it; ValueError listing them."""
    return _SPLIT_ALIASES[one_of(split.strip().lower(), "split", _SPLIT_ALIASES)]
