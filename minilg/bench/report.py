"""The benchmark's outputs: the printed tables, and ``bench.{csv,json,md,png}``, ``scaling.csv``
and ``breakdown.csv`` (each written atomically), with how the figures were made (the command,
date, torch version, CPU model, threads, load average and a free note)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from minilg.bench.breakdown import CATEGORIES
from minilg.bench.settings import PATHS, BenchError, Settings
from minilg.bench.targets import Target
from minilg.bench.timing import Row
from minilg.io import atomic_write_text, atomic_write_with

__all__ = ["BENCH_MARKER", "OUTPUT_NAMES", "breakdown_records", "breakdown_table", "check_out",
           "cpu_model", "environment", "plot", "print_report", "results_markdown",
           "results_table", "scaling_table", "write_csv",
           "write_outputs"]


def _path(rows: Sequence[Row], core: Row, path: str) -> Row | None:
    """The row of ``path`` for the same case and map as ``core``."""
    return next((s for s in rows if s.case == core.case and s.size == core.size
                 and s.path == path), None)


def _ms(row: Row | None, attr: str) -> str:
    return "-" if row is None else f"{getattr(row, attr):.2f}"


def _x(value: float, iqr: Sequence[float] = ()) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}" + (f" [{iqr[0]:.2f},{iqr[1]:.2f}]" if len(iqr) == 2 else "")


def results_table(rows: Sequence[Row]) -> str:
    """One line per (case, map): the core beside the plain baseline and the straightforward
    path; ``x`` is plain / core (median of per-round ratios, ``[q1, q3]``), ``sf x`` the same
    against the straightforward path; ``IQR%`` the largest interquartile range of the timings,
    relative to its median."""
    width = max([30, *(len(r.case) + 2 for r in rows)])
    head = (f"{'case':<{width}}{'map':>5}{'GMACs':>8}{'fwd ms':>9}{'plain':>9}{'sf':>9}"
            f"{'x [q1,q3]':>19}{'sf x':>6}{'f+b ms':>9}{'plain':>9}{'sf':>9}{'x [q1,q3]':>19}"
            f"{'sf x':>6}{'GFLOP/s':>9}{'%peak':>7}{'MiB f+b':>9}{'plain':>8}{'IQR%':>6}"
            f"{'diff':>9}")
    lines = [head, "-" * len(head)]
    for r in (r for r in rows if r.path == "core"):
        plain, sf = _path(rows, r, "plain"), _path(rows, r, "straightforward")
        spreads = [s for row in (r, plain, sf) if row is not None
                   for s in (row.fwd_spread, row.fwdbwd_spread)]
        lines.append(
            f"{r.case:<{width}}{r.size:>5}{r.macs / 1e9:>8.3f}{r.fwd_ms:>9.2f}"
            f"{_ms(plain, 'fwd_ms'):>9}{_ms(sf, 'fwd_ms'):>9}"
            f"{_x(r.speedup_fwd, r.speedup_fwd_iqr):>19}{_x(r.vs_straightforward_fwd):>6}"
            f"{r.fwdbwd_ms:>9.2f}{_ms(plain, 'fwdbwd_ms'):>9}{_ms(sf, 'fwdbwd_ms'):>9}"
            f"{_x(r.speedup_fwdbwd, r.speedup_fwdbwd_iqr):>19}"
            f"{_x(r.vs_straightforward_fwdbwd):>6}{r.gflops:>9.1f}{100 * r.peak_fraction:>7.0f}"
            f"{r.fwdbwd_mib:>9.0f}{'-' if plain is None else f'{plain.fwdbwd_mib:.0f}':>8}"
            f"{100 * max(spreads):>6.0f}{r.diff:>9.1e}"
        )
    return "\n".join(lines)


def results_markdown(rows: Sequence[Row], exponents: Sequence[dict[str, Any]]) -> str:
    """The table as markdown (``bench.md``), with the core's forward time exponents."""
    lines = ["| case | map | GMACs | fwd ms | plain | x plain [q1, q3] | x sf | f+b ms | plain "
             "| x plain [q1, q3] | x sf | GFLOP/s | % peak | MiB f+b | exp. fwd |",
             "|---|" + "---:|" * 14]
    for r in (r for r in rows if r.path == "core"):
        plain = _path(rows, r, "plain")
        slope = next((e["fwd"] for e in exponents if e["case"] == r.case and e["path"] == "core"
                      and e["to"] == r.size and e["from"] < r.size), None)
        lines.append(
            f"| {r.case} | {r.size} | {r.macs / 1e9:.3f} | {r.fwd_ms:.1f} | "
            f"{_ms(plain, 'fwd_ms')} | {_x(r.speedup_fwd, r.speedup_fwd_iqr)} | "
            f"{_x(r.vs_straightforward_fwd)} | {r.fwdbwd_ms:.1f} | {_ms(plain, 'fwdbwd_ms')} | "
            f"{_x(r.speedup_fwdbwd, r.speedup_fwdbwd_iqr)} | {_x(r.vs_straightforward_fwdbwd)} "
            f"| {r.gflops:.1f} | {100 * r.peak_fraction:.0f} | {r.fwdbwd_mib:.0f} | "
            f"{'-' if slope is None else f'{slope:.2f}'} |"
        )
    return "\n".join(lines)


