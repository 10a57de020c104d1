"""Markdown tables of committed bench runs, for docs/benchmark.md and the README.

    python scripts/bench_tables.py data/results/bench_cpu_1thread.json \
        data/results/bench_cpu_2threads.json data/results/bench_cpu_exponent.json

Every figure comes from the files: their recorded commands, dates, CPUs, loads, rows, official
comparisons, training steps and targets. First one table of the targets with a column per run,
then each run's own tables. Files of the older schema (``repeats``, no plain baseline) are
refused with one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from minilg.bench import Row
from minilg.bench.report import results_markdown


def header(env: dict[str, Any]) -> str:
    load = env["loadavg_1_5_15"], env.get("loadavg_1_5_15_end")
    return (f"Run: `{env['command']}`  \n{env['date']}, torch {env['torch']}, "
            f"{env['cpu_model']} ({env['cpu_count']} cores), {env['threads']} thread(s), "
            f"batch {env['batch']}, {env['dtype']}, {env['rounds']} paired rounds; matmul peak "
            f"{env['matmul_peak_gflops']:.1f} GFLOP/s; load average (1, 5, 15 min) {load[0]} at "
            f"the start, {load[1]} at the end.  \nNote recorded with the run: {env['note']}")


def x(value: float | None, iqr: list[float] | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} [{iqr[0]:.2f}, {iqr[1]:.2f}]" if iqr else f"{value:.2f}"


def official(data: dict[str, Any]) -> list[str]:
    out = ["| official case | batch | map | official ms | minilg ms | official / minilg "
           "[q1, q3] | max diff |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in data.get("official") or []:
        if r.get("ratio") is None:
            out.append(f"| {r['case']} | {r['batch']} | {r['size']} | - | - | - | {r['note']} |")
            continue
        out.append(f"| {r['case']} | {r['batch']} | {r['size']} | {r['official_ms']:.1f} | "
                   f"{r['minilg_ms']:.1f} | {x(r['ratio'], r['ratio_iqr'])} | "
                   f"{r['max_diff']:.1e} |")
    memory = data.get("official_memory")
    if memory:
        out.append(f"\nMemory, {memory['case']}, batch {memory['batch']}, forward without grad, "
                   f"peak above the input ({memory['input_mib']:.0f} MiB): official "
                   f"{memory['official_mib']:,.0f} MiB, minilg {memory['minilg_mib']:,.0f} MiB "
                   f"({memory['times_below']:.2f}x below).")
    return out


def train_steps(data: dict[str, Any]) -> list[str]:
    steps = data.get("train_step") or []
    if not steps:
        return []
    out = [f"\n| training step (batch {steps[0]['batch']}, {steps[0]['threads']} thread(s)) | ms "
           f"| / {steps[0]['reference']} [q1, q3] |", "|---|---:|---:|"]
    out += [f"| {s['model']} | {s['step_ms']:.1f} | {x(s['vs_reference'], s['vs_reference_iqr'])} |"
            for s in steps]
    return out


def scaling(data: dict[str, Any]) -> list[str]:
    entries = [s for s in data["scaling"] if s["path"] == "core"]
    if not entries:
        return []
    out = ["\n| case | maps | time exponent fwd | fwd+bwd | MACs exponent |",
           "|---|---|---:|---:|---:|"]
    out += [f"| {s['case']} | {s['from']} -> {s['to']} | {s['fwd']:.2f} | {s['fwdbwd']:.2f} | "
            f"{s['macs']:.2f} |" for s in entries]
    return out


def targets(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One row per target (every run lists them in the order of targets.json), one column per
    run; a row is named as the first run that measured it names it."""
    rows: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    for column, (_, data) in enumerate(runs):
        for index, t in enumerate(data["targets"]):
            cells = rows.setdefault(index, ["not measured"] * len(runs))
            if t["met"] is None:
                names.setdefault(index, f"{t['name']} | {t['goal']}")
                continue
            if cells == ["not measured"] * len(runs):
                names[index] = f"{t['name']} | {t['goal']}"
            verdict = "met" if t["met"] else "missed"
            note = f"; {t['note']}" if t.get("note") else ""
            cells[column] = f"{t['measured']} ({verdict}{note})"
    labels = [label for label, _ in runs]
    out = [f"| target | goal | {' | '.join(labels)} |", "|---|---|" + "---|" * len(labels)]
    out += [f"| {names[i]} | {' | '.join(cells)} |" for i, cells in rows.items()]
    return out


def label_of(data: dict[str, Any]) -> str:
    env = data["environment"]
    sizes = "-".join(str(s) for s in env["sizes"])
    return f"{env['threads']} thread(s), batch {env['batch']}, maps {sizes}"


def main(paths: list[str]) -> int:
    runs = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if "rounds" not in data["environment"]:
            print(f"bench_tables: {path} is of the older schema (no paired rounds); "
                  "make it again with python -m minilg bench", file=sys.stderr)
            return 2
        runs.append((label_of(data), data))
    print("\n".join(targets(runs)))
    for label, data in runs:
        print(f"\n### {label}\n\n{header(data['environment'])}\n")
        rows = [Row(**r) for r in data["rows"]]  # bench.md's table, from the stored rows
        print(results_markdown(rows, data["scaling"]))
        print("\n".join(scaling(data)))
        if data.get("official"):
            print("\n" + "\n".join(official(data)))
        print("\n".join(train_steps(data)))
        for note in data["notes"]:
            print(f"\nNote: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["data/results/bench_cpu_1thread.json"]))
