"""``python -m minilg bench``: cost and speed of every mixer, beside a plain implementation.

What it measures, for each *case* (one mixer of one model's stage, :mod:`~minilg.bench.cases`;
with the extras, MSA and SALG at p = 1, 2 built alone at C = 96) at each map size:

* **exact MACs** of one image, the mixer's closed form ``macs(H, W)``;
* **forward** and **forward + backward** time of three paths: the **core**, the **plain**
  baseline (:mod:`~minilg.bench.baseline`: explicit scores, the mask broadcast, geometry cached)
  and the older **straightforward** path (:func:`minilg.attention.reference_math`: the mask
  materialised per sample, geometry rebuilt every call), timed in **paired rounds** of rotated
  order with a **matmul peak** in every round; speed-ups are medians of per-round ratios with
  their interquartile range; **achieved GFLOP/s** against that peak and the **scaling exponent**
  of time in the number of tokens (:mod:`~minilg.bench.timing`); the load average at the start
  and at the end;
* **peak memory** of the forward and of forward + backward (:mod:`~minilg.bench.memory`).

Every path's output is compared with the core's on every configuration (column ``diff``), and
the plain path is checked not to reach the core's attention. Configurations whose explicit
scores would exceed ``--memory-limit`` are skipped with a note, never attempted.

Options add: ``--breakdown`` (each case's whole block profiled per category,
:mod:`~minilg.bench.breakdown`), ``--train-step`` (training steps of the mini models against
``swin_mini``'s, :mod:`~minilg.bench.train_step`), ``--official DIR`` (the official Swin, Focal
and HAT-Net modules from checkouts under ``DIR``, same weights, outputs checked equal, then
paired rounds, :mod:`~minilg.bench.official`). The goals and earlier figures live in
``targets.json``; a run prints each as measured against target, never asserting
(:mod:`~minilg.bench.targets`). Outputs: :mod:`~minilg.bench.report` (their schema:
``docs/bench-schema.md``); the options: :mod:`~minilg.bench.cli`.
"""

from __future__ import annotations

from minilg.bench.baseline import core_attend_calls, plain_attend, plain_mask, plain_math
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
    extra_cases,
    mixer_label,
)
from minilg.bench.cli import add_arguments, run
from minilg.bench.memory import cpu_peak_bytes, estimated_bytes, score_bytes
from minilg.bench.official import compare, import_official, run_official, timm_stand_in
from minilg.bench.settings import BASELINE, PATHS, BenchError, Settings
from minilg.bench.targets import (
    Target,
    evaluate,
    exponent_target,
    memory_target,
    official_memory_target,
    official_targets,
    salg_targets,
    speedup_targets,
    train_step_targets,
)
from minilg.bench.timing import (
    Ratio,
    Row,
    exponent,
    matmul_peak,
    measure,
    paired_ratio,
    paired_rounds,
    round_order,
    scaling,
)
from minilg.bench.train_step import REFERENCE, TRAIN_MODELS, train_steps

__all__ = ["BASELINE", "CATEGORIES", "FRAME_OVERRIDES", "PATHS", "REFERENCE", "TRAIN_MODELS",
           "BenchError", "Case", "Ratio", "Row", "ScopeTracker", "Settings", "Target",
           "add_arguments", "attribute", "breakdown", "canonical_models", "category",
           "compare", "core_attend_calls", "cpu_peak_bytes", "discover_cases",
           "estimated_bytes", "evaluate", "exponent", "exponent_target", "extra_cases",
           "import_official", "macs_breakdown", "matmul_peak", "measure", "memory_target",
           "mixer_label", "module_labels", "official_memory_target", "official_targets",
           "paired_ratio", "paired_rounds", "plain_attend", "plain_mask", "plain_math",
           "round_order", "run", "run_official", "salg_targets", "scaling", "score_bytes",
           "speedup_targets", "time_breakdown", "timm_stand_in", "tracking", "train_step_targets",
           "train_steps"]