def train_step_table(steps: Sequence[dict[str, Any]]) -> str:
    """``--train-step``: each model's step and its ratio to the reference's."""
    lines = [f"\nTraining step (batch {steps[0]['batch']}, {steps[0]['threads']} thread(s)); "
             f"x = step / {steps[0]['reference']}'s, median of per-round ratios [q1, q3]:"]
    for s in steps:
        q1, q3 = s["vs_reference_iqr"]
        lines.append(f"  {s['model']:<16}{s['step_ms']:>10.1f} ms{s['vs_reference']:>8.2f}x "
                     f"[{q1:.2f}, {q3:.2f}]")
    return "\n".join(lines)


def official_table(records: Sequence[dict[str, Any]], memory: dict[str, Any] | None) -> str:
    """``--official``: each case's official and minilg times, their ratio, the output check."""
    lines = ["\nOfficial code beside minilg (same weights; x = official / minilg, median of "
             "per-round ratios [q1, q3]):",
             f"  {'case':<22}{'batch':>6}{'map':>5}{'official ms':>13}{'minilg ms':>11}"
             f"{'x [q1, q3]':>20}{'max diff':>10}"]
    for r in records:
        if r.get("ratio") is None:
            lines.append(f"  {r['case']:<22}{r['batch']:>6}{r['size']:>5}  {r['note']}")
            continue
        x = _x(r["ratio"], r["ratio_iqr"])
        lines.append(f"  {r['case']:<22}{r['batch']:>6}{r['size']:>5}{r['official_ms']:>13.2f}"
                     f"{r['minilg_ms']:>11.2f}{x:>20}{r['max_diff']:>10.1e}")
    if memory is not None:
        lines.append(f"  memory, {memory['case']}, batch {memory['batch']}, no grad, peak above "
                     f"the input: official {memory['official_mib']:,.0f} MiB, minilg "
                     f"{memory['minilg_mib']:,.0f} MiB ({memory['times_below']:.2f}x below)")
    return "\n".join(lines)


def scaling_table(exponents: Sequence[dict[str, Any]]) -> str:
    """One line per (case, path, pair of maps): the exponents of MACs and of time."""
    width = max([30, *(len(e["case"]) + 2 for e in exponents)])
    lines = [f"{'case':<{width}}{'path':<17}{'maps':>11}{'MACs':>7}{'fwd':>7}{'f+b':>7}"]
    for e in exponents:
        maps = f"{e['from']}->{e['to']}"
        lines.append(f"{e['case']:<{width}}{e['path']:<17}{maps:>11}{e['macs']:>7.2f}"
                     f"{e['fwd']:>7.2f}{e['fwdbwd']:>7.2f}")
    return "\n".join(lines)


def breakdown_records(breakdowns: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per (case, map, category): ms, share of the time, MACs, share of MACs."""
    records = []
    for b in breakdowns:
        total_ms, total_macs = sum(b["ms"].values()), b["macs_total"]
        for c in CATEGORIES:
            records.append({"case": b["case"], "size": b["size"], "batch": b["batch"],
                            "category": c, "ms": b["ms"][c], "time_share": b["ms"][c] / total_ms,
                            "macs": b["macs"].get(c, 0),
                            "macs_share": b["macs"].get(c, 0) / total_macs})
    return records


def breakdown_table(breakdowns: Sequence[dict[str, Any]]) -> str:
    """One line per (case, map): ms per category, then the MACs' shares in percent."""
    short = ["proj", "attn", "bias", "gather", "conv", "MLP", "norms", "resid", "ovhd"]
    head = f"{'case':<30}{'map':>5}" + "".join(f"{s:>8}" for s in short) + f"{'total':>8}"
    lines = [head, "-" * len(head)]
    for b in breakdowns:
        ms = "".join(f"{b['ms'][c]:>8.2f}" for c in CATEGORIES)
        lines.append(f"{b['case']:<30}{b['size']:>5}{ms}{sum(b['ms'].values()):>8.2f}")
        share = "".join(f"{100 * b['macs'].get(c, 0) / b['macs_total']:>7.0f}%"
                        for c in CATEGORIES[:-1])
        lines.append(f"{'  MACs':<35}{share}")
    return "\n".join(lines)


def print_report(
    rows: Sequence[Row], notes: Sequence[str], blocks: Sequence[dict[str, Any]],
    targets: Sequence[Target], exponents: Sequence[dict[str, Any]],
) -> None:
    """The printout: results, scaling, block memory, targets, notes."""
    print(results_table(rows))
    print("\nTime exponent in the number of tokens (log-log slope; 'MACs' is the cost's own):")
    print(scaling_table(exponents))
    if blocks:
        print("\nForward without grad, peak memory above the input:")
        for b in blocks:
            print(f"  {b['what']:<26} {b['path']:<16} batch {b['batch']} map {b['size']}: "
                  f"{b['peak_mib']:,.0f} MiB (input {b['input_mib']:,.0f} MiB)")
    print("\nTargets (measured vs target; never asserted):")
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "-"}[t.met]
        extra = f"  [{t.note}]" if t.note else ""
        print(f"  {t.name:<58} {t.goal:<12} {t.measured}  {verdict}{extra}")
    for line in notes:
        print(f"note: {line}")


