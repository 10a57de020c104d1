"""Multi-seed comparison behind notebook 07 (run offline: not part of `make run` or CI).

Trains every model in MODELS once per seed with `python -m minilg compare` (the main job's
defaults, the budget of `make run`; only `--seed` changes, plus the ablation switch of the
controls), each run on one CPU thread, `--jobs` runs at a time, and collects the results in one
JSON file (per run: final and best top-1, per-epoch validation curve, throughput, minutes). Runs
go in priority groups (the eight mechanisms of `make run` first, then the papers' ablations),
all seeds of a group before the next group; finished runs are kept, so an interrupted campaign
continues where it stopped. Usage (from the repository root):

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/multiseed.py \
        --seeds 0 1 2 --jobs 2 --out data/results/07_multiseed.json

Each run's weights stay in runs/multiseed/s{seed}_{model}/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

GROUPS = (
    # the eight mechanisms of `make run`
    ("deit_mini", "window_mini", "swin_mini", "sra_mini", "gg_mini", "focal_mini",
     "hat_net_mini", "salg_mini"),
    # GG Table 4b and a control that cannot relate the two sides
    ("gg_mini_glance", "gg_mini_gaze", "gg_mini_glance_window", "local_control"),
    # Focal Fig. 5, HAT-Net Table 5, SALG Table III
    ("focal_window", "focal_local", "focal_global", "hat_window_stages", "hat_no_depthwise",
     "salg_base", "salg_local_global", "salg_seg_local"),
)
MODELS = tuple(m for group in GROUPS for m in group)
# name -> (registered model, overrides). A truly local control: window_mini with 1x1 windows never
# mixes tokens in attention; only the 2x2 patch merging joins neighbours, so the two glyph columns
# meet only in the mean-pooled head.
CONTROLS: dict[str, tuple[str, dict]] = {
    "local_control": ("window_mini", {"window": 1}),
    "focal_window": ("focal_mini", {"interactions": "window"}),
    "focal_local": ("focal_mini", {"interactions": "local"}),
    "focal_global": ("focal_mini", {"interactions": "global"}),
    "hat_window_stages": ("hat_net_mini", {"window_stages": [0, 1, 2]}),
    "hat_no_depthwise": ("hat_net_mini", {"depthwise": False}),
    "salg_base": ("salg_mini", {"variant": "base"}),
    "salg_local_global": ("salg_mini", {"variant": "local_global"}),
    "salg_seg_local": ("salg_mini", {"variant": "seg_local"}),
}


def run_one(name: str, seed: int, runs: Path, epochs: int) -> dict:
    model, kwargs = CONTROLS.get(name, (name, {}))
    out = runs / f"s{seed}_{name}"
    cmd = [sys.executable, "-m", "minilg", "compare", "--models", model, "--seed", str(seed),
           "--epochs", str(epochs), "--threads", "1", "--no-verbose", "--out", str(out)]
    if kwargs:
        cmd += ["--model-kwargs", json.dumps(kwargs)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "MINILG_QUIET": "1"})
    row = json.loads((out / "compare.json").read_text())["rows"][0]
    return {
        "model": name, "seed": seed, "top1": row["top1"], "best_top1": row["best_top1"],
        "val_top1": [h["val_top1"] for h in row["history"]],
        "train_loss": [h["train_loss"] for h in row["history"]],
        "params_M": row["params_M"], "MMACs": row["MMACs"],
        "train_img_per_s": row["train_img_per_s"], "minutes": (time.perf_counter() - t0) / 60,
    }


def summary(runs: list[dict]) -> list[dict]:
    rows = []
    for name in dict.fromkeys(r["model"] for r in runs):
        top1 = [r["top1"] for r in runs if r["model"] == name]
        rows.append({
            "model": name, "seeds": len(top1), "mean": statistics.fmean(top1),
            "std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "min": min(top1), "max": max(top1),
            "above_55": sum(t > 55 for t in top1),
        })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: compare's")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, one thread each")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default="data/results/07_multiseed.json")
    parser.add_argument("--runs", default="runs/multiseed")
    args = parser.parse_args()
    out, runs_dir = Path(args.out), Path(args.runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    done = {(r["model"], r["seed"]) for r in data["runs"]}
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    import minilg
    from minilg.data.synthetic import SYNTHETIC_VERSION
    from minilg.compare import COMPARE_DEFAULTS
    args.epochs = args.epochs or COMPARE_DEFAULTS["epochs"]

    data.update({
        "description": "Multi-seed comparison of the *_mini mechanisms on the embedded task "
                       "(notebook 07). Budget: the defaults of `python -m minilg compare` "
                       f"with --epochs as given ({COMPARE_DEFAULTS['epochs']}, the default).",
        "command": "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/multiseed.py "
                   f"--epochs {args.epochs} --seeds {' '.join(map(str, args.seeds))} --jobs {args.jobs} "
                   f"--models {','.join(models)} --out {args.out}",
        "budget": {**COMPARE_DEFAULTS, "epochs": args.epochs},
        "synthetic_version": SYNTHETIC_VERSION,
        "controls": {k: {"model": m, "overrides": kw} for k, (m, kw) in CONTROLS.items()},
        "machine": f"{platform.machine()}, 1 CPU thread per run, torch "
                   f"{__import__('torch').__version__}, minilg {minilg.__version__}",
    })
    groups = [[m for m in g if m in models] for g in GROUPS]
    groups.append([m for m in models if m not in MODELS])
    order = [(name, seed) for g in groups for seed in args.seeds for name in g
             if (name, seed) not in done]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, name, seed, runs_dir, args.epochs): (name, seed)
                   for name, seed in order}
        for future in as_completed(futures):
            r = future.result()
            data["runs"].append(r)
            data["summary"] = summary(data["runs"])
            out.write_text(json.dumps(data, indent=1) + "\n")
            print(f"seed {r['seed']} {r['model']:20} top-1 {r['top1']:5.1f} "
                  f"({r['minutes']:.1f} min)", flush=True)
    for s in data.get("summary", []):
        print(f"{s['model']:22} n={s['seeds']} mean {s['mean']:5.1f} std {s['std']:4.1f} "
              f"min {s['min']:5.1f} max {s['max']:5.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
