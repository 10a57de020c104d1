"""Targets: what a run measured, beside the goals and earlier figures of ``targets.json``.

The goals and the figures measured before the attention core are data (``targets.json``, shipped
with the package), read by :func:`load_targets`; this module only compares a run with them. A
target is printed as met, missed or not measured (``-``), never asserted: timings depend on
the machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from minilg.bench.settings import Settings
from minilg.bench.timing import Row, exponent

__all__ = ["Target", "evaluate", "exponent_target", "load_targets", "memory_target",
           "speedup_targets"]


@dataclass(frozen=True)
class Target:
    """One target, as measured in this run (never asserted)."""

    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run
    note: str = ""


@cache
def load_targets() -> dict[str, Any]:
    """The goals and earlier figures: ``minilg/bench/targets.json``."""
    text = files("minilg.bench").joinpath("targets.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _worst(values: Sequence[tuple[float, str]], low: bool = True) -> tuple[float, str] | None:
    finite = [v for v in values if math.isfinite(v[0])]
    if not finite:
        return None
    return min(finite) if low else max(finite)


def _conditions(settings: Settings, conditions: dict[str, int]) -> str:
    """A note when the run's batch (and threads, on the CPU) differ from the target's."""
    threads = "threads" in conditions
    wanted = [f"batch {conditions['batch']}"] + ([f"{conditions['threads']} threads"]
                                                 if threads else [])
    actual = [f"batch {settings.batch}"] + ([f"{settings.threads} threads"] if threads else [])
    if settings.device.type == "cuda":
        same = settings.batch == conditions["batch"]
        return "" if same else f"target set at {', '.join(wanted)}"
    if wanted == actual:
        return ""
    return f"target set at {', '.join(wanted)}; run: {', '.join(actual)}"


def speedup_targets(rows: Sequence[Row], settings: Settings) -> list[Target]:
    """Core vs straightforward at the target's map size (every mixer, then W-/SW-MSA), and the
    W-/SW-MSA share of the matmul peak there at the target's channels."""
    spec, peak = load_targets()["speedup"], load_targets()["peak_fraction"]
    at = [r for r in rows if r.size == spec["size"] and r.path == "core"]
    note = _conditions(settings, spec["conditions"])
    targets = []
    for goal in spec["goals"]:
        chosen = [r for r in at if goal["mixers"] is None or r.mixer in goal["mixers"]]
        worst = _worst([(r.speedup_fwd, f"{r.case} fwd") for r in chosen]
                       + [(r.speedup_fwdbwd, f"{r.case} fwd+bwd") for r in chosen])
        measured = "not measured" if worst is None else f"lowest {worst[0]:.2f}x ({worst[1]})"
        targets.append(Target(goal["name"], f">= {goal['at_least']:.1f}x", measured,
                              None if worst is None else worst[0] >= goal["at_least"], note))
    share = _worst([(r.peak_fraction, r.case) for r in rows
                    if r.size == peak["size"] and r.path == "core" and r.dim == peak["dim"]
                    and r.mixer in peak["mixers"]])
    targets.append(Target(
        peak["name"], f">= {100 * peak['at_least']:.0f}%",
        "not measured" if share is None else f"lowest {100 * share[0]:.0f}% ({share[1]})",
        None if share is None else share[0] >= peak["at_least"],
        _conditions(settings, peak["conditions"])))
    return targets


def exponent_target(rows: Sequence[Row]) -> Target:
    """Local mixers (MACs about linear in N) scale their time with an exponent at most the
    target's, from its smaller map to its larger one (or the largest measured)."""
    spec = load_targets()["exponent"]
    values: list[tuple[float, str]] = []
    top = 0
    for case in dict.fromkeys(r.case for r in rows):
        series = {r.size: r for r in rows if r.case == case and r.path == "core"}
        larger = [s for s in series if s > spec["from"]]
        if spec["from"] not in series or not larger:
            continue
        a, b = series[spec["from"]], series[max(larger)]
        if exponent(a.macs, b.macs, a.tokens, b.tokens) <= spec["local_macs_exponent"]:
            values.append((exponent(a.fwd_ms, b.fwd_ms, a.tokens, b.tokens), case))
            top = max(top, b.size)
    worst = _worst(values, low=False)
    note = "" if top in (0, spec["to"]) else f"measured {spec['from']} -> {top} only"
    measured = "not measured" if worst is None else f"highest {worst[0]:.2f} ({worst[1]}, fwd)"
    return Target(spec["name"], f"<= {spec['at_most']:g}", measured,
                  None if worst is None else worst[0] <= spec["at_most"], note)


def memory_target(blocks: Sequence[dict[str, Any]]) -> Target:
    """The stage-1 SW block's forward memory at the target's batch, against the figure measured
    before the core (``before_mib``): at least ``at_least_times_below`` times lower."""
    spec = load_targets()["block_memory"]
    before, factor = float(spec["before_mib"]), spec["at_least_times_below"]
    goal = f"<= {before / factor:.0f} MiB ({factor:g}x below {before:,.0f})"
    core = [b for b in blocks if b["path"] == "core" and b["what"].endswith("block")]
    if not core:
        return Target(f"{spec['name']} (--block-memory)", goal, "not measured", None)
    mib, batch = core[0]["peak_mib"], core[0]["batch"]
    note = "" if batch == spec["batch"] else f"target set at batch {spec['batch']}"
    return Target(f"{spec['name']}, batch {batch}", goal, f"{mib:,.0f} MiB",
                  mib <= before / factor, note)


def evaluate(
    rows: Sequence[Row], settings: Settings, blocks: Sequence[dict[str, Any]]
) -> list[Target]:
    """Every target of ``targets.json``, as measured by this run."""
    return [*speedup_targets(rows, settings), exponent_target(rows), memory_target(blocks)]
