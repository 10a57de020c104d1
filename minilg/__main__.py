"""``python -m minilg <verb> ...``: the command line lives in :mod:`minilg.cli`."""

from __future__ import annotations

import sys

from minilg.cli import VERBS, main

COMMANDS = {name: text for name, (_, text) in VERBS.items()}  # kept for older imports

__all__ = ["COMMANDS", "main"]

if __name__ == "__main__":
    sys.exit(main())
