"""Baseline mixers: MSA, W-MSA / SW-MSA, SRA. Exact MAC equality and behaviour at the limits."""

from __future__ import annotations

import itertools

import pytest
import torch
from einops import rearrange
from torch import Tensor

import minilg
from minilg.attention import FullAttention, SpatialReductionAttention, WindowAttention
from minilg.attention.base import TokenMixer, reference_math
from minilg.attention.focal import FocalAttention
from minilg.attention.glance_gaze import GlanceGazeAttention
from minilg.attention.hierarchical import HierarchicalAttention
from minilg.attention.semantic_regions import SemanticRegionAttention
from minilg.complexity import count_macs, msa_macs, sra_macs, window_msa_macs

SIZES = [(14, 14), (57, 61), (7, 7), (5, 9), (1, 1), (3, 20)]
CONFIGS = [(32, 4, 7), (24, 3, 4), (16, 2, (3, 5))]


def measured(mixer: TokenMixer, height: int, width: int) -> int:
    return count_macs(mixer, torch.randn(1, height, width, mixer.dim))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_macs_are_exact(
    size: tuple[int, int], config: tuple[int, int, int | tuple[int, int]], shifted: bool
) -> None:
    dim, heads, window = config
    pair = (window, window) if isinstance(window, int) else window
    shift = (pair[0] // 2, pair[1] // 2) if shifted else 0
    mixer = WindowAttention(dim, heads, window, shift=shift)
    assert mixer.macs(*size) == measured(mixer, *size)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dim,heads", [(32, 4), (24, 3)])
def test_full_attention_macs_are_exact(size: tuple[int, int], dim: int, heads: int) -> None:
    mixer = FullAttention(dim, heads)
    assert mixer.macs(*size) == measured(mixer, *size) == msa_macs(size[0] * size[1], dim)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("reduction", [1, 2, 4, 8])
def test_sra_macs_are_exact(size: tuple[int, int], reduction: int) -> None:
    mixer = SpatialReductionAttention(32, 4, reduction)
    assert mixer.macs(*size) == measured(mixer, *size)


def test_closed_forms_equal_the_papers_formulas_on_divisible_maps() -> None:
    n, c, m = 56 * 56, 96, 7
    assert msa_macs(n, c) == 4 * n * c**2 + 2 * n**2 * c  # GG Eq. 4
    assert window_msa_macs(56, 56, c, (m, m)) == 4 * n * c**2 + 2 * m**2 * n * c  # GG Eq. 12
    r = 8  # PVT SRA as in the counting notes: q, SR conv, k/v, out, attention
    expected = n * c**2 + n * c**2 + 2 * (n // r**2) * c**2 + n * c**2 + 2 * n**2 * c // r**2
    assert sra_macs(56, 56, c, r) == expected


def copy_qkv(source: WindowAttention, target: FullAttention) -> None:
    target.qkv.load_state_dict(source.qkv.state_dict())
    target.proj.load_state_dict(source.proj.state_dict())


@pytest.mark.parametrize("size", [(7, 7), (5, 6)])
def test_window_as_large_as_the_map_equals_full_msa(size: tuple[int, int]) -> None:
    window = WindowAttention(32, 4, window=7)
    assert window.position_bias is not None
    torch.nn.init.zeros_(window.position_bias.bias_table)
    full = FullAttention(32, 4)
    copy_qkv(window, full)
    x = torch.randn(2, *size, 32)
    torch.testing.assert_close(window(x), full(x))


def test_padding_never_changes_real_tokens() -> None:
    """A 9x10 map with 4x4 windows: each (partial) window equals MSA on its real tokens alone."""
    window = WindowAttention(16, 2, window=4)
    assert window.position_bias is not None
    torch.nn.init.zeros_(window.position_bias.bias_table)
    full = FullAttention(16, 2)
    copy_qkv(window, full)
    x = torch.randn(1, 9, 10, 16)
    out = window(x)
    for top, left in itertools.product(range(0, 9, 4), range(0, 10, 4)):
        crop = x[:, top : top + 4, left : left + 4]
        torch.testing.assert_close(out[:, top : top + 4, left : left + 4], full(crop))


def reachable(
    size: tuple[int, int], window: int, shift: int, source: tuple[int, int]
) -> set[tuple[int, int]]:
    """Tokens whose SW-MSA output can depend on ``source``, derived from first principles.

    After the cyclic roll by ``-shift`` on the padded map, two tokens interact only if they fall
    in the same window *and* the roll did not wrap between them (their offset is unchanged).
    """
    hp, wp = (-(-n // window) * window for n in size)
    rolled = {
        (i, j): ((i - shift) % hp, (j - shift) % wp)
        for i in range(size[0])
        for j in range(size[1])
    }
    si, sj = rolled[source]
    return {
        (i, j)
        for (i, j), (ri, rj) in rolled.items()
        if ri // window == si // window
        and rj // window == sj // window
        and ri - si == i - source[0]
        and rj - sj == j - source[1]
    }


def changed_outputs(mixer: TokenMixer, x: Tensor, source: tuple[int, int]) -> set[tuple[int, int]]:
    perturbed = x.clone()
    perturbed[0, source[0], source[1]] += 10.0
    diff = (mixer(perturbed) - mixer(x)).abs().amax(dim=-1)[0]
    return {(int(i), int(j)) for i, j in (diff > 1e-6).nonzero().tolist()}


@pytest.mark.parametrize("size", [(8, 8), (10, 9)])
def test_shifted_windows_never_attend_across_region_boundaries(size: tuple[int, int]) -> None:
    mixer = WindowAttention(8, 2, window=4, shift=2).eval()
    x = torch.randn(1, *size, 8)
    with torch.no_grad():
        for source in itertools.product(range(size[0]), range(size[1])):
            assert changed_outputs(mixer, x, source) == reachable(size, 4, 2, source), source


def test_unshifted_windows_stay_inside_their_window() -> None:
    mixer = WindowAttention(8, 2, window=4).eval()
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        changed = changed_outputs(mixer, x, (5, 2))
    assert changed == {(i, j) for i in range(4, 8) for j in range(0, 4)}


@pytest.mark.parametrize(
    "build",
    [
        lambda: WindowAttention(30, 4),
        lambda: WindowAttention(32, 4, window=0),
        lambda: WindowAttention(32, 4, window=4, shift=4),
        lambda: FullAttention(32, 0),
        lambda: SpatialReductionAttention(32, 4, reduction=0),
    ],
)
def test_invalid_configurations_raise_value_error(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def test_value_error_names_the_argument_and_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"^heads must divide dim=30 \(allowed values: "
                       r"1, 2, 3, 5, 6, 10, 15, 30\), got heads=4$"):
        FullAttention(30, 4)


@pytest.mark.parametrize(
    "mixer", [FullAttention(8, 2), WindowAttention(8, 2, 4, 2), SpatialReductionAttention(8, 2, 2)]
)
def test_wrong_input_rank_or_channels_raise(mixer: TokenMixer) -> None:
    with pytest.raises(ValueError, match="4 dims"):
        mixer(torch.randn(2, 16, 8))
    with pytest.raises(ValueError, match="C=8"):
        mixer(torch.randn(2, 4, 4, 6))


@pytest.mark.parametrize(
    "mixer", [FullAttention(8, 2), WindowAttention(8, 2, 4, 2), SpatialReductionAttention(8, 2, 2)]
)
@pytest.mark.parametrize("size", [(1, 1), (1, 7), (6, 5)])
def test_any_size_maps_to_the_same_shape_without_nan(
    mixer: TokenMixer, size: tuple[int, int]
) -> None:
    x = torch.randn(2, *size, 8, requires_grad=True)
    y = mixer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def pvt_reference_sra(mixer: SpatialReductionAttention, x: Tensor) -> Tensor:
    """PVT's SRA written directly (conv k=R, stride R, no padding), for maps R divides."""
    b, h, w, c = x.shape
    heads, d = mixer.heads, c // mixer.heads
    q = mixer.q(x.reshape(b, h * w, c)).reshape(b, h * w, heads, d).transpose(1, 2)
    reduced = mixer.reduce(x.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
    norm = mixer.norm
    assert isinstance(norm, torch.nn.LayerNorm)
    normed = torch.nn.functional.layer_norm(reduced, (c,), norm.weight, norm.bias, eps=1e-5)
    k, v = mixer.kv(normed).reshape(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-1, -2) / d**0.5).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(b, h * w, c)
    return mixer.proj(out).reshape(b, h, w, c)


def test_sra_equals_pvt_on_divisible_maps() -> None:
    mixer = SpatialReductionAttention(16, 2, reduction=4).eval()
    x = torch.randn(2, 8, 12, 16)
    torch.testing.assert_close(mixer(x), pvt_reference_sra(mixer, x))


def test_sra_reduction_norm_has_pvts_default_eps() -> None:
    mixer = SpatialReductionAttention(16, 2, reduction=4).double().eval()
    x = torch.randn(1, 8, 8, 16, dtype=torch.float64) * 1e-3  # small: eps matters
    torch.testing.assert_close(mixer(x), pvt_reference_sra(mixer, x), rtol=1e-12, atol=1e-12)
    model = minilg.create_model("sra_mini")
    eps = {type(m.mixer).__name__: m.norm1.eps for m in model.modules() if hasattr(m, "mixer")}
    assert eps == {"SpatialReductionAttention": 1e-6}  # block norms stay at 1e-6
    assert {m.norm.eps for m in model.modules()
            if isinstance(m, SpatialReductionAttention) and m.reduction > 1} == {1e-5}


def test_sra_keeps_border_tokens_that_pvt_floor_division_would_drop() -> None:
    """On a 9x9 map with R=4, PVT's unpadded conv sees only rows/cols 0-7; minilg zero-pads to
    12x12 so the last row and column still feed a key (nothing is silently lost)."""
    mixer = SpatialReductionAttention(8, 2, reduction=4).eval()
    x = torch.randn(1, 9, 9, 8)
    with torch.no_grad():
        assert changed_outputs(mixer, x, (8, 8)) == {(i, j) for i in range(9) for j in range(9)}


# Every mechanism on a map its window / partition / grid does not divide (padding on the path).
REFERENCE_CASES = {
    "MSA": lambda: FullAttention(16, 2),
    "W-MSA": lambda: WindowAttention(16, 2, 4),
    "SW-MSA": lambda: WindowAttention(16, 2, 4, shift=2),
    "SRA": lambda: SpatialReductionAttention(16, 2, reduction=2),
    "GG-MSA": lambda: GlanceGazeAttention(16, 2, 3),
    "Focal paper": lambda: FocalAttention(16, 2, 7, ((1, 13), (7, 7)), follow="paper", shift=3),
    "Focal official": lambda: FocalAttention(16, 2, 7, ((1, 13), (7, 7)), follow="official",
                                             shift=3),
    "H-MHSA": lambda: HierarchicalAttention(16, 2, 4, 3),
    "SALG": lambda: SemanticRegionAttention(16, 2, window=3, margin=1),
}


@pytest.mark.parametrize("name", list(REFERENCE_CASES))
def test_reference_math_gives_the_same_result(name: str) -> None:
    mixer = REFERENCE_CASES[name]().double()
    x = torch.randn(2, 17, 20, 16, dtype=torch.float64)
    fast = mixer(x)
    with reference_math():
        slow = mixer(x)
    torch.testing.assert_close(fast, slow)


def _sw_msa_one_call(mixer: WindowAttention, x: Tensor) -> Tensor:
    """SW-MSA as one masked attention over all windows: roll, partition, softmax with the
    position bias and the region mask, reverse, roll back, project (Swin Sec. 3.2)."""
    (mh, mw), shift = mixer.effective(x.shape[1], x.shape[2])
    rolled = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    windows = rearrange(rolled, "b (nh mh) (nw mw) c -> b (nh nw) (mh mw) c", mh=mh, mw=mw)
    q, k, v = rearrange(mixer.qkv(windows), "b g t (s h d) -> s b g h t d", s=3, h=mixer.heads)
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    assert mixer.position_bias is not None
    scores = scores + mixer.position_bias((mh, mw))
    allowed = mixer.window_mask((x.shape[1], x.shape[2]), x.device)
    assert allowed is not None
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = rearrange(scores.softmax(-1) @ v, "b g h t d -> b g t (h d)")
    out = rearrange(out, "b (nh nw) (mh mw) c -> b (nh mh) (nw mw) c", nh=x.shape[1] // mh, mh=mh)
    result: Tensor = mixer.proj(torch.roll(out, shifts=shift, dims=(1, 2)))
    return result


@pytest.mark.parametrize(("size", "window", "shift"), [((16, 12), 4, 2), ((8, 8), 4, (2, 0)),
                                                        ((12, 12), 3, 1)])
def test_shifted_windows_per_class_equal_one_masked_call(
    size: tuple[int, int], window: int, shift: int | tuple[int, int]
) -> None:
    """The whole and cut windows, attended one class after the other, give what one masked
    call over all windows gives; the classes split the tokens, and only the last row and
    column of windows are cut."""
    torch.manual_seed(0)
    mixer = WindowAttention(16, 2, window=window, shift=shift).eval()
    with torch.no_grad():
        mixer.position_bias.bias_table.normal_()  # type: ignore[union-attr]
    x = torch.randn(2, *size, 16)
    shifted = mixer.shift
    whole, cut, cut_allowed, inverse = mixer.window_classes(size, (window, window), shifted,
                                                            x.device)
    assert torch.equal(torch.sort(torch.cat([whole, cut])).values, torch.arange(size[0] * size[1]))
    assert torch.equal(torch.cat([whole, cut])[inverse], torch.arange(size[0] * size[1]))
    rows, cols = size[0] // window, size[1] // window
    expected_cut = (cols if shifted[0] else 0) + (rows if shifted[1] else 0) - (
        1 if all(shifted) else 0)
    assert cut_allowed.shape[0] == expected_cut == cut.numel() // window**2
    assert not cut_allowed.flatten(1).all(dim=1).any()
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), _sw_msa_one_call(mixer, x), rtol=0, atol=1e-5)
    x.requires_grad_(True)
    mixer(x).square().sum().backward()
    assert x.grad is not None and bool(x.grad.isfinite().all())
