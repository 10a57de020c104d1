"""Multi-seed campaign of the main job (run offline: not part of `make run` or CI).

Trains every model of `python -m minilg compare`'s defaults (the local control included) once
per seed at exactly `make run`'s budget (the COMPARE_DEFAULTS; only `--seed` changes), each run
on one CPU thread, `--jobs` runs at a time (as `make run` does), and collects the results in one
JSON file: per run the final and best top-1, `reach_top1` (accuracy on the part of the label
that needs reach: the top-1 of each image's scores summed with those of its colour-swapped twin,
see minilg.data.match), the per-epoch validation curve,
throughput and minutes; beside them the task's name, version and chance level, the command, the
machine and its load. Finished runs are kept, so an interrupted campaign continues where it
stopped. Ablations (`--models` with other registered names, e.g. the papers' variants) may run
at fewer seeds. Usage (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/multiseed.py \
        --seeds 0 1 2 --jobs 2 --out data/results/07_match_multiseed.json

Each run's weights stay in runs/multiseed/s{seed}_{model}/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

# The papers' ablations in miniature (notebook 07): name -> (registered model, overrides).
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "window_mini": ("window_mini", {}),
    "gg_mini_glance": ("gg_mini_glance", {}),
    "gg_mini_gaze": ("gg_mini_gaze", {}),
    "gg_mini_glance_window": ("gg_mini_glance_window", {}),
    "focal_window": ("focal_mini", {"interactions": "window"}),
    "focal_local": ("focal_mini", {"interactions": "local"}),
    "focal_global": ("focal_mini", {"interactions": "global"}),
    "hat_window_stages": ("hat_net_mini", {"window_stages": [0, 1, 2]}),
    "hat_no_depthwise": ("hat_net_mini", {"depthwise": False}),
    "salg_base": ("salg_mini", {"variant": "base"}),
    "salg_local_global": ("salg_mini", {"variant": "local_global"}),
    "salg_seg_local": ("salg_mini", {"variant": "seg_local"}),
}


def run_one(name: str, seed: int, runs: Path) -> dict[str, Any]:
    out = runs / f"s{seed}_{name}"
    registered, overrides = ABLATIONS.get(name, (name, {}))
    cmd = [sys.executable, "-m", "minilg", "compare", "--models", registered, "--seed", str(seed),
           "--model-kwargs", json.dumps(overrides),
           "--jobs", "1", "--threads", "1", "--no-verbose", "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "MINILG_QUIET": "1"})
    row = json.loads((out / "compare.json").read_text())["rows"][0]
    return {
        "model": name, "seed": seed, "top1": row["top1"], "reach_top1": row["reach_top1"],
        "best_top1": row["best_top1"],
        "val_top1": [h["val_top1"] for h in row["history"]],
        "train_loss": [h["train_loss"] for h in row["history"]],
        "params_M": row["params_M"], "MMACs": row["MMACs"],
        "train_img_per_s": row["train_img_per_s"], "minutes": (time.perf_counter() - t0) / 60,
    }


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r["model"] for r in runs):
        top1 = [r["top1"] for r in runs if r["model"] == name]
        reach = [r["reach_top1"] for r in runs if r["model"] == name
                 and r.get("reach_top1") is not None]
        rows.append({
            "model": name, "seeds": len(top1), "mean": statistics.fmean(top1),
            "std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "min": min(top1), "max": max(top1),
            "reach_mean": statistics.fmean(reach) if reach else None,
            "reach_min": min(reach) if reach else None, "reach_max": max(reach) if reach else None,
        })
    return rows


def main() -> int:
    from minilg.compare import DEFAULT_MODELS

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="registered names, or ablation names: " + ", ".join(ABLATIONS))
    parser.add_argument("--out", default="data/results/07_match_multiseed.json")
    parser.add_argument("--runs", default="runs/multiseed")
    parser.add_argument("--fill-reach", action="store_true",
                        help="only add reach_top1 to the runs of --out that lack it, from each "
                             "run's final weights in --runs (for a campaign made before compare "
                             "recorded it; the same function compare calls after training)")
    args = parser.parse_args()
    if args.fill_reach:
        return fill_reach(Path(args.out), Path(args.runs))
    out, runs_dir = Path(args.out), Path(args.runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    from minilg.data.match import MATCH_VERSION

    if data["runs"] and data.get("task", {}).get("version") != MATCH_VERSION:
        parser.error(f"{out} holds runs of match version {data.get('task', {}).get('version')}, "
                     f"not {MATCH_VERSION}: choose another --out")
    done = {(r["model"], r["seed"]) for r in data["runs"]}
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    _describe(data, args, models)
    order = [(name, seed) for seed in args.seeds for name in models if (name, seed) not in done]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, name, seed, runs_dir) for name, seed in order]
        for n, future in enumerate(as_completed(futures), start=1):
            r = future.result()
            data["runs"].append(r)
            data["summary"] = summary(data["runs"])
            data.setdefault("load_average_during", []).append(round(os.getloadavg()[0], 2))
            out.write_text(json.dumps(data, indent=1) + "\n")
            elapsed = time.perf_counter() - t0
            print(f"[{n}/{len(order)}] seed {r['seed']} {r['model']:16} top-1 {r['top1']:5.1f} "
                  f"({r['minutes']:.1f} min) | elapsed {elapsed / 60:.1f} min, about "
                  f"{elapsed / n * (len(order) - n) / 60:.1f} min left", flush=True)
    for s in data.get("summary", []):
        print(f"{s['model']:16} n={s['seeds']} mean {s['mean']:5.1f} min {s['min']:5.1f} "
              f"max {s['max']:5.1f}")
    return 0


def fill_reach(out: Path, runs_dir: Path) -> int:
    """Add ``reach_top1`` to every run of ``out`` without it, from its final weights."""
    from minilg.compare import COMPARE_DEFAULTS
    from minilg.data import load_subset
    from minilg.data.match import swap_colours
    from minilg.train import load_model
    from minilg.training.evaluation import symmetrised_top1
    from minilg.training.splits import sample_subset

    data = json.loads(out.read_text())
    val = load_subset(data["task"]["name"], "val", 32)
    images, labels = sample_subset(val.images, val.labels, COMPARE_DEFAULTS["max_eval_samples"])
    for r in data["runs"]:
        if r.get("reach_top1") is None:
            model, _ = load_model(runs_dir / f"s{r['seed']}_{r['model']}" / r["model"])
            r["reach_top1"] = symmetrised_top1(model, images, labels, swap_colours)
            print(f"seed {r['seed']} {r['model']:16} top-1 {r['top1']:5.1f} "
                  f"reach top-1 {r['reach_top1']:5.1f}")
    data["summary"] = summary(data["runs"])
    data["reach_top1_added"] = ("after the campaign, from each run's final weights, by "
                                "`scripts/multiseed.py --fill-reach` (the function compare "
                                "calls after training)")
    out.write_text(json.dumps(data, indent=1) + "\n")
    return 0


def _describe(data: dict[str, Any], args: argparse.Namespace, models: list[str]) -> None:
    """The campaign's record: task, chance, budget, command, machine and load."""
    import torch

    import minilg
    from minilg.compare import COMPARE_DEFAULTS
    from minilg.data.match import MATCH_CHANCE, MATCH_VERSION

    n_val = COMPARE_DEFAULTS["max_eval_samples"]
    p = MATCH_CHANCE / 100
    data.update({
        "description": "Multi-seed campaign of the main job (`python -m minilg compare`, "
                       "notebook 07) on the `match` task, at make run's budget.",
        "task": {"name": COMPARE_DEFAULTS["data"], "version": MATCH_VERSION},
        "chance": MATCH_CHANCE,
        # "at chance" = at most chance + 3 standard errors of a guess on the validation set
        "chance_plus_3se": MATCH_CHANCE + 300 * math.sqrt(p * (1 - p) / n_val),
        "reach_part": "the whole label (either bar alone is independent of it); reach_top1 is "
                      "the top-1 of each image's scores summed with its colour-swapped twin's "
                      "(minilg.data.match.swap_colours): the interaction of the two sides",
        "command": "OMP_NUM_THREADS=1 .venv/bin/python scripts/multiseed.py "
                   f"--seeds {' '.join(map(str, args.seeds))} --jobs {args.jobs} "
                   f"--models {','.join(models)} --out {args.out}",
        "budget": dict(COMPARE_DEFAULTS),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {args.jobs} runs at a "
                   f"time of 1 thread, torch {torch.__version__}, minilg {minilg.__version__}",
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    })
    data.setdefault("exceptions", {})
    data["ablations"] = {m: {"model": ABLATIONS[m][0], "overrides": ABLATIONS[m][1]}
                         for m in models if m in ABLATIONS}


if __name__ == "__main__":
    raise SystemExit(main())
