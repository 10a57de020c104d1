"""The backbone seams the later papers need: stems, conv downsampling, GroupNorm on channels-last
maps, the depthwise-conv MLP, extra tokens through a stage, timm's forward_intermediates, the
model entry checks, LayerNorm eps and the position bias of full attention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import minilg
from minilg.attention import FullAttention, WindowAttention
from minilg.complexity import count_macs
from minilg.models.backbone import HierarchicalBackbone
from minilg.models.blocks import Block, ConvDownsample, ConvStem
from minilg.models.stages import BlockSpec, BlockStages, Stage, StageSpec
from minilg.nn import ChannelsLastGroupNorm, ConvMlp, Mlp, group_norm


@pytest.mark.parametrize("size", [(32, 32), (33, 17), (7, 5), (1, 1)])
def test_conv_stem_sizes_and_macs_are_exact(size: tuple[int, int]) -> None:
    stem = ConvStem(3, (16, 24, 32), (2, 2, 1))  # SALG-style: strides 2, 2, 1
    x = torch.randn(1, 3, *size)
    y = stem(x)
    assert tuple(y.shape) == (1, *stem.out_size(*size), 32)  # channels-last
    assert count_macs(stem, x) == stem.macs(*size)
    assert [type(m).__name__ for m in stem] == ["Conv2d", "GroupNorm", "SiLU", "Conv2d",
                                                "GroupNorm", "SiLU", "Conv2d"]


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, 2, 0), (3, 2, 1)])
@pytest.mark.parametrize("size", [(8, 8), (7, 9), (1, 2), (5, 5)])
def test_conv_downsample_keeps_every_real_token_and_counts_exactly(
    kernel: int, stride: int, padding: int, size: tuple[int, int]
) -> None:
    down = ConvDownsample(4, 6, kernel, stride, padding, norm=group_norm(1))
    x = torch.randn(2, *size, 4)
    y = down(x)
    assert tuple(y.shape) == (2, *down.out_size(*size), 6)
    assert count_macs(down, x[:1]) == down.macs(*size)
    # every real token reaches some output: perturbing the last one changes the output
    x2 = x.clone()
    x2[:, -1, -1] += 1.0
    assert not torch.allclose(down(x2), y)


def test_channels_last_group_norm_equals_group_norm_on_nchw() -> None:
    x = torch.randn(2, 5, 6, 8)
    norm = ChannelsLastGroupNorm(1, 8, eps=1e-6)
    ref = nn.GroupNorm(1, 8, eps=1e-6)(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(norm(x), ref)


@pytest.mark.parametrize("size", [(6, 6), (5, 3)])
def test_conv_mlp_macs_exact(size: tuple[int, int]) -> None:
    mlp = ConvMlp(8, ratio=4, kernel=3)
    x = torch.randn(1, *size, 8)
    assert mlp(x).shape == x.shape
    assert count_macs(mlp, x) == mlp.macs(*size)


class _MeanToken(nn.Module):
    """One extra token per stage: the mean of the stage input (a test stand-in for AGR tokens)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2))[:, None]

    def num_tokens(self, height: int, width: int) -> int:
        return 1

    def macs(self, height: int, width: int) -> int:
        return 0


def _tiny(extra: bool = False, **kwargs: object) -> HierarchicalBackbone:
    def mixer(spec: BlockSpec) -> FullAttention:
        return FullAttention(spec.dim, spec.heads)

    stages = BlockStages(mixer, extra=(lambda stage, dim: _MeanToken()) if extra else None)
    return HierarchicalBackbone(
        dims=(8, 16), depths=(2, 1), heads=(2, 4), stage=stages, num_classes=3, img_size=32,
        **kwargs,  # type: ignore[arg-type]
    )


def test_extra_tokens_travel_through_a_stage_and_are_counted() -> None:
    torch.manual_seed(0)
    plain, with_extra = _tiny(), _tiny(extra=True)
    with_extra.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(plain(x), with_extra(x))  # the extra token took part
    assert count_macs(with_extra.eval(), x[:1]) == with_extra.macs(32)
    assert with_extra.macs(32) > plain.macs(32)


