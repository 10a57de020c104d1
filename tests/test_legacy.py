"""Weights written by earlier minilg versions still load: one key map
(:func:`minilg.models.legacy.upgrade_state_dict`), applied where minilg loads its weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

import minilg
from minilg.models.legacy import upgrade_key, upgrade_state_dict
from minilg.train import load_model

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "tests" / "data" / "legacy_a6bbf9e_swin_micro.safetensors"


def test_old_keys_move_to_todays_places() -> None:
    assert upgrade_key("downsamples.0.reduction.weight") == "stages.1.downsample.reduction.weight"
    assert upgrade_key("downsamples.2.conv.bias") == "stages.3.downsample.conv.bias"
    assert upgrade_key("stages.2.1.mixer.qkv.weight") == "stages.2.blocks.1.mixer.qkv.weight"
    for key in ("stages.1.downsample.norm.weight", "stages.0.blocks.1.mixer.qkv.weight",
                "stem.proj.weight", "norm.bias", "head.weight"):
        assert upgrade_key(key) == key  # today's keys are unchanged


def test_a_state_dict_in_todays_layout_comes_back_unchanged() -> None:
    state = minilg.create_model("hat_net_mini").state_dict()
    upgraded = upgrade_state_dict(state)
    assert list(upgraded) == list(state) and all(upgraded[k] is state[k] for k in state)


def test_model_dependent_renames_apply_only_where_the_model_expects_them() -> None:
    old = {"stages.0.blocks.0.mixer.qkv.weight": 1, "stages.0.blocks.1.mixer.qkv.weight": 2}
    expected = {"stages.0.blocks.0.mixer.v.weight", "stages.0.blocks.1.mixer.qkv.weight"}
    assert upgrade_state_dict(old, expected) == {
        "stages.0.blocks.0.mixer.v.weight": 1, "stages.0.blocks.1.mixer.qkv.weight": 2}
    assert upgrade_state_dict(old) == old  # without the model, no model-dependent rename


def test_a_gaze_only_gg_state_dict_of_a6bbf9e_loads() -> None:
    """GG's Gaze-only V projection was stored as ``mixer.qkv`` before it became ``mixer.v``."""
    model = minilg.create_model("gg_mini_gaze")
    state = model.state_dict()
    assert any(".mixer.v." in key for key in state)
    old = {key.replace(".mixer.v.", ".mixer.qkv."): value for key, value in state.items()}
    upgraded = upgrade_state_dict(old, state.keys())
    assert list(upgraded) == list(state) and all(upgraded[k] is state[k] for k in state)


def test_a_file_written_in_the_a6bbf9e_layout_loads_with_the_same_outputs() -> None:
    stored = load_file(LEGACY)
    assert any(key.startswith("downsamples.") for key in stored)  # really the old layout
    model, _ = load_model(LEGACY)
    state = model.state_dict()
    assert all(torch.equal(state[upgrade_key(k)], v) for k, v in stored.items())
    with safe_open(LEGACY, "pt") as handle:
        expected = torch.tensor(json.loads(handle.metadata()["expected_logits"]))
    torch.manual_seed(1)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)


def test_the_shipped_checkpoints_load_strictly() -> None:
    model, _ = load_model(ROOT / "data" / "checkpoints" / "gg_mini.safetensors")
    assert model.state_dict().keys() == load_file(
        ROOT / "data" / "checkpoints" / "gg_mini.safetensors").keys()
    salg = ROOT / "data" / "checkpoints" / "salg_mini_segmentation_fp16.safetensors"
    shapes = {k: v.shape for k, v in minilg.create_model("salg_mini").state_dict().items()}
    assert all(shapes[k] == v.shape for k, v in load_file(salg).items())  # notebook 05's part
