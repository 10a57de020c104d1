"""Image-classification data for minilg: ImageNet subsets and an embedded synthetic default.

One call selects a subset, a split and a resolution::

    from minilg.data import load_subset
    train = load_subset("synthetic", "train", resolution=32)     # embedded, no download
    val = load_subset("imagenette", "val", resolution=64)        # hub, or root= a local copy
    dogs = load_subset("imagenet-1k", wnids=["n02085620", "n02085782"], root="/data/imagenet")

The first call decodes every image once (RGB, short side resized, centre-cropped) into a uint8
array cached on disk; later calls load that cache in seconds. ``train.images`` is uint8
(N, R, R, 3) and ``train.labels`` int64 (N,); batches are augmented on the device with
:class:`minilg.data.augment.BatchAugment`.

Modules: :mod:`~minilg.data.registry` (which subsets exist), :mod:`~minilg.data.subsets`
(:func:`load_subset` and its sources), :mod:`~minilg.data.hub` (Hugging Face access and the
"not available" messages), :mod:`~minilg.data.prepare` (decode once), :mod:`~minilg.data.core`
(the dataset and its on-disk cache), :mod:`~minilg.data.synthetic`, :mod:`~minilg.data.augment`.
"""

from minilg.data.core import ImageArrayDataset, SkippedImagesWarning
from minilg.data.registry import SUBSETS, SubsetSpec, canonical_subset, list_subsets
from minilg.data.subsets import load_subset
from minilg.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_WNIDS, generate_synthetic
from minilg.errors import DataError, DatasetUnavailableError

__all__ = [
    "SUBSETS",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_WNIDS",
    "DataError",
    "DatasetUnavailableError",
    "ImageArrayDataset",
    "SkippedImagesWarning",
    "SubsetSpec",
    "canonical_subset",
    "generate_synthetic",
    "list_subsets",
    "load_subset",
]
