"""Runs: one per output folder, exact resume (and none with another config), divergence stops,
``eval`` refuses data with other classes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import minilg.train
from minilg.cli import main
from minilg.errors import NothingToResumeError, RunLockedError, TrainingDivergedError
from minilg.train import TrainConfig, load_model, train
from minilg.training import checkpoint as ckpt
from minilg.training.rundir import LOCK_FILE, run_lock

TINY: dict[str, Any] = dict(
    model="swin_mini", model_kwargs={"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]},
    epochs=2, batch_size=32, max_train_samples=96, max_eval_samples=32, threads=1,
    verbose=False,
)


def tiny(**overrides: Any) -> TrainConfig:
    return TrainConfig(**{**TINY, **overrides})


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


# ----------------------------------------------------------------------------- one run per folder
def test_a_folder_in_use_is_refused_and_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with run_lock(out):  # another run holds the folder
        with pytest.raises(RunLockedError, match=f"{out} is in use by another minilg run"):
            train(tiny(out=str(out), stop_after=1))
        assert _files(out) == {}  # the refused run wrote nothing
    result = train(tiny(out=str(out), stop_after=1))  # released: the folder is usable again
    assert len(result.history) == 1


def test_two_concurrent_runs_into_one_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    results: dict[str, Any] = {}

    def first() -> None:
        results["first"] = train(tiny(out=str(out), epochs=3))

    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.monotonic() + 120
    while not (out / "config.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.02)  # the first run holds the lock and is training now
    with pytest.raises(RunLockedError):
        train(tiny(out=str(out), epochs=3))
    thread.join()
    assert [r["epoch"] for r in results["first"].history] == [1, 2, 3]
    model, _ = load_model(out)  # the first run's result, verified, untouched
    ref = results["first"].model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_the_lock_of_a_killed_process_is_not_stuck(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from filelock import FileLock; "
         f"lock = FileLock({str(out / LOCK_FILE)!r}); lock.acquire(); "
         "print('locked', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        assert main(["train", "--out", str(out), "--epochs", "1", "--max-train-samples", "32",
                     "--batch-size", "32", "--no-verbose"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is in use by another minilg run" in err
    finally:
        holder.kill()  # SIGKILL: the holder never releases the lock itself
        holder.wait()
    assert len(train(tiny(out=str(out), stop_after=1)).history) == 1


def test_resume_needs_something_to_resume(tmp_path: Path) -> None:
    with pytest.raises(NothingToResumeError, match="nothing to resume"):
        train(tiny(out=str(tmp_path), resume=True))
    assert not (tmp_path / "config.json").exists()  # it stopped; it did not start afresh


# ----------------------------------------------------------------------------- resume
# 128 training and 64 validation images, as the trainer's own tests
RESUME: dict[str, Any] = dict(max_train_samples=128, max_eval_samples=64)


def test_kill_and_resume_is_bit_identical(tmp_path: Path) -> None:
    # drop-path and mixup exercise the global RNG and the data generator
    kw = dict(epochs=3, drop_path=0.2, mixup=0.2, label_smoothing=0.1, **RESUME)
    full = train(tiny(out=str(tmp_path / "full"), **kw))

    stopped = train(tiny(out=str(tmp_path / "split"), stop_after=1, **kw))  # "killed" here
    assert len(stopped.history) == 1
    with pytest.raises(FileExistsError):  # a second fresh run must not clobber it
        train(tiny(out=str(tmp_path / "split"), **kw))
    resumed = train(tiny(out=str(tmp_path / "split"), resume=True, **kw))

    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    keys = ("step", "lr", "train_loss", "val_loss", "val_top1")
    assert [[r[k] for k in keys] for r in full.history] == [
        [r[k] for k in keys] for r in resumed.history
    ]
    # the files on disk agree as well
    rows = json.loads((tmp_path / "split" / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert (tmp_path / "split" / "metrics.csv").read_text().count("\n") == 4
    assert (tmp_path / "split" / "curves.png").stat().st_size > 1000
    reloaded, cfg = load_model(tmp_path / "split")
    assert cfg is not None and cfg.epochs == 3
    for k, v in reloaded.state_dict().items():
        assert torch.equal(v, a[k]), k


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    train(tiny(out=str(tmp_path), epochs=2, stop_after=1, **RESUME))
    with pytest.raises(ValueError, match="lr"):
        train(tiny(out=str(tmp_path), epochs=2, lr=0.5, resume=True, **RESUME))


# ----------------------------------------------------------------------------- divergence
def _poison_loss_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    real = torch.nn.functional.cross_entropy
    seen = [0]

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        loss = real(*args, **kwargs)
        if kwargs.get("reduction", "mean") != "mean":  # evaluation: leave it alone
            return loss
        seen[0] += 1
        return loss * float("nan") if seen[0] > calls else loss

    monkeypatch.setattr(minilg.train.F, "cross_entropy", poisoned)


def test_divergence_stops_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    _poison_loss_after(monkeypatch, 4)  # 3 steps per epoch: NaN from the 2nd step of epoch 2
    with pytest.raises(TrainingDivergedError) as info:
        train(tiny(out=str(out), epochs=3))
    msg = str(info.value)
    assert msg.startswith("training diverged: the loss became NaN or infinite in epoch 2 (by "
                          "step 6, lr ")
    assert f"the last good checkpoint (epoch 1) in {out} is kept" in msg
    assert ckpt.latest_checkpoint(out) == out / "checkpoints" / "epoch-0001"
    model, _ = load_model(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # the command line: one line, exit code 3, nothing saved from the diverged epoch
    _poison_loss_after(monkeypatch, 0)
    capsys.readouterr()
    code = main(["train", "--out", str(tmp_path / "cli"), "--epochs", "2", "--batch-size", "32",
                 "--max-train-samples", "64", "--max-eval-samples", "32", "--threads", "1",
                 "--model-kwargs", '{"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]}',
                 "--no-verbose"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "nothing was saved" in err, err
    assert not ckpt.has_checkpoint(tmp_path / "cli")


# ----------------------------------------------------------------------------- eval and classes
def test_eval_refuses_data_with_other_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train(tiny(out=str(out), epochs=1))
    root = tmp_path / "three"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in ("n01", "n02", "n03"):
            (root / split / wnid).mkdir(parents=True)
            for j in range(2):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{j}.png")
    capsys.readouterr()
    code = main(["eval", "--checkpoint", str(out), "--data", "imagefolder", "--root", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "was trained on 10 classes (dash_same, dash_opposite, bar_same, ...) but imagefolder " \
           "val has 3 (n01, n02, n03, ...)" in err
    assert main(["eval", "--checkpoint", str(out), "--max-eval-samples", "16", "--json"]) == 0
    assert '"n": 16.0' in capsys.readouterr().out
