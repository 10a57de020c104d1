"""Official checkpoint conversion (``minilg.convert``) and ``python -m minilg convert``.

``tests/data/swin_official_micro.safetensors`` holds the state dict of the official
``SwinTransformer`` (embed_dim 16, depths 2-2-2-2, heads 1-2-4-8, window 7, 10 classes, random
weights), an input, and the official logits and stage outputs computed in float64 (stage ``i``
taken after the stage's downsampling for ``i < 3``). ``swin_tiny_official.keys.tsv`` lists every
key, shape and dtype of the official Swin-T state dict.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from einops import rearrange
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

import minilg
from minilg.attention.spatial_reduction import SpatialReductionAttention
from minilg.attention.window import WindowAttention
from minilg.cli import main
from minilg.convert import (
    Conversion,
    ConversionError,
    config_from_yaml,
    convert_official,
    from_official,
    read_official_yaml,
    unwrap_state_dict,
)
from minilg.convert.swin import (
    OFFICIAL_DEFAULTS,
    minilg_config,
    official_keys,
    rename,
    stage_windows,
    yaml_to_kwargs,
)
from minilg.models.swin import build_swin

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "swin_official_micro.safetensors"
TINY_KEYS = DATA / "swin_tiny_official.keys.tsv"
REBUILT = "rebuilt from the config"
# The official SwinTransformer constructor's defaults (the list).
CONSTRUCTOR_DEFAULTS = {
    "img_size": 224, "patch_size": 4, "in_chans": 3, "num_classes": 1000, "embed_dim": 96,
    "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7, "mlp_ratio": 4.0,
    "qkv_bias": True, "qk_scale": None, "drop_rate": 0.0, "attn_drop_rate": 0.0,
    "drop_path_rate": 0.1, "ape": False, "patch_norm": True,
}


@pytest.fixture(scope="module")
def fixture() -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]]:
    """(official state dict, official constructor kwargs, all fixture tensors)."""
    tensors = load_file(str(FIXTURE))
    with safe_open(str(FIXTURE), "pt") as f:
        config = json.loads(f.metadata()["config"])
    prefix = "state_dict."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return state, config, tensors


@pytest.fixture(scope="module")
def converted(fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]]) -> Conversion:
    state, config, _ = fixture
    return convert_official("swin", state, **config)


def relative_error(y: Tensor, ref: Tensor) -> float:
    """``max|y - ref| / max(1, max|ref|)`` (the acceptance measure)."""
    return float((y.double() - ref).abs().max() / max(1.0, float(ref.abs().max())))


def official_outputs(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """minilg's outputs at the fixture's capture points: logits and ``layers[i]`` outputs
    (``stages[i + 1].downsample(stage_i)`` for ``i < 3``), as official ``(B, L, C)`` row-major
    tokens."""
    with torch.no_grad():
        logits = model(x)
        _, stages = model.forward_intermediates(x, output_fmt="NHWC")
        out = {"logits_224": logits}
        for i, stage in enumerate(stages):
            y = model.stages[i + 1].downsample(stage) if i < len(stages) - 1 else stage
            out[f"stage{i}_224"] = rearrange(y, "b h w c -> b (h w) c")
    return out


# ----------------------------------------------------------------------------- the fixture
def test_fixture_reproduced_in_float32(
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]], converted: Conversion
) -> None:
    _, _, tensors = fixture
    outputs = official_outputs(converted.model.float(), tensors["input_224"])
    assert set(outputs) == {"logits_224", "stage0_224", "stage1_224", "stage2_224", "stage3_224"}
    for name, y in outputs.items():
        assert y.dtype == torch.float32
        assert y.shape == tensors[name].shape, name
        assert relative_error(y, tensors[name]) <= 1e-5, name


def test_from_official_reproduced_in_float64(
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]],
) -> None:
    state, config, tensors = fixture
    model = from_official("swin", state, **config).double()
    assert not model.training
    outputs = official_outputs(model, tensors["input_224"].double())
    for name, y in outputs.items():
        assert y.dtype == torch.float64
        assert relative_error(y, tensors[name]) <= 1e-10, name


def test_layer_norm_eps_is_swin_and_the_fixture_detects_it(
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]], converted: Conversion
) -> None:
    """Swin's LayerNorms (stem, blocks, merging, final) use eps 1e-5; 1e-6 (DeiT's) is visible."""
    _, _, tensors = fixture
    model = copy.deepcopy(converted.model).double()
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 1 + 2 * 8 + 3 + 1
    assert {m.eps for m in norms} == {1e-5}
    for m in norms:
        m.eps = 1e-6
    x = tensors["input_224"].double()
    assert relative_error(official_outputs(model, x)["logits_224"], tensors["logits_224"]) > 1e-10


def test_deit_models_use_layer_norm_eps_1e6() -> None:
    """DeiT's reference code (and GG-DeiT, which follows it) uses LayerNorm eps 1e-6."""
    for name in ("deit_tiny", "deit_mini", "gg_deit_tiny"):
        norms = [m for m in minilg.create_model(name).modules() if isinstance(m, nn.LayerNorm)]
        assert norms and {m.eps for m in norms} == {1e-6}, name
    sra = minilg.create_model("sra_mini")  # PVT: the blocks' and the final norm 1e-6, ...
    reduction = {id(m.norm) for m in sra.modules() if isinstance(m, SpatialReductionAttention)}
    assert {m.eps for m in sra.stages.modules()
            if isinstance(m, nn.LayerNorm) and id(m) not in reduction} == {1e-6}
    assert sra.norm.eps == 1e-6
    # ... and SRA's reduction norm PVT's nn.LayerNorm(dim) default, 1e-5
    assert {m.eps for m in sra.modules() if id(m) in reduction
            and isinstance(m, nn.LayerNorm)} == {1e-5}


