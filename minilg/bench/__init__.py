"""``python -m minilg bench``: cost and speed of every mixer, beside a straightforward version.

What it measures, for each *case* (one mixer of one model's stage, :mod:`~minilg.bench.cases`)
at each map size:

* **exact MACs** of one image, the mixer's closed form ``macs(H, W)``;
* **forward** and **forward + backward** time, the core and the straightforward version
  interleaved, **achieved GFLOP/s** against a **matmul peak** measured in the same run (before
  and after the cases, the better of the two), the **speed-up** of the core and the **scaling
  exponent** of time in the number of tokens (:mod:`~minilg.bench.timing`);
* **peak memory** of the forward and of forward + backward (:mod:`~minilg.bench.memory`).

The straightforward version is the same mixer inside :func:`minilg.attention.reference_math`:
explicit batched ``q @ k.transpose``, softmax and ``@ v``, masks materialised for every sample,
geometry rebuilt on every call. Its output is compared with the core's on every configuration
(column ``diff``). Configurations whose straightforward scores would exceed ``--memory-limit``
are skipped with a note, never attempted.

With ``--breakdown``, each configuration also profiles the case's whole block: time and exact
MACs per category (:mod:`~minilg.bench.breakdown`, which listens to the attention core's named
scopes). The goals and the figures measured before the core live in ``targets.json``; a run
prints what it measured beside them, never asserting (:mod:`~minilg.bench.targets`). Outputs and
how the figures were made: :mod:`~minilg.bench.report`; the options: :mod:`~minilg.bench.cli`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from minilg.bench.breakdown import (
    CATEGORIES,
    ScopeTracker,
    attribute,
    breakdown,
    category,
    macs_breakdown,
    module_labels,
    time_breakdown,
    tracking,
)
from minilg.bench.cases import (
    FRAME_OVERRIDES,
    Case,
    canonical_models,
    discover_cases,
    mixer_label,
)
from minilg.bench.cli import DESCRIPTION, add_arguments, run
from minilg.bench.memory import cpu_peak_bytes, estimated_bytes, score_bytes
from minilg.bench.settings import PATHS, BenchError, Settings
from minilg.bench.targets import Target, exponent_target, memory_target, speedup_targets
from minilg.bench.timing import Row, exponent, matmul_peak, measure, scaling
from minilg.errors import MinilgError

__all__ = ["CATEGORIES", "FRAME_OVERRIDES", "PATHS", "BenchError", "Case", "Row",
           "ScopeTracker", "Settings", "Target", "add_arguments", "attribute", "breakdown",
           "canonical_models", "category", "cli_bench", "cpu_peak_bytes", "discover_cases",
           "estimated_bytes", "exponent", "exponent_target", "macs_breakdown", "matmul_peak",
           "measure", "memory_target", "mixer_label", "module_labels", "run", "scaling",
           "score_bytes", "speedup_targets", "time_breakdown", "tracking"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise BenchError(message)


def cli_bench(argv: list[str]) -> int:
    """Interim entry point (until :mod:`minilg.cli` builds the verb's parser and calls
    :func:`add_arguments` and :func:`run` itself): expected failures are one ``error:`` line on
    stderr and their exit code (2)."""
    parser = _Parser(prog="python -m minilg bench", description=DESCRIPTION)
    add_arguments(parser)
    try:
        return run(parser.parse_args(list(argv)))
    except MinilgError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except SystemExit as e:  # --help
        code: Any = e.code
        return int(code or 0)
