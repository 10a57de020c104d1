"""Markdown tables of a committed bench run, for docs/benchmark.md.

    python scripts/bench_tables.py data/results/08_bench_cpu.json > /tmp/tables.md

Every figure comes from the file: its recorded command, date, CPU, load and rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: str) -> None:
    data = json.loads(Path(path).read_text())
    env = data["environment"]
    load = env["loadavg_1_5_15"], env.get("loadavg_1_5_15_end")
    print(f"Run: `{env['command']}`  \n{env['date']}, torch {env['torch']}, {env['cpu_model']} "
          f"({env['cpu_count']} cores), {env['threads']} thread(s), batch {env['batch']}, "
          f"{env['dtype']}; matmul peak {env['matmul_peak_gflops']:.1f} GFLOP/s; load average "
          f"(1, 5, 15 min) {load[0]} at the start, {load[1]} at the end.  \n"
          f"Note recorded with the run: {env['note']}\n")
    rows = {(r["case"], r["size"], r["path"]): r for r in data["rows"]}
    print("| case | map | GMACs | fwd ms | straightforward | x | fwd+bwd ms | straightforward "
          "| x | % peak | MiB f+b |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (case, size, kind), r in rows.items():
        if kind != "core":
            continue
        ref = rows.get((case, size, "straightforward"))
        ref_fwd = f"{ref['fwd_ms']:.1f}" if ref else "-"
        ref_fb = f"{ref['fwdbwd_ms']:.1f}" if ref else "-"
        print(f"| {case} | {size} | {r['macs'] / 1e9:.3f} | {r['fwd_ms']:.1f} | {ref_fwd} | "
              f"{r['speedup_fwd']:.2f} | {r['fwdbwd_ms']:.1f} | {ref_fb} | "
              f"{r['speedup_fwdbwd']:.2f} | {100 * r['peak_fraction']:.0f} | "
              f"{r['fwdbwd_mib']:.0f} |")
    print("\n| case | maps | time exponent (fwd) | MACs exponent |")
    print("|---|---|---:|---:|")
    for s in data["scaling"]:
        if s["path"] == "core":
            print(f"| {s['case']} | {s['from']} -> {s['to']} | {s['fwd']:.2f} | {s['macs']:.2f} |")
    print("\n| target | goal | measured | met |")
    print("|---|---|---|---|")
    for t in data["targets"]:
        print(f"| {t['name']} | {t['goal']} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    for note in data["notes"]:
        print(f"\nNote: {note}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/results/08_bench_cpu.json")
