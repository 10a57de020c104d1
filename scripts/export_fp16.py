"""Store a run's weights in fp16 for shipping (notebook 07's checkpoint; run offline).

    .venv/bin/python scripts/export_fp16.py RUN_DIR data/checkpoints/NAME.safetensors [--old-keys]

Keeps the run's safetensors metadata (model name, classes, image size: what
`minilg.train.load_model` needs) and adds where the weights came from. `--old-keys` renames the
block keys of runs saved before the core's second edition (`stages.S.B.` -> `stages.S.blocks.B.`;
nothing else changed names in the mini models).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from minilg.training.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from minilg.training.weights import read_weights_metadata


def main(run_dir: str, out: str, *flags: str) -> int:
    weights = Path(run_dir) / WEIGHTS_FILE
    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v
               for k, v in load_file(str(weights)).items()}
    if "--old-keys" in flags:
        tensors = {re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", k): v
                   for k, v in tensors.items()}
    meta = dict(read_weights_metadata(weights))
    config = json.loads((Path(run_dir) / CONFIG_FILE).read_text())
    meta["source"] = (f"python -m minilg compare --models {config['model']} --epochs "
                      f"{config['epochs']} --seed {config['seed']} --threads 1; stored in fp16"
                      + ("; block keys renamed to the second-edition layout"
                         if "--old-keys" in flags else ""))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out, metadata=meta)
    print(f"wrote {out}: {Path(out).stat().st_size / 2**20:.2f} MiB, metadata {meta}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
