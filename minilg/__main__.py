"""``python -m minilg <verb> ...`` (and ``torchrun -m minilg train ...``): :mod:`minilg.cli`."""

from __future__ import annotations

import sys

from minilg.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