def test_every_fixture_key_accounted(
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]], converted: Conversion
) -> None:
    state, _, _ = fixture
    assert set(converted.used) | set(converted.dropped) == set(state)
    assert not set(converted.used) & set(converted.dropped)
    assert sorted(converted.used.values()) == sorted(converted.model.state_dict())
    buffers = {k for k in state if k.endswith(("relative_position_index", "attn_mask"))}
    assert set(converted.dropped) == buffers and len(buffers) == 8 + 3
    assert set(converted.dropped.values()) == {REBUILT}
    used = converted.used
    assert used["layers.0.downsample.reduction.weight"] == "stages.1.downsample.reduction.weight"
    assert used["layers.2.blocks.1.attn.relative_position_bias_table"] == (
        "stages.2.blocks.1.mixer.position_bias.bias_table"
    )
    assert used["patch_embed.norm.bias"] == "stem.norm.bias"
    assert converted.defaults == {}  # the fixture passes every argument


def test_missing_arguments_take_the_official_defaults(
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]],
) -> None:
    state, _, _ = fixture
    given = {"embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8],
             "num_classes": 10, "drop_path_rate": 0.0}
    conversion = convert_official("swin", state, **given)
    assert conversion.defaults == {k: v for k, v in CONSTRUCTOR_DEFAULTS.items() if k not in given}
    assert "official defaults used" in conversion.summary()
    assert {k: OFFICIAL_DEFAULTS[k] for k in CONSTRUCTOR_DEFAULTS} == CONSTRUCTOR_DEFAULTS


