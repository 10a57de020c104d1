"""The trainer: its config (checked when built), schedule, weight-decay groups, a short run.

Runs (folders, resume, divergence) are tested in test_runs.py, checkpoint files in
test_checkpoint.py, the command line in test_cli.py, compare in test_compare.py."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest

import minilg
from minilg.errors import ConfigError
from minilg.train import TrainConfig, lr_at, param_groups, resolve_crop_scale, train

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


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", True, "epochs must be an integer >= 1, got True"),
        ("epochs", 2.0, "epochs must be an integer >= 1, got 2.0"),
        ("batch_size", "32", "batch_size must be an integer >= 1, got '32'"),
        ("lr", float("inf"), "lr must be a finite number > 0, got inf"),
        ("hflip", 1, "hflip must be True or False, got 1"),
        ("crop_scale", (0.5,), "crop_scale must be (lo, hi) with 0 < lo <= hi <= 1, got (0.5,)"),
        ("crop_scale", "random", "crop_scale must be (lo, hi), None or 'auto', got 'random'"),
        ("model_kwargs", [1, 2], "model_kwargs must be a JSON object of create_model overrides"),
        ("out", "", "out must be a folder path (or None), got ''"),
    ],
)
def test_config_rejects_in_python_too(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{field: value})
    assert str(info.value).startswith(message), str(info.value)
    assert info.value.field == field


def test_config_round_trips_through_json() -> None:
    cfg = TrainConfig(crop_scale=(0.5, 1.0), model_kwargs={"depths": [1, 1, 1, 1]}, out=None)
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.crop_scale == (0.5, 1.0)


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
