"""SALG (Sec. III): region means, coverage areas, assignment (Eq. 1), intra-region attention with
AGR tokens (Eq. 2), inter-region propagation (Eqs. 3-4), exact cost, models and ablations."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

import minilg
from minilg.attention.semantic_regions import (
    SemanticRegionAttention,
    assign_regions,
    intra_region_macs,
    num_regions,
    region_local_labels,
    region_mask,
    region_means,
    region_sequences,
    region_similarity,
    salg_attention_macs,
    segmentation_macs,
    window_grid_labels,
)
from minilg.complexity import count_macs, measured_model_macs, model_macs
from minilg.models.salg_stage import InterRegionPropagation, RegionTokens, SALGStage

SIZES = [(8, 8), (9, 11), (5, 13), (1, 1), (3, 2), (14, 14)]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def covering_regions(u: int, v: int, size: tuple[int, int], m: int, p: int) -> set[int]:
    """Regions whose coverage area (window grown by p on every side) contains token (u, v)."""
    mh, mw = min(m, size[0]), min(m, size[1])
    nh, nw = -(-size[0] // mh), -(-size[1] // mw)
    return {
        i * nw + j
        for i, j in itertools.product(range(nh), range(nw))
        if i * mh - p <= u < (i + 1) * mh + p and j * mw - p <= v < (j + 1) * mw + p
    }


# ------------------------------------------------------------------ region means, Eq. 1


def test_region_means_average_the_real_tokens_of_each_window() -> None:
    x = torch.randn(2, 9, 11, 5)
    means = region_means(x, 4)  # windows of rows 0-3, 4-7, 8 and cols 0-3, 4-7, 8-10
    assert means.shape == (2, 9, 5)
    torch.testing.assert_close(means[:, 0], x[:, :4, :4].mean(dim=(1, 2)))
    torch.testing.assert_close(means[:, 8], x[:, 8:, 8:].mean(dim=(1, 2)))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("window", [1, 3, 4, 7])
def test_with_margin_zero_the_segmentation_is_the_window_grid(
    size: tuple[int, int], window: int
) -> None:
    labels = assign_regions(torch.randn(2, *size, 6), window, 0)
    assert torch.equal(labels, window_grid_labels(size, window).expand(2, -1, -1))


@pytest.mark.parametrize(("size", "window", "margin"),
                         [((9, 11), 4, 1), ((14, 14), 7, 2), ((5, 13), 3, 2), ((16, 16), 2, 1)])
def test_every_token_gets_one_region_whose_coverage_contains_it_with_max_similarity(
    size: tuple[int, int], window: int, margin: int
) -> None:
    x = torch.randn(2, *size, 8)
    labels = assign_regions(x, window, margin)
    means = region_means(x.double(), window)
    cosine = torch.nn.functional.cosine_similarity(x.double()[:, :, :, None],
                                                   means[:, None, None], dim=-1)  # (B,H,W,n_R)
    for b, u, v in itertools.product(range(2), range(size[0]), range(size[1])):
        candidates = covering_regions(u, v, size, window, margin)
        label = int(labels[b, u, v])
        assert label in candidates  # no region reaches past its coverage area
        best = max(float(cosine[b, u, v, r]) for r in candidates)
        assert float(cosine[b, u, v, label]) >= best - 1e-6
    # In Eq. 2's sequences every token is a member of exactly one region (its AGR tokens too).
    sequences = region_sequences(size, window, margin)
    local = region_local_labels(labels, sequences)
    rows = sequences.expand(2, -1, -1)[local >= 0]  # table rows of all member slots, per image
    counts = torch.bincount(rows, minlength=size[0] * size[1] + 1 + sequences.shape[0])
    assert torch.equal(counts, torch.cat([torch.full((size[0] * size[1],), 2), torch.zeros(1),
                                          torch.full((sequences.shape[0],), 2)]).long())


def test_similarity_is_cosine_and_argmax_ties_go_to_the_lowest_region() -> None:
    x = torch.ones(1, 4, 4, 3)  # all means equal: every token ties among its candidates
    sims = region_similarity(x, 2, 1)
    torch.testing.assert_close(sims.amax(), torch.tensor(1.0))
    labels = assign_regions(x, 2, 1)
    expected = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1], [2, 2, 2, 3]])
    assert torch.equal(labels[0], expected)


def test_assignment_follows_the_content() -> None:
    """Two-colour map: the left region's coverage reaches one column into the right window; a
    token there that matches the left colour goes left."""
    x = torch.zeros(1, 4, 8, 2)
    x[..., :4, 0], x[..., 4:, 1] = 1.0, 1.0
    x[0, 1, 4] = torch.tensor([1.0, 0.0])  # left colour just right of the border
    x[0, 1, 6] = torch.tensor([1.0, 0.0])  # too far: outside the left coverage area
    labels = assign_regions(x, 4, 1)[0]
    assert labels[1, 4] == 0 and labels[1, 6] == 1
    assert (labels[:, :4] == 0).all() and int((labels == 0).sum()) == 17


# ------------------------------------------------------------------ Eq. 2


def window_attention_with_agr(mixer: SemanticRegionAttention, x: Tensor, agr: Tensor) -> Tensor:
    """W-MSA written out with one extra key/query per window (its AGR token), no padding."""
    b, h, w, c = x.shape
    m, heads = mixer.window[0], mixer.heads
    assert mixer.position_bias is not None
    bias = torch.nn.functional.pad(mixer.position_bias((m, m)), (1, 0, 1, 0))
    out = torch.empty_like(x)
    for r, (i, j) in enumerate(itertools.product(range(h // m), range(w // m))):
        window = x[:, i * m : (i + 1) * m, j * m : (j + 1) * m].reshape(b, m * m, c)
        seq = torch.cat([agr[:, r : r + 1], window], dim=1)
        q, k, v = mixer.qkv(seq).reshape(b, 1 + m * m, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-1, -2) / (c // heads) ** 0.5 + bias).softmax(-1)
        mixed = mixer.proj((attn @ v).transpose(1, 2).reshape(b, 1 + m * m, c))
        out[:, i * m : (i + 1) * m, j * m : (j + 1) * m] = mixed[:, 1:].reshape(b, m, m, c)
    return out


def test_margin_zero_is_window_attention_with_one_extra_agr_token() -> None:
    mixer = SemanticRegionAttention(16, 2, window=4, margin=0)
    x, agr = torch.randn(2, 8, 12, 16), torch.randn(2, 6, 16)
    labels = assign_regions(x, 4, 0)
    out, _ = mixer.intra_region(x, agr, labels)
    torch.testing.assert_close(out, window_attention_with_agr(mixer, x, agr))


@pytest.mark.parametrize("size", [(9, 11), (8, 8)])
def test_tokens_of_other_regions_in_the_same_coverage_area_do_not_matter(
    size: tuple[int, int]
) -> None:
    mixer = SemanticRegionAttention(8, 2, window=4, margin=2).eval()
    x = torch.randn(1, *size, 8)
    agr = torch.randn(1, num_regions(*size, 4), 8)
    labels = assign_regions(torch.randn(1, *size, 8), 4, 2)  # fixed, passed in
    with torch.no_grad():
        out, agr_out = mixer.intra_region(x, agr, labels)
        checked = 0
        for u, v in itertools.product(range(size[0]), range(size[1])):
            r = int(labels[0, u, v])
            others = [(a, b) for a, b in itertools.product(range(size[0]), range(size[1]))
                      if r in covering_regions(a, b, size, 4, 2) and int(labels[0, a, b]) != r]
            same = [(a, b) for a, b in itertools.product(range(size[0]), range(size[1]))
                    if int(labels[0, a, b]) == r and (a, b) != (u, v)]
            if not others or not same:
                continue
            for (a, b), changes in ((others[0], False), (same[0], True)):
                bumped = x.clone()
                bumped[0, a, b] += 5.0
                new, new_agr = mixer.intra_region(bumped, agr, labels)
                assert (not torch.allclose(new[0, u, v], out[0, u, v])) == changes, (u, v, a, b)
                assert (not torch.allclose(new_agr[0, r], agr_out[0, r])) == changes
            checked += 1
    assert checked > 10


def test_an_agr_token_only_sees_its_own_region() -> None:
    mixer = SemanticRegionAttention(8, 2, window=4, margin=1).eval()
    x, agr = torch.randn(1, 8, 8, 8), torch.randn(1, 4, 8)
    labels = assign_regions(x, 4, 1)
    with torch.no_grad():
        _, before = mixer.intra_region(x, agr, labels)
        bumped = x.clone()
        bumped[labels != 0] += 3.0
        _, after = mixer.intra_region(bumped, agr, labels)
    torch.testing.assert_close(after[:, 0], before[:, 0])
    assert not torch.allclose(after[:, 1:], before[:, 1:])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_with_empty_regions_stays_finite(dtype: torch.dtype) -> None:
    mixer = SemanticRegionAttention(8, 2, window=4, margin=2).to(dtype)
    x = torch.randn(2, 8, 8, 8, dtype=dtype, requires_grad=True)
    agr = torch.randn(2, 4, 8, dtype=dtype, requires_grad=True)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)  # region 0 takes all: regions 1-3 empty
    out, agr_out = mixer.intra_region(x, agr, labels)
    assert torch.isfinite(out).all() and torch.isfinite(agr_out).all()
    (out.float().sum() + agr_out.float().sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.isfinite(mixer(x.detach())).all()


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (6, 5), (13, 4)])
def test_any_size_maps_to_the_same_shape_with_finite_gradients(size: tuple[int, int]) -> None:
    mixer = SemanticRegionAttention(8, 2, window=4, margin=1)
    x = torch.randn(2, *size, 8, requires_grad=True)
    y = mixer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_given_labels_replace_the_mixers_own_segmentation() -> None:
    mixer = SemanticRegionAttention(8, 2, window=4, margin=1)
    x, agr = torch.randn(1, 8, 8, 8), torch.randn(1, 4, 8)
    grid = window_grid_labels((8, 8), 4).expand(1, -1, -1)
    given = mixer.forward_with_extra(x, agr, labels=grid)
    own = mixer.forward_with_extra(x, agr)
    expected = mixer.intra_region(x, agr, grid)
    torch.testing.assert_close(given[0], expected[0])
    torch.testing.assert_close(own[0], mixer.intra_region(x, agr, assign_regions(x, 4, 1))[0])
    assert not torch.allclose(own[0], expected[0])
    with pytest.raises(ValueError, match="labels must have shape"):
        mixer.forward_with_extra(x, agr, labels=grid[:, :4])


def test_a_stage_segments_its_input_once_and_hands_the_labels_to_every_block() -> None:
    model = minilg.create_model("salg_mini").eval()
    stage = model.stages[1]
    assert isinstance(stage, SALGStage)
    segmented: list[Tensor] = []
    masks: list[Tensor] = []
    given: list[tuple[Tensor | None, Tensor | None]] = []
    segment, mask = stage.region_tokens.segment, stage.region_tokens.mask
    stage.region_tokens.segment = (  # type: ignore[method-assign]
        lambda x: segmented.append(segment(x)) or segmented[-1])
    stage.region_tokens.mask = (  # type: ignore[method-assign]
        lambda labels, dtype: masks.append(mask(labels, dtype)) or masks[-1])
    for block in stage.blocks:
        mix = block.mixer.forward_with_extra
        block.mixer.forward_with_extra = (  # type: ignore[union-attr]
            lambda x, e, labels=None, regions=None, mix=mix:
            given.append((labels, regions)) or mix(x, e, labels, regions))
    stage(torch.randn(2, 16, 16, 32))  # stage 0's output: stage 1 downsamples it to 8 x 8
    assert len(segmented) == 1 and segmented[0].shape == (2, 8, 8)
    assert len(given) == len(stage) == 2 and all(labels is segmented[0] for labels, _ in given)
    assert len(masks) == 1 and all(regions is masks[0] for _, regions in given)


def test_the_region_mask_is_eq2s_mask_with_null_token_rows_kept_finite() -> None:
    labels = assign_regions(torch.randn(2, 9, 11, 8), 4, 2)
    sequences = region_sequences((9, 11), 4, 2)
    local = region_local_labels(labels, sequences)
    mask = region_mask(labels, sequences)
    assert mask.shape == (2, sequences.shape[0], 1, *sequences.shape[1:] * 2)
    mine = local >= 0
    assert set(mask.unique().tolist()) == {0.0, float("-inf")}
    kept = mask[:, :, 0] == 0
    # A query of region r keeps exactly the keys of region r (Eq. 2's M_r) ...
    both = mine[..., :, None] & mine[..., None, :]
    assert torch.equal(kept & mine[..., :, None], both)
    # ... and a null-token query keeps every key (its output is dropped): no empty row.
    assert bool(kept[~mine].all())


def test_a_given_region_mask_gives_the_same_outputs_and_gradients_bitwise() -> None:
    mixer = SemanticRegionAttention(8, 2, window=4, margin=2)
    x = torch.randn(2, 9, 11, 8, requires_grad=True)
    agr = torch.randn(2, num_regions(9, 11, 4), 8)
    labels = assign_regions(x, 4, 2)
    results = []
    for regions in (None, mixer.region_mask(labels)):
        mixer.zero_grad()
        x.grad = None
        out, agr_out = mixer.forward_with_extra(x, agr, labels, regions)
        (out.sum() + agr_out.sum()).backward()
        assert x.grad is not None
        results.append([out, agr_out, x.grad, *(p.grad for p in mixer.parameters())])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_a_region_mask_of_the_wrong_shape_or_without_labels_raises() -> None:
    mixer = SemanticRegionAttention(8, 2, window=4, margin=1)
    x, agr = torch.randn(1, 8, 8, 8), torch.randn(1, 4, 8)
    labels = assign_regions(x, 4, 1)
    wrong = SemanticRegionAttention(8, 2, window=4, margin=2).region_mask(labels)
    with pytest.raises(ValueError, match=r"regions \(the region mask\) must be floating point"):
        mixer.forward_with_extra(x, agr, labels, wrong)
    with pytest.raises(ValueError, match="needs the labels it was built from"):
        mixer.forward_with_extra(x, agr, regions=mixer.region_mask(labels))


# ------------------------------------------------------------------ Eqs. 3-4


def test_average_pooling_gives_every_agr_token_the_same_value() -> None:
    tokens = torch.randn(3, 9, 16)
    pooled = InterRegionPropagation(16, 2, "ap")(tokens)
    torch.testing.assert_close(pooled, tokens.mean(1, keepdim=True).expand(-1, 9, -1))
    assert n_params(InterRegionPropagation(16, 2, "ap")) == 0


def test_msa_propagation_is_a_transformer_layer_with_exact_macs() -> None:
    step = InterRegionPropagation(16, 2, "msa")
    c = 16  # weights 12C^2; biases qkv 3C, proj C, fc1 4C, fc2 C; two LayerNorms 4C
    assert n_params(step) == 12 * c * c + 3 * c + c + 4 * c + c + 4 * c
    assert step.macs(9) == count_macs(step, torch.randn(1, 9, 16))
    assert step.macs(9) == 4 * 9 * 16**2 + 2 * 81 * 16 + 8 * 9 * 16**2


def test_ap_propagation_runs_between_the_blocks_of_a_stage() -> None:
    model = minilg.create_model("salg_mini")
    stage = model.stages[0]
    assert isinstance(stage, SALGStage)
    seen: list[Tensor] = []
    for step in stage.propagation:
        step.register_forward_hook(lambda _m, _i, out: seen.append(out))
    model(torch.randn(2, 3, 32, 32))
    assert len(seen) == 1 and all(s.shape == (2, 64, 32) for s in seen)  # depth 2: one step
    assert all(torch.equal(s, s[:, :1].expand_as(s)) for s in seen)


# ------------------------------------------------------------------ cost


@pytest.mark.parametrize("size", [*SIZES, (16, 16), (57, 61)])
@pytest.mark.parametrize(("window", "margin"), [(7, 1), (7, 2), (4, 0), (2, 1), ((3, 5), (1, 2))])
def test_closed_form_equals_the_measured_count(
    size: tuple[int, int], window: int, margin: int
) -> None:
    mixer = SemanticRegionAttention(16, 2, window, margin)
    x = torch.randn(1, *size, 16)
    assert mixer.macs(*size) == count_macs(mixer, x)
    tokens = num_regions(*size, window)
    agr = torch.randn(1, tokens, 16)
    labels = assign_regions(x, window, margin)
    measured = count_macs(lambda a, b: mixer.forward_with_extra(a, b, labels), x, agr)  # type: ignore[arg-type]
    assert mixer.macs(*size, extra_tokens=tokens) == measured


def test_closed_form_terms_on_a_divisible_map() -> None:
    h = w = 56
    n, c, m, p = h * w, 96, 7, 1
    regions, slots = (h // m) * (w // m), (m + 2 * p) ** 2
    assert segmentation_macs(h, w, c, m, p) == regions * slots * c
    assert intra_region_macs(h, w, c, m, p) == 4 * (n + regions) * c**2 + regions * 2 * (
        1 + slots) ** 2 * c
    # p = 0: W-MSA's 4NC^2 + 2M^2NC plus the AGR token's share
    extra = 4 * regions * c**2 + regions * 2 * ((1 + m * m) ** 2 - (m * m) ** 2) * c
    assert intra_region_macs(h, w, c, m, 0) == 4 * n * c**2 + 2 * m * m * n * c + extra
    assert salg_attention_macs(h, w, c, m, p) == (
        segmentation_macs(h, w, c, m, p) + intra_region_macs(h, w, c, m, p))


def test_region_tokens_cost_and_count() -> None:
    tokens = RegionTokens(16, 7, 2)
    assert tokens.num_tokens(57, 61) == 9 * 9
    assert tokens.macs(57, 61) == count_macs(tokens.segment, torch.randn(1, 57, 61, 16))
    assert RegionTokens(16, 7, 2, segmentation=False).macs(57, 61) == 0


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: SemanticRegionAttention(16, 2, window=0), "window"),
        (lambda: SemanticRegionAttention(16, 2, window=2.5), "window"),
        (lambda: SemanticRegionAttention(16, 2, margin=-1), "margin"),
        (lambda: SemanticRegionAttention(16, 2, margin=True), "margin"),
        (lambda: assign_regions(torch.randn(1, 4, 4, 2), 2, -1), "margin"),
        (lambda: InterRegionPropagation(16, 2, "max"), "propagation"),
        (lambda: SemanticRegionAttention(15, 2), "heads"),
        (lambda: minilg.create_model("salg_mini", variant="shifted"), "variant"),
        (lambda: minilg.create_model("salg_mini", margins=(1, 1, 1, 1)), "margins"),
        (lambda: minilg.create_model("salg_mini", window=0), "window"),
    ],
)
def test_invalid_arguments_raise_a_value_error_naming_them(build: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()  # type: ignore[operator]


def test_wrong_agr_token_count_raises() -> None:
    mixer = SemanticRegionAttention(8, 2, window=4)
    with pytest.raises(ValueError, match="agr"):
        mixer.forward_with_extra(torch.randn(1, 8, 8, 8), torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="extra_tokens"):
        mixer.macs(8, 8, extra_tokens=3)


# ------------------------------------------------------------------ models


def on_meta(name: str, **overrides: object) -> torch.nn.Module:
    with torch.device("meta"):
        return minilg.create_model(name, **overrides)


def test_parameter_counts_against_the_paper() -> None:
    """What the text describes, pinned; the paper's figures are not reachable (see README)."""
    counts = {name: n_params(on_meta(name)) for name in [
        "swin_super_tiny", "salg_super_tiny", "salg_super_tiny_msa", "salg_tiny",
        "salg_tiny_msa", "salg_small"]}
    assert counts == {
        "swin_super_tiny": 5_504_630, "salg_super_tiny": 5_538_086,
        "salg_super_tiny_msa": 6_123_062, "salg_tiny": 28_422_994,
        "salg_tiny_msa": 37_852_018, "salg_small": 49_758_178,
    }
    assert abs(counts["swin_super_tiny"] / 5.6e6 - 1) < 0.02  # Swin-ST, Table I


