"""``python -m minilg compare``: train several models under one budget and tabulate them.

Every model gets the same :class:`~minilg.train.TrainConfig` (data, epochs, batch, schedule,
augmentation, seed); only ``model`` changes. The table reports parameters, MACs per image
(multiply-accumulates of matmuls and convolutions, :func:`minilg.complexity.model_macs`),
measured training throughput, validation top-1 and, on tasks with a twin that isolates the part
of the label needing reach (:data:`REACH_TWINS`), the reach top-1; the plot shows top-1 against
MACs and the validation curves.

The defaults are the main job, ``make run``: the embedded ``match`` task at 32 px (two bars at
opposite edges; the label says whether their colours match, which no model without a path
between the two sides can learn: :mod:`minilg.data.match`), the ``*_mini`` model of every
mechanism (full MSA, SW-MSA, SRA, GG, Focal, HAT-Net, SALG) and the local control (1 x 1
windows, :mod:`minilg.models.reach`), one budget for all (:data:`COMPARE_DEFAULTS`), two models
at a time in processes of one thread (:data:`COMPARE_JOBS`), sized so that ``make run`` finishes
in five minutes on two CPU cores, set-up included.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import math
import multiprocessing
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from minilg.complexity import model_macs
from minilg.data import load_subset
from minilg.data.match import swap_colours
from minilg.errors import ConfigError, RunExistsError
from minilg.io import atomic_write_bytes, atomic_write_text, write_json
from minilg.train import train
from minilg.training.checkpoint import CHECKPOINTS_DIR, CONFIG_FILE, has_checkpoint
from minilg.training.config import TrainConfig, check_model
from minilg.training.distributed import resolve_device
from minilg.training.evaluation import symmetrised_top1
from minilg.training.options import add_config_args, config_from_args
from minilg.training.rundir import check_writable_folder, run_lock
from minilg.training.splits import sample_subset
from minilg.validate import positive_int

__all__ = ["COLUMNS", "COMPARE_DEFAULTS", "COMPARE_MARKER", "DEFAULT_MODELS", "add_arguments",
           "compare", "compare_figure", "markdown_table", "run", "write_outputs"]

DEFAULT_MODELS = (
    "deit_mini", "salg_mini", "focal_mini", "hat_net_mini", "gg_mini", "sra_mini", "swin_mini",
    "local_control",
)

# One budget for every model of `make run` (the campaign, scripts/multiseed.py, runs exactly
# this): 4,000 training images per model, 2 epochs of 2,000 (62 steps of 32 each: the last
# partial batch is dropped), evaluated on 1,000 validation images after each epoch. With the two
# processes of COMPARE_JOBS, `make run` (set-up included) fits 5 minutes on the 2-core
# development machine; the README has the timing.
COMPARE_DEFAULTS: dict[str, Any] = {
    "data": "match",
    "epochs": 2,
    "batch_size": 32,
    "lr": 2e-3,
    "warmup_epochs": 0.5,
    "max_train_samples": 2000,
    "max_eval_samples": 1000,
    "drop_path": 0.0,
}

# Models trained at a time (one process, one thread each). Measured on the 2-core development
# machine: see the README (two processes of one thread against one process of two threads).
COMPARE_JOBS = 2

COLUMNS = ("model", "params_M", "MMACs", "train_img_per_s", "top1", "reach_top1", "best_top1",
           "train_min")

# Tasks with a symmetry that isolates the part of the label needing reach (reach_top1).
REACH_TWINS: dict[str, Callable[[Tensor], Tensor]] = {"match": swap_colours}


# Marks a run folder as made by compare: only such folders are ever replaced by a new comparison.
COMPARE_MARKER = ".minilg-compare"


def compare(
    models: Sequence[str], base: TrainConfig, out: str | Path | None = None, jobs: int = 1
) -> list[dict[str, Any]]:
    """Train each registered name in ``models`` with ``base`` (``out/NAME`` per model).

    ``jobs > 1`` trains that many models at a time, each in its own process on one thread
    (``base.threads`` is then ignored); the rows come back in the order of ``models``.

    Every name and ``base.model_kwargs`` are checked for every model before the first one
    trains (ConfigError naming the model). A previous comparison's run in ``out/NAME`` is
    replaced, unless ``base.resume`` (then finished runs are only reloaded and stopped ones
    continue); a folder that compare did not create is never touched (RunExistsError). Returns
    one row per model: the :data:`COLUMNS` plus ``num_classes`` and ``history``.
    """
    jobs = positive_int(jobs, "jobs")
    names = _check_models(models, base)
    with contextlib.ExitStack() as held:
        out_dir = None
        if out is not None:
            out_dir = check_writable_folder(out)
            _check_outputs(out_dir)
            held.enter_context(run_lock(out_dir))  # one comparison per folder at a time
        configs = [_run_config(name, base, out_dir) for name in names]  # all checked first
        rows = _train_rows(configs, base, jobs)
        if out_dir is not None and rows:
            write_json(out_dir / COMPARE_MARKER, {"created_by": "python -m minilg compare"})
            write_outputs(rows, base, out_dir)
    return rows


OUTPUTS = ("compare.csv", "compare.md", "compare.json", "compare.png")


def _check_outputs(out_dir: Path) -> None:
    """Before any training: the table files may be replaced only in a folder compare wrote them
    in (its :data:`COMPARE_MARKER`)."""
    found = [n for n in OUTPUTS if os.path.lexists(out_dir / n)]
    if found and not (out_dir / COMPARE_MARKER).is_file():
        raise RunExistsError(
            f"{out_dir} already holds {', '.join(found)}, which compare did not write there: "
            "move them away or choose another --out"
        )


def _check_models(models: Sequence[str], base: TrainConfig) -> list[str]:
    names = list(models)
    if not names:
        raise ConfigError("models", "must name at least one model (see python -m minilg list)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError("models", f"lists {', '.join(twice)} more than once")
    for name in names:
        try:
            check_model(dataclasses.replace(base, model=name))
        except ConfigError as e:
            raise ConfigError("models", f"{name}: {e}") from None
    return names


def _run_config(name: str, base: TrainConfig, out_dir: Path | None) -> TrainConfig:
    """The config of one model's run; refuses a folder that compare did not create.

    Called for every model before the first trains (an early refusal), and again by
    :func:`_train_row` at the moment it claims the folder, under the folder's lock: a run that
    appeared there in the meantime is refused, never replaced.
    """
    if out_dir is None:
        return dataclasses.replace(base, model=name, out=None, resume=False)
    run_dir = out_dir / name
    resume = base.resume and has_checkpoint(run_dir)
    if not resume and _has_run_files(run_dir) and not (run_dir / COMPARE_MARKER).is_file():
        raise RunExistsError(
            f"{run_dir} holds a run that compare did not create; move it away, choose another "
            "--out, or pass --resume to continue it"
        )
    return dataclasses.replace(base, model=name, out=str(run_dir), resume=resume)


def _train_rows(
    configs: Sequence[TrainConfig], base: TrainConfig, jobs: int
) -> list[dict[str, Any]]:
    """One row per config, ``jobs`` processes at a time; a progress line after each model
    (elapsed time, and an estimate of what remains) when ``verbose``."""
    t0, rows = time.perf_counter(), {}

    def done(row: dict[str, Any]) -> None:
        rows[row["model"]] = row
        elapsed, left = time.perf_counter() - t0, len(configs) - len(rows)
        if configs[0].verbose:
            eta = _time_left([r["train_min"] for r in rows.values()], left, jobs)
            print(f"[{len(rows)}/{len(configs)}] {row['model']}: top-1 {row['top1']:.1f} % "
                  f"({row['train_min']:.1f} min) | elapsed {elapsed / 60:.1f} min, "
                  f"about {eta:.1f} min left", flush=True)

    if jobs == 1 or len(configs) == 1:
        for cfg in configs:
            done(_train_row(cfg, base))
    else:
        quiet = [dataclasses.replace(c, threads=1, verbose=False) for c in configs]
        quiet_base = dataclasses.replace(base, threads=1, verbose=False)
        spawn = multiprocessing.get_context("spawn")  # no forked torch thread pools
        with ProcessPoolExecutor(min(jobs, len(configs)), mp_context=spawn) as pool:
            for future in as_completed([pool.submit(_train_row, cfg, quiet_base) for cfg in quiet]):
                done(future.result())
    return [rows[cfg.model] for cfg in configs]


def _time_left(minutes: Sequence[float], left: int, jobs: int) -> float:
    """Minutes until the last of ``left`` models finishes, ``jobs`` at a time, each taking the
    mean of ``minutes`` (the finished ones); the ``min(jobs, left)`` running now are taken as
    half done."""
    if left == 0:
        return 0.0
    running = min(jobs, left)
    return (left - running / 2) * statistics.fmean(minutes) / running


def _train_row(planned: TrainConfig, base: TrainConfig) -> dict[str, Any]:
    """Claim the model's folder (check it again, under its lock), then train and measure.

    Between the claim and ``train`` taking the lock again, a run that starts there holds the
    lock (train is refused) and one that finished left a checkpoint (train refuses a fresh run
    over it): either way nothing is lost.
    """
    cfg = planned
    if planned.out is not None:
        run_dir = Path(planned.out)
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(run_dir):
            cfg = _run_config(planned.model, base, run_dir.parent)
            if not cfg.resume:
                _clear_run(run_dir)  # a previous comparison's run (marked as ours), or nothing
                write_json(run_dir / COMPARE_MARKER, {"created_by": "python -m minilg compare"})
    t0 = time.perf_counter()
    result = train(cfg)
    minutes = (time.perf_counter() - t0) / 60
    hist = result.history
    speeds = [r["train_images_per_s"] for r in hist[1:]] or [hist[0]["train_images_per_s"]]
    val = [r["val_top1"] for r in hist if r["val_top1"] is not None]
    return {
        "model": cfg.model,
        "params_M": sum(p.numel() for p in result.model.parameters()) / 1e6,
        "MMACs": model_macs(result.model, cfg.resolution) / 1e6,
        "train_img_per_s": statistics.median(speeds),
        "top1": val[-1] if val else float("nan"),
        "reach_top1": _reach_top1(result.model, cfg),
        "best_top1": max(val) if val else float("nan"),
        "train_min": minutes,
        "num_classes": result.info["num_classes"],
        "history": hist,  # per-epoch metrics (not in the CSV / markdown table)
    }


def _reach_top1(model: torch.nn.Module, cfg: TrainConfig) -> float | None:
    """Top-1 on the part of the label that needs reach (tasks in :data:`REACH_TWINS`), on
    the run's validation images; None for other data."""
    twin = REACH_TWINS.get(cfg.data)
    if twin is None:
        return None
    val = load_subset(cfg.data, "val", cfg.resolution, root=cfg.root)
    images, labels = sample_subset(val.images, val.labels, cfg.max_eval_samples)
    return symmetrised_top1(model, images, labels, twin, batch_size=cfg.eval_batch_size)


