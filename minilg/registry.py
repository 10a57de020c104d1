"""A registry of named model variants, in the style of timm.

    >>> import minilg
    >>> model = minilg.create_model("swin_tiny", num_classes=10, img_size=64)
    >>> "swin_tiny" in minilg.list_models()
    True

Each entry is a function ``(**overrides) -> nn.Module`` plus the ``paper`` key under which its
published figures appear in ``data/reference/paper_tables.csv``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

ModelFn = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFn)
C = TypeVar("C")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: ModelFn
    paper: str | None
    family: str
    mini: bool


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, family: str, paper: str | None = None, mini: bool = False
) -> Callable[[F], F]:
    """Decorator registering ``fn(**overrides) -> nn.Module`` under ``name``."""

    def wrap(fn: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, fn, paper, family, mini)
        return fn

    return wrap


def list_models(pattern: str = "*", *, mini: bool | None = None) -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (``mini`` filters if given)."""
    return sorted(
        name
        for name, entry in _REGISTRY.items()
        if fnmatch.fnmatch(name, pattern) and (mini is None or entry.mini == mini)
    )


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names raise a ValueError listing close matches."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model name {name!r}.{hint} Available models: {', '.join(list_models())}"
        )
    return _REGISTRY[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered variant ``name``; ``overrides`` replace fields of its config
    (``num_classes``, ``img_size``, ``drop_path_rate``, mechanism switches, ...)."""
    return model_entry(name).build(**overrides)


def with_overrides(config: C, overrides: dict[str, Any]) -> C:
    """``dataclasses.replace`` that names the allowed fields when an override is unknown."""
    fields = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"unknown override(s) {unknown} for {type(config).__name__}; "
            f"allowed: {sorted(fields)}"
        )
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var]
