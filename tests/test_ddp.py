"""Two-process DDP (gloo, CPU) through ``torchrun`` equals one process with the same global batch.

Both runs draw the same permutation and augment the same global batch from the same seeded
generator; each DDP rank trains on its half, and the averaged gradients equal the single
process's. Drop-path is off (its masks come from per-rank RNGs), mixup is on (it is part of the
shared augmentation).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from minilg.train import TrainConfig, load_model, train

MODEL_KWARGS = {"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]}
COMMON: dict[str, Any] = dict(
    model="swin_mini",
    epochs=2,
    batch_size=32,
    max_train_samples=128,
    max_eval_samples=64,
    drop_path=0.0,
    mixup=0.2,
    lr=2e-3,
    seed=3,
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_process_gloo_ddp_matches_single_process(tmp_path: Path) -> None:
    single = train(
        TrainConfig(**COMMON, model_kwargs=MODEL_KWARGS, threads=1, out=None, verbose=False)
    )

    out = tmp_path / "ddp"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in COMMON.items()]
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
        "-m", "minilg", "train", *args,
        f"--model-kwargs={json.dumps(MODEL_KWARGS)}", f"--out={out}", "--device=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINILG_QUIET": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["info"]["world_size"] == 2
    ddp_model, _ = load_model(out)
    ref = single.model.state_dict()
    for k, v in ddp_model.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-4, atol=1e-5, msg=k)
    for a, b in zip(single.history, metrics["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_top1"] == pytest.approx(b["val_top1"])
