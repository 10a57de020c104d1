"""``python -m minilg list [PATTERN]``: the names of the registered models."""

from __future__ import annotations

import argparse

from minilg.errors import MinilgError
from minilg.registry import list_models

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """An optional shell-style pattern."""
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter on names")


def run(args: argparse.Namespace) -> int:
    """Print one registered name per line (a pattern matching nothing is an error)."""
    names = list_models(args.pattern)
    if not names:
        raise MinilgError(f"no registered model matches {args.pattern!r}; try '*mini*' or '*'")
    print("\n".join(names))
    return 0
