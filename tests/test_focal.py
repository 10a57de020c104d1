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
    check_official_levels,
    official_levels,
    official_ring_slots,
    official_to_paper_fine_bias,
)
from minilg.complexity import count_macs, measured_model_macs, model_macs
from minilg.convert import ConversionError, convert_official
from minilg.models.focal import keys_per_window
from minilg.nn import DropPath

DATA = Path(__file__).parent / "data"
FOCAL_T = ((1, 13), (7, 7))
FIG4 = ((1, 8), (2, 6), (4, 5))  # Fig. 4: window 4, three levels
# Official mode, four levels (pooled k = 0, 1, 2 of sizes floor(s_p / 2^k)), focal window 5
OFFICIAL4_W4 = official_levels(4, 2, 4, 5)
OFFICIAL4_W7 = official_levels(7, 3, 4, 3)


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


@pytest.mark.parametrize("follow,window,levels", [
    ("paper", 4, FIG4), ("official", 4, OFFICIAL4_W4), ("official", 7, OFFICIAL4_W7)])
@pytest.mark.parametrize("size", [(20, 20), (11, 6), (15, 22)])
@pytest.mark.parametrize("pool", ["fc", "conv", "mean"])
def test_macs_are_exact_with_more_levels(follow: str, window: int, levels: tuple[tuple[int, int]],
                                         size: tuple[int, int], pool: str) -> None:
    mixer = FocalAttention(8, 2, window, levels, follow=follow, pool_mode=pool)  # type: ignore[arg-type]
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