# ----------------------------------------------------------------------------- full Swin-T
def read_key_list(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    keys = {}
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        keys[key] = (tuple(int(s) for s in shape.split(",")), dtype)
    return keys


def test_swin_tiny_key_set_converts_into_swin_tiny() -> None:
    """Every key of the official Swin-T state dict (random tensors of its shapes) is used or
    dropped with its reason, into a model of swin_tiny's layout, with defaults only."""
    keys = read_key_list(TINY_KEYS)
    generator = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(shape, generator=generator) if dtype == "float32"
        else torch.zeros(shape, dtype=torch.int64)
        for k, (shape, dtype) in keys.items()
    }
    conversion = convert_official("swin", {"model": state, "epoch": torch.tensor(300)})
    assert conversion.defaults == CONSTRUCTOR_DEFAULTS
    assert len(keys) == 190 and list(keys) == official_keys(CONSTRUCTOR_DEFAULTS)
    assert set(conversion.used) | set(conversion.dropped) == set(keys)
    dropped = {k: keys[k][0] for k in conversion.dropped}
    assert set(conversion.dropped.values()) == {REBUILT}
    index = {k: s for k, s in dropped.items() if k.endswith("relative_position_index")}
    masks = {k: s for k, s in dropped.items() if k.endswith("attn_mask")}
    assert len(index) == 12 and set(index.values()) == {(49, 49)}
    assert masks == {"layers.0.blocks.1.attn_mask": (64, 49, 49),
                     "layers.1.blocks.1.attn_mask": (16, 49, 49),
                     **{f"layers.2.blocks.{j}.attn_mask": (4, 49, 49) for j in (1, 3, 5)}}
    assert set(dropped) == set(index) | set(masks)
    model = conversion.model
    reference = minilg.create_model("swin_tiny")
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    assert sum(p.numel() for p in model.parameters()) == 28_288_354  # official Swin-T count
    assert conversion.name == "swin_tiny"
    assert torch.equal(model.stages[2].blocks[5].mixer.qkv.weight,
                       state["layers.2.blocks.5.attn.qkv.weight"])
    assert torch.equal(model.stages[2].downsample.reduction.weight,
                       state["layers.1.downsample.reduction.weight"])


# ----------------------------------------------------------------------------- clipped windows
def fake_official(**config: Any) -> dict[str, Tensor]:
    """A random state dict in the official layout for ``config`` (clipped tables included)."""
    cfg = {**OFFICIAL_DEFAULTS, **config}
    model = build_swin(minilg_config(cfg))
    inverse = {new: k for k in official_keys(cfg) for new in [rename(k)] if isinstance(new, str)}
    generator = torch.Generator().manual_seed(1)
    state = {inverse[k]: torch.randn(v.shape, generator=generator)
             for k, v in model.state_dict().items()}
    for stage, (res, window, shifted) in enumerate(stage_windows(cfg)):
        for j in range(cfg["depths"][stage]):
            prefix = f"layers.{stage}.blocks.{j}.attn"
            rows = (2 * window - 1) ** 2
            state[f"{prefix}.relative_position_bias_table"] = torch.randn(
                rows, cfg["num_heads"][stage], generator=generator)
            state[f"{prefix}.relative_position_index"] = torch.zeros(window**2, window**2)
            if shifted and j % 2:
                state[f"{prefix}_mask"] = torch.zeros((res // window) ** 2, window**2, window**2)
    return state


def test_clipped_window_table_is_embedded_exactly() -> None:
    """Maps 16, 8, 4, 2 with window 4: the official stage-3 block has window 2 (a 9-row table);
    minilg's clipped window-4 block must compute what a window-2 block with that table does."""
    config = {"img_size": 64, "window_size": 4, "embed_dim": 8, "depths": [2, 2, 2, 2],
              "num_heads": [1, 1, 2, 2], "num_classes": 5}
    state = fake_official(**config)
    assert state["layers.3.blocks.1.attn.relative_position_bias_table"].shape == (9, 2)
    assert "layers.2.blocks.1.attn_mask" not in state  # 4x4 map = window: no shift
    model = convert_official("swin", state, **config).model
    mixer = model.stages[3].blocks[1].mixer
    small = WindowAttention(64, 2, window=2).eval()
    with torch.no_grad():
        for name in ("qkv", "proj"):
            getattr(small, name).load_state_dict(getattr(mixer, name).state_dict())
        small.position_bias.bias_table.copy_(  # type: ignore[union-attr]
            state["layers.3.blocks.1.attn.relative_position_bias_table"])
        x = torch.randn(2, 2, 2, 64, generator=torch.Generator().manual_seed(2))
        assert torch.equal(mixer(x), small(x))
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"depths": [2, 2, 4, 2]}, "depths: the config says [2, 2, 4, 2] but the state dict has "
                                   "[2, 2, 2, 2]"),
        ({"embed_dim": 32}, "embed_dim: the config says 32 but the state dict has 16"),
        ({"num_heads": [1, 2, 4, 4]}, "num_heads: the config says [1, 2, 4, 4]"),
        ({"window_size": 14}, "window_size: the config says 14 but the state dict has window 7"),
        ({"mlp_ratio": 2.0}, "mlp_ratio: the config says 2.0 but the state dict has 4"),
        ({"num_classes": 1000}, "num_classes: the config says 1000 but the state dict has 10"),
        ({"img_size": 448}, "img_size: the config says 448 but the state dict has 64 windows"),
        ({"patch_size": 2}, "patch_size: the config says 2 but the state dict has 4"),
        ({"in_chans": 1}, "in_chans: the config says 1 but the state dict has 3"),
        ({"img_size": 192}, "img_size=192: the official Swin needs each stage map"),
    ],
)
def test_config_state_dict_mismatch_names_the_field(
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]],
    change: dict[str, Any],
    message: str,
) -> None:
    state, config, _ = fixture
    with pytest.raises(ConversionError) as error:
        convert_official("swin", state, **{**config, **change})
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"ape": True}, "unsupported official option ape=True (absolute position embedding)"),
        ({"patch_norm": False}, "unsupported official option patch_norm=False"),
        ({"qkv_bias": False}, "unsupported official option qkv_bias=False"),
        ({"qk_scale": 0.1}, "unsupported official option qk_scale=0.1"),
        ({"drop_rate": 0.1}, "unsupported official option drop_rate=0.1"),
        ({"attn_drop_rate": 0.1}, "unsupported official option attn_drop_rate=0.1"),
        ({"norm_layer": "BatchNorm"}, "norm_layer='BatchNorm' is not supported"),
        ({"embed_dims": 16}, "unknown SwinTransformer argument(s) ['embed_dims']"),
        ({"depths": [2, 2, 2]}, "depths and num_heads need one entry per stage"),
        ({"window_size": 0}, "window_size must be a positive int, got 0"),
    ],
)
def test_unsupported_or_invalid_options_are_named(
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]],
    option: dict[str, Any],
    message: str,
) -> None:
    state, config, _ = fixture
    with pytest.raises(ConversionError) as error:
        convert_official("swin", state, **{**config, **option})
    assert message in str(error.value)


