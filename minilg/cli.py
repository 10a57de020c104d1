"""The command line: ``python -m minilg <verb> [options]`` (list, info, train, eval, compare, ...).

Every verb is a module below this one with two functions::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...          # the process exit code

This module builds each verb's parser (:func:`verb_parser`), lets the module add its arguments,
parses, and calls ``run``. To add a verb, write such a module and add one line to :data:`VERBS`.

Errors are handled once, in :func:`run_verb`: a verb raises a :class:`~minilg.errors.MinilgError`
(or ``ValueError``, ``FileNotFoundError``, :class:`~minilg.errors.DatasetUnavailableError`)
whose message names the argument and what to do, and the user sees it as one ``error: ...`` line
on stderr with exit code 2 (a MinilgError may carry another code: 3 = training diverged). Bad
usage (unknown flags, unparsable values) goes the same way. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol, cast

from minilg.errors import ConfigError, DatasetUnavailableError, MinilgError

__all__ = ["VERBS", "UsageError", "Verb", "VerbModule", "main", "run_verb", "verb_parser"]


class UsageError(MinilgError):
    """The command line itself is wrong: an unknown flag, a value that does not parse."""


class VerbModule(Protocol):
    """What a verb's module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


@dataclass(frozen=True)
class Verb:
    """One verb: the module that implements it (imported on use) and its help texts."""

    module: str
    summary: str  # one line in ``python -m minilg --help``
    description: str  # the top of ``python -m minilg VERB --help``

    def load(self) -> VerbModule:
        return cast(VerbModule, importlib.import_module(self.module))


VERBS: dict[str, Verb] = {
    "list": Verb("minilg.listing",
                 "names of the registered models (optionally filtered: list '*mini*')",
                 "Names of the registered models."),
    "info": Verb("minilg.info",
                 "params and MACs of every registered model beside the papers' figures",
                 "Parameters and exact MACs (multiply-accumulates; the papers' 'FLOPs') of "
                 "every registered model, beside the published figures."),
    "train": Verb("minilg.train",
                  "train one model on an ImageNet subset or the embedded default",
                  "Train a minilg model (also under torchrun for DDP). Exit codes: 0 done, 2 "
                  "bad input or unusable data/folder, 3 training diverged."),
    "eval": Verb("minilg.training.evaluation", "evaluate a checkpoint",
                 "Evaluate a trained checkpoint on a validation split."),
    "compare": Verb("minilg.compare",
                    "train several models under one budget and tabulate params, MACs, speed, "
                    "top-1",
                    "Train several models under an identical budget and compare them."),
    "bench": Verb("minilg.bench",
                  "cost and speed of every mixer beside a straightforward version",
                  "Cost and speed of every mixer beside a straightforward version."),
    "convert": Verb("minilg.convert_cli",
                    "convert an official checkpoint (swin, focal, hat_net) into minilg weights",
                    "Convert an official checkpoint into minilg weights (strict key "
                    "accounting)."),
    "coursework": Verb("minilg.coursework",
                       "write student versions of the notebooks (solutions removed)",
                       "Write student versions of the notebooks (solutions removed, "
                       "self-checks kept, outputs cleared), or --annotate the instructor "
                       "notebooks in place with nbgrader's cell metadata."),
}

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are :class:`UsageError` (one line, exit 2) instead of a
    usage block and ``SystemExit``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def verb_parser(verb: str, description: str) -> argparse.ArgumentParser:
    """The parser every verb gets: usage errors become one ``error:`` line and exit code 2."""
    return _Parser(prog=f"python -m minilg {verb}", description=description)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def run_verb(fn: Callable[[], int]) -> int:
    """Run one verb; expected failures become one ``error:`` line on stderr and an exit code."""
    try:
        return fn()
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


def _run(name: str, argv: list[str]) -> int:
    """Build ``name``'s parser, let its module add the arguments, parse, run."""
    verb = VERBS[name]
    module = verb.load()
    parser = verb_parser(name, verb.description)
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    return module.run(args)


def main(argv: list[str] | None = None) -> int:
    """``python -m minilg <verb> ...``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        usage = "\n".join(f"  {name:<10} {verb.summary}" for name, verb in VERBS.items())
        print(f"usage: python -m minilg <command> [options]\n\ncommands:\n{usage}")
        return 0
    if args[0] not in VERBS:
        close = difflib.get_close_matches(args[0], list(VERBS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        print(f"error: unknown command {args[0]!r}; {hint}commands: {', '.join(VERBS)}",
              file=sys.stderr)
        return 2
    return run_verb(lambda: _run(args[0], args[1:]))
