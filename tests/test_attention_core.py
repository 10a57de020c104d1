"""The shared attention core: key sources, masking, geometry cache, grouping, position bias."""

from __future__ import annotations

import pytest
import torch

from minilg.attention import (
    FocalAttention,
    FullAttention,
    GlanceGazeAttention,
    HierarchicalAttention,
    WindowAttention,
)
from minilg.attention.base import reference_math
from minilg.attention.core import KeySource, attend, explicit_attention
from minilg.attention.grouping import (
    SubWindowPool,
    label_mask,
    neighbourhood,
    neighbourhood_labels,
    pad_to_multiple,
    padding_labels,
    subwindow_pool,
    window_partition,
    window_reverse,
)
from minilg.attention.position import RelativePositionBias, relative_position_index
from minilg.attention.scopes import listening
from minilg.models.blocks import Block
from minilg.nn import DropPath, Mlp


def brute_force(
    q: torch.Tensor, sources: list[KeySource], heads: int
) -> torch.Tensor:
    """Query by query: build the key set explicitly, softmax over allowed keys, zero if none."""
    batch, groups, tokens_q, dim = q.shape
    d = dim // heads
    out = torch.zeros_like(q)
    for b in range(batch):
        for g in range(groups):
            for t in range(tokens_q):
                for h in range(heads):
                    values: list[torch.Tensor] = []
                    logits: list[float] = []
                    for s in sources:
                        k = s.k.expand(batch, groups, -1, -1)[b, g, :, h * d:(h + 1) * d]
                        v = s.v.expand(batch, groups, -1, -1)[b, g, :, h * d:(h + 1) * d]
                        for j in range(k.shape[0]):
                            if s.allowed is not None:
                                allowed = s.allowed.reshape(
                                    (1,) * (5 - s.allowed.ndim) + tuple(s.allowed.shape))
                                allowed = allowed.expand(batch, groups, heads, tokens_q, -1)
                                if not bool(allowed[b, g, h, t, j]):
                                    continue
                            bias = 0.0
                            if s.bias is not None:
                                full = s.bias.reshape(
                                    (1,) * (4 - s.bias.ndim) + tuple(s.bias.shape))
                                bias = float(full.expand(groups, heads, tokens_q, -1)[g, h, t, j])
                            qv = q[b, g, t, h * d:(h + 1) * d]
                            logits.append(float(qv @ k[j]) / d**0.5 + bias)
                            values.append(v[j])
                    if logits:
                        w = torch.softmax(torch.tensor(logits, dtype=q.dtype), dim=0)
                        out[b, g, t, h * d:(h + 1) * d] = (w[:, None] * torch.stack(values)).sum(0)
    return out


def _sources(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, list[KeySource]]:
    """Queries of 3 groups against: their own group (bias + padding mask), a gathered
    neighbourhood with masked borders, shared pooled keys (G = 1), and extra tokens."""
    torch.manual_seed(0)
    b, g, tq, c, heads = 2, 3, 4, 8, 2
    q = torch.randn(b, g, tq, c, dtype=dtype)
    own = torch.randn(b, g, tq, c, dtype=dtype)
    own_allowed = torch.ones(g, 1, tq, tq, dtype=torch.bool)
    own_allowed[1, :, :, 3] = False  # a padded key in group 1
    ring = torch.randn(b, g, 6, c, dtype=dtype)
    ring_allowed = torch.rand(g, 1, 1, 6) > 0.4  # border slots masked, same for every query
    pooled = torch.randn(b, 1, 5, c, dtype=dtype)
    extra = torch.randn(b, 1, 2, c, dtype=dtype)
    return q, [
        KeySource(own, own.flip(-1), torch.randn(heads, tq, tq, dtype=dtype), own_allowed),
        KeySource(ring, ring * 2, torch.randn(g, heads, tq, 6, dtype=dtype), ring_allowed),
        KeySource(pooled, pooled.roll(1, -1), torch.randn(heads, 1, 5, dtype=dtype)),
        KeySource(extra, extra + 1),
    ]


@pytest.mark.parametrize("which", [[0], [1], [2], [3], [0, 1, 2, 3], [1, 3]])
def test_each_key_source_alone_and_combined_equals_brute_force(which: list[int]) -> None:
    q, sources = _sources()
    chosen = [sources[i] for i in which]
    expected = brute_force(q, chosen, heads=2)
    torch.testing.assert_close(attend(q, chosen, heads=2), expected, rtol=1e-10, atol=1e-12)
    with reference_math():
        torch.testing.assert_close(attend(q, chosen, heads=2), expected, rtol=1e-10, atol=1e-12)