def test_forward_intermediates_follow_timm() -> None:
    model = _tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    final, stages = model.forward_intermediates(x)  # type: ignore[misc]
    assert [tuple(s.shape) for s in stages] == [(2, 8, 8, 8), (2, 16, 4, 4)]  # NCHW
    torch.testing.assert_close(final, model.forward_features(x))
    only = model.forward_intermediates(x, indices=1, output_fmt="NHWC", intermediates_only=True)
    assert isinstance(only, list) and len(only) == 1 and only[0].shape == (2, 4, 4, 16)
    assert [f["reduction"] for f in model.feature_info] == [4, 8]
    assert [f["num_chs"] for f in model.feature_info] == [8, 16]
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "floating-point"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.int64), "floating-point"),
        (torch.zeros(0, 3, 32, 32), "empty batch"),
        (torch.zeros(2, 1, 32, 32), r"\(B, 3, H, W\)"),
        (torch.zeros(3, 32, 32), r"\(B, 3, H, W\)"),
    ],
)
def test_models_reject_bad_images_with_one_clear_line(images: torch.Tensor, message: str) -> None:
    for name in ("swin_mini", "deit_mini"):
        with pytest.raises(ValueError, match=message):
            minilg.create_model(name)(images)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_models_accept_every_float_dtype(dtype: torch.dtype) -> None:
    model = minilg.create_model("swin_mini").to(dtype).eval()
    assert model(torch.randn(1, 3, 32, 32, dtype=dtype)).dtype == dtype


def test_layer_norm_eps_follows_each_reference_code() -> None:
    eps = {name: {m.eps for m in minilg.create_model(name).modules()
                  if isinstance(m, nn.LayerNorm)} for name in ("deit_mini", "swin_mini",
                                                               "sra_mini")}
    # PVT: block norms 1e-6, SRA's reduction norm nn.LayerNorm's default 1e-5
    assert eps == {"deit_mini": {1e-6}, "swin_mini": {1e-5}, "sra_mini": {1e-6, 1e-5}}


def test_full_attention_position_bias_over_the_map() -> None:
    mixer = FullAttention(16, 2, position_bias=(4, 5))
    assert mixer.position_bias is not None
    assert mixer.position_bias.bias_table.shape == (7 * 9, 2)
    x = torch.randn(1, 4, 5, 16)
    assert mixer(x).shape == x.shape and mixer(x[:, :3, :2]).shape == (1, 3, 2, 16)
    with pytest.raises(ValueError, match="does not fit"):
        mixer(torch.randn(1, 5, 5, 16))
    # equals window attention whose single window covers the map, with the same weights
    window = WindowAttention(16, 2, window=(4, 5))
    window.load_state_dict(mixer.state_dict())
    torch.testing.assert_close(window(x), mixer(x))
    # extra tokens see no position bias; the map's bias is unchanged
    grid, extra = mixer.forward_with_extra(x, torch.randn(1, 2, 16))
    assert grid.shape == x.shape and extra.shape == (1, 2, 16)


def test_gg_msa_in_stages_3_4_keeps_a_position_bias() -> None:
    model = minilg.create_model("gg_mini", branches="window", msa_stages=[2, 3])
    mixers = [b.mixer for b in model.stages[2]]
    assert all(isinstance(m, FullAttention) and m.position_bias is not None for m in mixers)


@pytest.mark.parametrize("bad", [2.0, True, 0, -1, (4, 4.5)])
def test_mixers_reject_non_integer_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match="window"):
        WindowAttention(16, 2, window=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="height"):
        WindowAttention(16, 2).macs(0, 4)


def test_mlp_accepts_token_rows() -> None:
    assert Mlp(8)(torch.randn(2, 3, 8)).shape == (2, 3, 8)