def unfolded_pooled_keys(grid: tuple[int, int], k: int, focal_window: int) -> Tensor:
    """Official pooled level k built literally: nn.Unfold of the pooled token ids (kernel
    fw + 2^(k+1) - 2, stride 2^k, padding kernel // 2; zero padding read as -1), keeping the
    kernel rows and columns >= 2^k - 1 for k > 0. ``(nW, s_r^2)``."""
    ids = torch.arange(grid[0] * grid[1], dtype=torch.float64).view(1, 1, *grid) + 1
    kernel = 2 * (focal_window // 2) + 2**k + 2**k - 1
    unfold = torch.nn.Unfold(kernel, stride=2**k, padding=kernel // 2)
    cols = unfold(ids)[0].t().view(-1, kernel, kernel)  # (nW, kernel, kernel)
    cols = cols[:, 2**k - 1 :, 2**k - 1 :] if k > 0 else cols
    return cols.flatten(1).long() - 1


@pytest.mark.parametrize("window,levels,focal_window", [
    (7, OFFICIAL4_W7, 3), (4, OFFICIAL4_W4, 5), (5, official_levels(5, 1, 3, 1), 1)])
@pytest.mark.parametrize("size", [(14, 21), (28, 28), (10, 5)])
def test_official_pooled_levels_gather_what_the_unfold_gathers(
        window: int, levels: tuple[tuple[int, int], ...], focal_window: int,
        size: tuple[int, int]) -> None:
    mixer = FocalAttention(8, 1, window, levels, follow="official")
    geo = mixer.build_geometry(*size, torch.device("cpu"))
    hp, wp = geo.padded
    keys = mixer.keys_per_window()
    start, first = hp * wp, keys[0]
    for number in range(1, len(levels)):
        k = number - 1
        grid = (hp // window * 2**k, wp // window * 2**k)
        rows = grid[0] * grid[1]
        got = geo.index[:, first : first + keys[number]] - start
        got = torch.where((got >= 0) & (got < rows), got, -1)
        assert torch.equal(got, unfolded_pooled_keys(grid, k, focal_window))
        start, first = start + rows, first + keys[number]


def test_official_pooled_level_trims_the_map_symmetrically() -> None:
    mixer = FocalAttention(4, 1, 7, official_levels(7, 3, 3, 3), follow="official",
                           pool_mode="mean")
    x = torch.randn(1, 14, 14, 4, dtype=torch.float64)
    # level k = 1: sub-windows of 3, two per window side, the 14 rows trimmed to 12 from row 1
    pooled = mixer.pooled_input(2, x)
    assert torch.equal(pooled, x[:, 1:13, 1:13])
    regions = mixer.key_regions(14, 14)[2]
    assert regions[0, 4].tolist() == [-1, -1, 0]  # s_r = 4: one token left of it, outside
    assert regions[0, 5].tolist() == [1, 1, 3]  # window 0's own first pooled token
    expected = x[:, 1:4, 1:4].mean(dim=(1, 2))
    torch.testing.assert_close(mixer.pools[1](pooled)[:, 0, 0], expected)


def test_official_own_window_bias_starts_at_zero_and_conv_pooling_is_depthwise() -> None:
    mixer = FocalAttention(8, 2, 7, OFFICIAL4_W7, follow="official", pool_mode="conv")
    assert isinstance(mixer, OfficialFocalAttention) and mixer.window_bias is not None
    assert mixer.window_bias.bias_table.eq(0).all()
    assert mixer.ring_bias is not None and mixer.ring_bias.bias_table.std() > 0
    conv = mixer.pools[1].conv  # type: ignore[union-attr]
    assert (conv.groups, conv.kernel_size, conv.stride) == (8, (3, 3), (3, 3))
    x = torch.randn(1, 6, 9, 8)
    expected = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias,
                                          stride=3, groups=8).permute(0, 2, 3, 1)
    torch.testing.assert_close(mixer.pools[1](x), expected)


def test_official_levels_are_validated() -> None:
    assert check_official_levels(7, OFFICIAL4_W7) == ((1, 13), (7, 3), (3, 4), (1, 6))
    with pytest.raises(ValueError, match=r"levels\[2\].*floor\(s_p / 2\^1\) = 3"):
        FocalAttention(8, 1, 7, ((1, 13), (7, 5), (2, 6)), follow="official")
    with pytest.raises(ValueError, match=r"levels\[1\].*even"):
        FocalAttention(8, 1, 7, ((1, 13), (7, 4)), follow="official")
    with pytest.raises(ValueError, match=r"levels\[3\].*= 0 >= 1"):
        check_official_levels(2, ((1, 2), (2, 1), (1, 2), (1, 8)))


# --- shifted windows: boundaries at s like Swin ---------------------------------------------


def swin_keys_of(position: tuple[int, int], size: tuple[int, int], window: int,
                 shift: int) -> set[int]:
    """Swin's SW-MSA keys of one query, built literally: pad bottom/right, label the 3 x 3
    regions of the padded map with slices (0, -M), (-M, -s), (-s, None), roll by -s, partition,
    keep the query's window and region (padding is no key)."""
    hp, wp = (-(-n // window) * window for n in size)
    ids = torch.full((hp, wp), -1)
    ids[: size[0], : size[1]] = torch.arange(size[0] * size[1]).view(*size)
    region = torch.zeros(hp, wp, dtype=torch.long)
    count = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            region[rows, cols] = count
            count += 1
    rolled_ids = torch.roll(ids, (-shift, -shift), (0, 1))
    query = position[0] * size[1] + position[1]
    r, c = (int(v) for v in (rolled_ids == query).nonzero()[0])
    top, left = r // window * window, c // window * window
    block_ids = rolled_ids[top : top + window, left : left + window]
    block_region = region[top : top + window, left : left + window]
    same = (block_region == region[r, c]) & (block_ids >= 0)
    return set(block_ids[same].tolist())


@pytest.mark.parametrize("window", [5, 7])
def test_shifted_corner_queries_see_swins_keys_in_paper_mode(window: int) -> None:
    shift, size = window // 2, (2 * window + 3, 3 * window + 1)
    mixer = FocalAttention(8, 1, window, ((1, window),), shift=shift)
    geo = mixer.build_geometry(*size, torch.device("cpu"))
    assert geo.offset == window - shift  # boundaries at rows s, s + M, ... as Swin's
    index, allowed = fine_keys(mixer, *size)
    assert allowed is not None
    wp = geo.padded[1]
    for position in ((0, 0), (0, size[1] - 1), (size[0] - 1, 0), (size[0] - 1, size[1] - 1)):
        row, col = position[0] + geo.offset, position[1] + geo.offset
        n = (row // window) * (wp // window) + col // window
        keys = {int(k) for k, ok in zip(index[n], allowed[n, 0, 0], strict=True) if ok}
        assert keys == swin_keys_of(position, size, window, shift)


@pytest.mark.parametrize("size", [(14, 14), (17, 23)])
def test_shifted_paper_mode_with_one_window_level_equals_swin_sw_msa(
        size: tuple[int, int]) -> None:
    focal = FocalAttention(16, 2, 7, ((1, 7),), shift=3).double()
    window = WindowAttention(16, 2, 7, shift=3).double()
    window.load_state_dict({"qkv.weight": focal.qkv.weight, "qkv.bias": focal.qkv.bias,
                            "proj.weight": focal.proj.weight, "proj.bias": focal.proj.bias,
                            "position_bias.bias_table": focal.fine_bias.bias_table})  # type: ignore[union-attr]
    x = torch.randn(2, *size, 16, dtype=torch.float64)
    torch.testing.assert_close(focal(x), window(x), rtol=0, atol=1e-12)


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
        FocalAttention(8, 1, 4, FIG4, pool_mode="avg")  # type: ignore[arg-type]
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


def test_official_levels_expand_sizes_and_expand_layer_reach_the_blocks() -> None:
    model = meta_model("focal_tiny", follow="official", focal_levels=(4, 2, 3, 1),
                       expand=(3, 2, 1, 0), focal_regions=(3, 5, 3, 1), expand_layer="even",
                       pool="conv")
    mixers = [[block.mixer for block in stage] for stage in model.stages]  # type: ignore[union-attr]
    assert mixers[0][1].levels == ((1, 13), (7, 3), (3, 4), (1, 6))
    assert mixers[0][0].levels[0] == (1, 7)  # expand_layer "even": no ring on block 0
    assert [m.levels for m in mixers[1]] == [((1, 7), (7, 5)), ((1, 11), (7, 5))]
    assert mixers[2][1].levels == ((1, 9), (7, 3), (3, 4))
    assert mixers[3][0].levels == ((1, 7),)  # one level: window only
    with pytest.raises(ValueError, match="focal_levels must hold"):
        meta_model("focal_tiny", focal_levels=(2, 2, 2))
    with pytest.raises(ValueError, match="expand"):
        meta_model("focal_tiny", expand=(3, 3))


def test_focal_s_b_drop_path_follows_the_paper_or_the_official_configs() -> None:
    def rates(name: str, **overrides: object) -> float:
        model = meta_model(name, **overrides)
        return max(float(m.p) for m in model.modules() if isinstance(m, DropPath))

    assert rates("focal_small") == pytest.approx(0.2)  # Sec. 4.1
    assert rates("focal_base") == pytest.approx(0.3)
    assert rates("focal_small", follow="official") == pytest.approx(0.3)  # official yaml
    assert rates("focal_base", follow="official") == pytest.approx(0.5)
    assert rates("focal_base", drop_path_rate=0.1) == pytest.approx(0.1)


def test_focal_mini_trains() -> None:
    model = minilg.create_model("focal_mini")
    x = torch.randn(4, 3, 32, 32)
    model(x).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert keys_per_window(model) == [(64, 25), (64, 9), (16, 1), (4, 1)]


# --- conversion ---------------------------------------------------------------------------


# micro: Focal-T's structure shrunk; levels3: three levels in stages 0 and 2, shift on;
# levels4 (scripts/make_focal_fixture.py): window 5 (padding and trimming), four levels in
# stages 0 and 2, expand sizes (2, 1, 2, 0), expand_layer "even", conv pooling, stage 2 not
# in focal_stages, shift off
FIXTURES = ["focal_official_micro", "focal_official_levels3", "focal_official_levels4"]


def fixture(name: str = "focal_official_micro"
            ) -> tuple[dict[str, Tensor], dict[str, object], dict[str, Tensor]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = DATA / f"{name}.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    state = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    return state, config, tensors


def relative_error(y: Tensor, ref: Tensor) -> float:
    return float((y.double() - ref).abs().max() / max(1.0, float(ref.abs().max())))


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_official_fixture_logits_and_stages(name: str, dtype: torch.dtype,
                                            tolerance: float) -> None:
    state, config, tensors = fixture(name)
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
    for option, value in (("use_pre_norm", True), ("ape", True), ("focal_pool", "avg"),
                          ("focal_levels", [0, 2, 2, 2]), ("qk_scale", 0.5),
                          ("expand_layer", "first")):
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


def test_converted_four_level_model_macs_are_exact() -> None:
    state, config, _ = fixture("focal_official_levels4")
    model = convert_official("focal", state, **config).model
    assert model_macs(model, 224) == measured_model_macs(model, 224)
    # block 0 of each stage has no ring (expand_layer "even"); s_r = fw + 2^k - 1
    assert keys_per_window(model) == [(25, 25, 36, 64), (25, 9, 16), (25,), (25, 1)]
    ring = 4 * 25 - 4 * (5 - 2) ** 2  # block 1 of stage 0: expand 2
    assert model.stages[0][1].mixer.keys_per_window() == (25 + ring, 25, 36, 64)  # type: ignore[index]
