"""Official checkpoints -> minilg models, with strict key accounting.

    >>> model = minilg.convert.from_official("swin", state_dict, embed_dim=96, depths=[2, 2, 6, 2])

``config`` holds the official model class's own constructor arguments, flat (``embed_dim``,
``depths``, ``num_heads``, ``window_size``, ...). Missing ones take the official constructor's
defaults, and the conversion report says which. Every official key is either used or dropped
with a reason (a buffer minilg rebuilds, a parameter the official forward never uses); any other
key, a shape that disagrees with the config, or an official option minilg does not support is a
:class:`ConversionError` naming it.

One module per family registers its converter with :func:`register_converter` (and, if the
official repository configures its models with nested upper-case YAML files, a mapping from
those files to the flat constructor arguments with :func:`register_yaml_mapping`); this module
dispatches and keeps the accounting (:func:`strict_load`); :func:`converted_metadata` is what
converted weights files carry so that ``python -m minilg eval`` and :func:`minilg.train.load_model`
rebuild them (the registered minilg model and its overrides). Reading and writing files is the
``convert`` verb's (:mod:`minilg.convert_cli`).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from minilg.errors import MinilgError


class ConversionError(MinilgError, ValueError):
    """An official state dict or config that cannot be converted (the message names why)."""


@dataclass
class Conversion:
    """A converted model and the accounting of every official key.

    Attributes:
        model: the minilg model, weights loaded, in eval mode.
        used: official key -> minilg key it was loaded into.
        dropped: official key -> why it was not needed.
        defaults: constructor arguments the config left out, with the official default used.
        name, overrides: the registered minilg model and the ``create_model`` overrides that
            rebuild ``model`` (``minilg.create_model(name, **overrides)``); written into the
            metadata of converted files so they load without the converter.
        notes: official arguments accepted without effect on the weights or the outputs.
    """

    model: nn.Module
    used: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the command line: counts, defaults taken, drop reasons."""
        reasons = sorted(set(self.dropped.values()))
        lines = [f"{len(self.used)} keys loaded, {len(self.dropped)} dropped"]
        lines += [f"  dropped ({sum(r == v for v in self.dropped.values())}): {r}" for r in reasons]
        if self.defaults:
            lines.append(f"  official defaults used: {self.defaults}")
        lines += [f"  note: {note}" for note in self.notes]
        if self.name:
            lines.append(f"  minilg model: {self.name} with {self.overrides}")
        return "\n".join(lines)


Converter = Callable[[Mapping[str, Tensor], dict[str, Any]], Conversion]
YamlMapping = Callable[[Mapping[str, Any]], dict[str, Any]]
F = TypeVar("F", bound=Converter)
Y = TypeVar("Y", bound=YamlMapping)
_CONVERTERS: dict[str, Converter] = {}
_YAML_MAPPINGS: dict[str, YamlMapping] = {}


def register_converter(family: str) -> Callable[[F], F]:
    """Decorator: ``fn(state_dict, config) -> Conversion`` converts ``family``'s checkpoints."""

    def wrap(fn: F) -> F:
        _CONVERTERS[family] = fn
        return fn

    return wrap


def register_yaml_mapping(family: str) -> Callable[[Y], Y]:
    """Decorator: ``fn(nested_yaml) -> flat constructor kwargs`` for ``family``'s YAML files."""

    def wrap(fn: Y) -> Y:
        _YAML_MAPPINGS[family] = fn
        return fn

    return wrap


def families() -> list[str]:
    """Families with a converter."""
    _load_converters()
    return sorted(_CONVERTERS)


WRAPPERS = ("model", "state_dict", "model_ema", "module")


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str]]:
    """The state dict inside a checkpoint, and what was unwrapped to reach it.

    Unwraps, repeatedly, a mapping whose tensors sit under one of :data:`WRAPPERS` (``"model"``
    in official checkpoints, ``"state_dict"`` in Lightning-style ones, ...; other entries such
    as ``"epoch"`` or ``"optimizer"`` are left behind), then the ``module.`` prefix that
    ``DistributedDataParallel`` puts on every key. A mapping that already holds the tensors is
    returned as it is, with no steps.
    """
    steps: list[str] = []
    state: Mapping[str, Any] = checkpoint
    while True:
        inner = next(((key, state[key]) for key in WRAPPERS
                      if isinstance(state.get(key), Mapping)), None)
        if inner is None:
            break
        steps.append(f"the checkpoint's {inner[0]!r} entry")
        state = inner[1]
    prefix = "module."
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        steps.append(f"the {prefix!r} prefix (DistributedDataParallel) of {len(state)} keys")
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state, steps


def unwrap_checkpoint(checkpoint: Mapping[str, Any]) -> Mapping[str, Tensor]:
    """The state dict of a checkpoint (:func:`unwrap_state_dict` without the steps)."""
    return unwrap_state_dict(checkpoint)[0]


def convert_official(family: str, state_dict: Mapping[str, Tensor], **config: Any) -> Conversion:
    """Convert and account: see the module docstring. Unwraps checkpoints
    (:func:`unwrap_state_dict`) and says so in the conversion's notes."""
    _load_converters()
    if family not in _CONVERTERS:
        raise ConversionError(f"unknown family {family!r}; available: {', '.join(families())}")
    state, steps = unwrap_state_dict(state_dict)
    conversion = _CONVERTERS[family](state, dict(config))
    if steps:
        conversion.notes.insert(0, "unwrapped " + "; ".join(steps))
    return conversion