def test_options_without_effect_are_accepted(
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]],
) -> None:
    state, config, _ = fixture
    extra = {"qk_scale": 16**-0.5, "use_checkpoint": True, "norm_layer": nn.LayerNorm}
    conversion = convert_official("swin", state, **{**config, **extra})  # head_dim 16 everywhere
    assert any("use_checkpoint" in note for note in conversion.notes)


def edited(state: Mapping[str, Tensor], **changes: Tensor | None) -> dict[str, Tensor]:
    """A copy of ``state`` with keys (dots written as ``__``) replaced, added or removed."""
    out = dict(state)
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del out[key]
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"foo__bar": torch.zeros(3)}, "unknown key 'foo.bar' (shape (3,))"),
        ({"layers__0__blocks__0__attn__qkv__weight": torch.zeros(48, 8)},
         "shape mismatch: 'layers.0.blocks.0.attn.qkv.weight' (48, 8) cannot load into minilg "
         "'stages.0.blocks.0.mixer.qkv.weight' (48, 16)"),
        ({"layers__1__blocks__0__attn__relative_position_index": torch.zeros(9, 9)},
         "shape mismatch: layers.1.blocks.0.attn.relative_position_index (9, 9), expected "
         "(49, 49)"),
        ({"layers__0__blocks__0__attn__qkv__bias": None},
         "missing key 'layers.0.blocks.0.attn.qkv.bias'"),
        ({"layers__0__blocks__0__attn_mask": torch.zeros(64, 49, 49)},
         "unexpected key 'layers.0.blocks.0.attn_mask'"),
        ({"absolute_pos_embed": torch.zeros(1, 3136, 16)}, "ape=True"),
        ({"head__weight": None, "head__bias": None},
         "num_classes: the config says 10 but the state dict has 0"),
    ],
)
def test_state_dict_errors_name_the_key(
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]],
    changes: dict[str, Tensor | None],
    message: str,
) -> None:
    state, config, _ = fixture
    with pytest.raises(ConversionError) as error:
        convert_official("swin", edited(state, **changes), **config)
    assert message in str(error.value)


def test_unknown_family_lists_the_available_ones() -> None:
    with pytest.raises(ConversionError, match=r"unknown family 'swim'; available: .*swin"):
        convert_official("swim", {})