def test_inference_in_sample_slices_equals_one_pass() -> None:
    torch.manual_seed(0)
    block = Block(16, WindowAttention(16, 2, 4, shift=2), Mlp(16)).eval()
    x = torch.randn(5, 9, 7, 16)
    with torch.no_grad():
        whole = block(x)
        block.inference_chunk_elements = 2 * 9 * 7 * 16  # slices of two samples
        sliced = block(x)
    torch.testing.assert_close(sliced, whole, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ stages and the stage factory


def test_each_stage_opens_with_its_own_downsampling() -> None:
    model = minilg.create_model("swin_mini").eval()
    keys = model.state_dict().keys()
    assert not any(k.startswith("downsamples.") for k in keys)
    assert not any(k.startswith("stages.0.downsample.") for k in keys)  # the stem's stride
    for i in (1, 2, 3):
        assert {f"stages.{i}.downsample.{p}" for p in
                ("norm.weight", "norm.bias", "reduction.weight")} <= keys
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        manual = model.stem(x)
        for stage in model.stages:  # stem, stages, norm
            manual = stage.blocks[1](stage.blocks[0](stage.downsample(manual)))
        assert torch.equal(model.forward_features(x), model.norm(manual))


class _CountingStage(Stage):
    """A stage that remembers its spec: the stand-in for a model's own stage class."""

    def __init__(self, spec: StageSpec, stage: Stage) -> None:
        super().__init__(stage.downsample, list(stage.blocks))  # type: ignore[arg-type]
        self.spec = spec


def test_the_backbone_builds_every_stage_through_its_factory() -> None:
    def mixer(spec: BlockSpec) -> FullAttention:
        return FullAttention(spec.dim, spec.heads)

    blocks = BlockStages(mixer)
    model = HierarchicalBackbone(
        dims=(8, 16, 24), depths=(1, 2, 1), heads=(1, 2, 2), img_size=32, drop_path_rate=0.3,
        stage=lambda spec: _CountingStage(spec, blocks(spec)),
    )
    specs = [stage.spec for stage in model.stages]  # type: ignore[union-attr]
    assert [(s.index, s.in_dim, s.dim, s.depth, s.in_size) for s in specs] == [
        (0, 8, 8, 1, (8, 8)), (1, 8, 16, 2, (8, 8)), (2, 16, 24, 1, (4, 4))]
    rates = [0.3 * i / 3 for i in range(4)]  # linear over all blocks, split by stage
    assert [s.drop_path for s in specs] == [(rates[0],), (rates[1], rates[2]), (rates[3],)]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16]
    assert count_macs(model.eval(), torch.randn(1, 3, 32, 32)) == model.macs(32)


class _OwnInit(nn.Module):
    """A part with its own ``init_weights``: the backbone calls it after the generic init."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def init_weights(self) -> None:
        nn.init.constant_(self.fc.weight, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x)
        return out

    def macs(self, height: int, width: int) -> int:
        return height * width * self.fc.in_features * self.fc.out_features


def test_the_init_calls_each_modules_own_init_weights_after_the_generic_one() -> None:
    model = HierarchicalBackbone(
        dims=(8, 16), depths=(1, 1), heads=(1, 2), img_size=32,
        stage=BlockStages(lambda spec: FullAttention(spec.dim, spec.heads),
                          mlp=lambda spec: _OwnInit(spec.dim)),
    )
    for stage in model.stages:
        assert torch.all(stage.blocks[0].mlp.fc.weight == 0.5)  # its own init, not overwritten
        assert torch.all(stage.blocks[0].mlp.fc.bias == 0)  # the generic init's zero bias
    pools = [m for m in minilg.create_model("focal_mini").modules()
             if type(m).__name__ == "SubWindowPool"]
    assert pools and all(torch.all(p.pool.weight == p.pool.weight.flatten()[0]) for p in pools)


def test_hat_net_initialises_its_convolutions_like_linears() -> None:
    torch.manual_seed(0)
    model = minilg.create_model("hat_net_mini")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.bias is None or torch.all(m.bias == 0) for m in convs)
    weights = torch.cat([m.weight.detach().flatten() for m in convs])
    assert 0.019 < float(weights.std()) < 0.021  # trunc_normal_(std=0.02), not PyTorch's default
