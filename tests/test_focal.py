"""Focal attention (Focal Sec. 3.2): key sets, exact MACs, limits, Focal-T/S/B, conversion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

import minilg
from minilg.attention import FullAttention, WindowAttention
from minilg.attention.focal import FocalAttention, check_levels, focal_macs
from minilg.attention.focal_official import (
    OfficialFocalAttention,
    official_ring_slots,
    official_to_paper_fine_bias,
)
from minilg.complexity import count_macs, measured_model_macs, model_macs
from minilg.convert import ConversionError, convert_official
from minilg.models.focal import keys_per_window

DATA = Path(__file__).parent / "data"
FOCAL_T = ((1, 13), (7, 7))
FIG4 = ((1, 8), (2, 6), (4, 5))  # Fig. 4: window 4, three levels


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- cost ---------------------------------------------------------------------------------


@pytest.mark.parametrize("follow", ["paper", "official"])
@pytest.mark.parametrize("size", [(14, 14), (13, 17), (5, 3), (1, 1), (22, 9)])
@pytest.mark.parametrize("shift,pool", [(0, "fc"), (3, "fc"), (0, "max")])
def test_macs_are_exact(follow: str, size: tuple[int, int], shift: int, pool: str) -> None:
    mixer = FocalAttention(16, 2, 7, FOCAL_T, follow=follow, shift=shift, pool_mode=pool)  # type: ignore[arg-type]
    measured = count_macs(mixer, torch.randn(1, *size, 16))
    assert mixer.macs(*size) == measured


@pytest.mark.parametrize("follow", ["paper", "official"])
@pytest.mark.parametrize("size", [(20, 20), (11, 6)])
def test_macs_are_exact_with_three_levels(follow: str, size: tuple[int, int]) -> None:
    mixer = FocalAttention(8, 2, 4, FIG4, follow=follow)  # type: ignore[arg-type]
    assert mixer.macs(*size) == count_macs(mixer, torch.randn(1, *size, 8))


def test_closed_form_matches_sec_3_2_2_on_a_divisible_map() -> None:
    n, c, s_p = 56 * 56, 96, 7
    keys = 13**2 + 7**2  # sum_l (s_r^l)^2, paper mode
    pooling = n * c + (n // 49) * 2 * c * c  # learned pooling + k, v of pooled tokens
    expected = 4 * n * c * c + pooling + 2 * keys * n * c
    assert focal_macs(56, 56, c, s_p, FOCAL_T) == expected
    official_keys = 49 + 132 + 49
    assert focal_macs(56, 56, c, s_p, FOCAL_T, "official") == expected + 2 * 12 * n * c
    assert official_keys == 230


# --- limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(14, 14), (9, 10), (5, 5)])
def test_one_level_of_window_size_equals_window_attention(size: tuple[int, int]) -> None:
    focal = FocalAttention(16, 2, 7, ((1, 7),))
    window = WindowAttention(16, 2, 7)
    window.load_state_dict({"qkv.weight": focal.qkv.weight, "qkv.bias": focal.qkv.bias,
                            "proj.weight": focal.proj.weight, "proj.bias": focal.proj.bias,
                            "position_bias.bias_table": focal.fine_bias.bias_table})  # type: ignore[union-attr]
    x = torch.randn(2, *size, 16)
    torch.testing.assert_close(focal(x), window(x))


def test_a_fine_region_covering_the_map_equals_full_attention() -> None:
    focal = FocalAttention(16, 2, 4, ((1, 12),), position_bias="none")
    full = FullAttention(16, 2)
    full.load_state_dict(focal.state_dict())
    x = torch.randn(2, 8, 8, 16)
    torch.testing.assert_close(focal(x), full(x))


def test_learned_pooling_starts_as_the_mean() -> None:
    learned = FocalAttention(16, 2, 7, FOCAL_T, pool_mode="fc")
    mean = FocalAttention(16, 2, 7, FOCAL_T, pool_mode="mean")
    mean.load_state_dict(learned.state_dict(), strict=False)
    x = torch.randn(1, 21, 18, 16)
    torch.testing.assert_close(learned(x), mean(x))  # 1/49 is not exact in binary


# --- which keys each window gets ----------------------------------------------------------


def fine_keys(mixer: FocalAttention, height: int, width: int) -> tuple[Tensor, Tensor | None]:
    """Level 1's token indices per window (``-1``: zero slot outside the map) and mask."""
    geo = mixer.build_geometry(height, width, torch.device("cpu"))
    fine = mixer.keys_per_window()[0]
    rows = geo.padded[0] * geo.padded[1] if mixer.follow == "official" else height * width
    index = torch.where(geo.index[:, :fine] < rows, geo.index[:, :fine], -1)
    return index, None if geo.allowed is None else geo.allowed[..., :fine]