@pytest.mark.parametrize(("name", "resolution"), [("salg_super_tiny", 64), ("salg_mini", 45),
                                                  ("swin_super_tiny", 64)])
def test_model_macs_are_exact(name: str, resolution: int) -> None:
    model = minilg.create_model(name, num_classes=10)
    assert model_macs(model, resolution) == measured_model_macs(model, resolution)


@pytest.mark.parametrize("variant", ["base", "local_global", "seg_local", "full"])
@pytest.mark.parametrize("propagation", ["ap", "msa"])
def test_table_iii_variants_train_with_exact_macs(variant: str, propagation: str) -> None:
    model = minilg.create_model("salg_mini", variant=variant, propagation=propagation)
    x = torch.randn(2, 3, 32, 32)
    model(x).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model_macs(model) == measured_model_macs(model)
    has_msa = propagation == "msa" and variant in ("local_global", "full")
    stage = model.stages[0]
    assert isinstance(stage, SALGStage) == (variant != "base")
    if isinstance(stage, SALGStage):
        assert all(step.propagation == ("msa" if has_msa else "ap" if variant in (
            "local_global", "full") else "none") for step in stage.propagation)


def test_stage_sizes_and_region_counts_of_salg_mini() -> None:
    model = minilg.create_model("salg_mini")
    _, stages = model.forward_intermediates(torch.randn(1, 3, 32, 32))
    assert [s.shape[-1] for s in stages] == [16, 8, 4, 2]
    assert [model.stages[i].extra.num_tokens(s, s) for i, s in enumerate([16, 8, 4])] == [
        64, 16, 4]
    assert "stages.0.extra.agr_token" in model.no_weight_decay()


