"""Runs: one per output folder, nothing deleted that a command did not create, divergence stops,
``eval`` refuses data with other classes, old checkpoints are not overwritten."""

from __future__ import annotations

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

import minilg
import minilg.train
from minilg.cli import main
from minilg.errors import (
    CheckpointError,
    NothingToResumeError,
    RunExistsError,
    RunLockedError,
    TrainingDivergedError,
)
from minilg.train import TrainConfig, load_model, train
from minilg.training import checkpoint as ckpt
from minilg.training.compare import compare
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


def test_an_old_two_file_checkpoint_is_neither_resumed_nor_overwritten(tmp_path: Path) -> None:
    model = minilg.create_model("swin_mini", num_classes=10, img_size=32, **TINY["model_kwargs"])
    meta = {"model": "swin_mini", "num_classes": "10", "img_size": "32",
            "model_kwargs": '{"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]}'}
    ckpt.save_weights(tmp_path / ckpt.WEIGHTS_FILE, model, meta)
    (tmp_path / ckpt.STATE_FILE).write_bytes(b"old state")
    before = _files(tmp_path)
    with pytest.raises(CheckpointError, match="old two-file layout"):
        train(tiny(out=str(tmp_path), resume=True))
    with pytest.raises(RunExistsError, match="already holds a checkpoint"):
        train(tiny(out=str(tmp_path)))
    assert _files(tmp_path) == before
    loaded, _ = load_model(tmp_path)  # still usable for eval
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


# ----------------------------------------------------------------------------- compare
def test_compare_never_replaces_a_run_it_did_not_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standalone = tmp_path / "cmp" / "swin_mini"
    train(tiny(out=str(standalone), stop_after=1))
    before = _files(standalone)
    with pytest.raises(RunExistsError, match="compare did not create"):
        compare(["swin_mini"], tiny(epochs=1), tmp_path / "cmp")
    capsys.readouterr()
    code = main(["compare", "--models", "swin_mini", "--out", str(tmp_path / "cmp"),
                 "--model-kwargs", '{"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]}'])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "compare did not create" in err
    assert _files(standalone) == before


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