# ----------------------------------------------------------------------------- YAML
MICRO_YAML = """\
MODEL:
  TYPE: swin
  NAME: swin_micro
  NUM_CLASSES: 10
  DROP_PATH_RATE: 0.0
  SWIN:
    EMBED_DIM: 16
    DEPTHS: [ 2, 2, 2, 2 ]
    NUM_HEADS: [ 1, 2, 4, 8 ]
TRAIN:
  EPOCHS: 30
"""


def test_official_yaml_maps_to_constructor_arguments(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("DATA:\n  IMG_SIZE: 384\nMODEL:\n  SWIN:\n"
                                        "    WINDOW_SIZE: 12\n    EMBED_DIM: 128\n")
    (tmp_path / "micro.yaml").write_text("BASE: ['base.yaml']\nDATA:\n  IMG_SIZE: 224\n"
                                         + MICRO_YAML.replace("    EMBED_DIM: 16\n", ""))
    nested = read_official_yaml(tmp_path / "micro.yaml")
    assert nested["MODEL"]["SWIN"]["EMBED_DIM"] == 128 and nested["DATA"]["IMG_SIZE"] == 224
    kwargs = config_from_yaml("swin", tmp_path / "micro.yaml")
    expected = {k: v for k, v in CONSTRUCTOR_DEFAULTS.items() if k != "attn_drop_rate"}
    assert kwargs == {**expected, "img_size": 224, "num_classes": 10,
                      "drop_path_rate": 0.0, "embed_dim": 128, "depths": [2, 2, 2, 2],
                      "num_heads": [1, 2, 4, 8], "window_size": 12, "use_checkpoint": False,
                      "fused_window_process": False}
    for dataset, classes in (("imagenet22K", 21841), ("imagenet", 1000)):  # as data/build.py
        nested = {"DATA": {"DATASET": dataset}, "MODEL": {"SWIN": {"EMBED_DIM": 96}}}
        assert yaml_to_kwargs(nested)["num_classes"] == classes
    with pytest.raises(ConversionError, match=r"MODEL.TYPE='swinv2'"):
        yaml_to_kwargs({"MODEL": {"TYPE": "swinv2"}})
    with pytest.raises(ConversionError, match=r"unknown MODEL.SWIN key\(s\) \['EMBED_DIMS'\]"):
        yaml_to_kwargs({"MODEL": {"SWIN": {"EMBED_DIMS": 96}}})


# ----------------------------------------------------------------------------- command line
def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["convert", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_converts_a_checkpoint_that_minilg_reloads(
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from minilg.train import load_model

    state, config, tensors = fixture
    torch.save({"model": state, "epoch": 300}, tmp_path / "ckpt.pth")
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    (tmp_path / "cfg.yaml").write_text(MICRO_YAML)
    for cfg in ("cfg.json", "cfg.yaml"):
        out = tmp_path / f"out_{cfg}.safetensors"
        code, stdout, stderr = run_cli(
            ["--family", "swin", "--config", str(tmp_path / cfg), str(tmp_path / "ckpt.pth"),
             str(out)], capsys)
        assert (code, stderr) == (0, "")
        assert "121 keys loaded, 11 dropped" in stdout and "rebuilt from the config" in stdout
        model, _ = load_model(out)
        with torch.no_grad():
            logits = model(tensors["input_224"])
        assert relative_error(logits, tensors["logits_224"]) <= 1e-5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--family", "swim", "{ckpt}", "{out}"], "error: unknown family 'swim'; available:"),
        (["--family", "swin", "{missing}", "{out}"], "error: no checkpoint at"),
        (["--family", "swin", "--config", "{missing}", "{ckpt}", "{out}"],
         "error: no config file at"),
        (["--family", "swin", "--config", "{bad_json}", "{ckpt}", "{out}"],
         "is not valid JSON"),
        (["--family", "swin", "--config", "{cfg}", "{ckpt}", "{out}"],
         "error: depths: the config says [2, 2, 6, 2]"),
        (["--family", "swin", "{pickle}", "{out}"],
         "with weights_only=True: it pickles argparse.Namespace, which is not a tensor"),
    ],
)
def test_cli_expected_failures_print_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]],
) -> None:
    state, _, _ = fixture
    paths = {name: tmp_path / name for name in ("ckpt", "out", "missing", "bad_json", "cfg",
                                                 "pickle")}
    torch.save({"model": state}, paths["ckpt"])
    torch.save({"model": argparse.Namespace(a=1)}, paths["pickle"])  # refused by weights_only
    paths["bad_json"].write_text("{depths: [2]}")
    paths["cfg"].write_text(json.dumps({"depths": [2, 2, 6, 2], "embed_dim": 16}))
    code, stdout, stderr = run_cli([a.format(**paths) for a in argv], capsys)
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and message in stderr, stderr
    assert not paths["out"].exists()


