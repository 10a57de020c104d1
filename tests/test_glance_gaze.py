"""Glance-and-Gaze attention (GG Sec. 3.2-3.4): splitting, masking, cost, models, ablations."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import minilg
from minilg.attention import FullAttention, GlanceGazeAttention, WindowAttention
from minilg.attention.glance_gaze import (
    adaptive_gaze_kernel,
    dilated_merge,
    dilated_split,
    dilation_rate,
    effective_partition,
    gg_msa_macs,
)
from minilg.complexity import count_macs, model_macs

SIZES = [(14, 14), (57, 61), (5, 9), (1, 1), (8, 8), (7, 21), (13, 4)]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(name: str, **overrides: object) -> torch.nn.Module:
    """Build a model on the meta device: shapes only, no memory, no initialisation (fast)."""
    with torch.device("meta"):
        return minilg.create_model(name, **overrides)


def measured_on_meta(model: torch.nn.Module, resolution: int) -> int:
    """``count_macs`` on the meta device: FlopCounterMode needs shapes only, no arithmetic."""
    model = model.eval().to("meta")
    return count_macs(model, torch.zeros(1, 3, resolution, resolution, device="meta"))


# ---------------------------------------------------------------- splitting (Eqs. 6-8, 10)


@pytest.mark.parametrize(("size", "m"), list(itertools.product(SIZES, [1, 3, 7, (2, 5)])))
def test_split_then_merge_is_identity(size: tuple[int, int], m: int | tuple[int, int]) -> None:
    x = torch.randn(2, *size, 5)
    parts = dilated_split(x, m)
    mh, mw = (m, m) if isinstance(m, int) else m
    dh, dw = dilation_rate(size, m)
    assert parts.shape == (2, dh * dw, mh * mw, 5)
    assert torch.equal(dilated_merge(parts, m, size), x)


@pytest.mark.parametrize(("size", "m"), [((14, 14), 7), ((56, 56), 7), ((57, 61), 7), ((5, 9), 2)])
def test_every_partition_holds_tokens_at_the_dilation_stride(
    size: tuple[int, int], m: int
) -> None:
    h, w = size
    dh, dw = dilation_rate(size, m)
    assert (dh, dw) == (-(-h // m), -(-w // m))
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([rows, cols], dim=-1)[None] + 1  # 1-based so padding (0) stands out
    parts = dilated_split(coords, m)[0]  # (dh*dw, m*m, 2)
    for i, j in itertools.product(range(dh), range(dw)):
        for a, b in itertools.product(range(m), range(m)):
            r, c = i + a * dh, j + b * dw
            expected = [r + 1, c + 1] if r < h and c < w else [0, 0]  # padded slot holds zeros
            assert parts[i * dw + j, a * m + b].tolist() == expected


def test_effective_partition_keeps_the_dilation_rate() -> None:
    for h, m in itertools.product(range(1, 70), range(1, 10)):
        (mp, _), (d, _) = effective_partition((h, h), m), dilation_rate((h, h), m)
        assert mp <= m and dilation_rate((h, h), mp)[0] == d and mp * d >= h
        assert mp == min(m, h) or h > m
    assert effective_partition((56, 56), 7) == (7, 7)
    assert effective_partition((8, 8), 7) == (4, 4)
    assert effective_partition((5, 9), 7) == (5, 5)


# ---------------------------------------------------------------- glance (Eq. 9)


@pytest.mark.parametrize(("size", "m"), [((6, 6), 6), ((5, 5), 7), ((3, 7), 7), ((4, 5), 5)])
def test_glance_with_one_partition_equals_full_msa(size: tuple[int, int], m: int) -> None:
    torch.manual_seed(0)
    full = FullAttention(16, 4)
    gg = GlanceGazeAttention(16, 4, partition=m, branches="glance")
    assert gg.position_bias is not None
    torch.nn.init.zeros_(gg.position_bias.bias_table)
    gg.qkv.load_state_dict(full.qkv.state_dict())
    gg.proj.load_state_dict(full.proj.state_dict())
    x = torch.randn(2, *size, 16)
    torch.testing.assert_close(gg(x), full(x), rtol=1e-5, atol=1e-6)


def reference_gg(mixer: GlanceGazeAttention, x: torch.Tensor) -> torch.Tensor:
    """GG-MSA token by token, straight from Eqs. 8-9 and 13 with the paper's ``d = ceil(H/M)``:
    each real query attends to the real tokens with the same (row mod d_h, col mod d_w); no
    padded slot exists here at all."""
    _, h, w, c = x.shape
    m = mixer.partition[0]
    dh, dw = -(-h // m), -(-w // m)
    heads = mixer.heads
    q, k, v = mixer.qkv(x).chunk(3, dim=-1)
    assert mixer.position_bias is not None
    table = mixer.position_bias.bias_table  # ((2M-1)^2, heads)
    out = torch.zeros_like(q)
    for i, j in itertools.product(range(h), range(w)):
        keys = [(r, s) for r in range(i % dh, h, dh) for s in range(j % dw, w, dw)]
        kr = torch.stack([k[:, r, s] for r, s in keys], dim=1)  # (B, T, C)
        vr = torch.stack([v[:, r, s] for r, s in keys], dim=1)
        offsets = [((i // dh - r // dh) + m - 1) * (2 * m - 1) + (j // dw - s // dw) + m - 1
                   for r, s in keys]
        bias = table[offsets].T  # (heads, T)
        qh = rearrange(q[:, i, j], "b (n d) -> b n 1 d", n=heads)
        kh = rearrange(kr, "b t (n d) -> b n t d", n=heads)
        vh = rearrange(vr, "b t (n d) -> b n t d", n=heads)
        logits = (qh @ kh.transpose(-1, -2))[:, :, 0] / (c // heads) ** 0.5 + bias
        out[:, i, j] = rearrange(logits.softmax(-1)[:, :, None] @ vh, "b n 1 d -> b (n d)")
    assert mixer.gaze_conv is not None
    gaze = F.conv2d(rearrange(v, "b h w c -> b c h w"), mixer.gaze_conv.weight,
                    mixer.gaze_conv.bias, padding=mixer.gaze_conv.padding, groups=c)
    return mixer.proj(out + rearrange(gaze, "b c h w -> b h w c"))


@pytest.mark.parametrize(("size", "m"), [((5, 9), 3), ((8, 8), 7), ((7, 5), 2), ((9, 9), 3)])
def test_padding_never_changes_real_outputs(size: tuple[int, int], m: int) -> None:
    torch.manual_seed(1)
    mixer = GlanceGazeAttention(8, 2, partition=m, gaze_kernel=3)
    assert mixer.position_bias is not None
    torch.nn.init.normal_(mixer.position_bias.bias_table, std=1.0)  # a bias that matters
    x = torch.randn(2, *size, 8)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), reference_gg(mixer, x), rtol=1e-4, atol=1e-5)


def test_gaze_only_uses_no_attention_and_every_parameter() -> None:
    mixer = GlanceGazeAttention(8, 2, partition=3, gaze_kernel=5, branches="gaze")
    assert mixer.v.out_features == 8 and mixer.position_bias is None
    assert not hasattr(mixer, "qkv")
    x = torch.randn(1, 6, 7, 8)
    mixer(x).sum().backward()
    assert all(p.grad is not None for p in mixer.parameters())
    # Gaze only is local: an output token depends on its 5x5 neighbourhood only.
    x = torch.randn(1, 9, 9, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(mixer(x)[0, 0, 0].sum(), x)
    reach = grad.abs().sum(-1)[0] > 0
    assert reach[:3, :3].all() and reach.sum() == 9


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [0, -1, (7, 0), 2.5])
def test_invalid_partition_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="partition"):
        GlanceGazeAttention(8, 2, partition=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="partition"):
        minilg.create_model("gg_mini", partition=bad)


@pytest.mark.parametrize("bad", [0, 2, 4, -3, (3, 2)])
def test_invalid_gaze_kernel_raises(bad: object) -> None:
    with pytest.raises(ValueError, match=r"gaze_kernel.*odd"):
        GlanceGazeAttention(8, 2, gaze_kernel=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gaze_kernel"):
        minilg.create_model("gg_mini", gaze_kernel=bad)


def test_invalid_switches_raise() -> None:
    with pytest.raises(ValueError, match="branches"):
        GlanceGazeAttention(8, 2, branches="glance+conv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="branches"):
        minilg.create_model("gg_mini", branches="both")
    with pytest.raises(ValueError, match="msa_stages"):
        minilg.create_model("gg_mini", msa_stages=(4,))
    with pytest.raises(ValueError, match="gaze_kernel"):
        minilg.create_model("gg_mini", gaze_kernel=(3, 3))  # per stage needs 4 entries


# ---------------------------------------------------------------- cost (Eq. 14)


@pytest.mark.parametrize("size", [(56, 56), (14, 14), (57, 61), (5, 9), (1, 1), (8, 8), (7, 3)])
@pytest.mark.parametrize(("dim", "heads", "m", "k", "branches"), [
    (16, 2, 7, 3, "glance+gaze"), (12, 3, 4, 5, "glance"), (8, 1, 3, 9, "gaze"),
    (24, 4, 2, (3, 5), "glance+gaze"),
])
def test_closed_form_equals_measured(
    size: tuple[int, int], dim: int, heads: int, m: int, k: int | tuple[int, int], branches: str
) -> None:
    mixer = GlanceGazeAttention(dim, heads, m, k, branches)  # type: ignore[arg-type]
    x = torch.randn(1, *size, dim)
    assert mixer.macs(*size) == count_macs(mixer, x)


def test_closed_form_is_eq_14_when_m_divides_the_map() -> None:
    n, c, m, k = 56 * 56, 96, 7, 9
    assert gg_msa_macs(56, 56, c, m, k) == 4 * n * c**2 + 2 * m**2 * n * c + k**2 * n * c


# ---------------------------------------------------------------- models


def test_gg_tiny_adaptive_kernels_are_9_5_3_3() -> None:
    assert [adaptive_gaze_kernel((s, s), 7)[0] for s in (56, 28, 14, 7)] == [9, 5, 3, 3]
    model = on_meta("gg_tiny")
    kernels = [{b.mixer.gaze_kernel for b in stage} for stage in model.stages]
    assert kernels == [{(9, 9)}, {(5, 5)}, {(3, 3)}, {(3, 3)}]
    assert all(isinstance(b.mixer, GlanceGazeAttention) for s in model.stages for b in s)
    mini = minilg.create_model("gg_mini")
    assert [stage[0].mixer.gaze_kernel[0] for stage in mini.stages] == [5, 3, 3, 3]


@pytest.mark.parametrize(
    ("name", "params_m", "gmacs"), [("gg_tiny", 28, 4.5), ("gg_small", 50, 8.7)]
)
def test_gg_targets_and_exact_model_macs(name: str, params_m: float, gmacs: float) -> None:
    model = on_meta(name)
    assert abs(n_params(model) / 1e6 - params_m) / params_m < 0.02
    macs = model_macs(model, 224)
    assert abs(macs / 1e9 - gmacs) / gmacs < 0.03
    if name == "gg_tiny":
        assert macs == measured_on_meta(model, 224)


@pytest.mark.parametrize("name", ["gg_deit_tiny", "gg_deit_small"])
def test_gg_deit_macs_and_no_class_token(name: str) -> None:
    model = on_meta(name)
    assert model.num_prefix == 0
    assert model_macs(model) == measured_on_meta(model, 224)


@pytest.mark.parametrize(
    "name", ["gg_mini", "gg_mini_glance", "gg_mini_gaze", "gg_mini_glance_window"]
)
def test_minis_exact_macs_at_other_sizes(name: str) -> None:
    # Train step and nominal-size MACs of every mini: tests/test_models.py. Here: sizes whose
    # maps M = 4 does not divide (40 px -> 20, 10, 5, 3 tokens; 36 px -> 18, 9, 5, 3).
    for resolution in (40, 36):
        assert model_macs(on_meta(name), resolution) == measured_on_meta(on_meta(name), resolution)


def test_gg_tiny_exact_macs_at_a_padded_resolution() -> None:
    # 100 px -> maps 25, 13, 7, 4: dilation rates 4, 2, 1, 1 with padding in the first two.
    model = on_meta("gg_tiny", img_size=100, num_classes=7)
    assert model_macs(model, 100) == measured_on_meta(model, 100)


def test_mini_matches_swin_mini_and_ablations_are_wired() -> None:
    swin = on_meta("swin_mini")
    gg = on_meta("gg_mini")
    for a, b in zip(swin.stages, gg.stages, strict=True):
        assert len(a) == len(b) and a[0].mixer.dim == b[0].mixer.dim
        assert a[0].mixer.heads == b[0].mixer.heads and b[0].mixer.partition == (4, 4)
    mixers = [b.mixer for s in on_meta("gg_mini_glance_window").stages for b in s]
    assert all(isinstance(mx, GlanceGazeAttention) and mx.branches == "glance"
               for mx in mixers[0::2])
    assert all(isinstance(mx, WindowAttention) and mx.shift == (0, 0) for mx in mixers[1::2])
    # branches="window" is Swin itself: same parameters and MACs as swin_mini.
    window = on_meta("gg_mini", branches="window")
    assert n_params(window) == n_params(swin)
    assert model_macs(window, 32) == model_macs(swin, 32)
    msa = on_meta("gg_mini", branches="window", msa_stages=(2, 3))
    kinds = [type(s[0].mixer) for s in msa.stages]
    assert kinds == [WindowAttention, WindowAttention, FullAttention, FullAttention]
    fixed = on_meta("gg_mini", gaze_kernel=(7, 5, 3, 1))
    assert [s[0].mixer.gaze_kernel for s in fixed.stages] == [(7, 7), (5, 5), (3, 3), (1, 1)]
    # GG blocks never shift: consecutive blocks are the same mixer type with the same partition.
    assert all(b.mixer.partition == (4, 4) and b.mixer.branches == "glance+gaze"
               for s in gg.stages for b in s)
