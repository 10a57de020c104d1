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
           "official_memory_target", "official_targets", "salg_targets", "speedup_targets",
           "train_step_targets"]


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
    """Core vs the goal's baseline (``against``: plain or straightforward) at the target's map
    size, forward and forward + backward, the lowest of the chosen mixers; and the W-/SW-MSA
    share of the matmul peak there at the target's channels."""
    spec, peak = load_targets()["speedup"], load_targets()["peak_fraction"]
    at = [r for r in rows if r.size == spec["size"] and r.path == "core"]
    note = _conditions(settings, spec["conditions"])
    targets = []
    for goal in spec["goals"]:
        chosen = [r for r in at if goal["mixers"] is None or r.mixer in goal["mixers"]]
        plain = goal.get("against", "plain") == "plain"
        worst = _worst(
            [(r.speedup_fwd if plain else r.vs_straightforward_fwd, f"{r.case} fwd")
             for r in chosen]
            + [(r.speedup_fwdbwd if plain else r.vs_straightforward_fwdbwd, f"{r.case} fwd+bwd")
               for r in chosen])
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
    """Local mixers (MACs about linear in N) scale their time, forward and forward + backward,
    with an exponent at most the target's, from its smaller map to its larger one (or the
    largest measured)."""
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
            values += [(exponent(a.fwd_ms, b.fwd_ms, a.tokens, b.tokens), f"{case}, fwd"),
                       (exponent(a.fwdbwd_ms, b.fwdbwd_ms, a.tokens, b.tokens),
                        f"{case}, fwd+bwd")]
            top = max(top, b.size)
    worst = _worst(values, low=False)
    note = "" if top in (0, spec["to"]) else f"measured {spec['from']} -> {top} only"
    measured = "not measured" if worst is None else f"highest {worst[0]:.2f} ({worst[1]})"
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


def salg_targets(rows: Sequence[Row]) -> list[Target]:
    """SALG's intra-region attention (its mixer alone: segmentation included) at each margin,
    forward time over W-MSA's at the same channels and map (medians of their own rounds; the
    note also scales each time by the matmul peak timed in the same rounds, which corrects for a
    load that differed between the two configurations)."""
    spec = load_targets()["salg_vs_window"]
    at = [r for r in rows if r.path == "core" and r.size == spec["size"] and r.dim == spec["dim"]]
    window = next((r for r in at if r.mixer == spec["window_mixer"]), None)
    targets = []
    for goal in spec["goals"]:
        salg = next((r for r in at if r.mixer == spec["mixer"] and r.variant == goal["variant"]),
                    None)
        name = f"{spec['name']}, {goal['variant']}"
        if window is None or salg is None:
            targets.append(Target(name, f"<= {goal['at_most']:g}x", "not measured", None))
            continue
        ratio = salg.fwd_ms / window.fwd_ms
        # the two were timed in different rounds: the matmul timed beside each tells the load
        steady = ratio * salg.peak_gflops / window.peak_gflops
        note = f"before {goal['before']:g}x"
        if math.isfinite(steady):
            note += f"; {steady:.2f}x scaled by each one's matmul peak"
        targets.append(Target(name, f"<= {goal['at_most']:g}x", f"{ratio:.2f}x",
                              ratio <= goal["at_most"], note))
    return targets


def train_step_targets(steps: Sequence[dict[str, Any]]) -> list[Target]:
    """Each model's training step over ``swin_mini``'s (median of per-round ratios)."""
    spec = load_targets()["train_step"]
    targets = []
    for model, before in spec["before"].items():
        record = next((s for s in steps if s["model"] == model), None)
        name = f"{spec['name']}: {model}"
        goal = f"<= {spec['at_most']:g}x"
        if record is None:
            targets.append(Target(f"{name} (--train-step)", goal, "not measured", None))
            continue
        q1, q3 = record["vs_reference_iqr"]
        conditions = ("" if (record["batch"], record["threads"]) == (spec["batch"], spec["threads"])
                      else f"target set at batch {spec['batch']}, {spec['threads']} thread; "
                      f"run: batch {record['batch']}, {record['threads']}")
        targets.append(Target(name, goal, f"{record['vs_reference']:.2f}x [{q1:.2f}, {q3:.2f}]",
                              record["vs_reference"] <= spec["at_most"],
                              "; ".join(n for n in (f"before {before:g}x", conditions) if n)))
    return targets


def official_targets(records: Sequence[dict[str, Any]], settings: Settings) -> list[Target]:
    """official / minilg per case (median of per-round ratios, ``[q1, q3]``)."""
    spec = load_targets()["official"]
    note = _conditions(settings, spec["conditions"])
    targets = []
    for goal in spec["goals"]:
        record = next((r for r in records if r["case"] == goal["case"]), None)
        name = f"{goal['case']}: {spec['name']}"
        wanted = f">= {goal['at_least']:g}x" + (f" ({goal['stretch']:g}x)" if "stretch" in goal
                                               else "")
        extra = "; ".join(n for n in (f"before {goal['before']:g}x", note) if n)
        if record is None or record.get("ratio") is None:
            why = "not measured" if record is None else record["note"]
            targets.append(Target(name, wanted, why, None, extra))
            continue
        q1, q3 = record["ratio_iqr"]
        targets.append(Target(name, wanted, f"{record['ratio']:.2f}x [{q1:.2f}, {q3:.2f}]",
                              record["ratio"] >= goal["at_least"], extra))
    return targets


def official_memory_target(memory: dict[str, Any] | None) -> Target:
    """The official SW-MSA cut's peak over minilg's mixer's, batch against batch."""
    spec = load_targets()["official_memory"]
    before = spec["before_mib"]
    goal = f">= {spec['at_least_times_below']:g}x below"
    name = f"{spec['name']}, batch {spec['batch'] if memory is None else memory['batch']}"
    extra = f"before {before['official']:,.0f} vs {before['minilg']:,.0f} MiB"
    if memory is None:
        return Target(f"{name} (--official)", goal, "not measured", None, extra)
    if memory["batch"] != spec["batch"]:
        extra += f"; target set at batch {spec['batch']}"
    return Target(name, goal, f"{memory['official_mib']:,.0f} vs {memory['minilg_mib']:,.0f} "
                  f"MiB: {memory['times_below']:.2f}x", memory["times_below"]
                  >= spec["at_least_times_below"], extra)


def evaluate(
    rows: Sequence[Row], settings: Settings, blocks: Sequence[dict[str, Any]],
    steps: Sequence[dict[str, Any]] = (), official: Sequence[dict[str, Any]] = (),
    official_memory: dict[str, Any] | None = None,
) -> list[Target]:
    """Every target of ``targets.json``, as measured by this run."""
    return [*speedup_targets(rows, settings), exponent_target(rows), *salg_targets(rows),
            *train_step_targets(steps), *official_targets(official, settings),
            official_memory_target(official_memory), memory_target(blocks)]
