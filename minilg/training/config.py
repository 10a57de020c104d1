"""The training configuration: one dataclass of plain values, range-checked when it is built.

Every check runs in ``__post_init__``, before any data is loaded or any compute starts, and a
bad value raises :class:`~minilg.errors.ConfigError` naming the field, the allowed
range and the value given. Checks that need the machine or the model registry (is CUDA there?
does the model accept these ``model_kwargs``?) are :func:`check_device` and :func:`check_model`,
which :func:`minilg.train.train` runs first.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from minilg.errors import ConfigError
from minilg.registry import create_model, list_models

__all__ = ["AMP_CHOICES", "TrainConfig", "check_device", "check_model", "resolve_crop_scale"]

AMP_CHOICES = ("auto", "bf16", "fp16", "off")

# create_model overrides that an option of TrainConfig already controls
_KWARGS_OWNED = {
    "num_classes": "the data set decides the class count",
    "img_size": "use resolution (--resolution)",
    "drop_path_rate": "use drop_path (--drop-path)",
}


@dataclass
class TrainConfig:
    """Everything that defines a training run. Plain values only: it is saved as JSON.

    Each field's ``metadata["help"]`` is its documentation and its ``--flag``'s help text on the
    command line (:mod:`minilg.training.options`).
    """

    # what to train on
    model: str = field(default="swin_mini", metadata={
        "help": "model name (see python -m minilg list)"})
    model_kwargs: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "JSON object of create_model overrides, e.g. '{\"depths\": [1, 1, 1, 1]}'"})
    data: str = field(default="synthetic", metadata={
        "help": "dataset name for minilg.data.load_subset (default: the embedded synthetic set)"})
    root: str | None = field(default=None, metadata={
        "help": "folder with / for downloaded data (e.g. Imagenette)"})
    resolution: int = field(default=32, metadata={"help": "input side in pixels"})
    # optimisation
    epochs: int = field(default=10, metadata={"help": "epochs to train"})
    batch_size: int = field(default=128, metadata={
        "help": "global batch size (split over DDP ranks)"})
    lr: float = field(default=1e-3, metadata={
        "help": "peak learning rate, reached after the warm-up"})
    min_lr: float = field(default=1e-5, metadata={"help": "end of the cosine decay"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_epochs: float = field(default=1.0, metadata={"help": "linear warm-up, in epochs"})
    clip_grad: float = field(default=1.0, metadata={
        "help": "max global gradient norm; 0 disables clipping"})
    # regularisation and augmentation
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing"})
    mixup: float = field(default=0.0, metadata={"help": "mixup alpha; 0 disables"})
    cutmix: float = field(default=0.0, metadata={"help": "CutMix alpha; 0 disables"})
    # "auto": no crop for "synthetic" (a crop can cut a stroke out of the picture, changing the
    # label), (0.35, 1) otherwise
    crop_scale: tuple[float, float] | str | None = field(default="auto", metadata={
        "help": "random-resized-crop area range 'LO,HI', 'none', or 'auto' (none for "
                "synthetic)"})
    hflip: bool = field(default=True, metadata={"help": "random horizontal flips"})
    drop_path: float = field(default=0.1, metadata={"help": "stochastic depth rate"})
    # machinery
    seed: int = field(default=0, metadata={"help": "seed of the weights, data order and "
                                           "augmentation"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N or mps"})
    amp: str = field(default="auto", metadata={
        "help": "mixed precision: auto (bf16/fp16 on CUDA, off on CPU), bf16, fp16, off"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    threads: int = field(default=0, metadata={
        "help": "torch CPU threads (0: all cores, split between local ranks)"})
    eval_every: int = field(default=1, metadata={
        "help": "evaluate every N epochs (and always after the last)"})
    eval_batch_size: int = field(default=256, metadata={"help": "batch size of evaluation"})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "train on a seeded subset of this many images"})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "evaluate on a seeded subset of this many images"})
    out: str | None = field(default="runs/default", metadata={
        "help": "run folder for checkpoints and metrics ('none' writes nothing)"})
    resume: bool = field(default=False, metadata={
        "help": "continue the run in --out from its last checkpoint"})
    stop_after: int | None = field(default=None, metadata={
        "help": "stop after this many epochs (as if the job were killed)"})
    verbose: bool = field(default=True, metadata={"help": "print one line per epoch"})

    def __post_init__(self) -> None:
        for name in ("root", "out"):  # accept paths, store strings (the config is JSON)
            if isinstance(getattr(self, name), Path):
                setattr(self, name, str(getattr(self, name)))
        if isinstance(self.crop_scale, list):  # lists come back from config.json
            self.crop_scale = tuple(self.crop_scale)
        _check_integers(self)
        _check_floats(self)
        _check_choices(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict (e.g. ``config.json``), ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ----------------------------------------------------------------------------- field checks
def _int(cfg: TrainConfig, name: str, minimum: int, *, optional: bool = False) -> None:
    """ConfigError unless the field is an integer (not a bool) >= ``minimum`` (or None)."""
    v = getattr(cfg, name)
    if optional and v is None:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum}", v)


def _float(
    cfg: TrainConfig,
    name: str,
    lo: float,
    hi: float = math.inf,
    *,
    open_lo: bool = False,
    open_hi: bool = False,
) -> None:
    """ConfigError unless the field is a finite number in [lo, hi] (ends open as asked)."""
    v = getattr(cfg, name)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)
    if ok:
        return
    if math.isfinite(hi):
        span = f"in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
    else:
        span = f"{'>' if open_lo else '>='} {lo:g}"
    raise ConfigError(name, f"must be a finite number {span}", v)


def _check_integers(cfg: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
        _int(cfg, name, 1)
    _int(cfg, "threads", 0)
    _int(cfg, "resolution", 8)
    for name in ("max_train_samples", "max_eval_samples", "stop_after"):
        _int(cfg, name, 1, optional=True)
    _int(cfg, "seed", 0)
    if cfg.seed >= 2**63:
        raise ConfigError("seed", "must be < 2**63", cfg.seed)
    if cfg.data in ("synthetic", "default", "match") and cfg.resolution < 16:
        raise ConfigError("resolution", "must be >= 16 for the synthetic data", cfg.resolution)


def _check_floats(cfg: TrainConfig) -> None:
    _float(cfg, "lr", 0.0, open_lo=True)
    _float(cfg, "min_lr", 0.0, float(cfg.lr) if isinstance(cfg.lr, (int, float)) else math.inf)
    for name in ("weight_decay", "clip_grad", "mixup", "cutmix"):
        _float(cfg, name, 0.0)
    _float(cfg, "warmup_epochs", 0.0, float(cfg.epochs))
    _float(cfg, "label_smoothing", 0.0, 1.0, open_hi=True)
    _float(cfg, "drop_path", 0.0, 1.0, open_hi=True)
    crop = cfg.crop_scale
    if isinstance(crop, tuple):
        ok = len(crop) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in crop
        )
        if not ok or not 0 < crop[0] <= crop[1] <= 1:
            raise ConfigError("crop_scale", "must be (lo, hi) with 0 < lo <= hi <= 1", crop)
        cfg.crop_scale = (float(crop[0]), float(crop[1]))
    elif crop not in (None, "auto"):
        raise ConfigError("crop_scale", "must be (lo, hi), None or 'auto'", crop)


def _check_choices(cfg: TrainConfig) -> None:
    from minilg.data import canonical_subset

    for name in ("model", "data", "device", "amp"):
        if not isinstance(getattr(cfg, name), str) or not getattr(cfg, name):
            raise ConfigError(name, "must be a non-empty string", getattr(cfg, name))
    for name in ("root", "out"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise ConfigError(name, "must be a folder path (or None)", v)
    for name in ("hflip", "compile", "resume", "verbose"):
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(name, "must be True or False", getattr(cfg, name))
    if cfg.amp not in AMP_CHOICES:
        raise ConfigError("amp", "must be auto, bf16, fp16 or off", cfg.amp)
    try:
        canonical_subset(cfg.data)
    except ValueError as e:
        raise ConfigError("data", str(e)) from None
    _parse_device(cfg.device)
    _check_model_kwargs(cfg.model_kwargs)


def _check_model_kwargs(kwargs: Any) -> None:
    if not isinstance(kwargs, dict):
        raise ConfigError(
            "model_kwargs",
            "must be a JSON object of create_model overrides, e.g. '{\"depths\": [1, 1, 1, 1]}'",
            kwargs,
        )
    for key in kwargs:
        if key in _KWARGS_OWNED:
            raise ConfigError("model_kwargs", f"must not set {key!r}: {_KWARGS_OWNED[key]}")
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError("model_kwargs", f"must hold plain JSON values ({e})") from None


def _parse_device(text: str) -> torch.device | None:
    """``None`` for ``"auto"``; ConfigError for anything that is not cpu / cuda[:N] / mps."""
    if text == "auto":
        return None
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError("device", "must be auto, cpu, cuda, cuda:N or mps", text)
    return device


# ----------------------------------------------------------------------------- machine and model
def check_device(text: str) -> None:
    """ConfigError unless the device ``text`` names exists on this machine."""
    device = _parse_device(text)
    if device is None or device.type == "cpu":
        return
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device", "mps is not available here: use cpu or auto", text)
        return
    if not torch.cuda.is_available():
        build = "has no CUDA" if torch.version.cuda is None else "sees no GPU"
        raise ConfigError(
            "device", f"asks for CUDA, but this PyTorch ({torch.__version__}) {build}: use cpu "
            "or auto", text,
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError("device", f"names GPU {device.index}, but only {count} are visible", text)


def check_model(cfg: TrainConfig) -> None:
    """ConfigError unless ``cfg.model`` is registered and accepts ``cfg.model_kwargs``.

    The model is built on the meta device (no memory, no compute) with the options the trainer
    will pass, so a typo in a name or an override fails here, before any data is loaded.
    """
    if cfg.model not in list_models():
        try:
            create_model(cfg.model)  # the registry's message lists close matches
        except ValueError as e:
            raise ConfigError("model", str(e)) from None
        raise ConfigError("model", "is not a registered model", cfg.model)
    try:
        with torch.device("meta"):
            create_model(
                cfg.model, img_size=cfg.resolution, drop_path_rate=cfg.drop_path,
                **cfg.model_kwargs,
            )
    except (ValueError, TypeError) as e:
        raise ConfigError("model_kwargs", f"{cfg.model} rejects {cfg.model_kwargs}: {e}") from None


def resolve_crop_scale(cfg: TrainConfig) -> tuple[float, float] | None:
    """The crop range :class:`BatchAugment` gets: ``"auto"`` depends on the dataset."""
    if cfg.crop_scale == "auto":
        return None if cfg.data in ("synthetic", "default", "match") else (0.35, 1.0)
    assert not isinstance(cfg.crop_scale, str)
    return cfg.crop_scale