_RUN_FILES = (CONFIG_FILE, "metrics.csv", "metrics.json", "curves.png")


def _has_run_files(run_dir: Path) -> bool:
    return any((run_dir / n).exists() for n in (*_RUN_FILES, CHECKPOINTS_DIR))


def _clear_run(run_dir: Path) -> None:
    """Delete the files a previous run wrote in ``run_dir`` (only those; nothing else)."""
    for name in _RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a markdown table (MACs = multiply-accumulates per image)."""
    lines = [
        "| model | params (M) | MACs (M) | train img/s | top-1 (%) | reach top-1 (%) "
        "| best top-1 (%) | minutes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params_M']:.2f} | {r['MMACs']:.1f} | "
            f"{r['train_img_per_s']:.0f} | {r['top1']:.1f} | {_maybe(r.get('reach_top1'))} | "
            f"{r['best_top1']:.1f} | "
            f"{r['train_min']:.1f} |"
        )
    return "\n".join(lines)


def compare_figure(
    rows: Sequence[dict[str, Any]],
    title: str = "",
    chance: float | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Left: final top-1 against MACs per image. Right: validation top-1 per epoch.

    ``chance`` (in %) draws a dashed line at the accuracy of guessing. Pass
    ``fig=plt.figure(figsize=(11.5, 3.8))`` in a notebook.
    """
    fig = fig if fig is not None else Figure(figsize=(11.5, 3.8))
    ax_macs, ax_curve = fig.subplots(1, 2)
    if chance is not None:
        for ax in (ax_macs, ax_curve):
            ax.axhline(chance, ls="--", c="gray", lw=1, label="chance")
    markers = "osD^vP*Xh<>"
    for i, r in enumerate(rows):
        color, marker = f"C{i % 10}", markers[i % len(markers)]
        ax_macs.scatter(r["MMACs"], r["top1"], s=45, color=color, marker=marker,
                        label=r["model"])
        hist = [h for h in r.get("history", []) if h["val_top1"] is not None]
        ax_curve.plot([h["epoch"] for h in hist], [h["val_top1"] for h in hist], "-",
                      marker=marker, color=color, label=r["model"])
    ax_macs.set(xlabel="MACs per image (M)", ylabel="val top-1 (%)", title="accuracy vs cost")
    ax_curve.set(xlabel="epoch", ylabel="val top-1 (%)", title="validation curves")
    ax_curve.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    top = max([r["top1"] for r in rows] + [chance or 0.0])
    for ax in (ax_macs, ax_curve):
        # accuracies from 0, so that differences near chance are not magnified
        ax.set_ylim(0, min(105.0, 1.3 * top + 1))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_outputs(
    rows: Sequence[dict[str, Any]],
    base: TrainConfig,
    out: Path,
) -> None:
    """``compare.csv``, ``compare.md``, ``compare.json`` and ``compare.png`` in ``out``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "compare.csv", buf.getvalue())
    note = (
        f"{base.data} @ {base.resolution}px, {base.epochs} epochs, batch {base.batch_size}, "
        f"seed {base.seed}. MACs: multiply-accumulates of matmuls and convolutions per image."
    )
    atomic_write_text(out / "compare.md", markdown_table(rows) + "\n\n" + note + "\n")
    config = {k: v for k, v in base.to_dict().items() if k not in ("model", "out")}
    write_json(out / "compare.json", {"config": config, "rows": list(rows)})
    chance = 100.0 / rows[0]["num_classes"] if rows and rows[0].get("num_classes") else None
    fig = compare_figure(rows, f"{base.data} @ {base.resolution}px", chance)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    atomic_write_bytes(out / "compare.png", png.getvalue())


# ============================================================================= the compare verb
def _threads(jobs: int, cfg: TrainConfig) -> str:
    if jobs > 1:
        return f"{jobs} processes of one thread"
    n = cfg.threads or torch.get_num_threads()
    return f"{n} thread{'' if n == 1 else 's'}"


def _chance_line(num_classes: int, n_val: int | None) -> str:
    """Chance top-1 of a balanced task, and chance + 3 standard errors of a guess on ``n_val``
    images: a model at or below that line has learned nothing of the label."""
    p = 1 / num_classes
    line = f"Chance: {100 * p:.1f} % ({num_classes} classes)"
    if n_val:
        line += (f"; chance + 3 standard errors on {n_val:,} validation images: "
                 f"{100 * (p + 3 * math.sqrt(p * (1 - p) / n_val)):.1f} %")
    return line + "."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m minilg compare [--models a,b,c] [TrainConfig flags]``."""
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated model names (default: {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--jobs", type=int, default=COMPARE_JOBS,
                        help="models trained at a time, each in its own process on one thread "
                             f"(default: {COMPARE_JOBS}; 1: one process with --threads)")
    add_config_args(parser, skip=("model", "stop_after"))


def run(args: argparse.Namespace) -> int:
    """Train every model of ``--models`` under one budget; print and write the table."""
    base = dataclasses.replace(TrainConfig(out="runs/compare"), **COMPARE_DEFAULTS)
    cfg = config_from_args(args, base)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    t0 = time.perf_counter()
    rows = compare(models, cfg, cfg.out, jobs=args.jobs)
    print()
    print(markdown_table(rows))
    print(f"\nMACs = multiply-accumulates per image at {cfg.resolution}px; img/s = measured "
          f"training throughput ({resolve_device(cfg.device)}, "
          f"{_threads(args.jobs, cfg)}). "
          f"Total {(time.perf_counter() - t0) / 60:.1f} min.")
    if rows:
        print(_chance_line(rows[0]["num_classes"], cfg.max_eval_samples))
    if cfg.out:
        print(f"wrote {cfg.out}/compare.{{csv,md,json,png}}")
    return 0
