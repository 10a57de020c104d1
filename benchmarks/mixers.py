"""Speed (and, on CUDA, peak memory) of every attention mixer at several map sizes.

    python benchmarks/mixers.py                      # CPU, C=96, 3 heads, maps 28..112
    python benchmarks/mixers.py --device cuda --sizes 56 112 224 --batch 8

On a shared machine, OpenMP threads waiting for a busy core can dominate small ops: compare
with ``--threads 1``.

Prints one row per (mixer, size): exact MACs (closed form), forward and forward+backward time
(median of --repeats runs after a warm-up), and peak memory on CUDA. Figures are for the machine
you run it on; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from minilg.attention import FullAttention, SpatialReductionAttention, WindowAttention
from minilg.attention.base import TokenMixer
from minilg.attention.glance_gaze import GlanceGazeAttention, adaptive_gaze_kernel


def mixers(dim: int, heads: int, size: int) -> dict[str, Callable[[], TokenMixer]]:
    return {
        "MSA": lambda: FullAttention(dim, heads),
        "W-MSA (M=7)": lambda: WindowAttention(dim, heads, 7),
        "SW-MSA (M=7)": lambda: WindowAttention(dim, heads, 7, shift=3),
        "SRA (R=4)": lambda: SpatialReductionAttention(dim, heads, 4),
        "GG-MSA (M=7, k=3)": lambda: GlanceGazeAttention(dim, heads, 7, 3),
        "GG-MSA (M=7, adaptive)": lambda: GlanceGazeAttention(
            dim, heads, 7, adaptive_gaze_kernel((size, size), 7)
        ),
    }


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 56, 112])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--max-msa-tokens", type=int, default=4096,
                        help="skip full MSA above this many tokens (its N^2 matrix)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device={device} C={args.dim} heads={args.heads} batch={args.batch} "
          f"threads={torch.get_num_threads()}  (MACs: one image, closed form)")
    print(f"{'mixer':<24}{'map':>9}{'GMACs':>9}{'fwd ms':>10}{'fwd+bwd ms':>12}{'peak MiB':>10}")
    for size in args.sizes:
        for name, build in mixers(args.dim, args.heads, size).items():
            if name == "MSA" and size * size > args.max_msa_tokens:
                print(f"{name:<24}{f'{size}x{size}':>9}   skipped (N={size * size} tokens)")
                continue
            mixer = build().to(device)
            x = torch.randn(args.batch, size, size, args.dim, device=device, requires_grad=True)

            def forward(mixer: TokenMixer = mixer, x: torch.Tensor = x) -> None:
                with torch.no_grad():
                    mixer(x)

            def forward_backward(mixer: TokenMixer = mixer, x: torch.Tensor = x) -> None:
                mixer(x).sum().backward()

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            fwd = timed(forward, device, args.repeats)
            both = timed(forward_backward, device, args.repeats)
            peak = (f"{torch.cuda.max_memory_allocated(device) / 2**20:10.0f}"
                    if device.type == "cuda" else f"{'n/a':>10}")
            print(f"{name:<24}{f'{size}x{size}':>9}{mixer.macs(size, size) / 1e9:9.3f}"
                  f"{fwd * 1e3:10.1f}{both * 1e3:12.1f}{peak}")


if __name__ == "__main__":
    main()
