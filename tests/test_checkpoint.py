"""Checkpoints survive kills and full disks, and a damaged one is named, file by file.

* every write step of a save is interrupted in turn (30 injected kills) and the run folder must
  then hold a complete checkpoint, the old or the new one, and accept the next save;
* 20 real ``SIGKILL``s at random moments of a process that saves in a loop;
* a full disk (``OSError(ENOSPC)``) at every file of the unit;
* a real run killed while saving, then failing on a full disk, then resumed: bit-identical to an
  uninterrupted run;
* the atomic file write every single file of a run goes through.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import minilg.training.checkpoint as ckpt
from minilg.cli import main
from minilg.errors import CheckpointError
from minilg.io import atomic_write_bytes
from minilg.train import TrainConfig, load_model, train


class Kill(BaseException):
    """Stands for SIGKILL: not an Exception, so no ``except Exception`` cleanup runs."""


def _model(epoch: int) -> nn.Module:
    m = nn.Linear(64, 32)
    with torch.no_grad():
        m.weight.fill_(float(epoch))
        m.bias.fill_(-float(epoch))
    return m


def _save(run_dir: Path, epoch: int) -> Path:
    state = {"epoch": epoch, "step": 10 * epoch, "history": [{"epoch": e} for e in range(epoch)],
             "payload": torch.full((20_000,), float(epoch))}
    meta = {"model": "linear", "num_classes": "32", "img_size": "8"}
    return ckpt.save_checkpoint(run_dir, _model(epoch), state, meta, {"model": "linear"})


def _load(run_dir: Path) -> tuple[int, nn.Module]:
    model = nn.Linear(64, 32)
    state = ckpt.load_checkpoint(run_dir, model)
    epoch = int(state["epoch"])
    assert state["step"] == 10 * epoch and torch.equal(state["payload"], torch.full((20_000,),
                                                                                     float(epoch)))
    assert torch.equal(model.weight, torch.full((32, 64), float(epoch)))
    assert torch.equal(model.bias, torch.full((32,), -float(epoch)))
    return epoch, model


def _contents(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / ckpt.CHECKPOINTS_DIR).iterdir())


def _crash_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(ckpt, "_crash_point", seen.append)
    _save(tmp_path / "probe", 1)
    _save(tmp_path / "probe", 2)
    monkeypatch.undo()
    return list(dict.fromkeys(seen))  # in order, once each


def test_the_save_has_the_expected_write_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _crash_points(tmp_path, monkeypatch) == [
        "write model.safetensors", "write train_state.pt", "write manifest.json", "rename",
        "write LATEST", "replace LATEST", "remove-previous",
    ]


def _kill_at_step(name: str) -> Any:
    def hook(point: str) -> None:
        if point == name:
            raise Kill(point)

    return hook


def _kill_mid_file(fname: str) -> Any:
    real = ckpt._write_synced

    def torn(path: Path, data: bytes) -> None:
        if path.name == fname:
            real(path, data[: len(data) // 2])  # half the file reached the disk
            raise Kill(f"torn {fname}")
        real(path, data)

    return torn


def _trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any, Any]]:
    for point in _crash_points(tmp_path, monkeypatch):
        yield point, "_crash_point", _kill_at_step(point)
    for fname in (ckpt.WEIGHTS_FILE, ckpt.STATE_FILE, ckpt.MANIFEST_FILE):
        yield f"torn {fname}", "_write_synced", _kill_mid_file(fname)


def test_a_kill_between_any_two_write_steps_leaves_a_complete_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trials = 0
    for point, attr, injected in _trials(tmp_path, monkeypatch):
        for done in (1, 2, 3):  # epochs saved before the interrupted save of epoch done + 1
            run = tmp_path / f"{point.replace(' ', '_')}-{done}"
            for e in range(1, done + 1):
                _save(run, e)
            with monkeypatch.context() as m:
                m.setattr(ckpt, attr, injected)
                with pytest.raises(Kill):
                    _save(run, done + 1)
            # "restart": the folder holds exactly one complete checkpoint, old or new
            expected = done + 1 if point == "remove-previous" else done
            assert ckpt.latest_checkpoint(run) == run / "checkpoints" / f"epoch-{expected:04d}"
            ckpt.clean_orphans(run)
            assert _contents(run) == ["LATEST", f"epoch-{expected:04d}"], point
            assert _load(run)[0] == expected, point
            _save(run, expected + 1)  # and the run goes on
            assert _load(run)[0] == expected + 1
            assert _contents(run) == ["LATEST", f"epoch-{expected + 1:04d}"]
            trials += 1
    assert trials == 30


def _load_latest_name(run: Path) -> str:
    try:
        return (run / ckpt.CHECKPOINTS_DIR / ckpt.LATEST_FILE).read_text().strip()
    except FileNotFoundError:  # between the unlink and the rename of a replace: not on POSIX
        return ""


def test_twenty_real_kills_at_random_moments(tmp_path: Path) -> None:
    """A forked child saves checkpoints in a loop; SIGKILL at a random moment, 20 times."""
    rng = random.Random(0)
    run = tmp_path / "run"
    _save(run, 1)
    epochs, interrupted = [], 0
    for _ in range(20):
        before = _load(run)[0]
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            try:
                e = before
                while True:
                    e += 1
                    _save(run, e)
            finally:
                os._exit(0)
        # wait for the child's first save (machines differ in speed), then kill it at a random
        # moment of the saves that follow back to back
        t0 = time.monotonic()
        while _load_latest_name(run) == f"epoch-{before:04d}" and time.monotonic() - t0 < 60:
            time.sleep(0.001)
        one_save = time.monotonic() - t0
        time.sleep(rng.uniform(0.0, 2.0 * one_save))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        interrupted += bool(ckpt.clean_orphans(run))  # what the next run does first
        after, _ = _load(run)  # verified: checksums and parts agree
        assert after > before  # the child saved at least once in every trial
        assert len(_contents(run)) == 2
        epochs.append(after)
    assert interrupted >= 5  # the kills often hit the middle of a save


@pytest.mark.parametrize("fname", [ckpt.WEIGHTS_FILE, ckpt.STATE_FILE, ckpt.MANIFEST_FILE])
def test_disk_full_keeps_the_previous_checkpoint(
    fname: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _save(tmp_path, 1)
    real = ckpt._write_synced

    def full(path: Path, data: bytes) -> None:
        if path.name == fname:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_synced", full)
    with pytest.raises(CheckpointError) as info:
        _save(tmp_path, 2)
    msg = str(info.value)
    assert "No space left on device" in msg and "the previous checkpoint is intact" in msg
    assert "\n" not in msg
    assert _contents(tmp_path) == ["LATEST", "epoch-0001"]  # no temporary folder left behind
    monkeypatch.undo()
    assert _load(tmp_path)[0] == 1
    _save(tmp_path, 2)
    assert _load(tmp_path)[0] == 2


def test_a_corrupt_file_is_named(tmp_path: Path) -> None:
    folder = _save(tmp_path, 3)
    for fname in (ckpt.WEIGHTS_FILE, ckpt.STATE_FILE):
        original = (folder / fname).read_bytes()
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0xFF
        (folder / fname).write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=f"{fname} is corrupt: its size or sha256"):
            _load(tmp_path)
        (folder / fname).write_bytes(original[:-10])  # truncated
        with pytest.raises(CheckpointError, match=f"{fname} is corrupt"):
            _load(tmp_path)
        (folder / fname).write_bytes(original)
    assert _load(tmp_path)[0] == 3
    (folder / ckpt.MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"manifest\.json is missing"):
        _load(tmp_path)


def _rewrite_state(folder: Path, **changes: Any) -> None:
    """Change the training state and re-sign it in the manifest (parts now disagree)."""
    state = torch.load(folder / ckpt.STATE_FILE, weights_only=True)
    state.update(changes)
    data = ckpt._torch_save_bytes(state)
    (folder / ckpt.STATE_FILE).write_bytes(data)
    manifest = json.loads((folder / ckpt.MANIFEST_FILE).read_text())
    import hashlib

    manifest["files"][ckpt.STATE_FILE] = {"bytes": len(data),
                                          "sha256": hashlib.sha256(data).hexdigest()}
    (folder / ckpt.MANIFEST_FILE).write_text(json.dumps(manifest))


def test_parts_that_disagree_are_named_file_by_file(tmp_path: Path) -> None:
    folder = _save(tmp_path, 2)
    _rewrite_state(folder, step=99, epoch=5)
    with pytest.raises(CheckpointError) as info:
        _load(tmp_path)
    msg = str(info.value)
    assert "is inconsistent" in msg
    assert ("epoch: manifest.json says 2, model.safetensors says 2, train_state.pt says 5"
            in msg)
    assert "step: manifest.json says 20, model.safetensors says 20, train_state.pt says 99" in msg
    # config and model name: the run's config.json against the manifest
    _rewrite_state(folder, step=20, epoch=2)
    model = nn.Linear(64, 32)
    with pytest.raises(CheckpointError) as info:
        ckpt.load_checkpoint(tmp_path, model, config={"model": "other", "lr": 0.1})
    msg = str(info.value)
    assert "model: manifest.json says 'linear', model.safetensors says 'linear', config.json " \
           "says 'other'" in msg
    assert "config: manifest.json says" in msg


def test_a_model_of_another_class_count_is_refused(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    with pytest.raises(CheckpointError, match="does not fit Linear: Error"):
        ckpt.load_checkpoint(tmp_path, nn.Linear(64, 10))


# ----------------------------------------------------------------------------- a real run
TINY: dict[str, Any] = dict(
    model="swin_mini", model_kwargs={"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]},
    epochs=3, batch_size=32, max_train_samples=96, max_eval_samples=32, threads=1,
    verbose=False, drop_path=0.1, mixup=0.2,
)


def test_killed_then_disk_full_then_resumed_is_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full = train(TrainConfig(**TINY, out=str(tmp_path / "full")))
    out = tmp_path / "split"
    train(TrainConfig(**TINY, out=str(out), stop_after=1))
    with monkeypatch.context() as m:  # killed while making epoch 2's checkpoint current
        m.setattr(ckpt, "_crash_point", _kill_at_step("replace LATEST"))
        with pytest.raises(Kill):
            train(TrainConfig(**TINY, out=str(out), resume=True))
    assert ckpt.latest_checkpoint(out) == out / "checkpoints" / "epoch-0001"
    real = ckpt._write_synced

    def full_disk(path: Path, data: bytes) -> None:
        if path.name == ckpt.STATE_FILE:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    with monkeypatch.context() as m:  # then the disk is full when epoch 2 is saved again
        m.setattr(ckpt, "_write_synced", full_disk)
        capsys.readouterr()
        assert main(["train", "--out", str(out), "--resume", "--no-verbose"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "No space left on device" in err, err
        assert "previous checkpoint is intact" in err
    # free space, resume: the same weights as the run that was never interrupted
    resumed = train(TrainConfig(**TINY, out=str(out), resume=True))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["LATEST", "epoch-0003"]
    reloaded, _ = load_model(out)
    assert all(torch.equal(v, a[k]) for k, v in reloaded.state_dict().items())


# ----------------------------------------------------------------------------- single files
def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    atomic_write_bytes(target, b"old")

    def boom() -> bytes:
        raise RuntimeError("killed while serialising")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(target, boom)
    assert target.read_bytes() == b"old"  # previous version intact
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temp file left