def test_per_sample_masks_broadcast_like_the_rest() -> None:
    q, sources = _sources()
    allowed = torch.rand(2, 3, 1, 4, 4) > 0.5  # content-dependent: one mask per sample
    allowed[..., 0] = True
    source = KeySource(sources[0].k, sources[0].v, sources[0].bias, allowed)
    torch.testing.assert_close(attend(q, [source], 2), brute_force(q, [source], 2),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fully_masked_rows_are_zero_with_finite_gradients_even_on_a_nan_softmax(
    dtype: torch.dtype,
) -> None:
    # The explicit path is a plain softmax: an all -inf row gives NaN there...
    row = explicit_attention(torch.ones(1, 1, 1, 2), torch.ones(1, 1, 3, 2),
                             torch.ones(1, 1, 3, 2), torch.full((1, 1, 1, 3), float("-inf")))
    assert torch.isnan(row).all()
    # ... yet attend() gives exact zeros and finite gradients, in every dtype and on both paths.
    for reference in (False, True):
        q, k, v = (torch.randn(2, 2, 4, 8, dtype=dtype, requires_grad=True) for _ in range(3))
        allowed = torch.ones(2, 1, 4, 4, dtype=torch.bool)
        allowed[0, :, 2] = False  # query 2 of group 0 attends to nothing
        bias = torch.full((2, 4, 4), 6e4 if dtype == torch.float16 else 1e30).to(dtype)
        source = KeySource(k, v, bias=bias, allowed=allowed)
        if reference:
            with reference_math():
                out = attend(q, [source], heads=2)
        else:
            out = attend(q, [source], heads=2)
        assert torch.equal(out[:, 0, 2], torch.zeros(2, 8, dtype=dtype))
        assert torch.isfinite(out).all()
        out.float().square().sum().backward()
        for tensor in (q, k, v):
            assert tensor.grad is not None and torch.isfinite(tensor.grad).all()


def test_geometry_is_cached_per_size_and_device_and_not_saved() -> None:
    mixer = WindowAttention(16, 2, window=4, shift=2)
    first = mixer.window_mask((8, 8), torch.device("cpu"))
    assert first is not None and first.shape == (4, 1, 16, 16)  # no batch axis
    assert mixer.window_mask((8, 8), torch.device("cpu")) is first  # hit
    other = mixer.window_mask((8, 12), torch.device("cpu"))
    assert other is not None and other is not first and other.shape == (6, 1, 16, 16)
    meta = mixer.window_mask((8, 8), torch.device("meta"))
    assert meta is not None and meta.device.type == "meta" and meta is not first
    assert not any("mask" in key or "cache" in key for key in mixer.state_dict())
    with reference_math():  # the straightforward baseline rebuilds every call
        assert mixer.window_mask((8, 8), torch.device("cpu")) is not first


def test_drop_path_draws_one_mask_per_sample_for_map_and_extra_tokens() -> None:
    torch.manual_seed(0)
    block = Block(8, FullAttention(8, 2), Mlp(8), drop_path=0.5)
    block.train()
    x, extra = torch.randn(64, 3, 3, 8), torch.randn(64, 1, 8)
    y, e = block.forward_with_extra(x, extra)
    map_kept = (y != x).flatten(1).any(dim=1)
    extra_kept = (e != extra).flatten(1).any(dim=1)
    assert torch.equal(map_kept, extra_kept)  # dropped together or kept together
    assert 0 < int(map_kept.sum()) < 64
    mask = DropPath(0.25).train().sample_mask(x)
    assert mask is not None and mask.shape == (64,)


def test_relative_position_index_covers_table_and_encodes_offsets() -> None:
    index = relative_position_index((3, 4))
    assert index.shape == (12, 12)
    assert index.min() == 0 and index.max() == (2 * 3 - 1) * (2 * 4 - 1) - 1
    # equal offsets share an entry: (0,0)->(1,1) and (1,2)->(2,3)
    assert index[0, 5] == index[6, 11]
    assert index[0, 0] == index[5, 5]  # zero offset


def test_relative_position_index_between_different_grids() -> None:
    """Focal's pooled levels: a 7x7 window against s_r x s_r keys -> (7 + s_r - 1)^2 entries."""
    for s_r in (7, 5, 3, 1):
        index = relative_position_index((7, 7), (s_r, s_r))
        assert index.shape == (49, s_r * s_r)
        assert int(index.max()) + 1 == (7 + s_r - 1) ** 2
        assert index.unique().numel() == (7 + s_r - 1) ** 2


def test_clipped_bias_reads_the_same_offsets_from_the_big_table() -> None:
    bias = RelativePositionBias(heads=2, query_grid=(5, 5))
    small = bias((3, 2))  # a 3x2 window clipped out of a 5x5 one
    full = bias()  # (2, 25, 25)
    cells = [r * 5 + c for r in range(3) for c in range(2)]  # same offsets inside the 5x5 grid
    assert torch.equal(small, full[:, cells][:, :, cells])


@pytest.mark.parametrize("size", [(14, 14), (57, 61), (1, 1), (6, 13)])
@pytest.mark.parametrize("window", [(7, 7), (4, 3)])
def test_window_partition_round_trip_is_exact(
    size: tuple[int, int], window: tuple[int, int]
) -> None:
    x = torch.randn(2, *size, 3)
    padded = pad_to_multiple(x, window)
    hp, wp = padded.shape[1:3]
    assert hp % window[0] == 0 and wp % window[1] == 0 and hp - size[0] < window[0]
    windows = window_partition(padded, window)
    assert windows.shape == (2, (hp // window[0]) * (wp // window[1]), window[0] * window[1], 3)
    restored = window_reverse(windows, window, (hp, wp))[:, : size[0], : size[1]]
    assert torch.equal(restored, x)
    # the first window holds exactly the top-left block, row-major
    assert torch.equal(windows[:, 0].reshape(2, *window, 3), padded[:, : window[0], : window[1]])


def test_padding_labels_mark_exactly_the_padding() -> None:
    labels = padding_labels((5, 3), (4, 4))
    assert labels.shape == (8, 4)
    assert int((labels == 0).sum()) == 15 and int((labels == -1).sum()) == 32 - 15


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize(("size", "window", "ring"), [((8, 8), (4, 4), (2, 2)),
                                                       ((7, 5), (3, 2), (1, 2))])
def test_neighbourhood_gathers_the_padded_or_wrapped_block_around_each_window(
    size: tuple[int, int], window: tuple[int, int], ring: tuple[int, int], wrap: bool
) -> None:
    h, w = size
    coords = torch.arange(h * w, dtype=torch.float64).reshape(1, h, w, 1) + 1
    gathered = neighbourhood(coords, window, ring, wrap)[0, :, :, 0]
    labels = neighbourhood_labels(torch.zeros(h, w, dtype=torch.long), window, ring, wrap)
    padded = pad_to_multiple(coords, window)[0, :, :, 0]
    hp, wp = padded.shape
    kh, kw = window[0] + 2 * ring[0], window[1] + 2 * ring[1]
    for n in range(gathered.shape[0]):
        top, left = (n // (wp // window[1])) * window[0], (n % (wp // window[1])) * window[1]
        for slot in range(kh * kw):
            r, c = top - ring[0] + slot // kw, left - ring[1] + slot % kw
            if wrap:
                r, c = r % hp, c % wp
            inside = 0 <= r < hp and 0 <= c < wp
            value = float(padded[r, c]) if inside else 0.0
            assert float(gathered[n, slot]) == value
            real = inside and r < h and c < w
            assert bool(labels[n, slot] >= 0) == real


def test_subwindow_pooling_mean_max_real_mean_and_learned() -> None:
    x = torch.randn(2, 5, 6, 3, dtype=torch.float64)
    mean = subwindow_pool(x, (2, 3), "mean")
    assert mean.shape == (2, 3, 2, 3)
    torch.testing.assert_close(mean[:, 0, 0], x[:, :2, :3].mean(dim=(1, 2)))
    torch.testing.assert_close(mean[:, 2, 1], x[:, 4:, 3:].sum(dim=(1, 2)) / 6)  # zeros count
    real = subwindow_pool(x, (2, 3), "real_mean")
    torch.testing.assert_close(real[:, 2, 1], x[:, 4:, 3:].mean(dim=(1, 2)))  # real only
    assert torch.equal(subwindow_pool(x, (2, 3), "max")[:, 0, 0], x[:, :2, :3].amax(dim=(1, 2)))
    learned = SubWindowPool((2, 3)).double()
    torch.testing.assert_close(learned(x), mean)  # initialised to the mean


def test_label_mask_allows_same_label_and_never_negative_keys() -> None:
    q = torch.tensor([0, 1, -1])
    k = torch.tensor([0, 0, 1, -1])
    assert label_mask(q, k).tolist() == [[True, True, False, False], [False, False, True, False],
                                         [False, False, False, False]]


@pytest.mark.parametrize("mixer", [
    FullAttention(8, 2), WindowAttention(8, 2, 4, 2), FocalAttention(8, 2, 4, ((1, 8), (2, 6))),
    FocalAttention(8, 2, 4, ((1, 8), (4, 3), (2, 4)), follow="official"),  # pooled k = 0, 1
    GlanceGazeAttention(8, 2, partition=3), HierarchicalAttention(8, 2, grid=2, pool=2),
])
def test_every_mixer_attends_through_the_named_scopes(mixer: torch.nn.Module) -> None:
    events: list[str] = []

    class Listener:
        def push(self, label: str) -> None:
            events.append(label)

        def pop(self) -> None:
            events.append("/")

    with listening(Listener()):
        mixer(torch.randn(1, 6, 7, 8))
    assert events and events == ["attend", "kernel", "/", "/"] * (len(events) // 4)


def test_gather_rows_writes_every_level_head_major_as_views_attend_folds_without_copy() -> None:
    from einops import rearrange

    from minilg.attention.grouping import gather_rows

    torch.manual_seed(0)
    maps = [torch.randn(2, 5, 6, 12), torch.randn(2, 2, 3, 12)]
    index = torch.randint(0, 5 * 6 + 2 * 3 + 1, (4, 7))
    k, v = gather_rows(maps, index, heads=3)
    rows = torch.cat([rearrange(m, "b h w c -> b (h w) c") for m in maps]
                     + [torch.zeros(2, 1, 12)], dim=1)[:, index]  # (B, nW, K, 2C)
    assert torch.equal(rearrange(k, "b n h k d -> b n k (h d)"), rows[..., :6])
    assert torch.equal(rearrange(v, "b n h k d -> b n k (h d)"), rows[..., 6:])
    folded = rearrange(k, "b g h t d -> b (g h) t d")
    assert folded.data_ptr() == k.data_ptr() and folded[0].is_contiguous()  # a view
    q = torch.randn(2, 4, 5, 6)
    allowed = torch.rand(4, 1, 1, 7) > 0.3
    bias = torch.randn(3, 5, 7)
    tokens = KeySource(*(rearrange(t, "b n h k d -> b n k (h d)") for t in (k, v)), bias, allowed)
    out = attend(q, [KeySource(k, v, bias, allowed, heads_first=True)], 3)
    torch.testing.assert_close(out, attend(q, [tokens], 3))


def test_position_bias_is_kept_without_gradient_and_rebuilt_when_it_needs_one() -> None:
    mixer = FocalAttention(12, 3, 3, ((1, 5), (3, 3)))
    build = lambda: mixer.position_bias(mixer.build_geometry(6, 6, torch.device("cpu")))  # noqa: E731
    with torch.no_grad():
        first = mixer.cached_bias(("k",), build)
        assert mixer.cached_bias(("k",), build) is first
        mixer.level_bias[0].bias_table.add_(1.0)  # a changed table: built again
        second = mixer.cached_bias(("k",), build)
    assert second is not first and torch.equal(second, build())
    with_grad = mixer.cached_bias(("k",), build)
    assert with_grad is not second and with_grad is not None and with_grad.requires_grad
    assert mixer.cached_bias(("k",), build) is not with_grad


@pytest.mark.parametrize("shift", [0, 1])
def test_kernel_mask_is_kept_per_batch_and_the_output_equals_the_uncached_one(shift: int) -> None:
    torch.manual_seed(0)
    mixer = WindowAttention(12, 3, 3, shift=shift)
    x = torch.randn(2, 7, 6, 12)
    with torch.no_grad():
        first = mixer(x)
        cache = mixer.__dict__["_mask_cache"]
        masks = [value[1][1] for value in cache.values()]
        assert torch.equal(mixer(x), first) and len(cache) == 1
        assert next(value[1][1] for value in cache.values()) is masks[0]  # the same tensor
        mixer(x[:1])
        assert len(cache) == 2  # one per batch size
    with reference_math():
        torch.testing.assert_close(mixer(x), first)
    mixer(x).sum().backward()  # a bias that needs a gradient: nothing kept
    assert len(cache) == 2


def test_relative_position_bias_is_kept_only_while_no_gradient_flows_into_it() -> None:
    bias = RelativePositionBias(2, (3, 3))
    with torch.no_grad():
        first = bias()
        assert bias() is first and bias((2, 2)) is not first
        again = bias()
        assert torch.equal(again, first)
        bias.bias_table.mul_(2.0)  # a changed table: built again
        assert torch.equal(bias(), 2 * first)
    assert bias() is not bias() and bias().requires_grad


def test_a_kept_position_bias_follows_the_table_when_it_is_cast() -> None:
    bias = RelativePositionBias(2, (3, 3))
    with torch.no_grad():
        first = bias()
        bias.to(torch.float64)
        assert bias().dtype == torch.float64 and torch.equal(bias().float(), first)
