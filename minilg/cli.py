"""The command line: ``python -m minilg <verb> [options]`` (list, info, train, eval, compare, ...).

How to add a verb (e.g. ``bench``):

1. write ``def cmd_bench(argv: list[str]) -> int`` in the style of the others: build its parser
   with ``verb_parser("bench", "one sentence")``, parse, call the library, print, ``return 0``;
2. add ``"bench": (cmd_bench, "one-line help")`` to :data:`VERBS`.

Errors are handled once, in :func:`run_verb`: raise ``ValueError``, ``FileNotFoundError``,
:class:`~minilg.data.DatasetUnavailableError` or a :class:`~minilg.errors.MinilgError`
whose message names the argument and what to do, and the user sees it as one ``error: ...`` line
on stderr with exit code 2 (a MinilgError may carry another code: 3 = training diverged). Bad
usage (unknown flags, unparsable values) goes the same way. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import errno
import json
import os
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from minilg.errors import CheckpointError, ConfigError, DatasetUnavailableError, MinilgError
from minilg.training.config import TrainConfig

__all__ = ["VERBS", "UsageError", "cmd_bench", "cmd_compare", "cmd_convert", "cmd_coursework",
           "cmd_eval", "cmd_info", "cmd_list", "cmd_train", "main", "run_verb"]


class UsageError(MinilgError):
    """The command line itself is wrong: an unknown flag, a value that does not parse."""


# ============================================================================= shared machinery
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def run_verb(fn: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run one verb; expected failures become one ``error:`` line on stderr and an exit code."""
    try:
        return fn(argv)
    except ConfigError as e:
        message, code = e.with_flag(), e.exit_code
    except MinilgError as e:
        message, code = str(e), e.exit_code
    except DatasetUnavailableError as e:
        message, code = e.one_line(), 2
    except (ValueError, FileNotFoundError) as e:
        message, code = str(e), 2
    except OSError as e:
        if e.errno not in _DISK_ERRNOS:
            raise
        where = f" ({e.filename})" if e.filename else ""
        message, code = f"{e.strerror}{where}: free space or choose a writable folder", 2
    except KeyboardInterrupt:
        message, code = "interrupted; a run keeps its last complete checkpoint (--resume)", 130
    print(f"error: {_one_line(message)}", file=sys.stderr, flush=True)
    return code


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are :class:`UsageError` (one line, exit 2) instead of a
    usage block and ``SystemExit``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def verb_parser(
    verb: str, description: str, *, suppress: bool = False
) -> argparse.ArgumentParser:
    """The parser every verb uses: usage errors become one ``error:`` line and exit code 2."""
    return _Parser(
        prog=f"python -m minilg {verb}",
        description=description,
        argument_default=argparse.SUPPRESS if suppress else None,
    )


def _at_least(name: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum}", value)


# ============================================================================= TrainConfig flags
_HELP = {
    "model": "model name (see python -m minilg list)",
    "model_kwargs": "JSON object of create_model overrides, e.g. '{\"depths\": [1, 1, 1, 1]}'",
    "data": "dataset name for minilg.data.load_subset (default: the embedded synthetic set)",
    "root": "folder with / for downloaded data (e.g. Imagenette)",
    "batch_size": "global batch size (split over DDP ranks)",
    "crop_scale": "random-resized-crop area range 'LO,HI', 'none', or 'auto' (none for synthetic)",
    "amp": "mixed precision: auto (bf16/fp16 on CUDA, off on CPU), bf16, fp16, off",
    "threads": "torch CPU threads (0: all cores, split between local ranks)",
    "out": "run folder for checkpoints and metrics ('none' writes nothing)",
    "resume": "continue the run in --out from its last checkpoint",
    "stop_after": "stop after this many epochs (as if the job were killed)",
    "max_train_samples": "train on a seeded subset of this many images",
    "max_eval_samples": "evaluate on a seeded subset of this many images",
}


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