# ----------------------------------------------------------------------------- every family
def read_fixture(name: str) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]]:
    path = DATA / f"{name}.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    prefix = "state_dict."
    return ({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, config,
            tensors)


FAMILY_FIXTURES = [
    ("swin", "swin_official_micro"), ("focal", "focal_official_micro"),
    ("focal", "focal_official_levels3"), ("focal", "focal_official_levels4"),
    ("hat_net", "hat_net_official_micro"),
]


@pytest.mark.parametrize(("family", "name"), FAMILY_FIXTURES)
def test_cli_converts_every_family_into_a_file_load_model_reloads(
    family: str, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from minilg.train import load_model

    state, config, tensors = read_fixture(name)
    ddp = {f"module.{k}": v for k, v in state.items()}  # a DDP checkpoint, wrapped twice
    torch.save({"state_dict": ddp, "epoch": 3}, tmp_path / "ckpt.pth")
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    out = tmp_path / "out.safetensors"
    code, stdout, stderr = run_cli(["--family", family, "--config", str(tmp_path / "cfg.json"),
                                    str(tmp_path / "ckpt.pth"), str(out)], capsys)
    assert (code, stderr) == (0, ""), stderr
    assert (f"unwrapped the checkpoint's 'state_dict' entry; the 'module.' prefix "
            f"(DistributedDataParallel) of {len(state)} keys") in stdout
    model, _ = load_model(out)
    x = tensors["input_224"]
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        with torch.no_grad():
            logits = model.to(dtype)(x.to(dtype))
        assert relative_error(logits, tensors["logits_224"]) <= tolerance


@pytest.mark.parametrize("family", ["swin", "focal", "hat_net"])
def test_eval_runs_on_each_converted_family(
    family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    state, config, _ = read_fixture(f"{family}_official_micro")
    torch.save({"model": state}, tmp_path / "ckpt.pth")
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    out = tmp_path / "out.safetensors"
    assert run_cli(["--family", family, "--config", str(tmp_path / "cfg.json"),
                    str(tmp_path / "ckpt.pth"), str(out)], capsys)[0] == 0
    assert main(["eval", "--checkpoint", str(out), "--max-eval-samples", "2",
                 "--batch-size", "2", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n"] == 2 and metrics["resolution"] == 224


def test_unwrap_names_what_it_unwrapped() -> None:
    state = {"a.weight": torch.zeros(1)}
    assert unwrap_state_dict(state) == (state, [])
    inner, steps = unwrap_state_dict({"model": {"module.a.weight": state["a.weight"]},
                                      "optimizer": {}, "epoch": 1})
    assert inner == state
    assert steps == ["the checkpoint's 'model' entry",
                     "the 'module.' prefix (DistributedDataParallel) of 1 keys"]
    partial = {"module.a": torch.zeros(1), "b": torch.zeros(1)}  # not every key: left alone
    assert unwrap_state_dict(partial) == (partial, [])


def test_swin_converts_without_the_index_and_mask_buffers(
    fixture: tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]],
) -> None:
    state, config, tensors = fixture
    stripped = {k: v for k, v in state.items()
                if not k.endswith(("relative_position_index", "attn_mask"))}
    assert len(stripped) < len(state)
    conversion = convert_official("swin", stripped, **config)
    assert f"{len(state) - len(stripped)} relative_position_index / attn_mask" in \
        conversion.summary()
    with torch.no_grad():
        logits = conversion.model(tensors["input_224"])
    assert relative_error(logits, tensors["logits_224"]) <= 1e-5