def test_the_notebooks_checkpoint_fits_salg_mini() -> None:
    """Notebook 05 loads the trained stem and stages 1-2 of salg_mini (fp16, under 2 MB)."""
    from pathlib import Path

    from safetensors.torch import load_file

    path = Path(minilg.__file__).resolve().parents[1] / "data" / "checkpoints" / (
        "salg_mini_segmentation_fp16.safetensors")
    assert path.stat().st_size < 2_000_000
    weights = load_file(path)
    model = minilg.create_model("salg_mini")
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert all(shapes[name] == tuple(t.shape) for name, t in weights.items())
    assert {name.split(".")[0] for name in weights} == {"stem", "stages"}
    assert {name for name in weights if ".downsample." in name} == {
        f"stages.{i}.downsample.{p}" for i in (1, 2)
        for p in ("norm.weight", "norm.bias", "reduction.weight")}


def test_salg_mini_trains_under_bf16_autocast() -> None:
    model = minilg.create_model("salg_mini", propagation="msa")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(logits).all()
    logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def _with_the_cores_mask(mixer: SemanticRegionAttention, x: Tensor, agr: Tensor,
                         labels: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 2 with a boolean mask and the bias handed to the core separately (the core zeroes
    the fully masked rows): the formulation the mixer had before it built one additive mask."""
    from einops import rearrange

    from minilg.attention.core import KeySource
    from minilg.attention.grouping import label_mask

    batch, height, width, _ = x.shape
    sequences = mixer.sequences((height, width), x.device)
    local = region_local_labels(labels, sequences)
    table = torch.cat([mixer.qkv(rearrange(x, "b h w c -> b (h w) c")),
                       x.new_zeros(batch, 1, 3 * mixer.dim), mixer.qkv(agr)], dim=1)
    gathered = table.index_select(1, sequences.flatten())
    q, k, v = rearrange(gathered, "b (r s) c -> b r s c", r=sequences.shape[0]).chunk(3, -1)
    allowed = label_mask(local, local)[:, :, None]
    out = mixer.attention(q, KeySource(k, v, mixer.bias((height, width)), allowed))
    summed = out.new_zeros(batch, height * width + 1 + sequences.shape[0], mixer.dim)
    summed = summed.index_add(1, sequences.flatten(), rearrange(out, "b r s c -> b (r s) c"))
    grid = rearrange(summed[:, : height * width], "b (h w) c -> b h w c", h=height)
    return mixer.proj(grid), mixer.proj(summed[:, height * width + 1 :])


@pytest.mark.parametrize("grad", [False, True])
def test_the_one_additive_mask_equals_the_cores_mask_and_bias_bitwise(grad: bool) -> None:
    torch.manual_seed(0)
    mixer = SemanticRegionAttention(8, 2, window=4, margin=2).train(grad)
    x = torch.randn(2, 9, 11, 8, requires_grad=grad)
    agr = torch.randn(2, num_regions(9, 11, 4), 8)
    labels = assign_regions(x, 4, 2)
    labels[1] = 0  # regions 1-5 of the second image are empty: fully masked rows
    results = []
    for run in (mixer.intra_region, lambda *a: _with_the_cores_mask(mixer, *a)):
        mixer.zero_grad()
        x.grad = None
        with torch.set_grad_enabled(grad):
            out, agr_out = run(x, agr, labels)
        if grad:
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [x.grad, *(p.grad for p in mixer.parameters())] if grad else []
        results.append([out, agr_out, *grads])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
