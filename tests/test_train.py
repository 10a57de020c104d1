"""The trainer: schedule, weight-decay groups, short run, exact resume, atomic files, CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import minilg
from minilg.cli import cmd_eval, cmd_train, run_verb
from minilg.errors import ConfigError
from minilg.io import atomic_write_bytes
from minilg.train import (
    TrainConfig,
    load_model,
    lr_at,
    param_groups,
    resolve_crop_scale,
    train,
)

# A very small Swin (shifted windows, relative-position tables, drop-path) on a small subset of
# the embedded data: each run is a couple of seconds on one CPU thread.
TINY: dict[str, Any] = dict(
    model="swin_mini",
    model_kwargs={"dims": [16, 16, 32, 32], "heads": [1, 1, 2, 2]},
    batch_size=32,
    max_train_samples=128,
    max_eval_samples=64,
    threads=1,
    verbose=False,
)


def tiny(**overrides: Any) -> TrainConfig:
    return TrainConfig(**{**TINY, **overrides})


def _train_cli(argv: list[str]) -> int:
    return run_verb(cmd_train, argv)


def _eval_cli(argv: list[str]) -> int:
    return run_verb(cmd_eval, argv)


# ----------------------------------------------------------------------------- schedule
def test_lr_schedule_boundaries() -> None:
    total, warm, lr, min_lr = 100, 10, 1e-3, 1e-5
    assert lr_at(0, total, warm, lr, min_lr) == pytest.approx(lr / warm)  # never starts at 0
    assert lr_at(warm - 1, total, warm, lr, min_lr) == pytest.approx(lr)  # warm-up reaches lr
    assert lr_at(warm, total, warm, lr, min_lr) == pytest.approx(lr)  # cosine starts at lr
    mid = warm + (total - warm) // 2
    assert lr_at(mid, total, warm, lr, min_lr) == pytest.approx((lr + min_lr) / 2)
    assert lr_at(total, total, warm, lr, min_lr) == pytest.approx(min_lr)
    assert lr_at(total + 5, total, warm, lr, min_lr) == pytest.approx(min_lr)  # clamps
    values = [lr_at(s, total, warm, lr, min_lr) for s in range(total)]
    assert all(a < b for a, b in itertools.pairwise(values[:warm]))  # rising warm-up
    assert all(a >= b for a, b in itertools.pairwise(values[warm:]))  # falling cosine
    # no warm-up: cosine from the first step
    assert lr_at(0, total, 0, lr, min_lr) == pytest.approx(lr)
    half = lr * 0.5 * (1 + math.cos(0.5 * math.pi))
    assert lr_at(total // 2, total, 0, lr, 0.0) == pytest.approx(half)


# ----------------------------------------------------------------------------- optimiser groups
@pytest.mark.parametrize("name", ["swin_mini", "deit_mini"])
def test_weight_decay_groups(name: str) -> None:
    model = minilg.create_model(name)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids_decay = {id(p) for p in decay["params"]}
    ids_no = {id(p) for p in no_decay["params"]}
    assert not ids_decay & ids_no
    listed: set[str] = model.no_weight_decay()  # type: ignore[operator]
    assert listed, "the model should list position tables / embeddings"
    for pname, p in model.named_parameters():
        excluded = p.ndim <= 1 or pname in listed
        assert (id(p) in ids_no) == excluded, pname
        if pname.endswith(("bias_table", "pos_embed", "cls_token")) or pname.endswith(".bias"):
            assert id(p) in ids_no, pname
        if pname.endswith(("qkv.weight", "fc1.weight")):
            assert id(p) in ids_decay, pname
    assert len(ids_decay) + len(ids_no) == len(list(model.parameters()))


def test_crop_scale_auto() -> None:
    assert resolve_crop_scale(TrainConfig(data="synthetic")) is None
    assert resolve_crop_scale(TrainConfig(data="imagenette")) == (0.35, 1.0)
    assert resolve_crop_scale(TrainConfig(crop_scale=[0.5, 1])) == (0.5, 1.0)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- training runs
def test_short_run_reduces_loss() -> None:
    # 32 images seen 10 times: the loss must fall well below its starting value (about ln 10)
    result = train(tiny(epochs=10, lr=3e-3, warmup_epochs=1, drop_path=0.0, out=None,
                        max_train_samples=32, label_smoothing=0.0, weight_decay=0.0))
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) == 10
    assert losses[-1] < losses[0] - 0.08, losses
    last = result.final
    assert 0.0 <= last["val_top1"] <= last["val_top5"] <= 100.0
    assert not result.model.training


def test_kill_and_resume_is_bit_identical(tmp_path: Path) -> None:
    # drop-path and mixup exercise the global RNG and the data generator
    kw = dict(epochs=3, drop_path=0.2, mixup=0.2, label_smoothing=0.1)
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
    train(tiny(out=str(tmp_path), epochs=2, stop_after=1))
    with pytest.raises(ValueError, match="lr"):
        train(tiny(out=str(tmp_path), epochs=2, lr=0.5, resume=True))


# ----------------------------------------------------------------------------- checkpoint files
def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    atomic_write_bytes(target, b"old")

    def boom() -> bytes:
        raise RuntimeError("killed while serialising")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(target, boom)
    assert target.read_bytes() == b"old"  # previous version intact
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temp file left


# ----------------------------------------------------------------------------- command line
def test_cli_train_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "run")
    argv = [
        "--model", "swin_mini", "--model-kwargs", json.dumps(TINY["model_kwargs"]),
        "--epochs", "2", "--stop-after", "1", "--batch-size", "32", "--max-train-samples", "64",
        "--max-eval-samples", "64", "--threads", "1", "--out", out, "--no-verbose",
    ]
    assert _train_cli(argv) == 0
    assert (tmp_path / "run" / "checkpoints" / "LATEST").read_text() == "epoch-0001\n"
    assert (tmp_path / "run" / "checkpoints" / "epoch-0001" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["epochs"] == 2 and saved["model_kwargs"] == TINY["model_kwargs"]
    assert _train_cli(["--out", out]) == 2  # refuses to overwrite
    assert _train_cli(["--out", out, "--resume", "--no-verbose"]) == 0  # saved config, to the end
    capsys.readouterr()
    assert _eval_cli(["--checkpoint", out, "--max-eval-samples", "64", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert metrics["top1"] == pytest.approx(history[-1]["val_top1"])
    assert metrics["n"] == 64


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train_cli(["--model", "swin_mni", "--out", "none"]) == 2
    assert "swin_mini" in capsys.readouterr().err  # create_model's message suggests the name
    missing = str(tmp_path / "missing")
    code = _train_cli(["--data", "imagenette", "--root", missing, "--out", "none"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert _eval_cli(["--checkpoint", str(tmp_path / "nothing")]) == 2


def test_compare_trains_each_model_and_writes_a_table(tmp_path: Path) -> None:
    from minilg.training.compare import compare, markdown_table

    with pytest.raises(ConfigError, match="no_such_model"):  # checked before any training
        compare(["swin_mini", "no_such_model"], tiny(epochs=1), tmp_path)
    assert not (tmp_path / "swin_mini").exists()
    rows = compare(["swin_mini"], tiny(epochs=1, max_train_samples=64), tmp_path)
    assert [r["model"] for r in rows] == ["swin_mini"]
    assert rows[0]["MMACs"] > 0 and rows[0]["train_img_per_s"] > 0
    for name in ("compare.csv", "compare.md", "compare.json", "compare.png"):
        assert (tmp_path / name).is_file(), name
    assert markdown_table(rows).splitlines()[2].startswith("| swin_mini |")
    # a second comparison into the same folder replaces the first instead of failing
    assert len(compare(["swin_mini"], tiny(epochs=1, max_train_samples=64), tmp_path)) == 1