def test_corner_window_gets_its_zero_padded_neighbourhood_in_paper_mode() -> None:
    height, width = 14, 21
    index, allowed = fine_keys(FocalAttention(8, 1, 7, FOCAL_T), height, width)
    assert allowed is not None
    expected = []
    for row in range(-3, 10):
        for col in range(-3, 10):
            inside = 0 <= row < height and 0 <= col < width
            expected.append(row * width + col if inside else -1)
    assert index[0].tolist() == expected
    assert allowed[0, 0, 0].tolist() == [e >= 0 for e in expected]
    assert int(allowed[0].sum()) == 10 * 10  # 169 slots, 100 inside the map


def rolled_ring(height: int, width: int, window: int, e: int) -> Tensor:
    """The official ring of window 0, built literally: four torch.roll copies, partition, mask."""
    tokens = torch.arange(height * width).view(height, width)
    copies, masks = [], []
    for sy, sx in ((-e, -e), (-e, e), (e, -e), (e, e)):
        copies.append(torch.roll(tokens, (sy, sx), (0, 1))[:window, :window].flatten())
        mask = torch.ones(window, window, dtype=torch.bool)
        rows = slice(None, -e) if sy < 0 else slice(e, None)
        cols = slice(None, -e) if sx < 0 else slice(e, None)
        mask[rows, cols] = False
        masks.append(mask.flatten())
    return torch.cat(copies)[torch.cat(masks)]


def test_corner_window_gets_the_wrapped_rolled_ring_in_official_mode() -> None:
    height, width = 14, 21
    index, allowed = fine_keys(FocalAttention(8, 1, 7, FOCAL_T, follow="official"), height, width)
    assert allowed is None
    own = torch.arange(height * width).view(height, width)[:7, :7].flatten()
    assert index[0].tolist() == own.tolist() + rolled_ring(height, width, 7, 3).tolist()
    wrapped = {(r % height) * width + c % width for r in range(-3, 10) for c in range(-3, 10)}
    assert set(index[0].tolist()) == wrapped and len(wrapped) == 169
    slots = official_ring_slots(7, 3).tolist()
    assert len(slots) == 132 and len(set(slots)) == 120


def test_paper_keys_are_a_subset_of_official_keys_inside_the_map() -> None:
    paper, _ = fine_keys(FocalAttention(8, 1, 7, FOCAL_T), 28, 28)
    official, _ = fine_keys(FocalAttention(8, 1, 7, FOCAL_T, follow="official"), 28, 28)
    for window in range(16):
        real = {k for k in paper[window].tolist() if k >= 0}
        assert real <= set(official[window].tolist())