def config_overrides(config: Any) -> dict[str, Any]:
    """A config dataclass as ``create_model`` overrides that survive JSON: tuples as lists."""

    def plain(value: Any) -> Any:
        return [plain(v) for v in value] if isinstance(value, (tuple, list)) else value

    return {name: plain(value) for name, value in vars(config).items()}


def from_official(family: str, state_dict: Mapping[str, Tensor], **config: Any) -> nn.Module:
    """The equivalent minilg model with the official weights loaded (eval mode)."""
    return convert_official(family, state_dict, **config).model


# ----------------------------------------------------------------------------- key accounting
@dataclass(frozen=True)
class Drop:
    """What a rename function returns for an official key that is deliberately not loaded."""

    reason: str


Rename = Callable[[str], "str | Drop | None"]
Adapt = Callable[[str, Tensor, Tensor], Tensor]


def strict_load(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    rename: Rename,
    adapt: Adapt | None = None,
) -> Conversion:
    """Load ``state_dict`` into ``model`` through ``rename``, accounting for every key.

    Args:
        model: the freshly built minilg model.
        state_dict: official key -> tensor.
        rename: official key -> minilg key, :class:`Drop` (with its reason), or ``None`` for a
            key the family does not know (an error naming it).
        adapt: optional ``(official_key, tensor, minilg_tensor) -> tensor`` applied before the
            shape check (a table embedded into a larger one, say).

    Raises:
        ConversionError: an unknown official key, two official keys for one minilg key, a shape
            mismatch (naming both keys and shapes), or a minilg key no official key fills.
    """
    target = model.state_dict()
    conversion = Conversion(model=model)
    loaded: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        new = rename(key)
        if new is None:
            raise ConversionError(f"unknown key {key!r} (shape {tuple(tensor.shape)})")
        if isinstance(new, Drop):
            conversion.dropped[key] = new.reason
            continue
        if new not in target or new in loaded:
            problem = "has no minilg counterpart" if new not in target else "is loaded twice"
            raise ConversionError(f"key {key!r} -> {new!r} {problem}")
        value = adapt(key, tensor, target[new]) if adapt is not None else tensor
        if tuple(value.shape) != tuple(target[new].shape):
            raise ConversionError(
                f"shape mismatch: {key!r} {tuple(tensor.shape)} cannot load into minilg "
                f"{new!r} {tuple(target[new].shape)}"
            )
        loaded[new] = value.to(target[new].dtype)
        conversion.used[key] = new
    missing = sorted(set(target) - set(loaded))
    if missing:
        raise ConversionError(
            f"the official state dict fills no value for minilg key(s) {missing[:3]}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        )
    with torch.no_grad():
        model.load_state_dict(loaded, strict=True)
    model.eval()
    return conversion


# ----------------------------------------------------------------------------- files
def read_official_yaml(path: str | Path) -> dict[str, Any]:
    """An official nested upper-case YAML config, with its ``BASE`` files merged underneath.

    ``BASE: [file, ...]`` (paths relative to the file) are read first and the file's own values
    override theirs, key by key, as the official ``config.py`` does. Needs PyYAML.
    """
    try:
        yaml = importlib.import_module("yaml")
    except ImportError as e:  # pragma: no cover - PyYAML ships with datasets
        raise ConversionError("reading YAML configs needs PyYAML (pip install pyyaml)") from e
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConversionError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a YAML mapping at the top level")
    merged: dict[str, Any] = {}
    for base in data.pop("BASE", None) or []:
        if base:
            _merge(merged, read_official_yaml(path.parent / base))
    _merge(merged, data)
    return merged


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def config_from_yaml(family: str, path: str | Path) -> dict[str, Any]:
    """Flat constructor kwargs from an official YAML file, through the family's mapping."""
    _load_converters()
    if family not in _YAML_MAPPINGS:
        have = ", ".join(sorted(_YAML_MAPPINGS)) or "none"
        raise ConversionError(f"no YAML mapping for family {family!r} (families with one: {have})")
    return _YAML_MAPPINGS[family](read_official_yaml(path))


def converted_metadata(conversion: Conversion, family: str) -> dict[str, str]:
    """Safetensors metadata that rebuilds the model: ``model``, ``num_classes``, ``img_size``,
    ``model_kwargs`` (the format of :func:`minilg.train.load_model`), plus provenance."""
    if not conversion.name:
        raise ConversionError("this conversion does not name a registered minilg model")
    kwargs = dict(conversion.overrides)
    num_classes, img_size = kwargs.pop("num_classes"), kwargs.pop("img_size")
    return {
        "model": conversion.name, "num_classes": str(num_classes), "img_size": str(img_size),
        "model_kwargs": json.dumps(kwargs), "converted_from": f"official {family} checkpoint",
        "official_defaults": json.dumps(conversion.defaults),
    }


def _load_converters() -> None:
    """Import the per-family modules (each registers itself)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


__all__ = [
    "WRAPPERS", "Conversion", "ConversionError", "Converter", "Drop", "config_from_yaml",
    "config_overrides", "convert_official", "converted_metadata", "families", "from_official",
    "read_official_yaml", "register_converter", "register_yaml_mapping", "strict_load",
    "unwrap_checkpoint", "unwrap_state_dict",
]