def _add_config_args(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One ``--flag`` per :class:`TrainConfig` field, typed from the annotations.

    Defaults are suppressed, so the parsed namespace holds only what the user typed; it is
    merged over the defaults (or over a resumed run's saved config) by :func:`_config_from_args`,
    where TrainConfig range-checks every value.
    """
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else "{}"
        help_ = _HELP.get(f.name, "") + f" (default: {default})"
        tp = hints[f.name]
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
            continue
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if isinstance(tp, types.UnionType):  # X | None
            tp = args[0]
        if f.name == "crop_scale":
            parser.add_argument(flag, type=_crop, metavar="LO,HI|none|auto", help=help_)
        elif typing.get_origin(tp) is dict:
            parser.add_argument(flag, type=_json_object, metavar="JSON", help=help_)
        elif f.name == "amp":
            parser.add_argument(flag, choices=["auto", "bf16", "fp16", "off"], help=help_)
        else:
            parser.add_argument(flag, type=tp, help=help_)


def _config_from_args(ns: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (or the defaults) with the flags the user gave; ConfigError on a bad value."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(ns).items() if k in names}
    if isinstance(given.get("out"), str) and given["out"].lower() == "none":
        given["out"] = None
    return dataclasses.replace(base or TrainConfig(), **given)


def _resumed_base(ns: argparse.Namespace) -> TrainConfig | None:
    """With --resume, the saved config of the run in --out (it then runs to its end)."""
    out = getattr(ns, "out", TrainConfig.out)
    if not getattr(ns, "resume", False) or not out or out.lower() == "none":
        return None
    path = Path(out).expanduser() / "config.json"
    if not path.is_file():
        return None  # train() says there is nothing to resume
    try:
        saved = TrainConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is not a readable minilg config ({e})") from None
    return dataclasses.replace(saved, stop_after=None)


# ============================================================================= the verbs
def cmd_list(argv: list[str]) -> int:
    """``python -m minilg list [PATTERN]``: names of the registered models."""
    from minilg.registry import list_models

    parser = verb_parser("list", "Names of the registered models.")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter on names")
    args = parser.parse_args(argv)
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no registered model matches {args.pattern!r}; try '*mini*' or '*'")
    print("\n".join(names))
    return 0


def cmd_info(argv: list[str]) -> int:
    """``python -m minilg info [PATTERN]``: params and MACs beside the papers' figures."""
    from minilg.info import cli_info

    return cli_info(argv, verb_parser(
        "info", "Parameters and exact MACs of every registered model, beside the published "
        "figures."))


def cmd_train(argv: list[str]) -> int:
    """``python -m minilg train [TrainConfig flags]``."""
    from minilg.train import train

    parser = verb_parser("train", "Train a minilg model (also under torchrun for DDP). Exit codes: "
                         "0 done, 2 bad input or unusable data/folder, 3 training diverged.",
                         suppress=True)
    _add_config_args(parser)
    ns = parser.parse_args(argv)
    cfg = _config_from_args(ns, _resumed_base(ns))
    result = train(cfg)
    if cfg.out and int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {cfg.out}/ (checkpoints/, metrics.csv, metrics.json, curves.png)")
    return 0 if result.history else 1


def cmd_eval(argv: list[str]) -> int:
    """``python -m minilg eval --checkpoint RUN_DIR``: top-1/top-5 on the validation split."""
    from minilg.training.evaluation import evaluate_checkpoint

    parser = verb_parser("eval", "Evaluate a trained checkpoint on a validation split.")
    parser.add_argument("--checkpoint", required=True,
                        help="run folder, checkpoint folder or .safetensors file")
    parser.add_argument("--data", help="dataset (default: the one it was trained on)")
    parser.add_argument("--root", help="data folder (default: the training run's)")
    parser.add_argument("--resolution", type=int, help="input side (default: the training one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-eval-samples", type=int)
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    args = parser.parse_args(argv)
    _at_least("batch_size", args.batch_size, 1)
    _at_least("max_eval_samples", args.max_eval_samples, 1)
    _at_least("resolution", args.resolution, 8)
    m = evaluate_checkpoint(
        args.checkpoint, data=args.data, root=args.root, resolution=args.resolution,
        device=args.device, batch_size=args.batch_size, max_samples=args.max_eval_samples,
        amp=args.amp,
    )
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), **m}))
    else:
        print(
            f"{args.checkpoint}: {m['data']} val ({int(m['n'])} images @ {m['resolution']}px) | "
            f"loss {m['loss']:.4f} | top-1 {m['top1']:.2f}% | top-5 {m['top5']:.2f}%"
        )
    return 0