def test_merged_official_biases_make_paper_mode_equal_official_where_nothing_wraps() -> None:
    torch.manual_seed(0)
    official = FocalAttention(16, 2, 7, FOCAL_T, follow="official").double()
    paper = FocalAttention(16, 2, 7, FOCAL_T, position_bias="official").double()
    with torch.no_grad():
        for p in official.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        assert official.window_bias is not None and official.ring_bias is not None
        state = {k: v for k, v in official.state_dict().items() if "window_bias" not in k
                 and "ring_bias" not in k}
        state["fine_bias.bias_table"] = official_to_paper_fine_bias(
            official.window_bias(), official.ring_bias.bias_table, 7, 3)
        paper.load_state_dict(state)
        x = torch.randn(2, 56, 56, 16, dtype=torch.float64)
        diff = (paper(x) - official(x)).abs().amax(dim=(0, 3))
    assert diff[7:49, 7:49].max() < 1e-12  # windows whose ring stays inside the map
    assert diff[:7].max() > 1e-3  # border windows: the official ring wraps around


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("levels,match", [
    (((2, 13),), r"levels\[0\].*s_w = 1"),
    (((1, 12), (7, 7)), r"levels\[0\].*even"),
    (((1, 13), (3, 3)), r"levels\[1\].*divide"),
    (((1, 13), (7, 6)), r"levels\[1\].*even"),
    (((1, 5),), r"levels\[0\].*>= 0"),
    ((), r"levels must be"),
])
def test_invalid_levels_raise(levels: tuple[tuple[int, int], ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_levels(7, levels)


def test_even_regions_of_fig_4_are_valid_and_bad_options_raise() -> None:
    assert check_levels(4, FIG4) == FIG4
    with pytest.raises(ValueError, match="follow"):
        FocalAttention(8, 1, 4, FIG4, follow="canonical")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shift"):
        FocalAttention(8, 1, 4, FIG4, shift=4)
    with pytest.raises(ValueError, match="pool_mode"):
        FocalAttention(8, 1, 4, FIG4, pool_mode="conv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interactions"):
        minilg.create_model("focal_mini", interactions="all")


def test_follow_selects_the_data_flow_class() -> None:
    import copy

    official = FocalAttention(8, 1, 7, FOCAL_T, follow="official")
    assert type(official) is OfficialFocalAttention and official.follow == "official"
    assert type(FocalAttention(8, 1, 7, FOCAL_T)) is FocalAttention
    assert type(OfficialFocalAttention(8, 1, 7, FOCAL_T)) is OfficialFocalAttention
    assert type(copy.deepcopy(official)) is OfficialFocalAttention
    assert official.state_dict().keys() == copy.deepcopy(official).state_dict().keys()
    with pytest.raises(ValueError, match="position_bias"):
        FocalAttention(8, 1, 7, FOCAL_T, follow="official", position_bias="paper")
    with pytest.raises(ValueError, match=r"levels\[0\].*official"):
        FocalAttention(8, 1, 3, ((1, 11),), follow="official")


# --- models -------------------------------------------------------------------------------


def meta_model(name: str, **overrides: object) -> torch.nn.Module:
    with torch.device("meta"):
        return minilg.create_model(name, **overrides)


def test_official_parameter_counts_and_keys_per_window() -> None:
    counts = {n: num_params(meta_model(n, follow="official"))
              for n in ("focal_tiny", "focal_small", "focal_base")}
    assert counts == {"focal_tiny": 28_880_380, "focal_small": 51_141_940,
                      "focal_base": 89_815_400}
    official = keys_per_window(meta_model("focal_tiny", follow="official"))
    assert [sum(k) for k in official] == [230, 206, 190, 50]
    paper = keys_per_window(meta_model("focal_tiny"))
    assert [sum(k) for k in paper] == [218, 194, 178, 50]


@pytest.mark.parametrize("follow,resolution", [("official", 224), ("paper", 200)])
def test_focal_tiny_macs_are_exact(follow: str, resolution: int) -> None:
    model = meta_model("focal_tiny", follow=follow)
    assert model_macs(model, resolution) == measured_model_macs(model, resolution)


def test_ablation_switches_change_the_keys() -> None:
    keys = {kind: keys_per_window(meta_model("focal_tiny", interactions=kind))[0]
            for kind in ("window", "local", "global", "both")}
    assert keys == {"window": (49,), "local": (169,), "global": (49, 49), "both": (169, 49)}
    shifted = meta_model("focal_tiny", shift=True)
    assert [b.mixer.shift for b in shifted.stages[0].blocks] == [0, 3]  # type: ignore[union-attr, index]
    wide = keys_per_window(meta_model("focal_tiny", window=14, focal_regions=(7, 5, 3, 1)))
    assert wide[0] == (20 * 20, 49)


def test_focal_mini_trains() -> None:
    model = minilg.create_model("focal_mini")
    x = torch.randn(4, 3, 32, 32)
    model(x).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert keys_per_window(model) == [(64, 25), (64, 9), (16, 1), (4, 1)]


# --- conversion ---------------------------------------------------------------------------


def fixture() -> tuple[dict[str, Tensor], dict[str, object], dict[str, Tensor]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = DATA / "focal_official_micro.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    state = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    return state, config, tensors


def relative_error(y: Tensor, ref: Tensor) -> float:
    return float((y.double() - ref).abs().max() / max(1.0, float(ref.abs().max())))


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_official_fixture_logits_and_stages(dtype: torch.dtype, tolerance: float) -> None:
    state, config, tensors = fixture()
    conversion = convert_official("focal", state, **config)
    assert not set(state) - set(conversion.used) - set(conversion.dropped)
    model = conversion.model.to(dtype)
    x = tensors["input_224"].to(dtype)
    with torch.no_grad():
        assert relative_error(model(x), tensors["logits_224"]) <= tolerance
        _, stages = model.forward_intermediates(x, output_fmt="NHWC")  # type: ignore[operator, misc]
        for i, stage in enumerate(stages):
            y = model.stages[i + 1].downsample(stage) if i < 3 else stage  # type: ignore[index, operator]
            ref = tensors[f"stage{i}_224"]
            assert relative_error(y.reshape(ref.shape), ref) <= tolerance


def test_official_weights_in_paper_mode_match_inside_the_map() -> None:
    state, config, _ = fixture()
    official = convert_official("focal", state, **config).model
    paper = convert_official("focal", state, **config, follow="paper").model
    mixers = [m.stages[0][0].mixer for m in (official, paper)]  # type: ignore[index]
    x = torch.randn(1, 56, 56, 16)
    with torch.no_grad():
        diff = (mixers[0](x) - mixers[1](x)).abs().amax(dim=(0, 3))
    assert diff[21:35, 21:35].max() < 1e-5  # no wrapped ring, no padded pooled slot


def test_full_focal_tiny_key_list_converts_with_every_key_accounted_for() -> None:
    state = {}
    for line in (DATA / "focal_tiny_official.keys.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        state[key] = torch.zeros([int(s) for s in shape.split(",")],
                                 dtype=torch.int64 if dtype == "int64" else torch.float32)
    config = dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                  focal_levels=[2, 2, 2, 2], focal_windows=[7, 5, 3, 1])
    conversion = convert_official("focal", state, **config)
    assert len(conversion.used) + len(conversion.dropped) == len(state) == 256
    assert num_params(conversion.model) == 28_880_380


def test_unsupported_official_options_are_named() -> None:
    state, config, _ = fixture()
    for option, value in (("use_pre_norm", True), ("ape", True), ("focal_pool", "conv"),
                          ("focal_levels", [3, 3, 3, 3]), ("qk_scale", 0.5)):
        with pytest.raises(ConversionError, match=option):
            convert_official("focal", state, **{**config, option: value})
    with pytest.raises(ConversionError, match="unexpected official key"):
        convert_official("focal", {**state, "extra.weight": torch.zeros(1)}, **config)


def test_fig_4_regions_reach_the_whole_map() -> None:
    mixer = FocalAttention(8, 1, 4, FIG4)
    regions = mixer.key_regions(20, 20)
    middle = [level[12] for level in regions]  # window (2, 2) of 5 x 5
    assert [len(level) for level in middle] == [64, 36, 25]
    covered = torch.zeros(20, 20, dtype=torch.bool)
    for row, col, side in middle[2].tolist():
        covered[row : row + side, col : col + side] = True
    assert bool(covered.all())
    assert middle[0][:, 0].min() == 6 and middle[1][:, 0].min() == 4


def test_layer_scale_converts() -> None:
    state, config, _ = fixture()
    gammas = {}
    for key in state:
        if key.endswith(".norm1.weight"):
            block = key[: -len(".norm1.weight")]
            gammas[f"{block}.gamma_1"] = torch.full_like(state[key], 0.5)
            gammas[f"{block}.gamma_2"] = torch.full_like(state[key], 0.25)
    config = {**config, "use_layerscale": True}
    conversion = convert_official("focal", {**state, **gammas}, **config)
    block = conversion.model.stages[1][0]  # type: ignore[index]
    assert block.scale1.gamma.detach().eq(0.5).all() and block.scale2.gamma.detach().eq(0.25).all()
