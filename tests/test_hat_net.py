"""HAT-Net (Liu et al., Sec. 3): H-MHSA's two steps, padding, cost, models, official conversion."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

import minilg
from minilg.attention.hierarchical import HierarchicalAttention, h_mhsa_macs
from minilg.complexity import count_macs
from minilg.convert import ConversionError, convert_official
from minilg.convert.hat_net import official_key
from minilg.models.hat_net import NormedWindowAttention, PointwiseMlp
from minilg.nn import ConvMlp, Mlp
from minilg.reference import TABLE_PATH

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "hat_net_official_micro.safetensors"
ODD_SIZES = [(13, 17), (5, 9), (1, 1), (9, 3), (23, 23)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(name: str, **overrides: object) -> nn.Module:
    with torch.device("meta"):
        return minilg.create_model(name, **overrides)


# ------------------------------------------------------------------ brute-force reference


def group_norm_ref(t: Tensor, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm(1, C) of one map ``(H, W, C)`` over all its (real) elements."""
    mean, var = t.mean(), t.var(unbiased=False)
    return (t - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def mha_ref(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Plain multi-head softmax attention of ``(Tq, C)`` queries over ``(Tk, C)`` keys."""
    qh, kh, vh = (rearrange(t, "t (h d) -> h t d", h=heads) for t in (q, k, v))
    scores = qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5
    return rearrange(torch.softmax(scores, dim=-1) @ vh, "h t d -> t (h d)")


def cells(size: int, step: int) -> list[slice]:
    return [slice(start, min(start + step, size)) for start in range(0, size, step)]


def h_mhsa_ref(m: HierarchicalAttention, x: Tensor) -> Tensor:
    """Eqs. 6-14 token by token, grids and pooled cells built from real tokens only."""
    h, w, c = x.shape
    xn = group_norm_ref(x, m.norm)
    qkv = xn @ m.qkv.weight.T + m.qkv.bias
    local = torch.zeros_like(x)
    for rows in cells(h, m.grid[0]):
        for cols in cells(w, m.grid[1]):
            q, k, v = qkv[rows, cols].reshape(-1, 3 * c).chunk(3, dim=-1)
            local[rows, cols] = mha_ref(q, k, v, m.heads).reshape(local[rows, cols].shape)
    if m.grid_norm is not None:
        assert isinstance(m.grid_norm, nn.GroupNorm)
        a1 = group_norm_ref(x + local, m.grid_norm)
    else:
        a1 = (xn if m.grid_residual == "normed" else x) + local
    pooled = torch.stack([a1[rows, cols].reshape(-1, c).mean(dim=0)
                          for rows in cells(h, m.pool[0]) for cols in cells(w, m.pool[1])])
    if m.ds_norm is not None:
        assert isinstance(m.ds_norm, nn.GroupNorm)
        pooled = group_norm_ref(pooled, m.ds_norm)
    k, v = (pooled @ m.kv.weight.T + m.kv.bias).chunk(2, dim=-1)
    tokens = a1.reshape(-1, c)
    a2 = mha_ref(tokens @ m.q.weight.T + m.q.bias, k, v, m.heads)
    return ((a2 + tokens) @ m.proj.weight.T + m.proj.bias).reshape(h, w, c)


def randomised(m: nn.Module) -> nn.Module:
    """Non-trivial norm affines and biases, so a wrong norm or bias cannot hide."""
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m.double()


# ------------------------------------------------------------------ the mechanism


@pytest.mark.parametrize("follow", ["paper", "official"])
@pytest.mark.parametrize(("grid", "pool", "size"), [
    (4, 3, (13, 17)), (8, 8, (5, 9)), (3, 2, (9, 3)), ((2, 5), (3, 4), (11, 7)), (4, 4, (8, 8)),
    (7, 2, (1, 1)),
])
def test_every_real_token_equals_brute_force_from_real_tokens(
    follow: str, grid: int, pool: int, size: tuple[int, int]
) -> None:
    m = randomised(HierarchicalAttention(12, 3, grid, pool, follow=follow))  # type: ignore[arg-type]
    assert isinstance(m, HierarchicalAttention)
    x = torch.randn(2, *size, 12, dtype=torch.float64)
    out = m(x)
    for b in range(2):
        torch.testing.assert_close(out[b], h_mhsa_ref(m, x[b]), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("follow", ["paper", "official"])
def test_grid_equal_to_the_map_makes_the_local_step_full_attention(follow: str) -> None:
    m = randomised(HierarchicalAttention(8, 2, grid=(6, 5), pool=1, follow=follow))  # type: ignore[arg-type]
    assert isinstance(m, HierarchicalAttention)
    normed = torch.randn(1, 6, 5, 8, dtype=torch.float64)
    q, k, v = (normed.reshape(30, 8) @ m.qkv.weight.T + m.qkv.bias).chunk(3, dim=-1)
    torch.testing.assert_close(m.local_step(normed).reshape(30, 8), mha_ref(q, k, v, 2))
    m.set_sizes(grid=8)  # larger than the map: clipped, the same full attention
    torch.testing.assert_close(m.local_step(normed).reshape(30, 8), mha_ref(q, k, v, 2))


@pytest.mark.parametrize("follow", ["paper", "official"])
def test_global_step_with_pool_1_is_full_attention_over_all_tokens(follow: str) -> None:
    m = randomised(HierarchicalAttention(8, 2, grid=3, pool=1, follow=follow))  # type: ignore[arg-type]
    assert isinstance(m, HierarchicalAttention)
    a1 = torch.randn(1, 7, 4, 8, dtype=torch.float64)
    tokens = a1.reshape(28, 8)
    keys = group_norm_ref(tokens, m.ds_norm) if m.ds_norm is not None else tokens  # type: ignore[arg-type]
    k, v = (keys @ m.kv.weight.T + m.kv.bias).chunk(2, dim=-1)
    expected = mha_ref(tokens @ m.q.weight.T + m.q.bias, k, v, 2)
    torch.testing.assert_close(m.global_step(a1).reshape(28, 8), expected)


def test_pooled_tokens_are_average_pooling_and_real_means_with_padding() -> None:
    m = HierarchicalAttention(6, 1, grid=2, pool=4, follow="paper")
    a1 = torch.randn(2, 8, 12, 6)
    expected = rearrange(F.avg_pool2d(rearrange(a1, "b h w c -> b c h w"), 4), "b c h w -> b h w c")
    torch.testing.assert_close(m.pooled_tokens(a1), expected)
    odd = torch.randn(1, 10, 7, 6)  # cells of 4x4, 4x3, 2x4 and 2x3 real tokens
    pooled = m.pooled_tokens(odd)
    assert pooled.shape == (1, 3, 2, 6)
    for i, rows in enumerate(cells(10, 4)):
        for j, cols in enumerate(cells(7, 4)):
            torch.testing.assert_close(pooled[0, i, j], odd[0, rows, cols].mean(dim=(0, 1)))


def test_grid_1_is_plain_mhsa_without_global_layers() -> None:
    m = randomised(HierarchicalAttention(8, 2, grid=1, pool=4))
    assert isinstance(m, HierarchicalAttention)
    assert {n.split(".")[0] for n, _ in m.named_parameters()} == {"norm", "qkv", "proj"}
    x = torch.randn(1, 3, 5, 8, dtype=torch.float64)
    tokens = group_norm_ref(x[0], m.norm).reshape(15, 8)  # type: ignore[arg-type]
    q, k, v = (tokens @ m.qkv.weight.T + m.qkv.bias).chunk(3, dim=-1)
    expected = mha_ref(q, k, v, 2) @ m.proj.weight.T + m.proj.bias
    torch.testing.assert_close(m(x).reshape(15, 8), expected)


def test_eq_9_adds_the_raw_input_and_the_other_reading_is_a_named_switch() -> None:
    torch.manual_seed(0)
    raw = randomised(HierarchicalAttention(8, 2, 4, 2, follow="paper"))
    normed = HierarchicalAttention(8, 2, 4, 2, follow="paper", grid_residual="normed").double()
    normed.load_state_dict(raw.state_dict())
    x = torch.randn(1, 12, 12, 8, dtype=torch.float64) * 3 + 1
    assert isinstance(raw, HierarchicalAttention) and raw.grid_residual == "input"
    for mixer in (raw, normed):
        torch.testing.assert_close(mixer(x)[0], h_mhsa_ref(mixer, x[0]), rtol=0, atol=1e-12)
    # the same step by hand: local output plus x (the default) or plus norm(x)
    local = raw.local_step(raw.norm(x))
    by_hand = raw.proj(raw.global_step(local + x) + local + x)
    torch.testing.assert_close(raw(x), by_hand, rtol=0, atol=1e-12)
    assert (raw(x) - normed(x)).abs().max() > 0.1
    with pytest.raises(ValueError, match="grid_residual must be"):
        HierarchicalAttention(8, 2, 4, 2, grid_residual="raw")  # type: ignore[arg-type]


def test_paper_mode_has_no_attention_norms_but_the_pre_norm() -> None:
    paper = HierarchicalAttention(16, 2, 4, 2, follow="paper")
    official = HierarchicalAttention(16, 2, 4, 2, follow="official")
    assert n_params(official) - n_params(paper) == 4 * 16  # grid_norm and ds_norm
    official.load_state_dict({**paper.state_dict(), **{
        k: v for k, v in official.state_dict().items() if "grid_norm" in k or "ds_norm" in k}})
    x = torch.randn(1, 8, 8, 16)
    assert not torch.allclose(paper(x), official(x))


@pytest.mark.parametrize("follow", ["paper", "official"])
@pytest.mark.parametrize(("grid", "pool"), [(8, 8), (7, 4), (3, 2), ((2, 5), (3, 1)), (1, 1)])
@pytest.mark.parametrize("size", [(14, 14), (56, 56), (13, 17), (5, 9), (1, 1), (16, 4)])
def test_closed_form_equals_measured_macs(
    follow: str, grid: int, pool: int, size: tuple[int, int]
) -> None:
    m = HierarchicalAttention(16, 2, grid, pool, follow=follow).to("meta")  # type: ignore[arg-type]
    measured = count_macs(m, torch.zeros(1, *size, 16, device="meta"))
    assert m.macs(*size) == measured == h_mhsa_macs(*size, 16, grid, pool)


def test_closed_form_relates_to_eq_15() -> None:
    h = w = 56
    c, g1, g2, n = 48, 8, 8, 56 * 56
    eq15 = h * w * c * (4 * c + 2 * g1**2) + 2 * (h * w // g2**2) * c * (c + h * w)
    assert h_mhsa_macs(h, w, c, g1, g2) == eq15 + n * c * c  # plus the query projection W_2^q


def test_invalid_sizes_and_modes_raise_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="grid"):
        HierarchicalAttention(8, 2, grid=0)
    with pytest.raises(ValueError, match="pool"):
        HierarchicalAttention(8, 2, grid=4, pool=(2, 0))
    with pytest.raises(ValueError, match="pool"):
        HierarchicalAttention(8, 2, grid=4, pool=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="follow"):
        HierarchicalAttention(8, 2, follow="code")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grid"):
        HierarchicalAttention(8, 2, grid=4).set_sizes(grid=1)
    with pytest.raises(ValueError, match="grid"):
        HierarchicalAttention(8, 2, grid=1).set_sizes(grid=4)
    with pytest.raises(ValueError, match="heads"):
        HierarchicalAttention(8, 3)
    with pytest.raises(ValueError, match="C=8"):
        HierarchicalAttention(8, 2)(torch.zeros(1, 4, 4, 6))


# ------------------------------------------------------------------ models

OFFICIAL_PARAMS = {"tiny": 12_655_912, "small": 25_747_784, "medium": 42_942_472,
                   "large": 63_132_488}


def proj_norm_params(model: nn.Module) -> int:
    """``2 C`` per block: the official parameter minilg does not build."""
    return sum(2 * m.dim for m in model.modules() if isinstance(m, HierarchicalAttention))


@pytest.mark.parametrize("variant", list(OFFICIAL_PARAMS))
def test_parameters_equal_the_official_code_less_the_unused_proj_norm(variant: str) -> None:
    official = on_meta(f"hat_net_{variant}")
    assert n_params(official) + proj_norm_params(official) == OFFICIAL_PARAMS[variant]
    assert abs(n_params(official) / OFFICIAL_PARAMS[variant] - 1) < 1e-3
    paper = on_meta(f"hat_net_{variant}", follow="paper")
    hmhsa = [m.dim for m in official.modules()
             if isinstance(m, HierarchicalAttention) and not m.is_msa]
    assert n_params(official) - n_params(paper) == 4 * sum(hmhsa)


def test_attention_groupnorms_of_tiny_hold_18432_parameters() -> None:
    model = on_meta("hat_net_tiny")
    norms = sum(p.numel() for n, p in model.named_parameters() if ".mixer." in n and "norm" in n)
    assert norms + proj_norm_params(model) == 18_432


def published_gmacs() -> dict[str, float]:
    with TABLE_PATH.open("r") as f:
        return {row["minilg_model"]: float(row["gmacs"]) for row in csv.DictReader(f)
                if row["minilg_model"].startswith("hat_net")}


@pytest.mark.parametrize("variant", list(OFFICIAL_PARAMS))
def test_published_macs_leave_out_the_attention_matmuls(variant: str) -> None:
    model = on_meta(f"hat_net_{variant}")
    b = model.macs_breakdown(224)
    published = published_gmacs()[f"hat_net_{variant}"]
    assert round((b.without_attention + b.norm_elements) / 1e9, 1) == published
    assert round(b.total / 1e9, 1) > published  # the complete count is larger
    assert b.total == model.macs(224)


@pytest.mark.parametrize(("name", "overrides", "resolution"), [
    ("hat_net_tiny", {}, 224), ("hat_net_tiny", {"follow": "paper"}, 200),
    ("hat_net_mini", {}, 32), ("hat_net_mini", {}, 45),
    ("hat_net_small", {"window_stages": (0, 1, 2), "depthwise": False}, 100),
])
def test_model_closed_form_equals_measured_macs(
    name: str, overrides: dict[str, object], resolution: int
) -> None:
    model = on_meta(name, **overrides).eval()
    measured = count_macs(model, torch.zeros(1, 3, resolution, resolution, device="meta"))
    assert model.macs(resolution) == measured


def micro(**overrides: object) -> nn.Module:
    """HAT-Net-T's structure with dims / 6 (the official fixture's configuration)."""
    return minilg.create_model("hat_net_tiny", dims=(8, 16, 40, 64), head_dim=8, num_classes=10,
                               **overrides).eval()


def test_same_model_runs_at_224_and_320_after_changing_grid_sizes() -> None:
    model = micro()
    x224, x320 = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 320, 320)
    assert model(x224).shape == (1, 10)
    before = model.macs(320)
    model.set_grid_sizes((8, 8, 8, 1), (16, 8, 4, 1))  # the paper's dense-prediction setting
    mixers = model.hierarchical_mixers()
    assert [ms[0].grid for ms in mixers] == [(8, 8), (8, 8), (8, 8), (1, 1)]
    assert [ms[0].pool for ms in mixers[:3]] == [(16, 16), (8, 8), (4, 4)]
    feats = model.forward_intermediates(x320, intermediates_only=True)
    assert [tuple(f.shape) for f in feats] == [(1, 8, 80, 80), (1, 16, 40, 40), (1, 40, 20, 20),
                                                (1, 64, 10, 10)]
    assert torch.isfinite(model(x320)).all() and model.macs(320) != before
    with pytest.raises(ValueError, match="grid"):
        model.set_grid_sizes((8, 8, 8, 8))
    with pytest.raises(ValueError, match="pool_sizes"):
        model.set_grid_sizes(pool_sizes=(2, 2))


def test_table_5_switches() -> None:
    model = micro(window_stages=(1, 2), depthwise=False, act="gelu")
    kinds = [type(stage.blocks[0].mixer) for stage in model.stages]
    assert kinds == [HierarchicalAttention, NormedWindowAttention, NormedWindowAttention,
                     HierarchicalAttention]
    shifts = [b.mixer.shift for b in model.stages[1].blocks]
    assert shifts == [(0, 0), (3, 3)]
    assert all(isinstance(b.mlp, PointwiseMlp) for s in model.stages for b in s.blocks)
    assert not any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_invalid_config_raises_naming_the_field() -> None:
    for overrides, field in [({"grid_sizes": (8, 7, 7)}, "grid_sizes"),
                             ({"pool_sizes": (8, 0, 2, 1)}, "pool"),
                             ({"window_stages": (3,)}, "window_stages"),
                             ({"act": "relu"}, "act"), ({"head_dim": 7}, "head_dim"),
                             ({"follow": "both"}, "follow")]:
        with pytest.raises(ValueError, match=field):
            on_meta("hat_net_tiny", **overrides)


def test_mini_runs_on_the_shared_frame() -> None:
    model = minilg.create_model("hat_net_mini").eval()
    feats = model.forward_intermediates(torch.randn(2, 3, 32, 32), intermediates_only=True)
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 16, 16), (64, 8, 8), (128, 4, 4),
                                                    (256, 2, 2)]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ------------------------------------------------------------------ official conversion


def load_fixture() -> tuple[dict[str, Tensor], dict[str, object]]:
    tensors = load_file(FIXTURE)
    with safe_open(FIXTURE, "pt") as f:
        config = json.loads(f.metadata()["config"])
    return tensors, config


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_official_fixture_is_reproduced_at_224_and_448(
    dtype: torch.dtype, tolerance: float
) -> None:
    tensors, config = load_fixture()
    state = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    conversion = convert_official("hat_net", state, **config)
    assert set(conversion.used) | set(conversion.dropped) == set(state)
    model = conversion.model.to(dtype)
    for size in (224, 448):
        x = tensors[f"input_{size}"].to(dtype)
        with torch.no_grad():
            logits, feats = model(x), model.forward_intermediates(x, intermediates_only=True)
        pairs = [(logits, tensors[f"logits_{size}"])]
        pairs += [(f, tensors[f"stage{i}_{size}"]) for i, f in enumerate(feats)]
        for ours, ref in pairs:
            assert ours.shape == ref.shape
            error = (ours.double() - ref).abs().max() / max(1.0, ref.abs().max().item())
            assert error <= tolerance, (size, error)


def test_full_size_key_list_converts_into_hat_net_tiny() -> None:
    state = {}
    for line in (DATA / "hat_net_tiny_official.keys.tsv").read_text().splitlines():
        key, shape, _ = line.split("\t")
        state[key] = torch.zeros(tuple(int(s) for s in shape.split(",")))
    config = {"dims": [48, 96, 240, 384], "head_dim": 48, "expansions": [8, 8, 4, 4],
              "grid_sizes": [8, 7, 7, 1], "ds_ratios": [8, 4, 2, 1], "depths": [2, 2, 6, 3]}
    conversion = convert_official("hat_net", state, **config)
    assert set(conversion.used) | set(conversion.dropped) == set(state)
    assert all(k.endswith(("proj_norm.weight", "proj_norm.bias")) for k in conversion.dropped)
    assert len(conversion.dropped) == 2 * 13
    assert n_params(conversion.model) == n_params(on_meta("hat_net_tiny"))
    assert set(conversion.used.values()) == set(conversion.model.state_dict())
    assert all(official_key(name) == key for key, name in conversion.used.items())
    assert "kernel_sizes" in conversion.defaults


def test_conversion_errors_name_the_problem() -> None:
    tensors, config = load_fixture()
    state = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    with pytest.raises(ConversionError, match=r"blocks\.0\.0\.attn\.extra\.weight"):
        convert_official("hat_net", {**state, "blocks.0.0.attn.extra.weight": torch.zeros(1)},
                         **config)
    bad = {**state, "blocks.0.0.attn.q.weight": torch.zeros(9, 8, 1, 1)}
    with pytest.raises(ConversionError, match=r"blocks\.0\.0\.attn\.q\.weight"):
        convert_official("hat_net", bad, **config)
    with pytest.raises(ConversionError, match="drop_rate"):
        convert_official("hat_net", state, **{**config, "drop_rate": 0.1})
    missing = {k: v for k, v in state.items() if k != "classifier.1.bias"}
    with pytest.raises(ConversionError, match=r"classifier\.1\.bias"):
        convert_official("hat_net", missing, **config)


@pytest.mark.parametrize("which", ["irb", "mlp"])
def test_activations_in_place_change_neither_values_nor_gradients(which: str) -> None:
    """The IRB's SiLUs and the MLP's GELU overwrite their input (a fresh rC-wide map costs more
    than the activation on the CPU); outputs and every gradient equal the out-of-place ones."""
    torch.manual_seed(0)
    module: nn.Module = ConvMlp(8, 4.0) if which == "irb" else Mlp(8)
    acts = [m for m in module.modules() if isinstance(m, (nn.SiLU, nn.GELU))]
    assert [m.inplace for m in acts] == ([True, True] if which == "irb" else [True])
    x = torch.randn(2, 5, 6, 8, requires_grad=True)

    def run(out_of_place: bool) -> list[Tensor]:
        module.zero_grad(set_to_none=True)
        x.grad = None
        if out_of_place and isinstance(module, Mlp):
            out = module.fc2(F.gelu(module.fc1(x)))
        elif out_of_place:
            hidden = F.silu(module.conv1[1](module.conv1[0](x)))  # norm, 1x1, then SiLU
            hidden = F.silu(module.conv2[0](rearrange(hidden, "b h w c -> b c h w")))
            out = module.conv3(rearrange(hidden, "b c h w -> b h w c"))
        else:
            out = module(x)
        out.square().sum().backward()
        assert x.grad is not None
        return [out.detach(), x.grad, *(p.grad for p in module.parameters() if p.grad is not None)]

    assert all(torch.equal(a, b) for a, b in zip(run(False), run(True), strict=True))