def cmd_compare(argv: list[str]) -> int:
    """``python -m minilg compare [--models a,b,c] [TrainConfig flags]``."""
    import torch

    from minilg.training.compare import COMPARE_DEFAULTS, DEFAULT_MODELS, compare, markdown_table
    from minilg.training.distributed import resolve_device

    parser = verb_parser("compare", "Train several models under an identical budget and compare "
                         "them.", suppress=True)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated model names (default: {','.join(DEFAULT_MODELS)})")
    _add_config_args(parser, skip=("model", "stop_after"))
    ns = parser.parse_args(argv)
    base = dataclasses.replace(TrainConfig(out="runs/compare"), **COMPARE_DEFAULTS)
    cfg = _config_from_args(ns, base)
    models = [m.strip() for m in ns.models.split(",") if m.strip()]
    t0 = time.perf_counter()
    rows = compare(models, cfg, cfg.out)
    print()
    print(markdown_table(rows))
    print(f"\nMACs = multiply-accumulates per image at {cfg.resolution}px; img/s = measured "
          f"training throughput ({resolve_device(cfg.device)}, {torch.get_num_threads()} threads). "
          f"Total {(time.perf_counter() - t0) / 60:.1f} min.")
    if cfg.out:
        print(f"wrote {cfg.out}/compare.{{csv,md,json,png}}")
    return 0


def cmd_convert(argv: list[str]) -> int:
    """``python -m minilg convert --family F --config cfg.json ckpt.pth out.safetensors``."""
    from minilg.convert.cli import cli_convert

    return cli_convert(argv)


def cmd_bench(argv: list[str]) -> int:
    """``python -m minilg bench [--sizes ...] [--threads N] [--device cpu|cuda] ...``."""
    from minilg.bench import cli_bench

    return cli_bench(argv)


def cmd_coursework(argv: list[str]) -> int:
    """``python -m minilg coursework [--out DIR] [--annotate] [NOTEBOOK ...]``."""
    from minilg.coursework import cli_coursework

    return cli_coursework(argv)


VERBS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "list": (cmd_list, "names of the registered models (optionally filtered: list '*mini*')"),
    "info": (cmd_info, "params and MACs of every registered model beside the papers' figures"),
    "train": (cmd_train, "train one model on an ImageNet subset or the embedded default"),
    "eval": (cmd_eval, "evaluate a checkpoint"),
    "compare": (cmd_compare, "train several models under one budget and tabulate params, MACs, "
                "speed, top-1"),
    "bench": (cmd_bench, "cost and speed of every mixer beside a straightforward version"),
    "convert": (cmd_convert, "convert an official checkpoint (swin, focal, hat_net) into minilg "
                "weights"),
    "coursework": (cmd_coursework, "write student versions of the notebooks (solutions removed)"),
}


def main(argv: list[str] | None = None) -> int:
    """``python -m minilg <verb> ...``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        usage = "\n".join(f"  {name:<8} {text}" for name, (_, text) in VERBS.items())
        print(f"usage: python -m minilg <command> [options]\n\ncommands:\n{usage}")
        return 0
    if args[0] not in VERBS:
        close = difflib.get_close_matches(args[0], list(VERBS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        print(f"error: unknown command {args[0]!r}; {hint}commands: {', '.join(VERBS)}",
              file=sys.stderr)
        return 2
    return run_verb(VERBS[args[0]][0], args[1:])
