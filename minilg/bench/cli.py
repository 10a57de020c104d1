"""The ``bench`` verb: its options (:func:`add_arguments`) and the run (:func:`run`).

The command line (:mod:`minilg.cli`) builds the verb's parser, hands it to
:func:`add_arguments`, and calls :func:`run` with the parsed options; an expected failure is a
:class:`~minilg.bench.settings.BenchError` (one ``error:`` line, exit 2).
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from minilg.bench.breakdown import breakdown
from minilg.bench.cases import Case, discover_cases
from minilg.bench.memory import block_memory, estimated_bytes
from minilg.bench.official import run_official
from minilg.bench.report import (
    breakdown_table,
    check_out,
    environment,
    official_table,
    print_report,
    train_step_table,
    write_outputs,
)
from minilg.bench.settings import DTYPES, PATHS, BenchError, Settings
from minilg.bench.targets import evaluate
from minilg.bench.timing import Row, matmul_peak, measure, scaling
from minilg.bench.train_step import train_steps
from minilg.io import progress

__all__ = ["DEFAULT_SIZES", "DESCRIPTION", "add_arguments", "check_memory", "command_line",
           "machine_memory", "run", "run_all", "settings_from"]

DESCRIPTION = (
    "Exact MACs, forward and forward+backward time, GFLOP/s against a matmul peak, peak memory "
    "and time scaling of every mixer, beside a plain implementation of the same math (and the "
    "older straightforward one), in paired rounds of rotated order; optionally training steps "
    "of the mini models and the official code (--official DIR). Nothing is asserted: the "
    "figures are this machine's."
)
DEFAULT_SIZES = (28, 56, 112, 224)

#: ``(flag, argparse keywords)`` of every option, in the order of ``--help``.
OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--device", {"default": "cpu", "help": "cpu, cuda or cuda:N (default cpu)"}),
    ("--dtype", {"default": "float32", "choices": list(DTYPES)}),
    ("--batch", {"type": int, "default": 8}),
    ("--sizes", {"type": int, "nargs": "+", "default": list(DEFAULT_SIZES),
                 "help": "square map sides"}),
    ("--threads", {"type": int, "default": 1, "help": "torch.set_num_threads (default 1)"}),
    ("--rounds", {"type": int, "default": 9, "help": "paired rounds: each times every path "
                  "once, in rotated order (default 9); ratios are medians of per-round ratios"}),
    ("--warmup", {"type": int, "default": 2, "help": "untimed runs first"}),
    ("--families", {"nargs": "+",
                    "help": "model families (default: every registered family)"}),
    ("--mixers", {"nargs": "+",
                  "help": "mixer names, e.g. W-MSA SW-MSA GG-MSA (default: all)"}),
    ("--stages", {"type": int, "nargs": "+", "default": [1],
                  "help": "1-based stages (default 1)"}),
    ("--memory-limit", {"type": float, "default": 4.0, "help": "GiB of score tensors above "
                        "which a configuration is skipped (default 4)"}),
    ("--block-memory", {"action": "store_true", "help": "also measure the stage-1 SW block's "
                        "forward memory at --block-batch"}),
    ("--block-batch", {"type": int, "default": 128}),
    ("--peak-n", {"type": int, "default": 1024, "help": "side of the fp32 matmul peak, timed "
                  "once per round with the cases (default 1024)"}),
    ("--no-extras", {"action": "store_true", "help": "leave out the mixers built alone at C 96 "
                     "(MSA; SALG at p = 1 and 2)"}),
    ("--no-straightforward", {"action": "store_true", "help": "time the core and the plain "
                              "baseline only (not the older straightforward path)"}),
    ("--train-step", {"action": "store_true", "help": "also time a training step of "
                      "focal_mini, salg_mini, hat_net_mini against swin_mini's"}),
    ("--train-batch", {"type": int, "default": 64}),
    ("--official", {"type": Path, "metavar": "DIR", "help": "a folder holding checkouts of "
                    "Swin-Transformer, Focal-Transformer and/or HAT-Net: time their modules "
                    "beside minilg's with the same weights (outputs checked equal first)"}),
    ("--official-memory-batch", {"type": int, "default": 128, "help": "batch of the SW-MSA "
                                 "memory comparison with --official (0: skip)"}),
    ("--official-only", {"action": "store_true", "help": "with --official: no mixer cases, "
                         "only the official comparison (and --train-step, --block-memory)"}),
    ("--official-models", {"action": "store_true", "help": "with --official: also the whole "
                           "Tiny models on 224 px images"}),
    ("--breakdown", {"action": "store_true", "help": "also profile each configuration's whole "
                     "block (forward, no grad): time and exact MACs per category (projections, "
                     "attention, bias & masks, gather/pool, convolution, MLP, norms, "
                     "residual/other, overhead)"}),
    ("--note", {"default": "",
                "help": "a free-text note stored with the results (e.g. the load)"}),
    ("--out", {"type": Path, "default": Path("runs/bench")}),
)


#: Older spellings still accepted: ``--repeats`` was the number of (unpaired) timed runs.
ALIASES = {"--rounds": ("--repeats",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m minilg bench``."""
    for flag, keywords in OPTIONS:
        parser.add_argument(flag, *ALIASES.get(flag, ()), **keywords)


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def command_line(args: argparse.Namespace) -> str:
    """The command that repeats this run: ``python -m minilg bench`` and every option whose
    value differs from its default, in the order of ``--help``."""
    words = ["python", "-m", "minilg", "bench"]
    for flag, keywords in OPTIONS:
        value = getattr(args, _dest(flag))
        store_true = keywords.get("action") == "store_true"
        if value == keywords.get("default", False if store_true else None):
            continue
        if store_true:
            words.append(flag)
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def settings_from(args: argparse.Namespace) -> Settings:
    """The run's settings; a :class:`BenchError` names a bad option."""
    positive = {"--batch": [args.batch], "--sizes": args.sizes, "--threads": [args.threads],
                "--rounds": [args.rounds], "--stages": args.stages,
                "--block-batch": [args.block_batch], "--peak-n": [args.peak_n],
                "--train-batch": [args.train_batch]}
    for option, values in positive.items():
        if any(v < 1 for v in values):
            raise BenchError(f"{option} must be positive integers, got {values}")
    if args.warmup < 0 or args.memory_limit <= 0 or args.official_memory_batch < 0:
        raise BenchError("--warmup and --official-memory-batch must be >= 0 and --memory-limit "
                         "> 0 (GiB)")
    if args.official is not None and not args.official.is_dir():
        raise BenchError(f"--official must be a folder holding official checkouts, got "
                         f"{args.official}")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise BenchError(f"--device {args.device!r} is not a device (cpu, cuda, cuda:N)") from e
    if device.type not in {"cpu", "cuda"}:
        raise BenchError(f"--device must be cpu or cuda, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {args.device}: CUDA is not available in this torch build")
    return Settings(device, DTYPES[args.dtype], args.batch, args.rounds, args.warmup,
                    args.threads)


