"""The shared attention core: heads, masking, relative position bias, window partition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minilg.attention.core import attention, merge_heads, split_heads
from minilg.attention.position import RelativePositionBias, relative_position_index
from minilg.attention.windows import (
    pad_to_multiple,
    padding_labels,
    window_partition,
    window_reverse,
)


def test_split_merge_heads_round_trip_exactly() -> None:
    x = torch.randn(2, 3, 5, 12)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 3, 4, 5, 3)
    assert torch.equal(merge_heads(heads), x)
    # head h holds channels [3h, 3h + 3)
    assert torch.equal(heads[:, :, 1], x[..., 3:6])


def test_attention_matches_softmax_formula_with_bias_and_mask() -> None:
    q, k, v = (torch.randn(2, 3, 2, 5, 4) for _ in range(3))
    bias = torch.randn(2, 5, 5)
    allowed = torch.rand(3, 1, 5, 5) > 0.3
    allowed[..., 0] = True  # every query keeps at least one key
    out = attention(q, k, v, bias=bias, allowed=allowed)
    scores = q @ k.transpose(-1, -2) / 2.0 + bias
    scores = scores.masked_fill(~allowed, float("-inf"))
    expected = F.softmax(scores, dim=-1) @ v
    torch.testing.assert_close(out, expected)


def test_fully_masked_rows_give_zeros_not_nan_and_finite_gradients() -> None:
    q, k, v = (torch.randn(1, 2, 1, 4, 8, requires_grad=True) for _ in range(3))
    allowed = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    allowed[0, :, 2] = False  # query 2 of group 0 may attend to nothing
    out = attention(q, k, v, allowed=allowed)
    assert torch.equal(out[0, 0, 0, 2], torch.zeros(8))
    assert torch.isfinite(out).all()
    out.sum().backward()
    for tensor in (q, k, v):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()


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
