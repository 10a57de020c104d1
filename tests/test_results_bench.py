"""The committed benchmark runs (data/results/bench_cpu_*.json, which docs/benchmark.md, the
README and notebook 08 quote): every ratio they store is recomputed from their per-round
samples, exactly."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from minilg.bench import paired_ratio

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
RUNS = {"1thread": 1, "2threads": 2, "exponent": 1}


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESULTS / f"bench_cpu_{name}.json").read_text())
    return data


@pytest.mark.parametrize(("name", "threads"), RUNS.items())
def test_each_run_records_how_it_was_made(name: str, threads: int) -> None:
    env = _load(name)["environment"]
    assert env["threads"] == threads and env["rounds"] >= 9 and env["device"] == "cpu"
    assert env["command"].startswith("python -m minilg bench")
    assert len(env["loadavg_1_5_15"]) == len(env["loadavg_1_5_15_end"]) == 3
    assert env["note"]


@pytest.mark.parametrize("name", RUNS)
def test_row_ratios_are_medians_of_the_per_round_ratios(name: str) -> None:
    rows = _load(name)["rows"]
    by_key = {(r["case"], r["size"], r["path"]): r for r in rows}
    core_rows = [r for r in rows if r["path"] == "core"]
    assert core_rows
    for core in core_rows:
        plain = by_key[(core["case"], core["size"], "plain")]
        for mode, samples in (("fwd", "fwd_samples_ms"), ("fwdbwd", "fwdbwd_samples_ms")):
            ratio = paired_ratio(plain[samples], core[samples])
            assert core[f"speedup_{mode}"] == ratio.median
            assert core[f"speedup_{mode}_iqr"] == [ratio.q1, ratio.q3]
            assert core[f"{mode}_ms"] == statistics.median(core[samples])


@pytest.mark.parametrize("name", ["1thread", "2threads"])
def test_official_ratios_and_training_steps_follow_from_their_samples(name: str) -> None:
    data = _load(name)
    assert {r["case"] for r in data["official"]} >= {
        "Swin-T W-MSA", "Swin-T SW-MSA", "Focal-T block", "HAT-Net-T stage 1",
        "HAT-Net-T stage 2"}
    for record in data["official"]:
        assert record["max_diff"] <= 1e-4
        ratio = paired_ratio(record["official_samples_ms"], record["minilg_samples_ms"])
        assert (record["ratio"], record["ratio_iqr"]) == (ratio.median, [ratio.q1, ratio.q3])
    memory = data["official_memory"]
    assert memory["batch"] == 128
    assert memory["times_below"] == memory["official_mib"] / memory["minilg_mib"]
    steps = {s["model"]: s for s in data["train_step"]}
    reference = steps["swin_mini"]["samples_ms"]
    for model in ("focal_mini", "salg_mini", "hat_net_mini"):
        ratio = paired_ratio(steps[model]["samples_ms"], reference)
        assert steps[model]["vs_reference"] == ratio.median


def test_the_exponent_run_measures_every_local_mixer_from_56_to_224() -> None:
    data = _load("exponent")
    spans = {(s["case"], s["from"], s["to"]) for s in data["scaling"] if s["path"] == "core"}
    cases = {r["case"] for r in data["rows"]}
    assert cases and all((case, 56, 224) in spans for case in cases)