def _skip_note(case: Case, size: int, args: argparse.Namespace, settings: Settings) -> str:
    """Why ``case`` at ``size`` is not attempted (``""`` if it is): the mixer refuses the size,
    or the straightforward version's score tensors exceed ``--memory-limit``."""
    try:
        scores, how = estimated_bytes(case.mixer, settings.batch, size, settings.dtype)
    except ValueError as e:  # the mixer refuses this size or input
        return f"{case.name} @ {size}: skipped, {e}"
    if scores <= args.memory_limit * 2**30:
        return ""
    return (f"{case.name} @ {size}: skipped, straightforward scores need "
            f"{scores / 2**30:.1f} GiB > --memory-limit {args.memory_limit:g} GiB"
            + (f" ({how})" if how else ""))


def machine_memory(device: torch.device) -> int:
    """Bytes of memory the measurements can use: the GPU's, or the machine's RAM (0: unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_memory(cases: Sequence[Case], args: argparse.Namespace, settings: Settings) -> None:
    """Before any measurement: BenchError when a configuration that ``--memory-limit`` lets
    through needs (by the estimate of :func:`estimated_bytes`) more than the machine has."""
    machine = machine_memory(settings.device)
    for case in cases:
        for size in args.sizes:
            if not machine or _skip_note(case, size, args, settings):
                continue
            scores, _ = estimated_bytes(case.mixer, settings.batch, size, settings.dtype)
            if scores > machine:
                raise BenchError(
                    f"{case.name} @ {size} (--batch {settings.batch}): the straightforward "
                    f"version's scores need an estimated {_size(scores)}, more than this "
                    f"machine's {_size(machine)} ({settings.device.type}); lower "
                    f"--memory-limit (now {args.memory_limit:g} GiB), --batch or --sizes"
                )


def run_all(
    cases: Sequence[Case], args: argparse.Namespace, settings: Settings, peak: float
) -> tuple[list[Row], list[str], list[dict[str, Any]]]:
    """Measure every (case, size) within the memory limit; notes for the ones skipped; with
    ``--breakdown`` the block's breakdown of every configuration measured."""
    rows: list[Row] = []
    notes: list[str] = []
    breakdowns: list[dict[str, Any]] = []
    configs = [(case, size) for case in cases for size in args.sizes]
    paths = [p for p in PATHS if not (args.no_straightforward and p == "straightforward")]
    for case, size in progress(configs, desc="bench", unit="cfg"):
        note = _skip_note(case, size, args, settings)
        if note:
            notes.append(note)
            continue
        try:
            rows.extend(measure(case, size, settings, args.peak_n, paths))
            if args.breakdown and case.block_module is not None:
                breakdowns.append(breakdown(case, size, settings))
        except (ValueError, torch.OutOfMemoryError) as e:
            notes.append(f"{case.name} @ {size}: skipped, {type(e).__name__}: {e}")
            if settings.device.type == "cuda":
                torch.cuda.empty_cache()
    return rows, notes, breakdowns