def write_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """``records`` as CSV (lists joined with ``;``), written atomically; empty if none."""
    text = io.StringIO(newline="")
    if records:
        writer = csv.DictWriter(text, fieldnames=list(records[0]))
        writer.writeheader()
        for record in records:
            writer.writerow({k: ";".join(f"{x:.4f}" for x in v) if isinstance(v, list) else v
                             for k, v in record.items()})
    atomic_write_text(path, text.getvalue())


def plot(rows: Sequence[Row], path: Path) -> bool:
    """Time vs tokens, log-log, one colour per case, core solid and straightforward dashed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    axes = figure.subplots(1, 2)
    cases = list(dict.fromkeys(r.case for r in rows))
    for ax, attr, title in ((axes[0], "fwd_ms", "forward"),
                            (axes[1], "fwdbwd_ms", "forward + backward")):
        for index, case in enumerate(cases):
            for kind, style in zip(PATHS, ("-", "--", ":"), strict=True):
                series = sorted((r for r in rows if r.case == case and r.path == kind),
                                key=lambda r: r.tokens)
                ax.plot([r.tokens for r in series], [getattr(r, attr) for r in series],
                        style, marker="o", color=f"C{index % 10}",
                        label=f"{case} ({kind})")
        ax.set(xscale="log", yscale="log", xlabel="tokens N = H W", ylabel="time (ms)",
               title=title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    figure.suptitle(f"minilg bench: {rows[0].device}, {rows[0].dtype}, batch {rows[0].batch}, "
                    f"{rows[0].threads} thread(s); solid core, dashed plain, dotted "
                    "straightforward")
    atomic_write_with(path, lambda tmp: figure.savefig(tmp, dpi=120))
    return True


# What bench writes in --out, and the marker that says it wrote them there.
OUTPUT_NAMES = ("bench.csv", "scaling.csv", "bench.json", "bench.md", "breakdown.csv",
                "bench.png")
BENCH_MARKER = ".minilg-bench"


def check_out(out: Path) -> None:
    """Before any measurement: ``out`` is a writable folder (or can be made), and the result
    files it holds were written there by bench (its :data:`BENCH_MARKER`); BenchError if not."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder: choose a folder path")
    found = [n for n in OUTPUT_NAMES if os.path.lexists(out / n)]
    if found and not (out / BENCH_MARKER).is_file():
        raise BenchError(f"{out} already holds {', '.join(found)}, which bench did not write "
                         "there: move them away or choose another --out")
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(existing, os.W_OK):
        raise BenchError(f"--out {out}: {existing} is not writable; choose a writable folder")


def write_outputs(out: Path, payload: dict[str, Any], rows: Sequence[Row]) -> list[Path]:
    """``bench.csv``, ``scaling.csv``, ``bench.json``, ``bench.md``, ``bench.png`` under ``out``
    (and ``breakdown.csv`` with ``--breakdown``), with the :data:`BENCH_MARKER`."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / BENCH_MARKER, "written by python -m minilg bench\n")
    records = [asdict(r) for r in rows]
    write_csv(out / "bench.csv", [{k: v for k, v in r.items() if not k.endswith("samples_ms")}
                                  for r in records])
    write_csv(out / "scaling.csv", payload["scaling"])
    atomic_write_text(out / "bench.json", json.dumps({**payload, "rows": records}, indent=1)
                      + "\n")
    atomic_write_text(out / "bench.md", results_markdown(rows, payload["scaling"]) + "\n")
    written = [out / "bench.csv", out / "scaling.csv", out / "bench.json", out / "bench.md"]
    if payload["breakdown"]:
        write_csv(out / "breakdown.csv", breakdown_records(payload["breakdown"]))
        written.append(out / "breakdown.csv")
    if rows and plot(rows, out / "bench.png"):
        written.append(out / "bench.png")
    return written


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment(
    settings: Settings, peak: float, args: argparse.Namespace, command: str
) -> dict[str, Any]:
    """How the figures were made: the command, the machine, the load, the settings."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "loadavg_1_5_15": None if load is None else [round(v, 2) for v in load],
        "note": args.note,
        "device": str(settings.device), "dtype": args.dtype, "batch": settings.batch,
        "threads": settings.threads, "rounds": settings.repeats, "repeats": settings.repeats,
        "warmup": settings.warmup,
        "sizes": args.sizes, "memory_limit_gib": args.memory_limit,
        "matmul_peak_gflops": peak, "matmul_peak_n": args.peak_n,
        "gpu": torch.cuda.get_device_name(settings.device)
        if settings.device.type == "cuda" else None,
    }
