""":class:`TrainConfig` on the command line: one ``--flag`` per field, help from the field.

``train`` and ``compare`` share these flags. Defaults are suppressed, so the parsed namespace
holds only what the user typed; :func:`config_from_args` merges it over the defaults (or over a
resumed run's saved config), and :class:`TrainConfig` range-checks every value.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minilg.errors import CheckpointError
from minilg.training.checkpoint import CONFIG_FILE
from minilg.training.config import AMP_CHOICES, TrainConfig

__all__ = ["add_config_args", "config_from_args", "resumed_base"]


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object like '{{\"depths\": [1, 1, 1, 1]}}', got a "
            f"{type(value).__name__}"
        )
    return value


def _crop(text: str) -> tuple[float, float] | str | None:
    if text.lower() in ("none", "auto"):
        return None if text.lower() == "none" else "auto"
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LO,HI (e.g. 0.35,1), none or auto, got {text!r}"
                                         ) from None
    return (lo, hi)


def add_config_args(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One ``--flag`` per :class:`TrainConfig` field (except ``skip``), typed from the
    annotations, its help text from the field's ``metadata["help"]``."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else "{}"
        kw: dict[str, Any] = {
            "default": argparse.SUPPRESS, "help": f"{f.metadata['help']} (default: {default})",
        }
        tp = hints[f.name]
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if isinstance(tp, types.UnionType):  # X | None
            tp = args[0]
        if f.name == "crop_scale":
            parser.add_argument(flag, type=_crop, metavar="LO,HI|none|auto", **kw)
        elif typing.get_origin(tp) is dict:
            parser.add_argument(flag, type=_json_object, metavar="JSON", **kw)
        elif f.name == "amp":
            parser.add_argument(flag, choices=AMP_CHOICES, **kw)
        else:
            parser.add_argument(flag, type=tp, **kw)


def config_from_args(ns: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (or the defaults) with the flags the user gave; ConfigError on a bad value."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(ns).items() if k in names}
    if isinstance(given.get("out"), str) and given["out"].lower() == "none":
        given["out"] = None
    return dataclasses.replace(base or TrainConfig(), **given)


def resumed_base(ns: argparse.Namespace) -> TrainConfig | None:
    """With --resume, the saved config of the run in --out (it then runs to its end)."""
    out = getattr(ns, "out", TrainConfig.out)
    if not getattr(ns, "resume", False) or not out or out.lower() == "none":
        return None
    path = Path(out).expanduser() / CONFIG_FILE
    if not path.is_file():
        return None  # train() says there is nothing to resume
    try:
        saved = TrainConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is not a readable minilg config ({e})") from None
    return dataclasses.replace(saved, stop_after=None)