def _print_header(env: dict[str, Any], settings: Settings, cases: Sequence[Case]) -> None:
    print(f"minilg bench: torch {env['torch']}, {settings.device} {env['gpu'] or ''}"
          f" dtype {env['dtype']}, batch {settings.batch}, threads {settings.threads}, "
          f"{settings.repeats} paired rounds in rotated order after {settings.warmup} warm-up; "
          f"load average {env['loadavg_1_5_15']}")
    print(f"matmul peak (fp32, n={env['matmul_peak_n']}): {env['matmul_peak_gflops']:.1f} "
          "GFLOP/s at the start, then timed in every round (%peak uses the configuration's "
          "own);\nGMACs per image; x = plain / core, median of per-round ratios [q1, q3]; "
          "sf = straightforward; IQR% = largest spread of the timings;\n"
          "diff = max|path - core| / max(1, max|core|), the largest over the paths\n")
    if any(case.model.endswith("*") for case in cases):
        print("* a family with only mini models, rebuilt in Swin-T's frame (C 96, 3 heads)\n")


def _peak_after(env: dict[str, Any], rows: Sequence[Row], args: argparse.Namespace,
                settings: Settings) -> None:
    """Measure the matmul peak again after the cases; record it beside the one before, the
    peaks timed in the rounds of every configuration, and the load average at the end."""
    peak = env["matmul_peak_gflops"]
    after = matmul_peak(settings.device, args.peak_n, settings.repeats, settings.warmup)
    env["matmul_peak_gflops_before_after"] = [peak, after]
    env["matmul_peak_gflops_in_rounds"] = list(
        {(r.case, r.size): r.peak_gflops for r in rows}.values())
    if hasattr(os, "getloadavg"):
        env["loadavg_1_5_15_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"matmul peak after the cases: {after:.1f} GFLOP/s; load average at the end "
          f"{env.get('loadavg_1_5_15_end')}")


def bench(args: argparse.Namespace, settings: Settings, command: str) -> int:
    """Discover, measure, print and write; returns the exit code."""
    if args.official_only and args.official is None:
        raise BenchError("--official-only needs --official DIR")
    cases = ([] if args.official_only else
             discover_cases(args.families, args.mixers, args.stages, extras=not args.no_extras))
    if not cases and not args.official_only:
        raise BenchError(f"no mixer matches --families {args.families} --mixers {args.mixers} "
                         f"--stages {args.stages}")
    for case in cases:
        (case.block_module or case.mixer).to(device=settings.device, dtype=settings.dtype)
    check_memory(cases, args, settings)
    peak = matmul_peak(settings.device, args.peak_n, settings.repeats, settings.warmup)
    env = environment(settings, peak, args, command)
    _print_header(env, settings, cases)
    rows, notes, breakdowns = run_all(cases, args, settings, peak)
    blocks = block_memory(settings, args.block_batch) if args.block_memory else []
    steps = train_steps(settings, args.train_batch) if args.train_step else []
    official: list[dict[str, Any]] = []
    memory: dict[str, Any] | None = None
    if args.official is not None:
        official, memory, more = run_official(args.official, settings,
                                              args.official_memory_batch, args.official_models)
        notes.extend(more)
    _peak_after(env, rows, args, settings)
    exponents = scaling(rows)
    targets = evaluate(rows, settings, blocks, steps, official, memory)
    if steps:
        print(train_step_table(steps))
    if official:
        print(official_table(official, memory))
    print_report(rows, notes, blocks, targets, exponents)
    if breakdowns:
        print("\nWhere the block's forward spends its time (ms; MACs %), --breakdown:")
        print(breakdown_table(breakdowns))
    payload = {"environment": env, "scaling": exponents, "block_memory": blocks,
               "targets": [asdict(t) for t in targets], "notes": list(notes),
               "breakdown": breakdowns, "train_step": steps, "official": official,
               "official_memory": memory}
    written = write_outputs(args.out, payload, rows)
    print(f"\nwrote {', '.join(str(p) for p in written)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """``python -m minilg bench``: validate the options, run with ``--threads`` (restored
    after), print and write the results; expected failures raise :class:`BenchError`."""
    settings = settings_from(args)
    check_out(args.out)  # before any measurement: the results are never lost at the end
    command = command_line(args)
    args = argparse.Namespace(**{**vars(args), "sizes": sorted(set(args.sizes))})
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return bench(args, settings, command)
    except OSError as e:
        raise BenchError(f"cannot write the results: {e}") from e
    finally:
        torch.set_num_threads(threads)
