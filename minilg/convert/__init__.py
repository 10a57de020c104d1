"""Official checkpoints -> minilg models, with strict key accounting.

    >>> model = minilg.convert.from_official("swin", state_dict, embed_dim=96, depths=[2, 2, 6, 2])

``config`` holds the official model class's own constructor arguments, flat (``embed_dim``,
``depths``, ``num_heads``, ``window_size``, ...). Missing ones take the official constructor's
defaults, and the conversion report says which. Every official key is either used or dropped
with a reason (a buffer minilg rebuilds, a parameter the official forward never uses); any other
key, a shape that disagrees with the config, or an official option minilg does not support is a
:class:`ConversionError` naming it.

One module per family registers its converter with :func:`register_converter`; this module
only dispatches and keeps the accounting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import Tensor, nn


class ConversionError(ValueError):
    """An official state dict or config that cannot be converted (the message names why)."""


@dataclass
class Conversion:
    """A converted model and the accounting of every official key.

    Attributes:
        model: the minilg model, weights loaded, in eval mode.
        used: official key -> minilg key it was loaded into.
        dropped: official key -> why it was not needed.
        defaults: constructor arguments the config left out, with the official default used.
    """

    model: nn.Module
    used: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for the command line: counts, defaults taken, drop reasons."""
        reasons = sorted(set(self.dropped.values()))
        lines = [f"{len(self.used)} keys loaded, {len(self.dropped)} dropped"]
        lines += [f"  dropped ({sum(r == v for v in self.dropped.values())}): {r}" for r in reasons]
        if self.defaults:
            lines.append(f"  official defaults used: {self.defaults}")
        return "\n".join(lines)


Converter = Callable[[Mapping[str, Tensor], dict[str, Any]], Conversion]
F = TypeVar("F", bound=Converter)
_CONVERTERS: dict[str, Converter] = {}


def register_converter(family: str) -> Callable[[F], F]:
    """Decorator: ``fn(state_dict, config) -> Conversion`` converts ``family``'s checkpoints."""

    def wrap(fn: F) -> F:
        _CONVERTERS[family] = fn
        return fn

    return wrap


def families() -> list[str]:
    """Families with a converter."""
    _load_converters()
    return sorted(_CONVERTERS)


def convert_official(family: str, state_dict: Mapping[str, Tensor], **config: Any) -> Conversion:
    """Convert and account: see the module docstring. Unwraps ``{"model": ...}`` checkpoints."""
    _load_converters()
    if family not in _CONVERTERS:
        raise ConversionError(f"unknown family {family!r}; available: {', '.join(families())}")
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    return _CONVERTERS[family](state_dict, dict(config))


def from_official(family: str, state_dict: Mapping[str, Tensor], **config: Any) -> nn.Module:
    """The equivalent minilg model with the official weights loaded (eval mode)."""
    return convert_official(family, state_dict, **config).model


def _load_converters() -> None:
    """Import the per-family modules (each registers itself)."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


__all__ = [
    "Conversion", "ConversionError", "Converter", "convert_official", "families",
    "from_official", "register_converter",
]
