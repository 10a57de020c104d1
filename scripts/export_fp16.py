"""Store a run's weights in fp16 for shipping (notebook 07's checkpoint; run offline).

    .venv/bin/python scripts/export_fp16.py RUN data/checkpoints/NAME.safetensors

RUN is a run folder (its current checkpoint is taken), a checkpoint folder or a weights file.
Keeps the weights' safetensors metadata (model name, classes, image size: what
`minilg.train.load_model` needs), adds where the weights came from, and writes fresh checksums
(the tensors are now fp16), so the file loads and verifies like any checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from minilg.io import atomic_write_bytes
from minilg.training.loading import locate_checkpoint
from minilg.training.weights import metadata_digest, read_weights_metadata, tensors_digest

CHECKSUMS = ("tensors_sha256", "metadata_sha256")


def main(run: str, out: str) -> int:
    weights, config = locate_checkpoint(run)
    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v
               for k, v in load_file(str(weights)).items()}
    meta = {k: v for k, v in read_weights_metadata(weights).items() if k not in CHECKSUMS}
    if config is not None:
        meta["source"] = (f"python -m minilg compare --models {config['model']} --data "
                          f"{config['data']} --seed {config['seed']} (epochs {config['epochs']}, "
                          f"{config['max_train_samples']} training images); stored in fp16")
    meta["tensors_sha256"] = tensors_digest(tensors)
    meta["metadata_sha256"] = metadata_digest(meta)
    atomic_write_bytes(out, lambda: save(tensors, metadata=meta))
    print(f"wrote {out}: {Path(out).stat().st_size / 2**20:.2f} MiB from {weights}, "
          f"source: {meta.get('source', 'unknown')}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} RUN OUT.safetensors")
    raise SystemExit(main(*sys.argv[1:]))
